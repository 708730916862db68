package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// Fencing under a small accept queue: python's ThreadingHTTPServer listens
// with a backlog of 5 (the standard library's default), and 50 clients
// keep it full. A handshake whose ACK the full queue dropped, or that was
// under way when the fence went up, stays a request socket of the old
// listener; the drain used to ignore those, and the old server's close
// reset them (ab: 135 of 12,028 failed over 10 swaps, 0 unfenced).
//
// Each run is in a network namespace of its own (takeover may set
// net.ipv4.tcp_migrate_req there, and the port is the namespace's), with
// the takeovers, python and the load all in it.

// A loadRun is what swapUnderLoad measured.
type loadRun struct {
	Requests, Failed, Refused, Resets, Timeouts, Other int
	Elapsed                                            time.Duration // of the load: from the first swap to the last
	SwapTime                                           time.Duration // mean: a new takeover started, to the old one's exit
	Lines                                              []string      // each swap's "took over" line
	Logs                                               string        // every takeover's stderr
	OtherErrors                                        []string      // what the clients saw of the failures counted in Other
}

func (r loadRun) throughput() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// lost counts the requests a swap can lose: refused, reset, or answered
// wrongly. A timeout (30s) is the small accept queue starving a client
// (its SYN or its ACK dropped again and again, retried with back-off),
// which happens unfenced as well (BenchmarkFencedSmallBacklog).
func (r loadRun) lost() int { return r.Refused + r.Resets + r.Other }

// checkFencedNoneLost logs the run's figures and fails t if a request was
// lost or a swap was not fenced.
func (r loadRun) checkFencedNoneLost(t *testing.T) {
	t.Helper()
	t.Logf("%d requests, %d failed (%d refused, %d reset, %d timed out) over %d swaps in %v; %.0f requests/s; swap %v",
		r.Requests, r.Failed, r.Refused, r.Resets, r.Timeouts, len(r.Lines), r.Elapsed.Round(time.Millisecond), r.throughput(), r.SwapTime.Round(time.Millisecond))
	if r.lost() > 0 || r.Requests == 0 {
		t.Errorf("%d of %d requests refused, reset or answered wrongly, want 0 (the others: %q)", r.lost(), r.Requests, r.OtherErrors)
	}
	for i, l := range r.Lines {
		if !strings.Contains(l, "fenced=true") {
			t.Errorf("swap %d was not fenced: %s", i+1, l)
		}
	}
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (a network namespace)")
	}
}

// inNetns runs argv in the network namespace ns.
func inNetns(ns string, argv ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", ns}, argv...)...)
}

// pythonBacklogServer is testdata/server.py, python's ThreadingHTTPServer
// with its default listen backlog of 5, on port.
func pythonBacklogServer(t testing.TB, port string) []string {
	t.Helper()
	testutil.RequireTool(t, "python3")
	py, err := filepath.Abs("testdata/server.py")
	if err != nil {
		t.Fatal(err)
	}
	return []string{"python3", py, port}
}

