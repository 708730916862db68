package supervise

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/rundir"
	"golang.org/x/sys/unix"
)

// --detach-on-stop: under a supervisor that restarts a service by stopping
// the pid it started and starting the command again (runit, daemontools,
// s6, supervisord), the old server must keep serving until the new
// takeover replaces it. So the process the supervisor starts is a front:
// it runs the launcher as a child in a session of its own, passes it every
// signal but a stop, and on a stop exits 0 at once. The launcher, which
// holds everything (the generation, its sockets, the seccomp listener,
// the run-directory record, the unix socket newer takeovers ask), sees the
// front go (its end of their socket pair closes) and serves on, detached, until a newer
// takeover replaces it as usual, or for at most the given duration; then
// it stops the server as a stop signal would have.

// frontEnv names, in the launcher's environment, the fd of the socket
// pair whose other end the front holds.
const FrontEnv = "TAKEOVER_FRONT_FD"

// maxDetach bounds --detach-on-stop.
const MaxDetach = time.Hour

// RunFront starts the launcher with the same arguments behind a front and
// returns the exit status the front should exit with: the launcher's own,
// or 0 when a stop signal detached it.
//
// The front and the launcher share a socket pair: the launcher sees the
// front go when its end closes, and sends a byte once its signal handlers
// are installed. Until then the front holds the signals it is to pass on,
// in order: a HUP, USR1 or USR2 kills a Go program that has not asked for
// it, and the launcher asks only after the Go runtime's start, its run
// directory and its status files. A supervisor's reload just after a
// restart (sv restart, then sv hup) would otherwise end the new takeover
// before it has begun (TestFrontHoldsSignals).
func RunFront(args []string, stderr io.Writer) int {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		// Non-blocking, so that a Close while the byte is awaited is
		// not held up by the Read.
		err = unix.SetNonblock(pair[0], true)
	}
	if err != nil {
		fmt.Fprintf(stderr, "takeover: --detach-on-stop: %v\n", err)
		return ExitLauncher
	}
	front, theirs := os.NewFile(uintptr(pair[0]), "launcher"), os.NewFile(uintptr(pair[1]), "front")
	cmd := exec.Command("/proc/self/exe", args...)
	cmd.Args[0] = os.Args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, stderr
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Env = append(os.Environ(), FrontEnv+"=3")
	// A session of its own: a signal to the supervisor's process group
	// (a terminal's ^C, supervisord's stopasgroup) does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "takeover: --detach-on-stop: start the launcher: %v\n", err)
		return ExitLauncher
	}
	theirs.Close()
	listening := make(chan struct{}) // closed once the launcher takes signals, or has exited
	go func() {
		var b [1]byte
		front.Read(b[:])
		close(listening)
	}()
	var held []os.Signal
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for {
		select {
		case <-listening:
			listening = nil
			for _, sig := range held {
				cmd.Process.Signal(sig)
			}
			held = nil
		case sig := <-sigs:
			if isStopSignal(sig) {
				// The launcher serves on, detached; the supervisor may start
				// the next takeover at once.
				front.Close()
				return 0
			}
			if listening != nil {
				held = append(held, sig)
				continue
			}
			cmd.Process.Signal(sig) // pidfd-backed: never another process
		case err := <-exited:
			front.Close()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return ee.ExitCode()
			}
			if err != nil {
				return ExitLauncher
			}
			return 0
		}
	}
}

// frontPipe returns the launcher's end of its front's socket pair, or nil
// when it runs without a front, and tells the front that the launcher now
// takes the signals it passes on: call it once they are asked for
// (signal.Notify). The variable is takeover's own: never passed on.
func frontPipe() *os.File {
	v := os.Getenv(FrontEnv)
	if v == "" {
		return nil
	}
	os.Unsetenv(FrontEnv)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	unix.CloseOnExec(fd)
	unix.Sendto(fd, []byte{1}, unix.MSG_NOSIGNAL, nil) // a front gone has closed its end: nothing to tell
	relayOutput(1)
	relayOutput(2)
	return os.NewFile(uintptr(fd), "front")
}

