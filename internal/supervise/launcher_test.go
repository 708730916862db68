package supervise

import (
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestReaperLeavesExecChildren: takeover's reaper of orphans leaves alone
// the children that os/exec waits for (takeover's `systemctl show`, say),
// whose Wait got ECHILD from the reaper's wait4(-1) before; it still reaps
// an orphan re-parented to takeover, and a generation's exit comes through
// its pidfd. Run in a process of its own: the reaper runs until the
// process exits (issue 28, Low: the reaper steals os/exec's children).
func TestReaperLeavesExecChildren(t *testing.T) {
	if os.Getenv("TAKEOVER_TEST_REAPER") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestReaperLeavesExecChildren$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "TAKEOVER_TEST_REAPER=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		return
	}
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	exits := make(chan childExit, 16)
	reapOrphans(exits)

	// Each child has exited (a zombie, or reaped by someone) before Wait
	// is called, as when Output reads to the end before it waits.
	failed := 0
	for range 20 {
		cmd := exec.Command("/bin/sh", "-c", "exit 7")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitGone(t, cmd.Process.Pid)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 7 {
			failed++
			t.Logf("os/exec's Wait: %v, want exit status 7", err)
		}
	}
	if failed > 0 {
		t.Errorf("%d of 20 os/exec children lost their exit status to the reaper", failed)
	}

	out, err := exec.Command("/bin/sh", "-c", "sleep 0.2 >/dev/null & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	orphan, _ := strconv.Atoi(strings.TrimSpace(string(out)))
	pidfd := -1
	p, err := os.StartProcess("/bin/sh", []string{"sh", "-c", "exit 3"}, &os.ProcAttr{Sys: &syscall.SysProcAttr{PidFD: &pidfd}})
	if err != nil {
		t.Fatal(err)
	}
	gen := p.Pid
	p.Release()
	go waitChild(gen, pidfd, exits)
	for seen := map[int]bool{}; !seen[orphan] || !seen[gen]; {
		select {
		case e := <-exits:
			seen[e.Pid] = true
			if e.Pid == gen && e.Status.ExitStatus() != 3 {
				t.Errorf("the generation's status is %v, want exit status 3", e.Status)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("after 30s, reaped %v; want the orphan %d and the generation %d", seen, orphan, gen)
		}
	}
	unix.Close(pidfd)
}
