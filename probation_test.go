package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// Probation and rollback (--probation, --health, --canary), issue 31 items
// 2 and 3.

var pidInBody = regexp.MustCompile(`pid=0*(\d+)`)

// servedBy returns the pid a response of the helpers' servers names, or 0.
func servedBy(body string) int {
	m := pidInBody.FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// pidCounter sends requests to addr, each on a new connection, until
// stopped, and counts them by the pid that answered (0: failed).
type pidCounter struct {
	mu     sync.Mutex
	by     map[int]int
	first  string // the first failure
	cancel func()
	done   chan struct{}
}

func countPIDs(addr string) *pidCounter {
	ctx, cancel := context.WithCancel(context.Background())
	c := &pidCounter{by: map[int]int{}, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for ctx.Err() == nil {
			body, err := testutil.Get(addr, "/")
			c.mu.Lock()
			pid := 0
			if err == nil {
				pid = servedBy(body)
			} else if c.first == "" {
				c.first = err.Error()
			}
			c.by[pid]++
			c.mu.Unlock()
			time.Sleep(time.Millisecond)
		}
	}()
	return c
}

// stop stops the requests and returns the counts.
func (c *pidCounter) stop() map[int]int {
	c.cancel()
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.by
}

// serving returns the pid that answers a request to addr now.
func serving(t *testing.T, addr string) int {
	t.Helper()
	body, err := testutil.Get(addr, "/")
	if err != nil {
		t.Fatalf("GET %s: %v", addr, err)
	}
	return servedBy(body)
}

// readStatus reads a --status-file.
func readStatus(t *testing.T, path string) supervise.Status {
	t.Helper()
	var st supervise.Status
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &st) != nil {
		t.Fatalf("status file %s: %v (%q)", path, err, b)
	}
	return st
}

// TestProbationRollsBackACrash: takeover B replaces takeover A's server
// with a release that crashes 2 s after it took over, during a 10 s
// probation, under load. B steers new connections back to A's server,
// which was kept idle and never signalled: nothing is refused, at most
// the requests the crashed process held are lost, the same pid serves as
// before, B exits 123 saying "rolled back after", A serves on, and a later
// deploy replaces A as usual (its record was put back).
func TestProbationRollsBackACrash(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	healthApp(t, app, 200)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	a := startTakeover(t, "healthserve", "--port", port, "--kill-timeout", "2s", "--", app, addr)
	testutil.WaitServing(t, addr)
	old := serving(t, addr)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loaded := make(chan *load.Result, 1)
	go func() { loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: 2}) }()
	counts := countPIDs(addr)

	healthApp(t, app, 200, "TAKEOVER_TEST_CRASH_AFTER=2s")
	statusFile := filepath.Join(dir, "b.json")
	b := startTakeover(t, "healthserve", "--port", port, "--probation", "10s", "--kill-timeout", "2s",
		"--status-file", statusFile, "--", app, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A's log:\n%s\nB's log:\n%s", a.stderr, b.stderr)
		}
	})
	b.waitLog(t, "on probation")
	code := b.wait(t)
	time.Sleep(500 * time.Millisecond) // requests after the rollback
	by := counts.stop()
	cancel()
	res := <-loaded
	t.Logf("load: %d requests, %d refused, %d reset, %d failed otherwise; probes by pid: %v", res.Requests, res.Refused, res.Resets, res.Failed, by)

	if code != supervise.ExitRolledBack {
		t.Errorf("takeover B exited %d, want %d (rolled back)", code, supervise.ExitRolledBack)
	}
	log := b.stderr.String()
	if !regexp.MustCompile(`rolled back after [0-9.]+m?s: the new generation \(pid \d+\) exited`).MatchString(log) {
		t.Errorf("B's log does not say it rolled back after the crash")
	}
	if res.Refused != 0 || by[0] > 0 && strings.Contains(counts.first, "refused") {
		t.Errorf("%d requests refused (probes: %q), want 0", res.Refused, counts.first)
	}
	// The crashed process's requests in flight: at most one per client.
	if lost := res.FailedRequests() + by[0]; lost > 3 {
		t.Errorf("%d requests failed, want at most those in flight at the crash (3 clients)", lost)
	}
	newPIDs := 0
	for pid, n := range by {
		if pid != 0 && pid != old {
			newPIDs += n
		}
	}
	if newPIDs == 0 || by[old] == 0 {
		t.Errorf("probes by pid %v: want some answered by the new release before its crash and by the old %d", by, old)
	}
	if now := serving(t, addr); now != old {
		t.Errorf("pid %d serves after the rollback, want the old %d", now, old)
	}
	if !a.running() {
		t.Errorf("takeover A exited; it serves on after a rollback")
	}
	st := readStatus(t, statusFile)
	if st.LastRollback == nil || !strings.HasPrefix(st.LastRollback.Why, "rolled back after") || st.State != "rolled-back" {
		t.Errorf("B's status: state %q, last rollback %+v; want rolled-back and why", st.State, st.LastRollback)
	}

	// The next deploy replaces A as any deploy does.
	healthApp(t, app, 200)
	c := startTakeover(t, "healthserve", "--port", port, "--kill-timeout", "2s", "--", app, addr)
	c.waitLog(t, "took over")
	if code := a.wait(t); code != 0 {
		t.Errorf("takeover A exited %d when C replaced it, want 0", code)
	}
	if now := serving(t, addr); now == old || now == 0 {
		t.Errorf("after C's deploy pid %d serves, want C's server", now)
	}
}

