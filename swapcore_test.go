package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The swap core's state under failure: a new server that dies while the
// fenced old one drains, an old generation that dies during a reload, the
// generation records of two takeovers (issue 28).

// runCoreHelper runs the servers of these tests. tcpserve serves HTTP on
// args[0] over plain TCP (not Go's MPTCP, which is never fenced) and drains
// on SIGTERM; with args[1] "crash:N", its generation N under takeover
// dies (status 7) on a request for /crash, and with "crash:N:once" the
// generations after N exit at once (status 3), before they bind: a server
// that cannot come back. noaccept listens on args[0] and never accepts, until SIGTERM.
func runCoreHelper(mode string, args []string) int {
	addr, crashGen, once := args[0], "", false
	if len(args) > 1 {
		f := strings.Split(args[1], ":")
		crashGen, once = f[1], len(f) > 2
	}
	gen := os.Getenv("TAKEOVER_GENERATION")
	switch mode {
	case "tcpserve":
		if n, _ := strconv.Atoi(gen); once && n > mustAtoi(crashGen) {
			fmt.Fprintln(os.Stderr, "helper: cannot come back")
			return 3
		}
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		hello := helloHandler()
		return serveDraining(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/crash" && gen == crashGen {
				os.Exit(7)
			}
			hello.ServeHTTP(w, r)
		}))
	case "noaccept":
		fd, err := rawListen(addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		fmt.Printf("listening %s\n", addr)
		defer syscall.Close(fd)
		select {} // until killed
	}
	return 2
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// keepAlive opens a keep-alive connection to addr and has one request
// answered on it: the server that accepted it holds it, idle, until it is
// closed. It returns the connection and the answer.
func keepAlive(t *testing.T, addr string) (net.Conn, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 64)
	n, _ := resp.Body.Read(b)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return c, string(b[:n])
}

// crashFenced asks for /crash until a request reaches the new server (the
// fence is up once the new takeover has logged its swap) and kills it: a
// request the old server answers is retried.
func crashFenced(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := get(addr, "/crash"); err != nil {
			return // no answer: the new server died on it
		}
		if time.Now().After(deadline) {
			t.Fatal("no request for /crash reached the new server in 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startFencedCrash starts takeover A serving tcpserve on a free port, with
// an idle keep-alive connection to its server (so that a fenced drain of
// it lasts --drain-timeout), then takeover B with a server that is ready,
// takes A's port over fenced, and dies on /crash while A's server drains.
// how is B's server's second argument.
func startFencedCrash(t *testing.T, how string) (a, b *tkRun, aChild int, addr string, kept net.Conn) {
	self, _ := os.Executable()
	port := freePort(t)
	addr = "127.0.0.1:" + port
	a = startTakeover(t, "tcpserve", "--port", port, "--", self, addr)
	waitServing(t, addr)
	aChild = childOf(t, a, addr)
	kept, body := keepAlive(t, addr)
	if !strings.Contains(body, pidField(aChild)) {
		t.Fatalf("the kept connection was answered by %q, want A's server %d", body, aChild)
	}
	b = startTakeover(t, "tcpserve", "--drain-timeout", "5m", "--max-restarts", "2", "--port", port, "--", self, addr, how)
	b.waitLog(t, `msg="took over"`)
	if !strings.Contains(b.stderr.String(), "fenced=true") {
		t.Fatalf("B's swap was not fenced:\n%s", b.stderr)
	}
	crashFenced(t, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A's log:\n%s\nB's log:\n%s", a.stderr, b.stderr)
		}
	})
	return a, b, aChild, addr, kept
}

// TestCrashDuringFencedDrain (issue 28, item 3): takeover B's new server
// dies while A's fenced server drains. B restarts it on the socket it holds;
// the restarted server inherits the swap: once it is ready and A's server
// has finished, A and its server are stopped, B serves, and a third
// takeover C replaces B as any deploy does. Before the fix A ran on for
// ever and C was refused ("not an earlier instance").
func TestCrashDuringFencedDrain(t *testing.T) {
	a, b, aChild, addr, kept := startFencedCrash(t, "crash:1")
	b.waitLog(t, "msg=restarted")
	kept.Close() // A's server has finished: the inherited swap stops it
	waitGone(t, aChild)
	if code := a.wait(t); code != 0 {
		t.Errorf("takeover A exited %d, want 0 (replaced)", code)
	}
	bChild := childOf(t, b, addr)
	if body := waitServing(t, addr); !strings.Contains(body, pidField(bChild)) {
		t.Errorf("answered %q, want B's restarted server %d", body, bChild)
	}
	if n := len(lookup(t, addr)); n != 1 {
		t.Errorf("%d sockets listen on %s, want B's alone", n, addr)
	}

	self, _ := os.Executable()
	c := startTakeover(t, "tcpserve", "--port", addr, "--", self, addr)
	if code := b.wait(t); code != 0 {
		t.Errorf("takeover B exited %d when C replaced it, want 0; C's log:\n%s", code, c.stderr)
	}
	c.waitLog(t, `msg="took over"`)
	if body := waitServing(t, addr); !strings.Contains(body, pidField(childOf(t, c, addr))) {
		t.Errorf("after C's deploy answered %q, want C's server", body)
	}
}

// TestCrashDuringFencedDrainGivesUp (issue 28, item 3): B's new server dies
// while A's fenced server drains and cannot come back. A's server serves on:
// new connections go back to its socket, none is refused, B exits, and a
// third takeover C replaces A as any deploy does.
func TestCrashDuringFencedDrainGivesUp(t *testing.T) {
	a, b, aChild, addr, _ := startFencedCrash(t, "crash:1:once")
	res := loadWhile(t, addr, func() {
		if code := b.wait(t); code == 0 {
			t.Errorf("takeover B exited 0, want its server's failure")
		}
		for i := 0; i < 20; i++ {
			if body, err := get(addr, "/"); err != nil || !strings.Contains(body, pidField(aChild)) {
				t.Errorf("after B gave up: %q, %v; want A's server %d", body, err, aChild)
			}
		}
	})
	t.Logf("%d requests, %d refused, %d reset", res.Requests, res.Refused, res.Resets)
	if res.Refused > 0 || res.OK == 0 {
		t.Errorf("%d of %d requests refused, want none", res.Refused, res.Requests)
	}
	if !a.running() || processGone(aChild) {
		t.Fatal("A or its server ended")
	}

	self, _ := os.Executable()
	c := startTakeover(t, "tcpserve", "--port", addr, "--", self, addr)
	c.waitLog(t, `msg="took over"`)
	if code := a.wait(t); code != 0 {
		t.Errorf("takeover A exited %d when C replaced it, want 0; C's log:\n%s", code, c.stderr)
	}
}

// TestCrashDuringFencedReload (issue 28, item 3's sibling in a reload): a
// HUP's new generation dies while the old generation's fenced server
// drains. The restarted generation completes the reload: the old server is
// stopped, and takeover keeps no copy of its socket. Before the fix the old
// generation served on beside it for ever, its socket in the group.
func TestCrashDuringFencedReload(t *testing.T) {
	self, _ := os.Executable()
	port := freePort(t)
	addr := "127.0.0.1:" + port
	a := startTakeover(t, "tcpserve", "--drain-timeout", "5m", "--port", port, "--", self, addr, "crash:2")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("takeover's log:\n%s", a.stderr)
		}
	})
	a.waitLog(t, `msg="took over"`)
	first := childOf(t, a, addr)
	kept, _ := keepAlive(t, addr)
	a.cmd.Process.Signal(syscall.SIGHUP)
	a.waitLog(t, `msg="took over" generation=2`)
	crashFenced(t, addr)
	a.waitLog(t, "msg=restarted")
	kept.Close()
	waitGone(t, first)
	if n := len(lookup(t, addr)); n != 1 {
		t.Errorf("%d sockets listen on %s, want the restarted generation's alone", n, addr)
	}
	if body := waitServing(t, addr); !strings.Contains(body, pidField(childOf(t, a, addr))) {
		t.Errorf("answered %q, want the restarted generation", body)
	}
}

