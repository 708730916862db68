package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// TestProbationStopsWhatACrashLeft: a release on probation whose main
// process crashes and leaves a worker serving its socket (nginx's workers
// when their master dies; here a shell whose child serves) is rolled back,
// and its worker is stopped before its takeover exits: left running, it
// would hold the port, and the next deploy's bind would be refused.
func TestProbationStopsWhatACrashLeft(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	procs := trackProcesses(t)
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	a := startTakeover(t, "healthserve", "--port", port, "--kill-timeout", "2s", "--", self, addr)
	testutil.WaitServing(t, addr)
	old := serving(t, addr)

	b := startTakeover(t, "healthserve", "--port", port, "--probation", "10s", "--kill-timeout", "2s", "--",
		"/bin/sh", "-c", `"$0" "$1" & wait`, self, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A's log:\n%s\nB's log:\n%s", a.stderr, b.stderr)
		}
	})
	b.waitLog(t, "on probation")
	shell, left := shellAndServer(t, b, serving(t, addr), 0)
	shell.kill() // its child, orphaned to B, serves on

	if code := b.wait(t); code != supervise.ExitRolledBack {
		t.Errorf("B exited %d, want %d (rolled back)", code, supervise.ExitRolledBack)
	}
	if gone := awaitGone([]procKey{left}, 5*time.Second); len(gone) > 0 {
		t.Errorf("the rolled-back release's worker %d still runs after its takeover exited", left.PID)
	}
	if now := serving(t, addr); now != old {
		t.Errorf("pid %d serves after the rollback, want the old %d", now, old)
	}
	if !a.running() {
		t.Fatalf("takeover A exited; it serves on after a rollback")
	}
	// The next deploy replaces A as any deploy does.
	c := startTakeover(t, "healthserve", "--port", port, "--kill-timeout", "2s", "--", self, addr)
	c.waitLog(t, "took over")
	if code := a.wait(t); code != 0 {
		t.Errorf("takeover A exited %d when C replaced it, want 0", code)
	}
	stopAndCheck(t, c, unixSignal(t, "TERM"), procs)
}

// TestProbationReloadStopsWhatACrashLeft: the same for a HUP reload, after
// which takeover serves on with the old generation: the crashed release's
// worker, orphaned to takeover, is stopped, and the old generation (same
// pid) serves on.
func TestProbationReloadStopsWhatACrashLeft(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	procs := trackProcesses(t)
	self, _ := os.Executable()
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	healthApp(t, app, 200)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	r := startTakeover(t, "healthserve", "--port", port, "--probation", "10s", "--kill-timeout", "2s", "--", app, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("takeover's log:\n%s", r.stderr)
		}
	})
	testutil.WaitServing(t, addr)
	old := serving(t, addr)

	// The release: a shell whose child serves.
	script := fmt.Sprintf("#!/bin/sh\n%q \"$@\" &\nwait\n", self)
	if err := os.WriteFile(app, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog(t, "on probation")
	shell, left := shellAndServer(t, r, serving(t, addr), old)
	shell.kill()
	r.waitLog(t, "rolled back after")
	if gone := awaitGone([]procKey{left}, 10*time.Second); len(gone) > 0 {
		t.Errorf("the rolled-back release's worker %d still runs", left.PID)
	}
	if now := serving(t, addr); now != old {
		t.Errorf("pid %d serves after the rollback, want the old generation %d", now, old)
	}
	stopAndCheck(t, r, syscall.SIGTERM, procs)
}

// shellAndServer finds the release under r: its shell, r's child other than
// old, and the shell's child that serves, worker.
func shellAndServer(t *testing.T, r *tkRun, worker, old int) (shell, server procKey) {
	t.Helper()
	for _, p := range treeOf(r.cmd.Process.Pid) {
		switch _, ppid, _, _ := statOf(p.PID); {
		case ppid == r.cmd.Process.Pid && p.PID != old:
			shell = p
		case p.PID == worker:
			server = p
		}
	}
	if shell.PID == 0 || server.PID == 0 || worker == old {
		t.Fatalf("the release's shell and its serving child (pid %d) are not among takeover's processes: %s", worker, procList(treeOf(r.cmd.Process.Pid)))
	}
	return shell, server
}
