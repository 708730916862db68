package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// `takeover reload` and `takeover deploy` (issue 31 item 4): they wait
// for the outcome and say it, in their exit status and one line.

// runTakeoverCmd runs the built takeover with args to its end (bounded by
// its --timeout, and by 2 minutes here), and returns its output and exit
// status.
func runTakeoverCmd(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(takeoverBin(t), args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
		}
	}()
	out, err := cmd.CombinedOutput()
	if cmd.ProcessState == nil {
		t.Fatalf("takeover %v: %v", args, err)
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// TestReload: `takeover reload PORT` of a good release exits 0 once the
// new generation serves, naming it; of a release whose health check
// answers 500 (reloaded by --pid) exits non-zero once it is rolled back, saying the check's
// answer, and the old generation serves on; of a port nobody serves exits
// 1.
func TestReload(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	app := filepath.Join(t.TempDir(), "app")
	healthApp(t, app, 200)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	r := startTakeover(t, "healthserve", "--port", port, "--ready", "http://127.0.0.1:"+port+"/healthz",
		"--kill-timeout", "1s", "--bind-timeout", "2s", "--ready-timeout", "4s", "--", app, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("takeover's stderr:\n%s", r.stderr)
		}
	})
	r.waitLog(t, "passed its health check")
	testutil.WaitServing(t, addr)
	first := childOf(t, r, addr)

	out, code := runTakeoverCmd(t, nil, "reload", "--timeout", "60s", port)
	if code != 0 || !strings.Contains(out, "reload: generation 2 ") {
		t.Fatalf("takeover reload %s of a good release: exit %d, want 0 and generation 2:\n%s", port, code, out)
	}
	t.Logf("good release: %s", out)
	testutil.WaitGone(t, first) // the old generation drains, and exits
	second := childOf(t, r, addr)
	if second == first || !strings.Contains(out, "(pid "+strconv.Itoa(second)+")") {
		t.Errorf("after the reload pid %d serves (before: %d); reload said:\n%s", second, first, out)
	}

	healthApp(t, app, 500)
	out, code = runTakeoverCmd(t, nil, "reload", "--pid", strconv.Itoa(r.cmd.Process.Pid))
	if code == 0 || !strings.Contains(out, "rolled back") || !strings.Contains(out, "500 Internal Server Error") {
		t.Errorf("takeover reload %s of a release that answers 500: exit %d, want non-zero, the rollback and the 500:\n%s", port, code, out)
	}
	t.Logf("bad release: %s", out)
	if now := childOf(t, r, addr); now != second {
		t.Errorf("after the failed reload pid %d serves, want %d", now, second)
	}
	if _, err := testutil.Get(addr, "/"); err != nil {
		t.Errorf("after the failed reload: %v", err)
	}

	free := testutil.FreePort(t)
	if out, code := runTakeoverCmd(t, nil, "reload", free); code != exitFailure || !strings.Contains(out, "no takeover serves "+free) {
		t.Errorf("takeover reload %s (nobody serves it): exit %d, want 1:\n%s", free, code, out)
	}
	if out, code := runTakeoverCmd(t, nil, "reload", "--pid", strconv.Itoa(os.Getpid())); code != exitFailure || !strings.Contains(out, "no takeover") {
		t.Errorf("takeover reload --pid of the test (no takeover): exit %d, want 1:\n%s", code, out)
	}
}

