package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// The servers users put behind takeover, from Debian's packages, each
// started the way its users start it: in the foreground, on a port the test
// picks, on loopback only, with its configuration in testdata/real. The
// tests check what a user sees: every swap completes, the server answers
// after each, no request fails (a server that does not drain is fenced),
// nothing is left running.

// A realServer is one kind of third-party server.
type realServer struct {
	name   string
	need   []string // what must be installed, as scripts/deps.list names it
	signal string   // the stop signal on which it drains
	proto  string   // http, redis, memcached or udp (echo): what the load speaks
	// drains: the old server serves every connection it accepted before
	// it exits, so no request may fail while it is replaced. Otherwise
	// drops says which requests the server itself drops on its stop
	// signal (measured): those are logged, not failed on.
	drains bool
	drops  string
	// readyLine, if set, is what the server prints once it accepts: every
	// swap line must come after the new server's readyLine, or the old
	// server was stopped while the new one did not accept yet.
	readyLine string
	// startBound bounds one start, from a takeover's start to its swap
	// line; 20s if zero.
	startBound time.Duration
	// argv writes the server's configuration into dir, sets the
	// environment it needs (t.Setenv) and returns its command line.
	argv func(t *testing.T, port, dir string) []string
	// flags are more takeover flags its users give (--sockets systemd).
	flags []string
}

const (
	realSwaps   = 3 // replacements by a new takeover
	realReloads = 2 // HUP reloads
	// realKillTimeout is the takeovers' --kill-timeout: an old server that
	// does not drain in this time is SIGKILLed.
	realKillTimeout = 10 * time.Second
	// realLoadCap bounds the requests of one load run, whatever happens.
	realLoadCap = 400_000
	// realLoadMax bounds the time of one load run.
	realLoadMax = 3 * time.Minute
	// realQuietRequests is how many requests the load makes between swaps.
	realQuietRequests = 500
	// maxListed bounds the failures a test lists one by one.
	maxListed = 20
)

const uvicornDrops = "uvicorn's shutdown closes every connection with no request under way, among them ones it has just accepted and not yet read (h11_impl shutdown)"