// TestReloadKeepsNewerRecord (issue 28, item 8): takeover A's reload swap
// comes (after --kill-old-delay) while a newer takeover C, which has
// recorded itself for the port, waits for A's server to drain. A must not
// write its own record over C's: C's stop signal is then A's "replaced",
// the record names C once A is gone, and a fourth takeover D replaces C.
// Before the fix A's record overwrote C's, and D was refused: C's server
// was no longer known to be managed by a takeover.
func TestReloadKeepsNewerRecord(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TAKEOVER_RUN_DIR", dir)
	self, _ := os.Executable()
	port := freePort(t)
	addr := "127.0.0.1:" + port
	// Unfenced, A's reload shares one socket: C then fences A's two
	// generations as one old server.
	a := startTakeover(t, "tcpserve", "--fence", "off", "--kill-old-delay", "10s", "--port", port, "--", self, addr)
	a.waitLog(t, `msg="took over"`)
	first := childOf(t, a, addr)
	keepAlive(t, addr) // held by A's first generation: C's drain waits for it
	a.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(60 * time.Second); len(holdersOf(t, addr)) < 3; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("A's reload has not bound in 60s:\n%s", a.stderr)
		}
	}
	c := startTakeover(t, "tcpserve", "--drain-timeout", "5m", "--port", port, "--", self, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A's log:\n%s\nC's log:\n%s", a.stderr, c.stderr)
		}
	})
	c.waitLog(t, `msg="took over"`)
	if strings.Contains(a.stderr.String(), "generation=2") {
		t.Skip("A's reload completed before C's swap began: the race this test is about did not happen")
	}
	key := "port-" + port
	if r, ok := readRecord(dir, key); !ok || r.Launcher != c.cmd.Process.Pid {
		t.Fatalf("C's swap did not record C: %+v", r)
	}
	// A's reload swap, once its --kill-old-delay is over, stops A's first
	// server, which closes the kept connection: C's drain ends, and C
	// stops A.
	a.waitLog(t, `msg="took over" generation=2`)
	waitGone(t, first)
	if code := a.wait(t); code != 0 {
		t.Errorf("takeover A exited %d, want 0", code)
	}
	c.waitLog(t, "fenced: the old server")
	if r, ok := readRecord(dir, key); !ok || r.Launcher != c.cmd.Process.Pid {
		t.Errorf("the record names %+v (ok %v), want C, pid %d", r, ok, c.cmd.Process.Pid)
	}
	d := startTakeover(t, "tcpserve", "--port", port, "--", self, addr)
	if code := c.wait(t); code != 0 {
		t.Errorf("takeover C exited %d when D replaced it, want 0; D's log:\n%s", code, d.stderr)
	}
	d.waitLog(t, `msg="took over"`)
}