// relayOutput puts a pipe at fd (1 or 2), for the launcher and its
// commands, and copies what comes through it to where fd went before. A
// supervisor closes its end of a stopped service's output (supervisord
// does): the detached launcher and its server must not die of SIGPIPE for
// it, so from the first failed write on, output is dropped.
func relayOutput(fd int) {
	orig, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return
	}
	r, w, err := os.Pipe()
	if err != nil {
		unix.Close(orig)
		return
	}
	if err := unix.Dup3(int(w.Fd()), fd, 0); err != nil {
		unix.Close(orig)
		r.Close()
		w.Close()
		return
	}
	w.Close()
	go func() {
		buf := make([]byte, 32<<10)
		broken := false
		for {
			n, err := r.Read(buf)
			if err != nil {
				return
			}
			if !broken {
				// fd orig is not 1 or 2: a closed reader gives EPIPE, not
				// the signal.
				_, err := unix.Write(orig, buf[:n])
				broken = err != nil
			}
		}
	}()
}

// watchFront waits for the front to go and then detaches: the launcher
// serves on for at most --detach-on-stop, and then, unless a newer
// takeover has replaced it or is starting (it holds the port lock), stops
// the server with --signal, as a stop signal would have.
//
// The window opens once this takeover no longer holds the port locks
// itself. A launcher holds them through its first swap, until the old
// generation it replaced has gone (a slow request drained, a --kill-timeout
// run out): the newer takeover the supervisor starts meanwhile waits for
// them, unseen, and a window counted from the front's exit could close on
// it. The launcher would then stop its server and exit mid-swap, and the
// port close under the newer takeover (TestDetachWaitsForOwnSwap).
func (l *launcher) watchFront(front *os.File) {
	var b [1]byte
	front.Read(b[:]) // EOF: the front exited, or was killed
	front.Close()
	l.log.Info("the supervisor stopped takeover; serving on, detached, until a newer takeover replaces this one",
		"pid", l.self, "for_at_most", l.cfg.DetachOnStop)
	for {
		held, bySelf := l.lockHeld()
		if !held || !bySelf {
			break
		}
		time.Sleep(lockPoll) // this takeover's own first swap still holds the locks
	}
	until := time.Now().Add(l.cfg.DetachOnStop)
	l.setDetached(until)
	time.Sleep(l.cfg.DetachOnStop)
	for {
		// This takeover's swap is done: whoever holds a lock now is a
		// newer takeover starting, whose swap will replace this one (even
		// one whose lock file still names this takeover: it has yet to
		// write itself in).
		if held, _ := l.lockHeld(); !held {
			break
		}
		time.Sleep(lockPoll)
	}
	l.log.Info("no newer takeover came within --detach-on-stop: stopping the server", "detach_on_stop", l.cfg.DetachOnStop)
	l.events <- event{kind: evStop, sig: l.cfg.signal()}
}

// lockPoll is how often the detached launcher looks at the port locks.
const lockPoll = 100 * time.Millisecond

// lockHeld reports whether a takeover holds one of our targets' port locks,
// and whether the lock file names this one as the holder.
func (l *launcher) lockHeld() (held, bySelf bool) {
	for _, key := range l.keys() {
		f, ok, owner := tryPortLock(l.dir, key)
		if f != nil {
			f.Close() // free: let go of it at once
		}
		if ok {
			continue
		}
		held = true
		bySelf = bySelf || owner.PID == l.self
	}
	return held, bySelf
}

// tryPortLock tries a target's port lock without waiting. free reports
// that no takeover holds it: f is then the lock file, locked until the
// caller closes it (nil if there is no lock file at all). Otherwise owner
// is whom the lock file names.
func tryPortLock(dir *rundir.Dir, key string) (f *os.File, free bool, owner rundir.Owner) {
	name := rundir.LockName(key)
	f, err := dir.Open(name, os.O_RDWR, 0)
	if err != nil {
		return nil, true, rundir.Owner{}
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	owner = rundir.ReadLockOwner(f)
	if errors.Is(err, unix.EWOULDBLOCK) {
		f.Close()
		return nil, false, owner
	}
	if err != nil || !dir.SamePath(f, name) {
		f.Close() // removed meanwhile: no takeover holds it
		return nil, true, owner
	}
	return f, true, owner
}

// setDetached records, for `takeover who` and --status-file, until when the
// detached launcher serves.
func (l *launcher) setDetached(until time.Time) {
	l.mu.Lock()
	l.detachedUntil = until
	l.status.DetachedUntil = &until
	l.flushStatus()
	l.mu.Unlock()
	for _, key := range l.keys() {
		if r, ok := rundir.ReadRecord(l.dir, key); ok && r.Launcher == l.self {
			r.DetachedUntil = &until
			l.updateRecord(l.ctx, key, r, false) // not over a newer takeover's
		}
	}
}