// stopDeployed stops a takeover deploy started (it outlives deploy),
// through a pidfd opened while the test knows it is that takeover.
func stopDeployed(t *testing.T, pid int) {
	p, err := pidfd.Open(pid)
	if err != nil {
		return // gone
	}
	defer p.Close()
	p.Signal(unix.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if !p.Wait(ctx) {
		p.Signal(unix.SIGKILL)
	}
}

var deployedPID = regexp.MustCompile(`takeover pid (\d+)`)

// TestDeploy: `takeover deploy` of a good release replacing a running
// takeover exits 0 once the new one serves, and the old takeover is gone;
// the new one runs on after deploy has returned. A command that is not
// found exits 127, saying so, and one that fails its --ready-exec 124
// (rolled back); what served serves on.
func TestDeploy(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	old := startTakeover(t, "serve", "--port", port, "--kill-timeout", "2s", "--", self, addr)
	testutil.WaitServing(t, addr)
	oldChild := childOf(t, old, addr)

	logFile := filepath.Join(t.TempDir(), "takeover.log")
	out, code := runTakeoverCmd(t, []string{"TAKEOVER_TEST_HELPER=serve"}, "deploy", "--timeout", "60s", "--log", logFile,
		"--port", port, "--kill-timeout", "2s", "--", self, addr)
	m := deployedPID.FindStringSubmatch(out)
	if m != nil {
		pid, _ := strconv.Atoi(m[1])
		t.Cleanup(func() { stopDeployed(t, pid) })
	}
	if code != 0 || m == nil {
		log, _ := os.ReadFile(logFile)
		t.Fatalf("takeover deploy: exit %d, want 0:\n%s\nits log:\n%s", code, out, log)
	}
	t.Logf("deploy: %s", out)
	if m[1] == strconv.Itoa(old.cmd.Process.Pid) {
		t.Fatalf("deploy names the old takeover:\n%s", out)
	}
	if c := old.wait(t); c != 0 {
		t.Errorf("the replaced takeover exited %d, want 0", c)
	}
	testutil.WaitGone(t, oldChild)
	if _, err := testutil.Get(addr, "/"); err != nil {
		t.Errorf("after the deploy: %v", err)
	}
	newPID, _ := strconv.Atoi(m[1])
	if testutil.ProcessGone(newPID) {
		t.Errorf("the deployed takeover %d is gone after deploy returned", newPID)
	}

	out, code = runTakeoverCmd(t, nil, "deploy", "--timeout", "60s", "--port", port, "--", "/nonexistent/takeover-test-app")
	if m := deployedPID.FindStringSubmatch(out); m != nil {
		pid, _ := strconv.Atoi(m[1])
		if pid != newPID {
			t.Cleanup(func() { stopDeployed(t, pid) })
		}
	}
	t.Logf("command not found: %s", out)
	if code != 127 || !strings.Contains(out, "not found") {
		t.Errorf("takeover deploy of a command not found: exit %d, want 127 and a line saying so:\n%s", code, out)
	}
	if _, err := testutil.Get(addr, "/"); err != nil {
		t.Errorf("after the failed deploy: %v", err)
	}

	// A release that never passes its check is rolled back: 124, said.
	out, code = runTakeoverCmd(t, []string{"TAKEOVER_TEST_HELPER=serve"}, "deploy", "--timeout", "60s", "--log", logFile, "--port", port,
		"--ready-exec", "echo unhealthy; exit 1", "--bind-timeout", "3s", "--ready-timeout", "5s", "--kill-timeout", "2s", "--", self, addr)
	if m := deployedPID.FindStringSubmatch(out); m != nil {
		pid, _ := strconv.Atoi(m[1])
		if pid != newPID {
			t.Cleanup(func() { stopDeployed(t, pid) })
		}
	}
	t.Logf("rolled back: %s", out)
	if code != supervise.ExitNotReady || !strings.Contains(out, "rolled back") || !strings.Contains(out, "unhealthy") {
		t.Errorf("takeover deploy of a release that fails its check: exit %d, want %d and a line saying it was rolled back, and the check's answer:\n%s", code, supervise.ExitNotReady, out)
	}
	if testutil.ProcessGone(newPID) {
		t.Errorf("the takeover that served (%d) is gone after the rolled-back deploy", newPID)
	}
	if _, err := testutil.Get(addr, "/"); err != nil {
		t.Errorf("after the rolled-back deploy: %v", err)
	}
}
