package supervise

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
)

// TestSignalLauncherChecksStart: a standing-by PID 1 signals the takeover
// a record names only if the process it holds by a pidfd is that one (its
// start time): a record whose start time is not the process's (its pid
// reused) is refused, and the process is not signalled.
func TestSignalLauncherChecksStart(t *testing.T) {
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	st, err := procfs.FS("/proc").Stat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	stale := rundir.Record{Launcher: cmd.Process.Pid, LauncherStart: st.Start + 1}
	if err := signalLauncher(stale, syscall.SIGTERM); err == nil {
		t.Fatal("signalLauncher signalled a process its record does not name")
	}
	if err := signalLauncher(rundir.Record{Launcher: cmd.Process.Pid, LauncherStart: st.Start}, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGTERM {
		t.Fatalf("sleep ended with %v, want killed by the one SIGTERM sent", err)
	}
}
