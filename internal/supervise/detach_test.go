package supervise

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestDetachedRecordLeftToNewer: the detached launcher notes in its
// record until when it serves, but never while another takeover holds the
// port's lock: that one writes its own record before it signals the
// detached launcher (how it tells "replaced" from "stopped"), and a read
// and write of the old record around it would put the old launcher back.
// Here the lock file is held through a file of its own, as the newer
// takeover holds it, with the record still naming the detached launcher.
func TestDetachedRecordLeftToNewer(t *testing.T) {
	dir := testutil.RunDir(t)
	spec, err := target.Parse("127.0.0.1:8100")
	if err != nil {
		t.Fatal(err)
	}
	st, err := procfs.FS("/proc").Stat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	l := &launcher{ctx: context.Background(), cfg: Config{Ports: []target.Spec{spec}}, dir: dir, self: os.Getpid(), born: st.Start, log: slog.New(slog.DiscardHandler)}
	key := spec.Key()
	mine := rundir.Record{Launcher: l.self, LauncherStart: l.born, Child: 1}
	if err := rundir.WriteRecord(dir, key, mine); err != nil {
		t.Fatal(err)
	}
	newer, err := rundir.Lock(context.Background(), dir, []string{key}, rundir.Owner{PID: 2, Start: 1}, func(string, rundir.Owner, time.Duration) {})
	if err != nil {
		t.Fatal(err)
	}
	l.setDetached(time.Now().Add(time.Minute))
	if r, ok := rundir.ReadRecord(dir, key); !ok || r.DetachedUntil != nil {
		t.Errorf("the detached launcher wrote its record while another takeover held the port's lock: %+v (found: %v)", r, ok)
	}
	rundir.ReleaseLocks(newer)
	until := time.Now().Add(time.Minute)
	l.setDetached(until)
	if r, ok := rundir.ReadRecord(dir, key); !ok || r.DetachedUntil == nil || !r.DetachedUntil.Equal(until) {
		t.Errorf("with the lock free, the record is %+v (found: %v), want detached until %v", r, ok, until)
	}
}

// TestFrontHoldsSignals: a supervisor's HUP (sv restart, then sv hup) that
// reaches the front while its launcher is still starting is passed on once
// the launcher has asked for its signals, not before: a HUP kills a Go
// program that has not asked for it. The helper launcher takes 2 s to ask
// (the real one starts the Go runtime, opens its run directory, writes its
// status files first). Before, it was killed by the HUP and the front
// exited 129.
func TestFrontHoldsSignals(t *testing.T) {
	front := exec.Command(os.Args[0])
	front.Env = append(os.Environ(), testutil.HelperEnv+"=front")
	front.Stderr = os.Stderr
	if err := front.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- front.Wait() }()
	t.Cleanup(func() {
		for _, pid := range childrenOf(front.Process.Pid) {
			unix.Kill(pid, unix.SIGKILL) // the helper launcher, of this test
		}
		front.Process.Kill()
	})
	// The front asks for the signals it passes on before it starts the
	// launcher.
	for deadline := time.Now().Add(30 * time.Second); len(childrenOf(front.Process.Pid)) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the front started no launcher in 30s")
		}
	}
	front.Process.Signal(unix.SIGHUP)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the front: %v, want exit 0: its launcher got the HUP once it asked for it", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the front has not exited 60s after the HUP")
	}
}

// frontHelper is the helper mode "front": the test binary runs RunFront,
// which runs it again as a stand-in launcher. That one asks for a HUP 2 s
// late, tells its front through frontPipe, and exits 0 when the HUP comes
// (3 if none does in 30 s).
func frontHelper(mode string, args []string) (int, bool) {
	if mode != "front" {
		return 0, false
	}
	if os.Getenv(FrontEnv) == "" {
		return RunFront(args, os.Stderr), true
	}
	time.Sleep(2 * time.Second)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, unix.SIGHUP)
	if frontPipe() == nil {
		return 4, true
	}
	select {
	case <-sigs:
		return 0, true
	case <-time.After(30 * time.Second):
		return 3, true
	}
}
