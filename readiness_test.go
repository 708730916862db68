package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// TestOldStoppedOnlyOnceNewAccepts: a server that listens long before it
// accepts (Tomcat) is not taken for ready at its listen(2): the old one is
// asked to stop only once the new one accepts. With --ready listen, the
// old rule, the order flips, which is what this test would catch.
func TestOldStoppedOnlyOnceNewAccepts(t *testing.T) {
	for _, tt := range []struct {
		ready     string
		wantFirst string
	}{
		{"accept", "accepting"},
		{"listen", "stop signal"},
	} {
		t.Run(tt.ready, func(t *testing.T) {
			marks := filepath.Join(t.TempDir(), "marks")
			t.Setenv("TAKEOVER_TEST_MARK", marks)
			port := testutil.FreePort(t)
			self, _ := os.Executable()
			old := startTakeover(t, "marked", "--port", port, "--", self, "127.0.0.1:"+port)
			testutil.WaitServing(t, "127.0.0.1:"+port)
			next := startTakeover(t, "lateaccept", "--ready", tt.ready, "--port", port, "--", self, "127.0.0.1:"+port)
			if code := old.wait(t); code != 0 {
				t.Fatalf("old takeover exited %d:\n%s", code, old.stderr)
			}
			next.waitLog(t, "ready_by=")
			deadline := time.Now().Add(10 * time.Second)
			var lines []string
			for len(lines) < 2 && time.Now().Before(deadline) {
				b, _ := os.ReadFile(marks)
				lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
				time.Sleep(10 * time.Millisecond)
			}
			if len(lines) < 2 || !strings.HasSuffix(lines[0], tt.wantFirst) {
				t.Errorf("with --ready %s: marks %q, want %q first\nnew takeover:\n%s", tt.ready, lines, tt.wantFirst, next.stderr)
			}
			if tt.ready == "accept" && !strings.Contains(next.stderr.String(), "ready_by=epoll") {
				t.Errorf("the swap line does not say how readiness was seen:\n%s", next.stderr)
			}
		})
	}
}

// TestReadyTimeoutRollsBack: a new server that listens but never accepts is
// stopped after --ready-timeout; the old one, never signalled, keeps
// serving; takeover exits 124 and says why; the next takeover of the port
// goes through.
func TestReadyTimeoutRollsBack(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	old := startTakeover(t, "serve", "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
	oldChild := childOf(t, old, addr)
	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan *load.Result, 1)
	go func() { loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: 2}) }()

	bad := startTakeover(t, "listenonly", "--ready-timeout", "2s", "--bind-timeout", "1s", "--kill-timeout", "500ms", "--port", port, "--", self, addr)
	code := bad.wait(t)
	cancel()
	r := <-loaded
	if code != supervise.ExitNotReady {
		t.Errorf("takeover exited %d, want %d", code, supervise.ExitNotReady)
	}
	if s := bad.stderr.String(); !strings.Contains(s, "rolling back") || !strings.Contains(s, "no process of it was seen accepting") {
		t.Errorf("the log does not say what was rolled back and why:\n%s", s)
	}
	if !old.running() || testutil.ProcessGone(oldChild) {
		t.Fatal("the old server was stopped by a rolled-back swap")
	}
	if r.FailedRequests() != 0 {
		t.Errorf("%d of %d requests failed across the rollback (refused %d, reset %d)", r.FailedRequests(), r.Requests, r.Refused, r.Resets)
	}
	next := startTakeover(t, "serve", "--port", port, "--", self, addr)
	if code := old.wait(t); code != 0 {
		t.Fatalf("the old takeover exited %d after a good swap", code)
	}
	next.waitLog(t, "took over")
}

