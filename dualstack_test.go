package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// dualSwaps is how many new takeovers replace nginx in
// TestDualStackNginx, under load; a HUP reload follows.
const dualSwaps = 4

// TestDualStackNginx: nginx's default site, `listen P; listen [::]:P;`
// (the second IPv6-only), is two sockets on one port that do not conflict.
// Run by takeover --port P in a network namespace of the test's own, it is
// replaced dualSwaps times by a new takeover and reloaded once by HUP while
// clients load it on 127.0.0.1 and [::1]: each swap hands both sockets over
// (two strategy=handoff in its line, no rebind, so the old nginx is stopped
// once the new one has both), every takeover replaced exits 0, and no
// request fails.
func TestDualStackNginx(t *testing.T) {
	for _, bin := range []string{"nginx", "ip"} {
		testutil.RequireTool(t, bin)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes a network namespace")
	}
	takeoverBin(t)
	ns := newNetns(t) // removed after every process below is gone
	procs := trackProcesses(t)
	port := testutil.FreePort(t)
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run") // this test's takeovers' own: port P of the host is another's
	if err := os.Mkdir(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	fillTemplate(t, filepath.Join(wd, "testdata", "real", "nginx-dualstack.conf"), filepath.Join(dir, "nginx.conf"), port, dir)
	args := []string{"--port", port, "--signal", "QUIT", "--kill-timeout", realKillTimeout.String(), "--",
		"nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;"}
	addrs := []string{"127.0.0.1:" + port, "[::1]:" + port}
	const bound = 30 * time.Second

	var all []*tkRun
	start := func() *tkRun {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns.name, takeoverBin(t)}, args...)...)
		cmd.Env = append(os.Environ(), "TAKEOVER_RUN_DIR="+runDir)
		r := startRun(t, cmd) // ip execs takeover: r's pid is takeover's
		all = append(all, r)
		t.Cleanup(func() {
			if t.Failed() && r.running() {
				for _, p := range treeOf(r.cmd.Process.Pid) {
					p.kill()
				}
			}
		})
		return r
	}
	answered := func(what string) {
		t.Helper()
		for _, addr := range addrs {
			deadline := time.Now().Add(10 * time.Second)
			for {
				kind, detail := ns.request(t, addr)
				if kind == "" {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: nginx does not answer on %s: %s: %s\n%s", what, addr, kind, detail, logsOf(all...))
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}

	cur := start()
	if err := awaitSwapLine(nil, cur, 1, bound); err != nil {
		t.Fatalf("%v\n%s", err, logsOf(all...))
	}
	answered("the first start")
	ld := ns.startLoad(t, addrs)
	ld.await(t, "the first start", all)

	var lines []string // the swap line of every swap by a new takeover or a reload
	for i := 1; i <= dualSwaps; i++ {
		what := fmt.Sprintf("swap %d", i)
		prev, prevTree := cur, treeOf(cur.cmd.Process.Pid)
		cur = start()
		if err := awaitSwapLine(nil, cur, 1, bound); err != nil {
			t.Fatalf("%s: %v\n%s", what, err, logsOf(prev, cur))
		}
		select {
		case <-prev.exited:
			if code := exitCodeOf(prev); code != 0 {
				t.Fatalf("%s: the replaced takeover exited %d, want 0\n%s", what, code, logsOf(prev, cur))
			}
		case <-time.After(realKillTimeout + 10*time.Second):
			t.Fatalf("%s: the replaced takeover still runs\n%s", what, logsOf(prev, cur))
		}
		if left := awaitGone(prevTree, realKillTimeout+10*time.Second); len(left) > 0 {
			t.Fatalf("%s: the old nginx still runs: %s\n%s", what, procList(left), logsOf(prev, cur))
		}
		answered(what)
		lines = append(lines, lastSwapLine(cur))
		ld.await(t, what, all)
	}
	oldGen := treeOf(cur.cmd.Process.Pid)
	cur.cmd.Process.Signal(syscall.SIGHUP)
	if err := awaitSwapLine(nil, cur, 2, bound); err != nil {
		t.Fatalf("the reload: %v\n%s", err, logsOf(cur))
	}
	if left := awaitGone(oldGen, realKillTimeout+10*time.Second); len(left) > 0 {
		t.Fatalf("the reload: the old nginx still runs: %s\n%s", procList(left), logsOf(cur))
	}
	answered("the reload")
	lines = append(lines, lastSwapLine(cur))
	ld.await(t, "the reload", all)

	results := ld.stop(t)
	stopAndCheck(t, cur, syscall.SIGQUIT, procs)

	for i, l := range lines {
		if l == "" {
			t.Errorf("swap %d: no swap line", i+1)
			continue
		}
		t.Logf("swap %d: %s", i+1, l[strings.Index(l, "msg="):])
		if n := strings.Count(l, "strategy=handoff"); n != 2 || strings.Contains(l, "strategy=rebind") {
			t.Errorf("swap %d: %d of nginx's 2 sockets handed over, want both (no rebind: that stops the old nginx before the new one has a socket): %s", i+1, n, l)
		}
	}
	// Each nginx master stopped (one per swap and the last) is sent QUIT
	// once: not once per socket it held.
	errLog, _ := os.ReadFile(filepath.Join(dir, "error.log"))
	quits := make(map[string]int)
	for _, l := range strings.Split(string(errLog), "\n") {
		if f := strings.Fields(l); len(f) > 4 && strings.Contains(l, "(SIGQUIT) received") {
			quits[f[3]]++ // "2026/12/05 10:30:00 [notice] PID#TID: signal 3 (SIGQUIT) received from ..."
		}
	}
	for master, n := range quits {
		if n > 1 {
			t.Errorf("nginx %s got QUIT %d times, want once", strings.TrimSuffix(master, ":"), n)
		}
	}
	t.Logf("QUIT received by %d nginx processes: %v", len(quits), quits)
	for i, r := range results {
		t.Logf("%s: %d requests, %d failed (%d refused, %d reset, %d timeouts, %d other)",
			addrs[i], r.Requests, r.FailedRequests(), r.Refused, r.Resets, r.Timeouts, r.Failed)
		for j, f := range r.Failures {
			if j == maxListed {
				t.Logf("... and %d more failures", len(r.Failures)-maxListed)
				break
			}
			t.Logf("%s: %s: %s", addrs[i], f.Kind, f.Err)
		}
		if r.OK == 0 || r.FailedRequests() > 0 {
			t.Errorf("%s: %d of %d requests failed through %d swaps and a reload, want none", addrs[i], r.FailedRequests(), r.Requests, dualSwaps)
		}
	}
}

// TestReplacedBeside: a new server that binds none of the old one's
// addresses (the old one on 127.0.0.1:P, the new one on [::1]:P, which do
// not conflict; or 0.0.0.0:P and an IPv6-only [::]:P) still replaces the
// earlier takeover of the port: that is stopped once the new server is
// ready, and exits 0, rather than serve on beside it for ever.
func TestReplacedBeside(t *testing.T) {
	if !testutil.HasIPv6() {
		t.Skip("no IPv6 on this machine")
	}
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	old := startTakeover(t, "serve", "--port", port, "--", self, "127.0.0.1:"+port)
	testutil.WaitServing(t, "127.0.0.1:"+port)
	next := startTakeover(t, "serve", "--port", port, "--", self, "[::1]:"+port)
	if code := old.wait(t); code != 0 {
		t.Fatalf("the old takeover exited %d, want 0\n%s", code, logsOf(old, next))
	}
	testutil.WaitServing(t, "[::1]:"+port)
	next.waitLog(t, "strategy=fresh")
	if s := next.stderr.String(); !strings.Contains(s, "old_pid=") {
		t.Errorf("the swap line does not name the old server:\n%s", s)
	}
}

// lastSwapLine returns r's last "took over" line.
func lastSwapLine(r *tkRun) string {
	var last string
	for _, l := range strings.Split(r.stderr.String(), "\n") {
		if strings.Contains(l, `msg="took over"`) {
			last = l
		}
	}
	return last
}

// A netns is a network namespace a test made with `ip netns add`, its
// loopback up; the test's cleanup removes it.
type netns struct{ name, path string }

func newNetns(t testing.TB) *netns {
	t.Helper()
	requireRoot(t)
	testutil.RequireTool(t, "ip")
	ns := &netns{name: "tkds-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)}
	ns.path = filepath.Join("/run/netns", ns.name)
	if out, err := exec.Command("ip", "netns", "add", ns.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
		}
	})
	if out, err := exec.Command("ip", "-n", ns.name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip -n %s link set lo up: %v: %s", ns.name, err, out)
	}
	return ns
}

// enter moves the calling goroutine's thread into the namespace, for
// good: the goroutine must stay locked to it and end with it, so that the
// thread ends too and no other goroutine runs in the namespace.
func (ns *netns) enter() error {
	runtime.LockOSThread()
	fd, err := unix.Open(ns.path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Setns(fd, unix.CLONE_NEWNET)
}

// request makes one HTTP request to addr from inside the namespace.
func (ns *netns) request(t *testing.T, addr string) (kind, detail string) {
	done := make(chan [2]string, 1)
	go func() {
		if err := ns.enter(); err != nil {
			done <- [2]string{"failed", "enter the namespace: " + err.Error()}
			return
		}
		k, d := load.Request(addr, load.HTTPRequest(addr, "/"), 5*time.Second)
		done <- [2]string{k, d}
	}()
	r := <-done
	return r[0], r[1]
}

// A nsLoad is closed-loop HTTP clients, two per address, run in the
// namespace until stopped (and at most realLoadMax).
type nsLoad struct {
	cancel context.CancelFunc
	done   []chan *load.Result
	n      []*atomic.Int64 // requests ended, per address
}

func (ns *netns) startLoad(t *testing.T, addrs []string) *nsLoad {
	ctx, cancel := context.WithTimeout(context.Background(), realLoadMax)
	l := &nsLoad{cancel: cancel}
	for _, addr := range addrs {
		done, n := make(chan *load.Result, 1), &atomic.Int64{}
		l.done, l.n = append(l.done, done), append(l.n, n)
		req := load.HTTPRequest(addr, "/")
		go func() {
			done <- load.RunWorkers(2, func() *load.Result {
				r := &load.Result{}
				if err := ns.enter(); err != nil { // RunWorkers's goroutine: it ends with the work
					r.Record(time.Now(), "failed", "enter the namespace: "+err.Error())
					return r
				}
				for ctx.Err() == nil && n.Load() < realLoadCap {
					t0 := time.Now()
					kind, detail := load.Request(addr, req, 5*time.Second)
					r.Record(t0, kind, detail)
					n.Add(1)
				}
				return r
			})
		}()
	}
	t.Cleanup(func() { l.stop(t) })
	return l
}

// await lets the load run until realQuietRequests more requests have ended
// on every address.
func (l *nsLoad) await(t *testing.T, what string, runs []*tkRun) {
	t.Helper()
	want := make([]int64, len(l.n))
	for i, n := range l.n {
		want[i] = n.Load() + realQuietRequests
	}
	deadline := time.Now().Add(30 * time.Second)
	for i, n := range l.n {
		for n.Load() < want[i] {
			if time.Now().After(deadline) {
				t.Fatalf("after %s: the load on address %d made %d of %d requests in 30s\n%s",
					what, i, n.Load()-want[i]+realQuietRequests, realQuietRequests, logsOf(runs...))
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// stop ends the load and returns what each address saw; nil once stopped.
func (l *nsLoad) stop(t *testing.T) []*load.Result {
	l.cancel()
	var rs []*load.Result
	for _, done := range l.done {
		select {
		case r, ok := <-done:
			if !ok {
				return nil
			}
			close(done)
			rs = append(rs, r)
		case <-time.After(30 * time.Second):
			t.Fatal("the load did not stop in 30s")
		}
	}
	return rs
}