// swapUnderLoad starts takeover flags -- server in ns, then, under
// `takeover probe` with workers clients, replaces it swaps times with a
// new takeover each, one after another, each waiting for the one before to
// exit 0; swap i starts no sooner than i*every after the first (0: at
// once), and the run lasts at least swaps*every. wrap, if not nil, wraps
// each takeover's command line.
func swapUnderLoad(t testing.TB, ns string, flags, server []string, swaps, workers int, every time.Duration, wrap func([]string) []string) loadRun {
	t.Helper()
	bin := takeoverBin(t)
	argv := append(append([]string{bin}, flags...), "--")
	argv = append(argv, server...)
	if wrap != nil {
		argv = wrap(argv)
	}
	var logs []*tkRun
	start := func() *tkRun {
		cmd := inNetns(ns, argv...)
		cmd.Dir = t.TempDir() // python's cwd
		r := startRun(t, cmd)
		logs = append(logs, r)
		return r
	}
	allLogs := func() string {
		var b strings.Builder
		for i, r := range logs {
			fmt.Fprintf(&b, "--- takeover %d:\n%s", i, r.stderr)
		}
		return b.String()
	}
	cur := start()
	if err := awaitSwapLine(nil, cur, 1, 60*time.Second); err != nil {
		t.Fatalf("the first server: %v\n%s", err, allLogs())
	}
	addr := addrOfFlags(flags)
	var out bytes.Buffer
	// ab's timeout: with a backlog of 5 and 50 clients, SYNs are dropped
	// and retried after 1, 2 and 4s, fenced or not.
	probe := inNetns(ns, bin, "probe", "--addr", addr, "--workers", strconv.Itoa(workers), "--duration", "30m", "--timeout", "30s")
	probe.Stdout, probe.Stderr = &out, os.Stderr
	if err := probe.Start(); err != nil {
		t.Fatal(err)
	}
	probeDone := make(chan struct{})
	go func() { probe.Wait(); close(probeDone) }()
	t.Cleanup(func() {
		select {
		case <-probeDone:
		default:
			probe.Process.Signal(syscall.SIGINT) // the pidfd-backed os.Process: never another process
			<-probeDone
		}
	})
	time.Sleep(300 * time.Millisecond) // the clients connect (not a synchronization: the load only has to be on)

	var run loadRun
	began := time.Now()
	for i := range swaps {
		time.Sleep(time.Until(began.Add(time.Duration(i) * every)))
		t0 := time.Now()
		next := start()
		select {
		case <-cur.exited:
		case <-time.After(90 * time.Second):
			t.Fatalf("swap %d: the replaced takeover has not exited after 90s\n%s", i+1, allLogs())
		}
		run.SwapTime += time.Since(t0)
		if code := exitCodeOf(cur); code != 0 {
			t.Fatalf("swap %d: the replaced takeover exited %d, want 0\n%s", i+1, code, allLogs())
		}
		if err := awaitSwapLine(nil, next, 1, 30*time.Second); err != nil {
			t.Fatalf("swap %d: %v\n%s", i+1, err, allLogs())
		}
		run.Lines = append(run.Lines, regexpSwapLines.FindString(next.stderr.String()))
		cur = next
	}
	hold := time.Duration(swaps) * every // the last swap's slot, as the others'
	if swaps == 0 {
		hold = every // no swap: the load alone, for as long
	}
	time.Sleep(time.Until(began.Add(hold)))
	run.Elapsed = time.Since(began)
	run.SwapTime /= time.Duration(max(swaps, 1))
	probe.Process.Signal(syscall.SIGINT)
	select {
	case <-probeDone:
	case <-time.After(30 * time.Second):
		t.Fatal("takeover probe did not end 30s after SIGINT")
	}
	var res struct {
		Requests, Failed, Refused, Resets, Timeouts, Other int
		OtherErrors                                        []string `json:"other_errors"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("takeover probe's output %q: %v", out.String(), err)
	}
	run.Requests, run.Failed, run.Refused, run.Resets, run.Timeouts, run.Other = res.Requests, res.Failed, res.Refused, res.Resets, res.Timeouts, res.Other
	run.OtherErrors = res.OtherErrors
	run.Logs = allLogs()
	return run
}

// addrOfFlags is the --port of flags.
func addrOfFlags(flags []string) string {
	for i, f := range flags {
		if f == "--port" && i+1 < len(flags) {
			return flags[i+1]
		}
	}
	return ""
}

// TestFencedSmallBacklog: python's ThreadingHTTPServer, listen backlog 5,
// under 50 clients, replaced 10 times by new takeovers
// (--strategy handoff), fenced: 0 failed, every swap fenced, with
// net.ipv4.tcp_migrate_req turned on for each swap and put back to 0
// after. Then the same with the sysctl out of takeover's reach (a
// read-only /proc/sys: not root in the namespace, or a kernel before
// 5.14): the drain alone loses nothing either.
func TestFencedSmallBacklog(t *testing.T) {
	const setLine = "net.ipv4.tcp_migrate_req=1 in this network namespace"
	for _, tc := range []struct {
		name string
		set  bool // takeover can set the sysctl
		wrap func([]string) []string
	}{
		{name: "migrate", set: true},
		{name: "drain-only", wrap: readOnlyMigrateReq},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := newNetns(t).name
			port := "8100" // the namespace's own: nothing else binds there
			addr := "127.0.0.1:" + port
			run := swapUnderLoad(t, ns, []string{"--strategy", "handoff", "--port", addr}, pythonBacklogServer(t, port), 10, 50, 0, tc.wrap)
			run.checkFencedNoneLost(t)
			if n := strings.Count(run.Logs, setLine); tc.set != (n == 10) {
				t.Errorf("%d swaps of 10 turned net.ipv4.tcp_migrate_req on (can set it: %v)", n, tc.set)
			}
			if got := sysctlIn(t, ns, "net.ipv4.tcp_migrate_req"); got != "0" {
				t.Errorf("net.ipv4.tcp_migrate_req in the namespace is %s after the run, want 0 as before", got)
			}
		})
	}
}

// TestFencedPassedSockets: the same load against a python server that
// takes its socket passed (--sockets systemd: LISTEN_FDS, fd 3) and dies
// at once on SIGTERM, as python's http.server does: each new takeover
// makes a socket of its own beside the old one, passes that, and fences
// the old server, which is stopped once it has finished what it accepted:
// 0 failed over 10 swaps, every one fenced. (Handed over unfenced, the
// same socket served both, and each stop cut the requests the old server
// had accepted.)
func TestFencedPassedSockets(t *testing.T) {
	ns := newNetns(t).name
	testutil.RequireTool(t, "python3")
	py, err := filepath.Abs("testdata/passed_server.py")
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:8100" // the namespace's own port
	run := swapUnderLoad(t, ns, []string{"--sockets", "systemd", "--strategy", "handoff", "--port", addr}, []string{"python3", py}, 10, 50, 0, nil)
	run.checkFencedNoneLost(t)
}

// readOnlyMigrateReq wraps argv so that it runs with
// /proc/sys/net/ipv4/tcp_migrate_req read-only (a private mount namespace).
func readOnlyMigrateReq(argv []string) []string {
	const f = "/proc/sys/net/ipv4/tcp_migrate_req"
	return append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount --bind -o ro "$0" "$0" && exec "$@"`, f}, argv...)
}