// TestReadyTimeoutAfterRebind: a rebind has stopped the old server at the
// bind, so there is nothing to roll back to: the swap completes with a
// warning and the new server stays.
func TestReadyTimeoutAfterRebind(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	old := startTakeover(t, "serve", "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
	next := startTakeover(t, "listenonly", "--strategy", "rebind", "--ready-timeout", "2s", "--bind-timeout", "1s", "--kill-timeout", "500ms", "--port", port, "--", self, addr)
	if code := old.wait(t); code != 0 {
		t.Fatalf("the old takeover exited %d", code)
	}
	next.waitLog(t, "ready_by=timeout")
	if !strings.Contains(next.stderr.String(), "stays, and the swap completes") {
		t.Errorf("no warning that the swap completed unready:\n%s", next.stderr)
	}
	if !next.running() {
		t.Fatalf("the new takeover exited:\n%s", next.stderr)
	}
}

// TestLockWaitIsBounded: a takeover waiting for another takeover of the
// port says whom it waits for and gives up after --lock-timeout, exit 125.
func TestLockWaitIsBounded(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	slow := startTakeover(t, "listenonly", "--ready-timeout", "30s", "--port", port, "--", self, addr)
	for len(lookup(t, addr)) == 0 { // it has bound and listens, so it holds the lock
		time.Sleep(10 * time.Millisecond)
	}
	waiter := startTakeover(t, "serve", "--lock-timeout", "1s", "--port", port, "--", self, addr)
	if code := waiter.wait(t); code != supervise.ExitLauncher {
		t.Errorf("the waiting takeover exited %d, want %d", code, supervise.ExitLauncher)
	}
	s := waiter.stderr.String()
	for _, want := range []string{"waiting for another takeover", "takeover_pid=" + strconv.Itoa(slow.cmd.Process.Pid), "longer than --lock-timeout", "kill " + strconv.Itoa(slow.cmd.Process.Pid)} {
		if !strings.Contains(s, want) {
			t.Errorf("the waiting takeover's log lacks %q:\n%s", want, s)
		}
	}
	if !slow.running() {
		t.Error("the first takeover was disturbed by the one that gave up")
	}
}

// TestLockWaitIgnoresUSR1: a USR1 or USR2 (for the command) to a takeover
// still waiting for the port lock is ignored, with a warning; it used to
// end takeover with 128+N, the deploy lost (issue 28, item 12's review).
func TestLockWaitIgnoresUSR1(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	startTakeover(t, "listenonly", "--ready-timeout", "30s", "--port", port, "--", self, addr)
	for len(lookup(t, addr)) == 0 { // it has bound and listens, so it holds the lock
		time.Sleep(10 * time.Millisecond)
	}
	waiter := startTakeover(t, "serve", "--lock-timeout", "2s", "--port", port, "--", self, addr)
	waiter.waitLog(t, "waiting for another takeover")
	waiter.cmd.Process.Signal(syscall.SIGUSR1)
	waiter.waitLog(t, "ignored")
	waiter.cmd.Process.Signal(syscall.SIGUSR2)
	if code := waiter.wait(t); code != supervise.ExitLauncher {
		t.Errorf("the waiting takeover exited %d, want %d (its --lock-timeout):\n%s", code, supervise.ExitLauncher, waiter.stderr)
	}
}

// TestRunDirCleaned: the last takeover of a port removes its lock, record,
// socket and status record from the run directory.
func TestRunDirCleaned(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700) // takeover refuses a run directory others may enter
	t.Setenv("TAKEOVER_RUN_DIR", dir)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	first := startTakeover(t, "serve", "--port", port, "--", self, addr)
	first.waitLog(t, "took over")
	second := startTakeover(t, "serve", "--port", port, "--", self, addr)
	if code := first.wait(t); code != 0 {
		t.Fatalf("first exited %d", code)
	}
	second.waitLog(t, "via=unix-socket")
	if names := slices.DeleteFunc(dirNames(t, dir), func(n string) bool { return strings.HasPrefix(n, ".") }); len(names) != 4 { // not a status record's temporary file, there as it is written
		t.Errorf("while serving, the run directory holds %v, want the lock, the record, the launcher's socket and its status record", names)
	}
	second.cmd.Process.Signal(syscall.SIGTERM)
	second.wait(t)
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("after the last takeover, the run directory holds %v", names)
	}

	// A takeover whose command never became ready cleans up too.
	failed := startTakeover(t, "crash", "--port", port, "--", self, addr)
	if code := failed.wait(t); code != 3 {
		t.Errorf("the failed start exited %d, want the command's 3", code)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("after a failed start, the run directory holds %v", names)
	}
}