// TestProbationHealthRollsBackReload: a reload whose release accepts but
// answers 500 on --health is rolled back after --health-failures checks;
// the old generation (same pid) serves on; `takeover reload` exits non-zero
// saying so; the status file says why; a good release then passes its
// probation, and the old one is stopped only after it.
func TestProbationHealthRollsBackReload(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	healthApp(t, app, 200)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	statusFile := filepath.Join(dir, "status.json")
	r := startTakeover(t, "healthserve", "--port", port, "--probation", "3s", "--health", "http://127.0.0.1:"+port+"/healthz",
		"--health-interval", "200ms", "--health-failures", "2", "--kill-timeout", "2s", "--status-file", statusFile, "--", app, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("takeover's log:\n%s", r.stderr)
		}
	})
	testutil.WaitServing(t, addr)
	old := serving(t, addr)

	counts := countPIDs(addr)
	healthApp(t, app, 500)
	out, code := runTakeoverCmd(t, nil, "reload", "--timeout", "60s", port)
	by := counts.stop()
	if code == 0 || !strings.Contains(out, "rolled back after") || !strings.Contains(out, "500 Internal Server Error") {
		t.Errorf("takeover reload of a release failing --health: exit %d, want non-zero, saying rolled back and the 500:\n%s", code, out)
	}
	t.Logf("bad release: %s; probes by pid: %v", strings.TrimSpace(out), by)
	if by[0] != 0 {
		t.Errorf("%d probes failed (first: %s), want 0", by[0], counts.first)
	}
	if now := serving(t, addr); now != old {
		t.Errorf("pid %d serves after the rollback, want the old generation %d", now, old)
	}
	st := readStatus(t, statusFile)
	if st.LastRollback == nil || !strings.Contains(st.LastRollback.Why, "--health") || st.State != "serving" || st.ChildPID != old {
		t.Errorf("status: state %q, child %d, last rollback %+v; want serving, %d, and --health's failure", st.State, st.ChildPID, st.LastRollback, old)
	}

	healthApp(t, app, 200)
	out, code = runTakeoverCmd(t, nil, "reload", "--timeout", "60s", port)
	if code != 0 {
		t.Fatalf("takeover reload of a good release: exit %d:\n%s", code, out)
	}
	log := r.stderr.String()
	if i, j := strings.LastIndex(log, "passed its probation"), strings.LastIndex(log, "on probation"); i < 0 || i < j {
		t.Errorf("reload returned 0 before the probation passed")
	}
	testutil.WaitGone(t, old)
	if now := serving(t, addr); now == old || now == 0 {
		t.Errorf("after the good release pid %d serves", now)
	}
}

// TestProbationCanary: with --canary 10, about a tenth of new connections
// reach the release on probation and the rest the old server.
func TestProbationCanary(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	healthApp(t, app, 200)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	a := startTakeover(t, "healthserve", "--port", port, "--kill-timeout", "2s", "--", app, addr)
	testutil.WaitServing(t, addr)
	old := serving(t, addr)
	b := startTakeover(t, "healthserve", "--port", port, "--probation", "20s", "--canary", "10", "--kill-timeout", "2s", "--", app, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("B's log:\n%s", b.stderr)
		}
	})
	b.waitLog(t, "on probation")
	// The old processes to stop: takeover A, which stops its server.
	if out, code := runTakeoverCmd(t, nil, "status", port); code != 0 || !strings.Contains(out, "probation: old pids ["+strconv.Itoa(a.cmd.Process.Pid)+"] idle beside it, canary 10 %") {
		t.Errorf("takeover status %s during the probation: exit %d, want 0 and the probation:\n%s", port, code, out)
	}
	by := map[int]int{}
	const n = 1000
	for range n {
		body, err := testutil.Get(addr, "/")
		if err != nil {
			t.Fatalf("during the canary: %v", err)
		}
		by[servedBy(body)]++
	}
	if strings.Contains(b.stderr.String(), "passed its probation") {
		t.Fatalf("the probation ended before the requests did; make it longer")
	}
	share := float64(n-by[old]) / n
	t.Logf("--canary 10: %d of %d new connections reached the new release (%.1f %%): %v", n-by[old], n, 100*share, by)
	if share < 0.06 || share > 0.14 { // 10 % ± 4.2 binomial standard deviations
		t.Errorf("the new release got %.1f %% of new connections, want 10 %%", 100*share)
	}
	if !a.running() {
		t.Errorf("takeover A exited during the canary; its server is to stay until the probation ends")
	}
}