// sysctlIn reads a sysctl in the network namespace ns.
func sysctlIn(t testing.TB, ns, name string) string {
	t.Helper()
	out, err := inNetns(ns, "cat", "/proc/sys/"+strings.ReplaceAll(name, ".", "/")).Output()
	if err != nil {
		t.Fatalf("read %s in %s: %v", name, ns, err)
	}
	return strings.TrimSpace(string(out))
}

// BenchmarkFencedSmallBacklog: TestFencedSmallBacklog's load and swaps,
// fenced and with --fence off, side by side at the same number of swaps,
// and the same for passed sockets: requests, failed, lost (refused, reset
// or answered wrongly: what a swap can lose), timeouts, throughput over
// the swaps and the mean swap time (a new takeover started, to the old
// one's exit); and the same load as long with no swap, whose timeouts are
// the queue's own. scripts/bench.sh --only backlog prints its table.
//
//	go test -run '^$' -bench FencedSmallBacklog -benchtime 1x .
func BenchmarkFencedSmallBacklog(b *testing.B) {
	// One swap every 8s, fenced or not (an unfenced swap here takes 3 to 8s,
	// a fenced one about 1s): the same number of swaps in the same time, so
	// that requests/s compares the two, not how many swaps each fits in.
	const swaps, workers, every = 10, 50, 8 * time.Second
	testutil.RequireTool(b, "python3")
	passed, err := filepath.Abs("testdata/passed_server.py")
	if err != nil {
		b.Fatal(err)
	}
	type row struct {
		name string
		run  loadRun
	}
	var rows []row
	for _, tc := range []struct {
		name    string
		flags   []string
		passing bool
		noSwap  bool
	}{
		{name: "intercepted/fenced"},
		{name: "intercepted/unfenced", flags: []string{"--fence", "off"}},
		{name: "passed/fenced", flags: []string{"--sockets", "systemd"}, passing: true},
		{name: "passed/unfenced", flags: []string{"--sockets", "systemd", "--fence", "off"}, passing: true},
		// The same load for as long with no swap: the 30 s timeouts are
		// the five-place queue's (five SYNs dropped in a row), swaps or not.
		{name: "no-swap", noSwap: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ns := newNetns(b).name
			port := "8100" // the namespace's own
			addr := "127.0.0.1:" + port
			server := pythonBacklogServer(b, port)
			if tc.passing {
				server = []string{"python3", passed}
			}
			flags := append(append([]string{}, tc.flags...), "--strategy", "handoff", "--port", addr)
			var run loadRun
			n, hold := swaps, every
			if tc.noSwap {
				n, hold = 0, swaps*every
			}
			for range b.N {
				run = swapUnderLoad(b, ns, flags, server, n, workers, hold, nil)
			}
			b.ReportMetric(float64(run.Requests), "requests")
			b.ReportMetric(float64(run.Failed), "failed")
			b.ReportMetric(float64(run.lost()), "lost")
			b.ReportMetric(run.throughput(), "requests/s")
			b.ReportMetric(float64(run.SwapTime.Milliseconds()), "swap-ms")
			b.ReportMetric(0, "ns/op")
			rows = append(rows, row{tc.name, run})
		})
	}
	fmt.Printf("| python ThreadingHTTPServer, backlog 5, %d clients, %d swaps, one every %v | requests | failed | lost (refused, reset, wrong) | timeouts (30s) | requests/s | of unfenced | mean swap |\n", workers, swaps, every)
	fmt.Printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for i, r := range rows {
		ratio, swap := "1", r.run.SwapTime.Round(time.Millisecond).String()
		switch {
		case r.name == "no-swap":
			ratio, swap = "", ""
		case i%2 == 0 && i+1 < len(rows):
			ratio = fmt.Sprintf("%.2f", r.run.throughput()/rows[i+1].run.throughput())
		}
		fmt.Printf("| %s | %d | %d | %d | %d | %.0f | %s | %s |\n", r.name, r.run.Requests, r.run.Failed, r.run.lost(), r.run.Timeouts, r.run.throughput(), ratio, swap)
	}
}