func dirNames(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestBlockingModeLeftToServers: the shared socket's O_NONBLOCK is the
// servers' own. An event loop that sets it itself after bind (asyncio, as
// uvicorn and redis do) keeps serving through handoffs, whichever handoff
// it is (an old rule flipped the flag back on every other one); a server
// blocking in accept(2) (Perl's IO::Socket) hands over to its own kind with
// the socket left blocking.
func TestBlockingModeLeftToServers(t *testing.T) {
	for _, tt := range []struct {
		name, tool string
		argv       func(port string) []string
		nonblock   bool
	}{
		{"asyncio", "python3", func(p string) []string { return []string{"python3", "testdata/asyncio_server.py", p} }, true},
		{"perl", "perl", func(p string) []string { return []string{"perl", "testdata/server.pl", p} }, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			testutil.RequireTool(t, tt.tool)
			port := testutil.FreePort(t)
			addr := "127.0.0.1:" + port
			args := append([]string{"--port", port, "--"}, tt.argv(port)...)
			cur := startTakeover(t, "", args...)
			testutil.WaitServing(t, addr)
			ctx, cancel := context.WithCancel(context.Background())
			loaded := make(chan *load.Result, 1)
			go func() { loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: 2}) }()
			for i := 1; i <= 4; i++ {
				next := startTakeover(t, "", args...)
				if code := cur.wait(t); code != 0 {
					cancel()
					t.Fatalf("swap %d: the old takeover exited %d:\n%s\nnew:\n%s", i, code, cur.stderr, next.stderr)
				}
				next.waitLog(t, "strategy=handoff")
				cur = next
				// Served by the new generation alone, after the old is gone.
				if _, err := testutil.Get(addr, "/"); err != nil {
					cancel()
					t.Fatalf("after handoff %d the server does not answer: %v\n%s", i, err, cur.stderr)
				}
			}
			cancel()
			r := <-loaded
			// A hang (an event loop blocked in accept) shows as timeouts;
			// a closed socket as refusals. asyncio 3.11 itself resets about
			// one connection in 10-20 swaps when its old process stops
			// while a new one serves the same socket (reproduced with two
			// asyncio processes and no takeover): logged, not failed.
			if r.Timeouts != 0 || r.Refused != 0 || r.FailedRequests() > r.Resets {
				t.Errorf("%d of %d requests failed (refused %d, reset %d, timeouts %d): %+v", r.FailedRequests(), r.Requests, r.Refused, r.Resets, r.Timeouts, r.Failures)
			}
			if r.Resets > 0 {
				t.Logf("%d of %d requests reset by the server", r.Resets, r.Requests)
			}
			child := childOf(t, cur, addr)
			flags := fdFlags(t, child, addr)
			if got := flags&syscall.O_NONBLOCK != 0; got != tt.nonblock {
				t.Errorf("O_NONBLOCK on the listener = %v, want %v (flags %o)", got, tt.nonblock, flags)
			}
		})
	}
}

// fdFlags returns the open flags of pid's fd for addr's listening socket.
func fdFlags(t *testing.T, pid int, addr string) int {
	t.Helper()
	ls := lookup(t, addr)
	for _, h := range ls[0].Holders {
		if h.PID == pid {
			flags, err := procfs.FS("/proc").FDFlags(pid, h.FD)
			if err != nil {
				t.Fatal(err)
			}
			return flags
		}
	}
	t.Fatalf("pid %d does not hold %s", pid, addr)
	return 0
}