// TestDeployProbation: `takeover deploy --probation` of a release that
// crashes during its probation exits 123, saying it was rolled back and
// why; what served serves on. Of a good release it exits 0 only once the
// probation has passed.
func TestDeployProbation(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	healthApp(t, app, 200)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	startTakeover(t, "healthserve", "--port", port, "--kill-timeout", "2s", "--", app, addr)
	testutil.WaitServing(t, addr)
	old := serving(t, addr)

	healthApp(t, app, 200, "TAKEOVER_TEST_CRASH_AFTER=1s")
	logFile := filepath.Join(dir, "deploy.log")
	helper := []string{"TAKEOVER_TEST_HELPER=healthserve"}
	out, code := runTakeoverCmd(t, helper, "deploy", "--timeout", "60s", "--log", logFile,
		"--port", port, "--probation", "10s", "--kill-timeout", "2s", "--", app, addr)
	if m := deployedPID.FindStringSubmatch(out); m != nil {
		pid, _ := strconv.Atoi(m[1])
		t.Cleanup(func() { stopDeployed(t, pid) })
	}
	if code != supervise.ExitRolledBack || !strings.Contains(out, "failed its --probation") || !strings.Contains(out, "rolled back after") {
		t.Errorf("deploy of a release that crashes on probation: exit %d, want %d, the probation and why:\n%s", code, supervise.ExitRolledBack, out)
	}
	if now := serving(t, addr); now != old {
		t.Errorf("pid %d serves after the rollback, want %d", now, old)
	}

	healthApp(t, app, 200)
	out, code = runTakeoverCmd(t, helper, "deploy", "--timeout", "60s", "--log", logFile,
		"--port", port, "--probation", "2s", "--kill-timeout", "2s", "--", app, addr)
	if m := deployedPID.FindStringSubmatch(out); m != nil {
		pid, _ := strconv.Atoi(m[1])
		t.Cleanup(func() { stopDeployed(t, pid) })
	}
	b, _ := os.ReadFile(logFile)
	if code != 0 || !strings.Contains(string(b), "passed its probation") {
		t.Errorf("deploy of a good release: exit %d, want 0 once its probation passed (log has it: %v):\n%s", code, strings.Contains(string(b), "passed its probation"), out)
	}
	testutil.WaitGone(t, old)
}

// TestProbationOldExits: the old server going away during the probation
// (its takeover stopped) ends the probation: the new generation is kept,
// and the log says so.
func TestProbationOldExits(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	app := filepath.Join(t.TempDir(), "app")
	healthApp(t, app, 200)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	a := startTakeover(t, "healthserve", "--port", port, "--kill-timeout", "2s", "--", app, addr)
	testutil.WaitServing(t, addr)
	b := startTakeover(t, "healthserve", "--port", port, "--probation", "60s", "--kill-timeout", "2s", "--", app, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("B's log:\n%s", b.stderr)
		}
	})
	b.waitLog(t, "on probation")
	nw := serving(t, addr)
	a.cmd.Process.Signal(syscall.SIGTERM) // the test's own child, not reaped yet
	a.wait(t)
	b.waitLog(t, "the old server exited during probation")
	if !b.running() || strings.Contains(b.stderr.String(), "rolled back") {
		t.Fatalf("B rolled back or exited when the old server went away")
	}
	if now := serving(t, addr); now != nw {
		t.Errorf("pid %d serves, want the new generation %d", now, nw)
	}
}

// TestProbationHUP: a HUP during a probation ends it as passed (the
// generation before is stopped, once), and the next release goes on
// probation with the one that was on probation as its old server.
func TestProbationHUP(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	app := filepath.Join(t.TempDir(), "app")
	healthApp(t, app, 200)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	r := startTakeover(t, "healthserve", "--port", port, "--probation", "60s", "--kill-timeout", "2s", "--", app, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("takeover's log:\n%s", r.stderr)
		}
	})
	testutil.WaitServing(t, addr)
	first := serving(t, addr)
	r.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog(t, "on probation")
	second := serving(t, addr)
	r.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog(t, "probation cut short")
	testutil.WaitGone(t, first)
	for deadline := time.Now().Add(30 * time.Second); strings.Count(r.stderr.String(), "on probation") < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the second reload did not go on probation")
		}
	}
	third := serving(t, addr)
	if third == second || third == first || third == 0 {
		t.Errorf("after the second HUP pid %d serves; want a third generation (first %d, second %d)", third, first, second)
	}
	if err := syscall.Kill(second, 0); err != nil {
		t.Errorf("the second generation (pid %d), the old server of the third's probation, is gone: %v", second, err)
	}
	if n := strings.Count(r.stderr.String(), "rolled back"); n != 0 {
		t.Errorf("%d rollbacks in the log, want none", n)
	}
}