// TestPassedSocketsFenced: with --sockets systemd and server-starter, a new
// takeover and a HUP reload each pass the new generation a socket of its
// own, made beside the old one and fenced (the swap line says
// fenced=true), where the same socket used to be handed over unfenced.
// No load: TestFencedPassedSockets is the one under load.
func TestPassedSocketsFenced(t *testing.T) {
	for _, tt := range []struct{ mode, helper string }{
		{supervise.SocketsSystemd, "activated"},
		{supervise.SocketsServerStarter, "starter"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			ns := newNetns(t).name
			self, _ := os.Executable()
			addr := "127.0.0.1:8100" // the namespace's own port
			start := func() *tkRun {
				cmd := inNetns(ns, takeoverBin(t), "--sockets", tt.mode, "--port", addr, "--", self, addr)
				cmd.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER="+tt.helper)
				return startRun(t, cmd)
			}
			first := start()
			first.waitLog(t, "strategy=fresh")
			second := start()
			if code := first.wait(t); code != 0 {
				t.Fatalf("the replaced takeover exited %d:\n%s", code, first.stderr)
			}
			second.waitLog(t, "took over")
			second.cmd.Process.Signal(syscall.SIGHUP)
			second.waitLogCount(t, `msg="took over"`, 2)
			lines := regexpSwapLines.FindAllString(second.stderr.String(), -1)
			for i, l := range lines {
				if !strings.Contains(l, "fenced=true") {
					t.Errorf("swap %d (%s) was not fenced: %s", i+1, []string{"a new takeover", "a HUP reload"}[min(i, 1)], l)
				}
			}
		})
	}
}

var regexpSwapLines = regexp.MustCompile(`msg="took over".*`)
