package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// Probation and rollback with real servers (issue 31, "How it is judged"):
// nginx, uvicorn, a java -jar and redis, each under takeover and under load
// from the host, as in TestRealServers (its realHarness starts, replaces and
// loads them).

// A probServer is a real server and how to make a release of it whose
// /healthz answers 500 while everything else it serves is fine.
type probServer struct {
	realServer
	// unwell returns the command line of such a release (nil: the server
	// does not speak HTTP).
	unwell func(t *testing.T, port, dir string) []string
}

func probationServers() []probServer {
	wd, _ := os.Getwd()
	real := filepath.Join(wd, "testdata", "real")
	var ps []probServer
	for _, s := range realServers() {
		switch s.name {
		case "nginx":
			s.argv = func(t *testing.T, port, dir string) []string {
				return nginxRelease(t, real, port, dir, "nginx.conf", "")
			}
			ps = append(ps, probServer{s, func(t *testing.T, port, dir string) []string {
				return nginxRelease(t, real, port, dir, "nginx-unwell.conf", "location = /healthz { return 500; }")
			}})
		case "uvicorn":
			argv := s.argv
			ps = append(ps, probServer{s, func(t *testing.T, port, dir string) []string {
				return append([]string{"env", "TAKEOVER_TEST_HEALTHZ=500"}, argv(t, port, dir)...)
			}})
		case "redis":
			ps = append(ps, probServer{s, nil})
		}
	}
	jar := realServer{
		name: "java-jar", need: []string{"java", "javac", "jar"}, signal: "TERM", proto: "http", drains: true,
		argv: func(t *testing.T, port, dir string) []string {
			return []string{"java", "-Djava.net.preferIPv4Stack=true", "-jar", drainJar(t, wd, dir), port}
		},
	}
	ps = append(ps, probServer{jar, func(t *testing.T, port, dir string) []string {
		return []string{"java", "-Djava.net.preferIPv4Stack=true", "-Dhealthz=500", "-jar", drainJar(t, wd, dir), port}
	}})
	return ps
}

// nginxRelease writes testdata/real/nginx.conf as conf in dir, its answer
// naming the worker's pid, with extra in its server block, and returns
// nginx's command line for it.
func nginxRelease(t *testing.T, real, port, dir, conf, extra string) []string {
	t.Helper()
	path := filepath.Join(dir, conf)
	fillTemplate(t, filepath.Join(real, "nginx.conf"), path, port, dir)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), `return 200 "ok nginx\n";`, `return 200 "ok nginx pid=$pid\n";`, 1)
	s = strings.Replace(s, "location / {", extra+"\n        location / {", 1)
	if !strings.Contains(s, "pid=$pid") || !strings.Contains(s, extra) {
		t.Fatalf("testdata/real/nginx.conf changed: cannot make %s of it", conf)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", path, "-g", "daemon off;"}
}

