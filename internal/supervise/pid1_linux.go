package supervise

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"golang.org/x/sys/unix"
)

// takeover as PID 1 of a PID namespace (a container's entrypoint) has
// duties a replaced takeover elsewhere has not: the namespace ends when
// it exits, killing every process in it, the takeover that replaced it
// (started by `docker exec`) among them; and it reaps every orphan. So a
// replaced PID 1 stands by: it reaps, passes every signal (docker stop's
// TERM, docker kill's HUP) on to the takeover that serves now, and exits
// once none serves.

// standByInterval is how often a standing-by PID 1 looks at who serves.
const standByInterval = 100 * time.Millisecond

// standBy runs a replaced PID 1 until no takeover serves its targets any
// more, and returns its exit status: 0 after a stop it passed on, 1 when
// the serving takeover ended by itself (nothing serves: the container ends).
func (l *launcher) standBy(sigs <-chan os.Signal, exits <-chan childExit) int {
	l.log.Info("replaced as PID 1 of this PID namespace: staying, to reap orphans and pass signals on to the takeover that serves now")
	tick := time.NewTicker(standByInterval)
	defer tick.Stop()
	stopped := false
	last := 0
	for {
		serving := l.servingLauncher()
		if serving.Launcher == 0 {
			if stopped {
				return 0
			}
			l.log.Warn("the takeover that served has exited and none serves now; ending", "pid", last)
			return 1
		}
		last = serving.Launcher
		select {
		case sig := <-sigs:
			s := sig.(syscall.Signal)
			stopped = stopped || isStopSignal(s)
			if err := signalLauncher(serving, s); err != nil {
				l.log.Warn("cannot pass a signal on to the takeover that serves", "pid", serving.Launcher, "signal", unix.SignalName(s), "err", err)
			}
		case <-exits: // an orphan re-parented to PID 1, reaped
		case <-tick.C:
		}
	}
}

// servingLauncher returns the record of the live takeover, other than this
// one, that the run directory names for one of our targets (Launcher 0:
// none).
func (l *launcher) servingLauncher() rundir.Record {
	for _, key := range l.keys() {
		if r, ok := rundir.ReadRecord(l.dir, key); ok && r.Launcher != l.self {
			return r
		}
	}
	return rundir.Record{}
}

// signalLauncher sends sig to the launcher r names through a pidfd opened
// first, and only then checked to be that very process (its start time):
// a pid reused after the record was read is never signalled.
func signalLauncher(r rundir.Record, sig syscall.Signal) error {
	p, err := pidfd.OpenStarted(procfs.FS("/proc"), r.Launcher, r.LauncherStart)
	if errors.Is(err, pidfd.ErrGone) {
		return fmt.Errorf("pid %d is no longer the takeover its record names", r.Launcher)
	}
	if err != nil {
		return err
	}
	defer p.Close()
	return p.Signal(sig)
}