func realServers() []realServer {
	wd, _ := os.Getwd()
	real := filepath.Join(wd, "testdata", "real")
	tomcatHome := "/usr/share/tomcat10"
	return []realServer{
		{
			name: "nginx", need: []string{"nginx"}, signal: "QUIT", proto: "http", drains: true,
			argv: func(t *testing.T, port, dir string) []string {
				fillTemplate(t, filepath.Join(real, "nginx.conf"), filepath.Join(dir, "nginx.conf"), port, dir)
				return []string{"nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;"}
			},
		},
		{
			name: "redis", need: []string{"redis-server"}, signal: "TERM", proto: "redis",
			drops: "redis shuts down in its serverCron, after the accepts of its last event-loop turn: a connection it accepted there is closed unread",
			argv: func(t *testing.T, port, dir string) []string {
				return []string{"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir}
			},
		},
		{
			name: "haproxy", need: []string{"haproxy"}, signal: "USR1", proto: "http", drains: true,
			argv: func(t *testing.T, port, dir string) []string {
				fillTemplate(t, filepath.Join(real, "haproxy.cfg"), filepath.Join(dir, "haproxy.cfg"), port, dir)
				return []string{"haproxy", "-W", "-f", filepath.Join(dir, "haproxy.cfg")}
			},
		},
		{
			name: "uvicorn", need: []string{"python3", "python3:uvicorn"}, signal: "TERM", proto: "http", drops: uvicornDrops,
			argv: func(t *testing.T, port, dir string) []string {
				return []string{testutil.PythonWith("uvicorn"), "-m", "uvicorn", "--no-access-log", "--app-dir", real,
					"--host", "127.0.0.1", "--port", port, "asgi_app:app"}
			},
		},
		{
			name: "uvicorn-workers", need: []string{"python3", "python3:uvicorn"}, signal: "TERM", proto: "http", drops: uvicornDrops,
			argv: func(t *testing.T, port, dir string) []string {
				return []string{testutil.PythonWith("uvicorn"), "-m", "uvicorn", "--no-access-log", "--workers", "2", "--app-dir", real,
					"--host", "127.0.0.1", "--port", port, "asgi_app:app"}
			},
		},
		{
			name: "gunicorn", need: []string{"gunicorn"}, signal: "TERM", proto: "http", drains: true,
			argv: func(t *testing.T, port, dir string) []string {
				return []string{"gunicorn", "--chdir", real, "--workers", "2", "--bind", "127.0.0.1:" + port, "wsgi_app:app"}
			},
		},
		{
			name: "puma", need: []string{"puma", "ruby"}, signal: "TERM", proto: "http", drains: true,
			argv: func(t *testing.T, port, dir string) []string {
				return []string{"puma", "--config", filepath.Join(real, "puma.rb"), "--bind", "tcp://127.0.0.1:" + port, filepath.Join(real, "config.ru")}
			},
		},
		{
			// gunicorn and puma take their sockets from systemd's
			// LISTEN_FDS where given (gunicorn also sends READY=1).
			name: "gunicorn-systemd", need: []string{"gunicorn"}, signal: "TERM", proto: "http", drains: true,
			flags: []string{"--sockets", "systemd"},
			argv: func(t *testing.T, port, dir string) []string {
				return []string{"gunicorn", "--chdir", real, "--workers", "2", "--bind", "127.0.0.1:" + port, "wsgi_app:app"}
			},
		},
		{
			name: "puma-systemd", need: []string{"puma", "ruby"}, signal: "TERM", proto: "http", drains: true,
			flags: []string{"--sockets", "systemd"},
			argv: func(t *testing.T, port, dir string) []string {
				return []string{"puma", "--config", filepath.Join(real, "puma.rb"), "--bind", "tcp://127.0.0.1:" + port, filepath.Join(real, "config.ru")}
			},
		},
		{
			name: "caddy", need: []string{"caddy"}, signal: "TERM", proto: "http", drains: true,
			argv: func(t *testing.T, port, dir string) []string {
				// caddy keeps its autosave.json and data under these.
				t.Setenv("XDG_CONFIG_HOME", dir)
				t.Setenv("XDG_DATA_HOME", dir)
				fillTemplate(t, filepath.Join(real, "Caddyfile"), filepath.Join(dir, "Caddyfile"), port, dir)
				return []string{"caddy", "run", "--config", filepath.Join(dir, "Caddyfile"), "--adapter", "caddyfile"}
			},
		},
		{
			name: "tomcat", need: []string{"java", filepath.Join(tomcatHome, "bin", "catalina.sh")}, signal: "TERM", proto: "http",
			drops: "Tomcat's connector pause wakes its acceptor, which closes the connection it accepted, and its stop closes connections whose request it has not read",
			// Tomcat listens at init, deploys its webapps, and only then
			// starts its acceptor (and says so).
			readyLine:  "Starting ProtocolHandler",
			startBound: 60 * time.Second,
			argv: func(t *testing.T, port, dir string) []string {
				catalinaBase(t, filepath.Join(real, "tomcat"), tomcatHome, dir, port)
				t.Setenv("CATALINA_HOME", tomcatHome)
				t.Setenv("CATALINA_BASE", dir)
				t.Setenv("CATALINA_TMPDIR", filepath.Join(dir, "temp"))
				return []string{filepath.Join(tomcatHome, "bin", "catalina.sh"), "run"}
			},
		},
		{
			name: "memcached", need: []string{"memcached"}, signal: "TERM", proto: "memcached",
			drops: "memcached has no draining stop: TERM and USR1 both close its connections at its next clock tick",
			argv: func(t *testing.T, port, dir string) []string {
				argv := []string{"memcached", "-p", port, "-U", "0", "-l", "127.0.0.1"}
				if os.Geteuid() == 0 {
					argv = append(argv, "-u", "root") // it refuses to run as root without
				}
				return argv
			},
		},
		{
			// The primary accepts and hands each connection to a worker
			// (round-robin, the default).
			name: "node-cluster", need: []string{"node"}, signal: "TERM", proto: "http", drains: true,
			argv: func(t *testing.T, port, dir string) []string {
				return []string{"node", filepath.Join(real, "cluster.js"), port}
			},
		},
		{
			// The workers accept from the shared socket themselves.
			name: "node-cluster-none", need: []string{"node"}, signal: "TERM", proto: "http", drains: true,
			argv: func(t *testing.T, port, dir string) []string {
				t.Setenv("NODE_CLUSTER_SCHED_POLICY", "none")
				return []string{"node", filepath.Join(real, "cluster.js"), port}
			},
		},
	}
}

// fillTemplate copies a configuration from testdata/real, with @PORT@ and
// @DIR@ filled in.
func fillTemplate(t *testing.T, src, dst, port, dir string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer("@PORT@", port, "@DIR@", dir).Replace(string(b))
	if err := os.WriteFile(dst, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// catalinaBase makes dir a CATALINA_BASE: server.xml and the ROOT webapp
// from testdata/real/tomcat, the rest of conf/ from the installed Tomcat.
func catalinaBase(t *testing.T, src, home, dir, port string) {
	t.Helper()
	for _, d := range []string{"conf", "logs", "temp", "work", "webapps/ROOT"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fillTemplate(t, filepath.Join(src, "conf", "server.xml"), filepath.Join(dir, "conf", "server.xml"), port, dir)
	fillTemplate(t, filepath.Join(src, "webapps", "ROOT", "index.html"), filepath.Join(dir, "webapps", "ROOT", "index.html"), port, dir)
	for _, f := range []string{"web.xml", "catalina.properties", "logging.properties"} {
		var b []byte
		var err error
		for _, conf := range []string{"/etc/tomcat10", filepath.Join(home, "etc")} {
			if b, err = os.ReadFile(filepath.Join(conf, f)); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("tomcat's %s: %v", f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, "conf", f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// skipUnlessInstalled skips the test when the server is not installed (see
// testutil.RequireTool): the one reason a real-server test may not run.
func (s realServer) skipUnlessInstalled(t *testing.T) {
	t.Helper()
	for _, bin := range s.need {
		testutil.RequireTool(t, bin)
	}
}

// TestRealServers: each real server under takeover, under load, is
// replaced realSwaps times by a new takeover and reloaded realReloads times
// by HUP. Every swap completes, the server answers after each, no request
// fails when the server drains, and nothing of it is left at the end.
func TestRealServers(t *testing.T) {
	takeoverBin(t) // build once, outside the first subtest's bounds
	for _, srv := range realServers() {
		t.Run(srv.name, func(t *testing.T) {
			srv.skipUnlessInstalled(t)
			testRealServer(t, srv)
		})
	}
}

func testRealServer(t *testing.T, srv realServer) {
	began := time.Now()
	dir := t.TempDir()
	procs := trackProcesses(t)
	port := testutil.FreePort(t)
	h := &realHarness{t: t, srv: srv, addr: "127.0.0.1:" + port, bound: srv.startBound, extra: srv.flags}
	if h.bound == 0 {
		h.bound = 20 * time.Second
	}
	h.argv = srv.argv(t, port, dir)

	h.cur = h.start()
	h.awaitSwapLine(h.cur, 1)
	h.awaitAnswer("the first start")
	t.Logf("%s started and took over in %v", srv.name, time.Since(began).Round(time.Millisecond))

	h.load = startRealLoad(t, srv.proto, h.addr)
	h.awaitRequests("the first start")
	// New takeovers and reloads by turns: new, HUP, new, HUP, new.
	for i, swaps, reloads := 1, 0, 0; swaps < realSwaps || reloads < realReloads; i++ {
		if i%2 == 1 && swaps < realSwaps || reloads == realReloads {
			swaps++
			h.replace(fmt.Sprintf("swap %d (new takeover %d)", i, swaps))
		} else {
			reloads++
			h.reload(fmt.Sprintf("swap %d (HUP reload %d)", i, reloads))
		}
	}
	r := h.load.stop(t)
	fenced := h.checkFenced()
	// A server that does not drain, unfenced, for comparison: what a
	// handoff loses without the fence is the server's own doing, logged.
	var unfenced *load.Result
	if srv.drops != "" {
		h.load = startRealLoad(t, srv.proto, h.addr)
		h.awaitRequests("the fenced handoffs")
		h.extra = append(srv.flags, "--fence", "off")
		for i := 1; i <= realSwaps; i++ {
			h.replace(fmt.Sprintf("unfenced swap %d", i))
		}
		unfenced = h.load.stop(t)
	}
	// And one rebind, under a load of its own: clients are refused from
	// the stop signal until the old server has closed its listener.
	h.load = startRealLoad(t, srv.proto, h.addr)
	h.awaitRequests("the handoffs")
	h.extra = append(srv.flags, "--strategy", "rebind")
	h.replace("a rebind by a new takeover")
	rb := h.load.stop(t)
	h.stop()
	procs.checkNoneLeft(t, 20*time.Second)
	t.Logf("%s, rebind: %d requests, %d failed (%d refused, %d reset), longest refused window %v; %s",
		srv.name, rb.Requests, rb.FailedRequests(), rb.Refused, rb.Resets, rb.LongestRefused().Round(time.Microsecond), swapLineOf(h.cur))

	t.Logf("%s: %d swaps in %v (%s); %d requests, %d failed (%d refused, %d reset, %d timeouts, %d other)",
		srv.name, len(h.events), time.Since(began).Round(time.Millisecond), h.timings(),
		r.Requests, r.FailedRequests(), r.Refused, r.Resets, r.Timeouts, r.Failed)
	if unfenced != nil {
		t.Logf("%s, %d swaps with --fence off: %d requests, %d failed (%d refused, %d reset, %d other): %s",
			srv.name, realSwaps, unfenced.Requests, unfenced.FailedRequests(), unfenced.Refused, unfenced.Resets, unfenced.Failed, srv.drops)
	}
	if r.OK == 0 {
		t.Errorf("no request succeeded")
	}
	h.logFailures(r)
	// Whatever the server does with connections it accepted, a handoff
	// never closes the socket (nothing is refused) and a server that took
	// over accepts (nothing times out).
	if r.Refused > 0 || r.Timeouts > 0 {
		t.Errorf("%d connections refused and %d requests timed out", r.Refused, r.Timeouts)
	}
	switch {
	case srv.drains && r.FailedRequests() > 0:
		t.Errorf("%d of %d requests failed though %s drains on %s", r.FailedRequests(), r.Requests, srv.name, srv.signal)
	case fenced && r.FailedRequests() > 0:
		t.Errorf("%d of %d requests failed though every handoff was fenced (without the fence: %s)", r.FailedRequests(), r.Requests, srv.drops)
	case r.FailedRequests() > 0:
		t.Logf("%d of %d requests failed, not counted against takeover: %s", r.FailedRequests(), r.Requests, srv.drops)
	}
}

// checkFenced checks that every handoff of a TCP port the command binds
// itself was fenced, and reports whether there was one: with socket
// passing (--sockets) the sockets are takeover's, and not fenced.
func (h *realHarness) checkFenced() bool {
	h.t.Helper()
	if h.srv.proto == "udp" || load.Network(h.addr) == "unix" || slices.Contains(h.extra, "--sockets") {
		return false
	}
	n := 0
	for _, r := range h.all {
		for _, l := range strings.Split(r.stderr.String(), "\n") {
			if !strings.Contains(l, `msg="took over"`) || !strings.Contains(l, "strategy=handoff") {
				continue
			}
			n++
			if !strings.Contains(l, "fenced=true") {
				h.t.Errorf("a handoff was not fenced: %s", l)
			}
		}
	}
	return n > 0
}

// A realHarness drives the takeovers of one server on one port.
type realHarness struct {
	t      *testing.T
	srv    realServer
	addr   string
	argv   []string
	bound  time.Duration
	cur    *tkRun   // the takeover that serves
	all    []*tkRun // every takeover started, in order
	events []swapEvent
	load   *realLoad
	extra  []string // flags for the takeovers started from now on
}

// A swapEvent is one swap: when it began, when its swap line was seen,
// when the old server was gone, when the new one had answered.
type swapEvent struct {
	what                       string
	began, ready, oldGone, end time.Time
}

func (h *realHarness) start() *tkRun {
	h.t.Helper()
	args := append(h.targetFlags(), "--signal", h.srv.signal, "--kill-timeout", realKillTimeout.String())
	args = append(args, h.extra...)
	args = append(args, "--")
	r := startTakeover(h.t, "", append(args, h.argv...)...)
	h.all = append(h.all, r)
	// Runs before startTakeover's cleanup, which stops takeover gently
	// and waits: a failed test does not wait for a hung server too.
	h.t.Cleanup(func() {
		if h.t.Failed() && r.running() {
			for _, p := range treeOf(r.cmd.Process.Pid) {
				p.kill()
			}
		}
	})
	return r
}

// targetFlags names the harness's target to takeover: a TCP or UDP port,
// or a unix socket's path.
func (h *realHarness) targetFlags() []string {
	switch {
	case load.Network(h.addr) == "unix":
		return []string{"--path", h.addr}
	case h.srv.proto == "udp":
		return []string{"--port", "udp:" + h.addr}
	}
	return []string{"--port", h.addr}
}

// replace starts a new takeover of the same command and waits for it to
// replace the current one: the old takeover exits 0, the old server's
// processes are gone, the new one answers.
func (h *realHarness) replace(what string) {
	t := h.t
	t.Helper()
	ev := swapEvent{what: what, began: time.Now()}
	prev := h.cur
	prevTree := treeOf(prev.cmd.Process.Pid)
	next := h.start()
	if err := awaitSwapLine(nil, next, 1, h.bound); err != nil {
		t.Fatalf("%s: %v; the old takeover's processes: %s; the new one's: %s\n%s",
			what, err, procList(treeOf(prev.cmd.Process.Pid)), procList(treeOf(next.cmd.Process.Pid)), logsOf(prev, next))
	}
	ev.ready = time.Now()
	select {
	case <-prev.exited:
		if code := exitCodeOf(prev); code != 0 {
			t.Fatalf("%s: the replaced takeover exited %d, want 0\n%s", what, code, logsOf(prev, next))
		}
	case <-time.After(realKillTimeout + 10*time.Second):
		t.Fatalf("%s: the replaced takeover did not exit within %v; its processes: %s\n%s",
			what, realKillTimeout+10*time.Second, procList(treeOf(prev.cmd.Process.Pid)), logsOf(prev, next))
	}
	h.awaitGone(what+": the replaced server", prevTree, next, prev)
	ev.oldGone = time.Now()
	h.cur = next
	h.awaitAnswer(what)
	ev.end = time.Now()
	h.events = append(h.events, ev)
	h.awaitRequests(what)
}

// reload sends HUP to the current takeover and waits for its swap line,
// for the old generation's processes to be gone and for an answer.
func (h *realHarness) reload(what string) {
	t := h.t
	t.Helper()
	ev := swapEvent{what: what, began: time.Now()}
	oldGen := treeOf(h.cur.cmd.Process.Pid)
	n := swapLines(h.cur)
	h.cur.cmd.Process.Signal(syscall.SIGHUP)
	h.awaitSwapLine(h.cur, n+1)
	ev.ready = time.Now()
	h.awaitGone(what+": the old generation", oldGen, h.cur)
	ev.oldGone = time.Now()
	h.awaitAnswer(what)
	ev.end = time.Now()
	h.events = append(h.events, ev)
	h.awaitRequests(what)
}

// awaitRequests lets the load run against the new server for a while:
// until realQuietRequests more requests have ended.
func (h *realHarness) awaitRequests(what string) {
	h.t.Helper()
	want := h.load.n.Load() + realQuietRequests
	deadline := time.Now().Add(30 * time.Second)
	for h.load.n.Load() < want {
		if time.Now().After(deadline) {
			h.t.Fatalf("after %s: the load made %d requests in 30s, want %d\n%s",
				what, h.load.n.Load()-want+realQuietRequests, realQuietRequests, logsOf(h.all...))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop stops the last takeover with the server's stop signal and waits for
// it and its server to exit.
func (h *realHarness) stop() {
	t := h.t
	t.Helper()
	tree := treeOf(h.cur.cmd.Process.Pid)
	t0 := time.Now()
	h.cur.cmd.Process.Signal(unixSignal(t, h.srv.signal))
	select {
	case <-h.cur.exited:
	case <-time.After(realKillTimeout + 10*time.Second):
		t.Fatalf("takeover did not exit %v after %s; its processes: %s\n%s",
			realKillTimeout+10*time.Second, h.srv.signal, procList(treeOf(h.cur.cmd.Process.Pid)), logsOf(h.cur))
	}
	h.awaitGone("after "+h.srv.signal, tree, h.cur)
	t.Logf("stopped by %s in %v; takeover exited %d", h.srv.signal, time.Since(t0).Round(time.Millisecond), exitCodeOf(h.cur))
	for i, r := range h.all {
		if n := swapLines(r); n == 0 {
			t.Errorf("takeover %d never took over\n%s", i+1, logsOf(r))
		}
		if h.srv.readyLine != "" {
			checkReadyOrder(t, r, h.srv.readyLine)
		}
		for _, l := range strings.Split(r.stderr.String(), "\n") {
			if strings.Contains(l, `msg="took over"`) {
				t.Logf("takeover %d: %s", i+1, l[strings.Index(l, "msg="):])
			}
		}
	}
}

// awaitSwapLine waits for r's n-th "took over" line. A failed reload, an
// exit or the bound ends the wait with the logs.
func (h *realHarness) awaitSwapLine(r *tkRun, n int) {
	h.t.Helper()
	if err := awaitSwapLine(nil, r, n, h.bound); err != nil {
		h.t.Fatalf("%v; its processes: %s\n%s", err, procList(treeOf(r.cmd.Process.Pid)), logsOf(h.all...))
	}
}

// awaitSwapLine waits for r's n-th swap line; a closed quit ends the wait.
func awaitSwapLine(quit <-chan struct{}, r *tkRun, n int, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	for swapLines(r) < n {
		if s := r.stderr.String(); strings.Count(s, "reload failed") > 0 {
			return fmt.Errorf("takeover %d: a reload failed", r.cmd.Process.Pid)
		}
		select {
		case <-r.exited:
			if swapLines(r) >= n {
				return nil
			}
			return fmt.Errorf("takeover %d exited (%v) before its swap line %d", r.cmd.Process.Pid, r.err, n)
		case <-quit:
			return errors.New("stopped")
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("takeover %d logged no swap line %d within %v: it does not see its server ready, so it neither stops the old one nor lets the next takeover of the port in",
				r.cmd.Process.Pid, n, bound)
		}
	}
	return nil
}

// checkReadyOrder checks that each of r's swap lines comes after a
// readyLine of the server it started, printed since the swap line before.
func checkReadyOrder(t *testing.T, r *tkRun, readyLine string) {
	t.Helper()
	seen, bad := false, false
	var order []string
	for _, l := range strings.Split(r.stderr.String(), "\n") {
		switch {
		case strings.Contains(l, readyLine):
			seen = true
		case strings.Contains(l, `msg="took over"`):
			bad = bad || !seen
			seen = false
		default:
			continue
		}
		if len(l) > 160 {
			l = l[:160] + "..."
		}
		order = append(order, l)
	}
	if bad {
		t.Errorf("takeover %d took over before its server said %q: the old server was stopped while the new one did not accept yet; in its log:\n%s",
			r.cmd.Process.Pid, readyLine, strings.Join(order, "\n"))
	}
}

// swapLineOf returns the rebind fields of r's last swap line.
func swapLineOf(r *tkRun) string {
	var last string
	for _, l := range strings.Split(r.stderr.String(), "\n") {
		if strings.Contains(l, `msg="took over"`) {
			last = l
		}
	}
	var fields []string
	for _, f := range strings.Fields(last) {
		for _, k := range []string{"strategy=", "signal_to_free=", "refused_window=", "ready_by="} {
			if i := strings.Index(f, k); i >= 0 {
				fields = append(fields, f[i:])
			}
		}
	}
	return strings.Join(fields, " ")
}

func swapLines(r *tkRun) int { return strings.Count(r.stderr.String(), `msg="took over"`) }

// awaitGone waits for the processes of a generation to exit.
func (h *realHarness) awaitGone(what string, ps []procKey, logs ...*tkRun) {
	h.t.Helper()
	if left := awaitGone(ps, realKillTimeout+10*time.Second); len(left) > 0 {
		h.t.Fatalf("%s: still running: %s\n%s", what, procList(left), logsOf(logs...))
	}
}

// awaitAnswer waits until the server answers one request.
func (h *realHarness) awaitAnswer(what string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := probeOnce(h.srv.proto, h.addr)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: the server does not answer: %v; its processes: %s\n%s",
				what, err, procList(treeOf(h.cur.cmd.Process.Pid)), logsOf(h.all...))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logFailures lists the failures of a load, each with the swap under way
// when it began.
func (h *realHarness) logFailures(r *load.Result) {
	for i, f := range r.Failures {
		if i == maxListed {
			h.t.Logf("... and %d more failures", len(r.Failures)-maxListed)
			break
		}
		h.t.Logf("%s during %s: %s", f.Kind, h.during(f.At), f.Err)
	}
}

// during names the swap under way at t.
func (h *realHarness) during(t time.Time) string {
	for _, ev := range h.events {
		if !t.Before(ev.began) && !t.After(ev.end) {
			return ev.what
		}
	}
	for i := len(h.events) - 1; i >= 0; i-- {
		if t.After(h.events[i].end) {
			return "the quiet after " + h.events[i].what
		}
	}
	return "the start"
}

// timings says how long each swap took: to the swap line, to the old
// server's exit, to an answer.
func (h *realHarness) timings() string {
	var s []string
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	for _, ev := range h.events {
		s = append(s, fmt.Sprintf("%s/%s/%s", ms(ev.ready.Sub(ev.began)), ms(ev.oldGone.Sub(ev.began)), ms(ev.end.Sub(ev.began))))
	}
	return "ready/old gone/answered: " + strings.Join(s, ", ")
}

func exitCodeOf(r *tkRun) int {
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode()
	}
	if r.err != nil {
		return -1
	}
	return 0
}

// logsOf formats the tail of each takeover's log.
func logsOf(rs ...*tkRun) string {
	var b strings.Builder
	for _, r := range rs {
		state := "running"
		if !r.running() {
			state = fmt.Sprintf("exited %d", exitCodeOf(r))
		}
		s := r.stderr.String()
		if len(s) > 6000 {
			s = "..." + s[len(s)-6000:]
		}
		fmt.Fprintf(&b, "--- takeover %d (%s):\n%s", r.cmd.Process.Pid, state, s)
	}
	return b.String()
}

func unixSignal(t *testing.T, name string) syscall.Signal {
	t.Helper()
	sig := unix.SignalNum("SIG" + name)
	if sig == 0 {
		t.Fatalf("no signal %s", name)
	}
	return sig
}

// probeOnce makes one request of the server's protocol.
func probeOnce(proto, addr string) error {
	kind, detail := "", ""
	switch proto {
	case "http":
		kind, detail = load.Request(addr, load.HTTPRequest(addr, "/"), 5*time.Second)
	case "udp":
		kind, detail = echoOnce(addr)
	default:
		kind, detail = lineRequest(addr, protoRequest(proto), 5*time.Second)
	}
	if kind != "" {
		return fmt.Errorf("%s: %s", kind, detail)
	}
	return nil
}

// A lineReq is a one-line request and the start of the answer it wants.
type lineReq struct{ req, want string }

func protoRequest(proto string) lineReq {
	if proto == "redis" {
		return lineReq{"PING\r\n", "+PONG\r\n"}
	}
	return lineReq{"version\r\n", "VERSION "} // memcached
}

// lineRequest opens a connection, sends one request line, reads the answer
// line and closes: what load.Request does for HTTP/1.0.
func lineRequest(addr string, lr lineReq, timeout time.Duration) (kind, detail string) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return load.Classify(err), err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, lr.req); err != nil {
		return load.Classify(err), err.Error()
	}
	var got []byte
	buf := make([]byte, 256)
	for !bytes.Contains(got, []byte("\r\n")) {
		n, err := conn.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return load.Classify(err), fmt.Sprintf("%v after %q", err, got)
		}
	}
	if !bytes.HasPrefix(got, []byte(lr.want)) {
		return "failed", fmt.Sprintf("answer %.40q", got)
	}
	return "", ""
}

// A realLoad is load running against a server until stopped, and bounded
// in time and count in any case.
type realLoad struct {
	cancel context.CancelFunc
	done   chan *load.Result
	n      atomic.Int64 // requests finished
}

// startRealLoad runs two closed-loop clients of proto against addr: HTTP
// through internal/load, redis and memcached through lineRequest, UDP echo
// through runDatagramLoad.
func startRealLoad(t *testing.T, proto, addr string) *realLoad {
	ctx, cancel := context.WithTimeout(context.Background(), realLoadMax)
	l := &realLoad{cancel: cancel, done: make(chan *load.Result, 1)}
	switch proto {
	case "udp":
		go func() { l.done <- runDatagramLoad(ctx, addr, 2, realLoadCap, &l.n) }()
	case "http":
		go func() { l.done <- load.Run(ctx, load.Config{Addr: addr, Workers: 2, Done: &l.n}) }()
		go func() { // the count bound
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for l.n.Load() < realLoadCap {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
			cancel()
		}()
	default:
		go func() { l.done <- runLineLoad(ctx, addr, protoRequest(proto), 2, realLoadCap, &l.n) }()
	}
	t.Cleanup(func() { l.stop(t) })
	return l
}

// stop ends the load and returns what it saw; later calls return nil.
func (l *realLoad) stop(t *testing.T) *load.Result {
	l.cancel()
	select {
	case r, ok := <-l.done:
		if ok {
			close(l.done)
			return r
		}
		return nil
	case <-time.After(30 * time.Second):
		t.Fatal("the load did not stop in 30s")
	}
	return nil
}

// runLineLoad is load.Run for one-line protocols: workers closed-loop
// clients, at most max requests in all, each counted in done as it ends.
func runLineLoad(ctx context.Context, addr string, lr lineReq, workers int, max int64, done *atomic.Int64) *load.Result {
	var count atomic.Int64
	return load.RunWorkers(workers, func() *load.Result {
		r := &load.Result{}
		for ctx.Err() == nil && count.Add(1) <= max {
			t0 := time.Now()
			kind, detail := lineRequest(addr, lr, 5*time.Second)
			r.Record(t0, kind, detail)
			done.Add(1)
		}
		return r
	})
}

// TestJavaTwoLoopsUnderLoad is the Rssminer recipe run from two shells at
// once, each `for i in 1 2 3; do takeover --port P -- java ...; done`, with
// a JVM that takes about two seconds to start, while the service runs under
// load: every takeover takes over in turn, every one but the last is
// replaced and exits 0, no request fails, nothing is left.
func TestJavaTwoLoopsUnderLoad(t *testing.T) {
	testutil.RequireTool(t, "java")
	takeoverBin(t)
	wd, _ := os.Getwd()
	began := time.Now()
	procs := trackProcesses(t)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	args := []string{"--port", addr, "--kill-timeout", realKillTimeout.String(), "--",
		"java", "-Djava.net.preferIPv4Stack=true", "-Dstartdelay=1500", filepath.Join(wd, "testdata", "DrainServer.java"), port}
	// Each takeover may queue behind the other loop's on the port lock.
	const bound = 90 * time.Second

	first := startTakeover(t, "", args...)
	if err := awaitSwapLine(nil, first, 1, bound); err != nil {
		t.Fatalf("%v\n%s", err, logsOf(first))
	}
	testutil.WaitServing(t, addr)
	load := startRealLoad(t, "http", addr)

	var mu sync.Mutex
	runs := []*tkRun{first}
	quit := make(chan struct{})
	errs := make(chan error, 2)
	for loop := 1; loop <= 2; loop++ {
		go func() {
			for i := 1; i <= 3; i++ {
				select {
				case <-quit:
					errs <- nil
					return
				default:
				}
				r := startTakeover(t, "", args...)
				mu.Lock()
				runs = append(runs, r)
				mu.Unlock()
				if err := awaitSwapLine(quit, r, 1, bound); err != nil {
					errs <- fmt.Errorf("loop %d, takeover %d: %w", loop, i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	var failed error
	timeout := time.After(3 * bound)
	for range 2 {
		select {
		case err := <-errs:
			if err != nil && failed == nil {
				failed = err
				close(quit)
			}
		case <-timeout:
			if failed == nil {
				failed = fmt.Errorf("the loops did not end in %v", 3*bound)
				close(quit)
			}
			<-errs // quit ends a loop within one poll
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if failed != nil {
		t.Fatalf("%v\n%s", failed, logsOf(runs...))
	}

	// Every takeover but the one that took over last is replaced.
	var running []*tkRun
	for deadline := time.Now().Add(bound); ; time.Sleep(20 * time.Millisecond) {
		running = running[:0]
		for _, r := range runs {
			if r.running() {
				running = append(running, r)
			}
		}
		if len(running) <= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d takeovers still run %v after the loops ended\n%s", len(running), bound, logsOf(runs...))
		}
	}
	for _, r := range runs {
		if !r.running() && exitCodeOf(r) != 0 {
			t.Errorf("takeover %d exited %d, want 0\n%s", r.cmd.Process.Pid, exitCodeOf(r), logsOf(r))
		}
	}
	if len(running) == 0 {
		t.Fatalf("no takeover runs at the end\n%s", logsOf(runs...))
	}
	last := running[0]
	r := load.stop(t)
	stopAndCheck(t, last, syscall.SIGTERM, procs)

	t.Logf("%d takeovers in %v; %d requests, %d failed (%d refused, %d reset, %d timeouts, %d other)",
		len(runs), time.Since(began).Round(time.Millisecond), r.Requests, r.FailedRequests(), r.Refused, r.Resets, r.Timeouts, r.Failed)
	if r.OK == 0 {
		t.Errorf("no request succeeded")
	}
	for i, f := range r.Failures {
		if i == maxListed {
			t.Logf("... and %d more failures", len(r.Failures)-maxListed)
			break
		}
		t.Logf("%s at %v: %s", f.Kind, f.At.Sub(began).Round(time.Millisecond), f.Err)
	}
	if r.FailedRequests() > 0 {
		t.Errorf("%d of %d requests failed", r.FailedRequests(), r.Requests)
	}
}

// A procKey names a process for good: a pid, and its start time so that a
// reused pid is not taken for it (pid_max may be small; pids wrap).
type procKey struct {
	PID   int
	Start uint64
}

// statOf reads the state, ppid and start time of a process.
func statOf(pid int) (state byte, ppid int, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, 0, errors.New("malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, 0, errors.New("short stat")
	}
	ppid, _ = strconv.Atoi(f[1])
	start, _ = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], ppid, start, nil
}

// alive reports whether the process p names still runs (a zombie does not).
func (p procKey) alive() bool {
	state, _, start, err := statOf(p.PID)
	return err == nil && start == p.Start && state != 'Z'
}

// treeOf returns the live descendants of root, not root itself.
// stopAndCheck sends sig to the takeover r, waits for it and for every
// process of its tree to exit, then checks that the test left none of its
// own processes behind.
func stopAndCheck(t *testing.T, r *tkRun, sig syscall.Signal, procs *procTracker) {
	t.Helper()
	tree := treeOf(r.cmd.Process.Pid)
	r.cmd.Process.Signal(sig)
	select {
	case <-r.exited:
	case <-time.After(realKillTimeout + 20*time.Second):
		t.Fatalf("takeover %d did not exit after %v\n%s", r.cmd.Process.Pid, sig, logsOf(r))
	}
	if left := awaitGone(tree, realKillTimeout+10*time.Second); len(left) > 0 {
		t.Errorf("still running after %v: %s", sig, procList(left))
	}
	procs.checkNoneLeft(t, 20*time.Second)
}

func treeOf(root int) []procKey {
	ents, _ := os.ReadDir("/proc")
	children := make(map[int][]procKey)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		state, ppid, start, err := statOf(pid)
		if err != nil || state == 'Z' {
			continue
		}
		children[ppid] = append(children[ppid], procKey{pid, start})
	}
	var out []procKey
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			out = append(out, c)
			queue = append(queue, c.PID)
		}
	}
	return out
}

// awaitGone waits up to bound for every process in ps to exit and returns
// those still running.
func awaitGone(ps []procKey, bound time.Duration) []procKey {
	deadline := time.Now().Add(bound)
	for {
		var left []procKey
		for _, p := range ps {
			if p.alive() {
				left = append(left, p)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func procList(ps []procKey) string {
	var s []string
	for _, p := range ps {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
		cmd := strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
		if len(cmd) > 100 {
			cmd = cmd[:100] + "..."
		}
		s = append(s, fmt.Sprintf("%d (%s; waiting in %s)", p.PID, cmd, syscallsOf(p.PID)))
	}
	return strings.Join(s, ", ")
}

// syscallsOf says where the threads of pid wait: the syscalls they are
// blocked in (/proc/PID/task/TID/syscall), by count.
func syscallsOf(pid int) string {
	names := map[string]string{"0": "read", "7": "poll", "23": "select", "35": "nanosleep", "43": "accept", "61": "wait4",
		"130": "rt_sigsuspend", "202": "futex", "230": "clock_nanosleep", "232": "epoll_wait", "247": "waitid",
		"270": "pselect6", "271": "ppoll", "281": "epoll_pwait", "288": "accept4", "441": "epoll_pwait2"}
	count := make(map[string]int)
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, task.Name()))
		f := strings.Fields(string(b))
		if err != nil || len(f) == 0 {
			continue
		}
		name := f[0]
		if n, ok := names[f[0]]; ok {
			name = n
		}
		if (name == "accept" || name == "accept4") && len(f) > 1 {
			// A thread blocked in accept on a listener it means to poll
			// is a server hung: say whether the fd is blocking.
			fd, _ := strconv.ParseInt(strings.TrimPrefix(f[1], "0x"), 16, 64)
			mode := "?"
			if fi, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd)); err == nil {
				for _, l := range strings.Split(string(fi), "\n") {
					if v, ok := strings.CutPrefix(l, "flags:"); ok {
						flags, _ := strconv.ParseUint(strings.TrimSpace(v), 8, 64)
						mode = "blocking"
						if flags&unix.O_NONBLOCK != 0 {
							mode = "O_NONBLOCK"
						}
					}
				}
			}
			name = fmt.Sprintf("%s(fd %d, %s)", name, fd, mode)
		}
		count[name]++
	}
	var s []string
	for name, n := range count {
		s = append(s, fmt.Sprintf("%d×%s", n, name))
	}
	slices.Sort(s)
	return strings.Join(s, " ")
}

// kill SIGKILLs p through a pidfd, after checking that the pid still names
// the same process.
func (p procKey) kill() {
	fd, err := unix.PidfdOpen(p.PID, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	if p.alive() { // the pidfd pins the process: checked after opening it
		unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0)
	}
}

// A procTracker finds the processes a test leaves behind. The test process
// becomes a child subreaper while it runs, so that a server's process
// orphaned when its takeover exits is re-parented to the test, not to init,
// and is found among the test's descendants.
type procTracker struct {
	before map[procKey]bool
}

func trackProcesses(t *testing.T) *procTracker {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	pt := &procTracker{before: make(map[procKey]bool)}
	for _, p := range treeOf(os.Getpid()) {
		pt.before[p] = true
	}
	// Registered before any takeover is started: runs after their
	// cleanups, and kills whatever they left.
	t.Cleanup(func() {
		for _, p := range pt.left(5 * time.Second) {
			t.Logf("cleanup: killing %s", procList([]procKey{p}))
			p.kill()
			pt.reap(p)
		}
		unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	})
	return pt
}

// left returns the processes started since the tracker was made that are
// still running after bound.
func (pt *procTracker) left(bound time.Duration) []procKey {
	var now []procKey
	for _, p := range treeOf(os.Getpid()) {
		if !pt.before[p] {
			now = append(now, p)
		}
	}
	return awaitGone(now, bound)
}

// checkNoneLeft fails the test if any process started since the tracker
// was made still runs after bound.
func (pt *procTracker) checkNoneLeft(t *testing.T, bound time.Duration) {
	t.Helper()
	if left := pt.left(bound); len(left) > 0 {
		t.Errorf("processes left running: %s", procList(left))
	}
}

// reap waits for p if it is an orphan re-parented to the test process.
func (pt *procTracker) reap(p procKey) {
	if _, ppid, start, err := statOf(p.PID); err != nil || ppid != os.Getpid() || start != p.Start {
		return
	}
	done := make(chan struct{})
	go func() {
		var ws unix.WaitStatus
		unix.Wait4(p.PID, &ws, 0, nil)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}