// drainJar builds testdata/DrainServer.java into dir/app.jar, once, and
// returns its path.
func drainJar(t *testing.T, wd, dir string) string {
	t.Helper()
	jar := filepath.Join(dir, "app.jar")
	if _, err := os.Stat(jar); err == nil {
		return jar
	}
	classes := filepath.Join(dir, "classes")
	for _, argv := range [][]string{
		{"javac", "-d", classes, filepath.Join(wd, "testdata", "DrainServer.java")},
		{"jar", "--create", "--file", jar, "--main-class", "DrainServer", "-C", classes, "."},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	return jar
}

const (
	probCrashProbation = 10 * time.Second
	probCrashAfter     = 2 * time.Second
	probGoodProbation  = 3 * time.Second
	probCanary         = 10 // percent
	probCanaryRequests = 1000
	// probLoadWorkers is how many requests the harness's load has in
	// flight at most: all a crash may lose.
	probLoadWorkers = 2
)

// A probFigure is what the load saw in one case.
type probFigure struct {
	server, kase string
	r            *load.Result
	outcome      string
}

var rolledBackAfter = regexp.MustCompile(`rolled back after ([0-9.]+m?s)`)

// TestProbationRealServers: for each real server, under load from the host,
// (1) a release whose server process crashes (SIGKILL, as the OOM killer
// does; nginx's workers live on) 2 s after it took the traffic, during a
// 10 s probation, is rolled back: nothing refused, no request lost but those
// sent before the crash (at most one per client), the old takeover's
// server, the same process as before, serves on, the new takeover exits
// 123, and nothing of the release is left; (2) with --canary 10, 6 to 14 %
// of 1000 new connections reach the release, the rest the old server, and
// its crash is rolled back as in (1); (3) for the HTTP servers, a release
// whose health URL answers 500 is never given traffic with --ready (exit
// 124), and is rolled back from its probation with --health (exit 123), no
// request failed either way; (4) a good release passes a 3 s probation, and
// the old server is stopped only after it.
func TestProbationRealServers(t *testing.T) {
	takeoverBin(t)
	var figs []probFigure
	for _, srv := range probationServers() {
		t.Run(srv.name, func(t *testing.T) {
			srv.skipUnlessInstalled(t)
			figs = append(figs, testProbationReal(t, srv)...)
		})
	}
	var b strings.Builder
	for _, f := range figs {
		fmt.Fprintf(&b, "\n%-9s %-20s %6d requests, %d failed (%d refused, %d reset, %d timeouts, %d other); %s",
			f.server, f.kase, f.r.Requests, f.r.FailedRequests(), f.r.Refused, f.r.Resets, f.r.Timeouts, f.r.Failed, f.outcome)
	}
	t.Logf("figures:%s", b.String())
}

func testProbationReal(t *testing.T, srv probServer) []probFigure {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	dir := t.TempDir()
	procs := trackProcesses(t)
	port := testutil.FreePort(t)
	h := &realHarness{t: t, srv: srv.realServer, addr: "127.0.0.1:" + port, bound: 30 * time.Second}
	good := srv.argv(t, port, dir)
	h.argv = good
	h.extra = []string{"--probation", probCrashProbation.String()} // for its HUP reload
	h.cur = h.start()
	h.awaitSwapLine(h.cur, 1)
	h.awaitAnswer("the first start")
	old := h.serverOf(h.cur)
	var figs []probFigure
	// each runs one case under a load of its own, from before its
	// takeover starts to realQuietRequests after it is decided. run
	// returns the case's outcome and, if it crashed the release, when.
	each := func(kase string, run func() (string, time.Time)) {
		h.load = startRealLoad(t, srv.proto, h.addr)
		h.awaitRequests("the case before")
		ev := swapEvent{what: kase, began: time.Now()}
		outcome, crashAt := run()
		h.awaitAnswer(kase)
		ev.end = time.Now()
		h.events = append(h.events, ev)
		h.awaitRequests(kase)
		r := h.load.stop(t)
		figs = append(figs, probFigure{srv.name, kase, r, outcome})
		t.Logf("%s: %d requests, %d failed (%d refused, %d reset, %d timeouts, %d other); %s",
			kase, r.Requests, r.FailedRequests(), r.Refused, r.Resets, r.Timeouts, r.Failed, outcome)
		h.logFailures(r)
		if r.Refused > 0 || r.Timeouts > 0 {
			t.Errorf("%s: %d refused and %d timed out, want 0", kase, r.Refused, r.Timeouts)
		}
		// A crash loses what the crashed server held: requests sent
		// before it, at most one per client of the load.
		if lost := r.FailedRequests(); lost > 0 && crashAt.IsZero() || lost > probLoadWorkers {
			t.Errorf("%s: %d of %d requests failed", kase, lost, r.Requests)
		}
		for _, f := range r.Failures {
			if !crashAt.IsZero() && f.At.After(crashAt) {
				t.Errorf("%s: a request sent %v after the crash failed (%s: %s): the crashed release did not hold it",
					kase, f.At.Sub(crashAt).Round(time.Microsecond), f.Kind, f.Err)
			}
		}
	}

	// crash SIGKILLs the server process of b, a release on probation
	// (nginx's master: its workers live on, orphaned), and returns when it
	// was dead (crashProcess). b is rolled back and exits 123, and nothing
	// of the release outlives it.
	crash := func(b *tkRun) time.Time {
		crashed := h.serverOf(b)
		release := treeOf(b.cmd.Process.Pid)
		crashAt := crashProcess(crashed)
		code := b.wait(t)
		h.checkRolledBack(b, code, supervise.ExitRolledBack, old, "exited")
		if left := awaitGone(release, 5*time.Second); len(left) > 0 {
			t.Errorf("the rolled-back release left running after its takeover exited: %s", procList(left))
		}
		return crashAt
	}

	// 1. A release that crashes 2 s into its probation.
	each(fmt.Sprintf("crash at %v of %v", probCrashAfter, probCrashProbation), func() (string, time.Time) {
		h.extra = []string{"--probation", probCrashProbation.String()}
		b := h.start()
		b.waitLog(t, "on probation")
		if got, want := h.servingPID(), h.serverOf(b).PID; got != want {
			t.Errorf("on probation, pid %d answers, want the new release's %d: it took the traffic", got, want)
		}
		time.Sleep(probCrashAfter)
		crashAt := crash(b)
		return rollbackOutcome(b, exitCodeOf(b)), crashAt
	})

	// 1b. The same for a HUP reload of the first takeover, which serves
	// on with its old generation.
	each(fmt.Sprintf("HUP, crash at %v of %v", probCrashAfter, probCrashProbation), func() (string, time.Time) {
		a := h.cur
		n := strings.Count(a.stderr.String(), "rolled back after")
		a.cmd.Process.Signal(syscall.SIGHUP)
		a.waitLogCount(t, "on probation", strings.Count(a.stderr.String(), "on probation")+1)
		var rel procKey
		for _, p := range treeOf(a.cmd.Process.Pid) {
			if _, ppid, _, _ := statOf(p.PID); ppid == a.cmd.Process.Pid && p != old {
				rel = p
			}
		}
		if rel.PID == 0 {
			t.Fatalf("no new generation beside the old server %d: %s", old.PID, procList(treeOf(a.cmd.Process.Pid)))
		}
		if got := h.servingPID(); got != rel.PID {
			t.Errorf("on probation, pid %d answers, want the new generation's %d", got, rel.PID)
		}
		time.Sleep(probCrashAfter)
		release := append(treeOf(rel.PID), rel)
		crashAt := crashProcess(rel)
		a.waitLogCount(t, "rolled back after", n+1)
		if left := awaitGone(release, realKillTimeout+10*time.Second); len(left) > 0 {
			t.Errorf("the rolled-back generation left running: %s", procList(left))
		}
		if !a.running() || !old.alive() {
			t.Fatalf("after the rollback of its reload, takeover runs: %v, its old server %d: %v\n%s", a.running(), old.PID, old.alive(), logsOf(a))
		}
		if got := h.servingPID(); got != old.PID {
			t.Errorf("after the rollback pid %d answers, want the old generation's %d", got, old.PID)
		}
		return strings.Replace(rollbackOutcome(a, 0), "exit 0", "takeover serves on", 1), crashAt
	})

	// 2. A 10 % canary: about a tenth of new connections reach the
	// release, the rest the old server; then it crashes, and is rolled
	// back.
	each(fmt.Sprintf("canary %d %%, then crash", probCanary), func() (string, time.Time) {
		h.extra = []string{"--probation", "60s", "--canary", strconv.Itoa(probCanary)}
		b := h.start()
		b.waitLog(t, "on probation")
		canary := h.serverOf(b).PID
		by := map[int]int{}
		for range probCanaryRequests {
			by[h.servingPID()]++
		}
		share := float64(by[canary]) / probCanaryRequests
		t.Logf("--canary %d: %d of %d new connections reached the release (%.1f %%), %d the old server, %d others",
			probCanary, by[canary], probCanaryRequests, 100*share, by[old.PID], probCanaryRequests-by[canary]-by[old.PID])
		// 10 % ± 4.2 binomial standard deviations (TestProbationCanary's).
		if share < 0.06 || share > 0.14 || by[canary]+by[old.PID] != probCanaryRequests {
			t.Errorf("--canary %d: the release got %.1f %% of new connections, want %d %%; by pid: %v", probCanary, 100*share, probCanary, by)
		}
		crashAt := crash(b)
		return fmt.Sprintf("%.1f %% to the canary; %s", 100*share, rollbackOutcome(b, exitCodeOf(b))), crashAt
	})

	health := "http://" + h.addr + "/healthz"
	if srv.unwell != nil {
		// 3. A release whose health URL answers 500: with --ready, it is
		// never given traffic; with --health, it is rolled back from its
		// probation.
		each("--ready answers 500", func() (string, time.Time) {
			// --ready-timeout must be longer than --bind-timeout, and
			// that than --kill-timeout (the harness's 10s).
			h.extra = []string{"--ready", health, "--kill-timeout", "2s", "--bind-timeout", "3s", "--ready-timeout", "4s"}
			h.argv = srv.unwell(t, port, dir)
			defer func() { h.argv = good }()
			b := h.start()
			code := b.wait(t)
			h.all = slices.DeleteFunc(h.all, func(r *tkRun) bool { return r == b }) // h.stop wants a swap line of each
			if swapLines(b) > 0 {
				t.Errorf("--ready answers 500, yet the release took over\n%s", logsOf(b))
			}
			h.checkRolledBack(b, code, supervise.ExitNotReady, old, "500")
			return fmt.Sprintf("never took over, exit %d", code), time.Time{}
		})
		each("--health answers 500", func() (string, time.Time) {
			h.extra = []string{"--probation", probCrashProbation.String(), "--health", health, "--health-interval", "200ms", "--health-failures", "2"}
			h.argv = srv.unwell(t, port, dir)
			defer func() { h.argv = good }()
			b := h.start()
			b.waitLog(t, "rolled back after")
			// Steered back at once, while the release is being stopped.
			if got := h.servingPID(); got != old.PID {
				t.Errorf("as the release was rolled back, pid %d answered, want the old server's %d", got, old.PID)
			}
			code := b.wait(t)
			h.checkRolledBack(b, code, supervise.ExitRolledBack, old, "500")
			return rollbackOutcome(b, code), time.Time{}
		})
	}

	// 4. A good release passes its probation; the old server is stopped
	// after it, not before.
	each(fmt.Sprintf("good, %v probation", probGoodProbation), func() (string, time.Time) {
		h.extra = []string{"--probation", probGoodProbation.String()}
		if srv.unwell != nil {
			h.extra = append(h.extra, "--health", health, "--health-interval", "200ms")
		}
		prev, prevTree := h.cur, treeOf(h.cur.cmd.Process.Pid)
		b := h.start()
		b.waitLog(t, "on probation")
		if !old.alive() {
			t.Errorf("the old server %d was stopped before the probation began", old.PID)
		}
		select {
		case <-prev.exited:
		case <-time.After(probGoodProbation + realKillTimeout + 20*time.Second):
			t.Fatalf("the old takeover did not exit after the probation\n%s", logsOf(prev, b))
		}
		if !strings.Contains(b.stderr.String(), "passed its probation") {
			t.Errorf("the old takeover exited before the new release passed its probation\n%s", logsOf(prev, b))
		}
		if c := exitCodeOf(prev); c != 0 {
			t.Errorf("the old takeover exited %d after the probation, want 0", c)
		}
		h.awaitGone("the old server after the probation", prevTree, prev, b)
		h.cur = b
		h.awaitAnswer("the good release")
		if got, want := h.servingPID(), h.serverOf(b).PID; got != want {
			t.Errorf("after the probation pid %d answers, want the new release's %d", got, want)
		}
		return "passed; the old server stopped after it", time.Time{}
	})

	h.stop()
	procs.checkNoneLeft(t, 20*time.Second)
	return figs
}

// crashProcess SIGKILLs p and returns when it was dead: it holds nothing
// more, and every request it lost was sent before.
func crashProcess(p procKey) time.Time {
	p.kill()
	for deadline := time.Now().Add(10 * time.Second); p.alive() && time.Now().Before(deadline); {
		time.Sleep(100 * time.Microsecond)
	}
	return time.Now()
}

// rollbackOutcome says how the takeover b ended.
func rollbackOutcome(b *tkRun, code int) string {
	m := rolledBackAfter.FindStringSubmatch(b.stderr.String())
	if m == nil {
		return fmt.Sprintf("exited %d, not rolled back", code)
	}
	return fmt.Sprintf("rolled back after %s, exit %d", m[1], code)
}

// checkRolledBack checks that the takeover b was rolled back, exiting
// want, with why in its log's line that says so, and that the current
// takeover and its server old serve on.
func (h *realHarness) checkRolledBack(b *tkRun, code, want int, old procKey, why string) {
	t := h.t
	t.Helper()
	if code != want {
		t.Errorf("the new takeover exited %d, want %d (rolled back)\n%s", code, want, logsOf(h.cur, b))
	}
	said := regexp.MustCompile(`(?m)^.*(rolled back after|rolling back).*$`).FindString(b.stderr.String())
	if !strings.Contains(said, why) {
		t.Errorf("the new takeover's log does not say it rolled back because its server %s: %q", why, said)
	}
	if !h.cur.running() {
		t.Fatalf("the old takeover exited; it serves on after a rollback\n%s", logsOf(h.cur, b))
	}
	if !old.alive() {
		t.Errorf("the old server %d is gone after the rollback", old.PID)
	}
	if got := h.servingPID(); got != old.PID {
		t.Errorf("after the rollback pid %d answers, want the old server's %d", got, old.PID)
	}
}

// serverOf returns the server process r runs: its one child.
func (h *realHarness) serverOf(r *tkRun) procKey {
	h.t.Helper()
	var kids []procKey
	for _, p := range treeOf(r.cmd.Process.Pid) {
		if _, ppid, _, err := statOf(p.PID); err == nil && ppid == r.cmd.Process.Pid {
			kids = append(kids, p)
		}
	}
	if len(kids) != 1 {
		h.t.Fatalf("takeover %d runs %d processes, want its server alone: %s", r.cmd.Process.Pid, len(kids), procList(kids))
	}
	return kids[0]
}

// servingPID returns the server process (a takeover's child) that answers
// a request on a new connection now, or 0.
func (h *realHarness) servingPID() int {
	h.t.Helper()
	pid, err := answeringPID(h.srv.proto, h.addr)
	if err != nil {
		h.t.Errorf("which process answers: %v", err)
		return 0
	}
	var takeovers []int
	for _, r := range h.all {
		takeovers = append(takeovers, r.cmd.Process.Pid)
	}
	// nginx answers from a worker, whose parent is the server.
	for range 5 {
		_, ppid, _, err := statOf(pid)
		if err != nil {
			return 0
		}
		if slices.Contains(takeovers, ppid) {
			return pid
		}
		pid = ppid
	}
	return 0
}

var processID = regexp.MustCompile(`(?:pid=|process_id:)0*(\d+)`)

// answeringPID asks the server at addr, on a new connection, which process
// answers: the pid= of an HTTP answer, redis's INFO process_id.
func answeringPID(proto, addr string) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	req := "GET / HTTP/1.0\r\nHost: " + addr + "\r\n\r\n"
	if proto == "redis" {
		req = "INFO server\r\nQUIT\r\n"
	}
	if _, err := io.WriteString(conn, req); err != nil {
		return 0, err
	}
	b, err := io.ReadAll(conn)
	m := processID.FindSubmatch(b)
	if m == nil {
		return 0, fmt.Errorf("no pid in %.200q (%v)", b, err)
	}
	return strconv.Atoi(string(m[1]))
}
