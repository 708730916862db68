package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/socktab"
	"golang.org/x/sys/unix"
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
	addr, gen := args[0], os.Getenv("TAKEOVER_GENERATION")
	switch mode {
	case "tcpserve":
		crashGen, once := "", false
		if len(args) > 1 {
			f := strings.Split(args[1], ":")
			crashGen, once = f[1], len(f) > 2
		}
		if n, _ := strconv.Atoi(gen); once && n > mustAtoi(crashGen) {
			fmt.Fprintln(os.Stderr, "helper: cannot come back")
			return 3
		}
		ln, err := listenPlainTCP(addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		go func() {
			for range usr1 {
				fmt.Println("got USR1")
			}
		}()
		hello := helloHandler()
		return serveDraining(ln, func(r *demoRequest) string {
			if r.Path == "/crash" && gen == crashGen {
				os.Exit(7)
			}
			return hello(r)
		})
	case "noaccept":
		if gen != "1" {
			return lateServer(addr, args[1], args[2])
		}
		fd, err := rawListen(addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		defer syscall.Close(fd)
		fmt.Printf("listening %s\n", addr)
		if c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET")); err == nil {
			c.Write([]byte("READY=1")) // ready, though it never accepts
			c.Close()
		}
		select {} // until killed
	}
	return 2
}

// lateServer is noaccept's later generations: a server slow to start, which
// binds addr and listens only once the file trigger exists ("late"), or
// binds at once and listens then ("bind"), and then serves HTTP.
func lateServer(addr, trigger, when string) int {
	ap := netip.MustParseAddrPort(addr)
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return 1
	}
	bind := func() error {
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		return syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
	}
	if when == "bind" {
		if err := bind(); err != nil {
			fmt.Fprintln(os.Stderr, "helper: bind:", err)
			return 1
		}
	}
	fmt.Println("started")
	for {
		if _, err := os.Stat(trigger); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if when != "bind" {
		if err := bind(); err != nil {
			fmt.Fprintln(os.Stderr, "helper: bind:", err)
			return 1
		}
	}
	if err := syscall.Listen(fd, 128); err != nil {
		fmt.Fprintln(os.Stderr, "helper: listen:", err)
		return 1
	}
	ln, err := net.FileListener(os.NewFile(uintptr(fd), "listener"))
	if err != nil {
		return 1
	}
	return serveUntilTerm(ln)
}

func mustAtoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// keepAlive opens a keep-alive connection to addr, has one request
// answered on it, and then sends half of the next: the server that
// accepted it holds it, waiting for the rest, until it is closed, and a
// fenced drain of that server lasts --drain-timeout. (An idle connection
// does not hold a drain: whether one answered at once looked idle hung on
// when the client's ACK came, a tick later or not, and on a loaded machine
// it did.) It returns the connection and the answer.
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
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHo")); err != nil {
		t.Fatal(err)
	}
	return c, string(b[:n])
}

// crashFenced asks for /crash until a request reaches the new server (the
// fence is up once the new takeover has logged its swap) and kills it: a
// request the old server answers is retried.
func crashFenced(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := testutil.Get(addr, "/crash"); err != nil {
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
	port := testutil.FreePort(t)
	addr = "127.0.0.1:" + port
	a = startTakeover(t, "tcpserve", "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
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
	testutil.WaitGone(t, aChild)
	if code := a.wait(t); code != 0 {
		t.Errorf("takeover A exited %d, want 0 (replaced)", code)
	}
	bChild := childOf(t, b, addr)
	if body := testutil.WaitServing(t, addr); !strings.Contains(body, pidField(bChild)) {
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
	if body := testutil.WaitServing(t, addr); !strings.Contains(body, pidField(childOf(t, c, addr))) {
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
			if body, err := testutil.Get(addr, "/"); err != nil || !strings.Contains(body, pidField(aChild)) {
				t.Errorf("after B gave up: %q, %v; want A's server %d", body, err, aChild)
			}
		}
	})
	t.Logf("%d requests, %d refused, %d reset", res.Requests, res.Refused, res.Resets)
	if res.Refused > 0 || res.OK == 0 {
		t.Errorf("%d of %d requests refused, want none", res.Refused, res.Requests)
	}
	if !a.running() || testutil.ProcessGone(aChild) {
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
	port := testutil.FreePort(t)
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
	testutil.WaitGone(t, first)
	if n := len(lookup(t, addr)); n != 1 {
		t.Errorf("%d sockets listen on %s, want the restarted generation's alone", n, addr)
	}
	if body := testutil.WaitServing(t, addr); !strings.Contains(body, pidField(childOf(t, a, addr))) {
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
	os.Chmod(dir, 0o700) // takeover refuses a run directory others may enter
	t.Setenv("TAKEOVER_RUN_DIR", dir)
	rd, err := rundir.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rd.Close() })
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	// Unfenced, A's reload shares one socket: C then fences A's two
	// generations as one old server.
	a := startTakeover(t, "tcpserve", "--fence", "off", "--kill-old-delay", "10s", "--port", port, "--", self, addr)
	a.waitLog(t, `msg="took over"`)
	first := childOf(t, a, addr)
	// A request A's first generation is still answering: C's drain waits
	// for it (an idle keep-alive connection would not hold the drain).
	slow, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { slow.Close() })
	if _, err := slow.Write([]byte("GET /?sleep=15s HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
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
	if r, ok := rundir.ReadRecord(rd, key); !ok || r.Launcher != c.cmd.Process.Pid {
		t.Fatalf("C's swap did not record C: %+v", r)
	}
	// A's reload swap, once its --kill-old-delay is over, stops A's first
	// server, which answers the slow request and exits: C's drain ends,
	// and C stops A.
	a.waitLog(t, `msg="took over" generation=2`)
	testutil.WaitGone(t, first)
	if code := a.wait(t); code != 0 {
		t.Errorf("takeover A exited %d, want 0", code)
	}
	c.waitLog(t, "fenced: the old server")
	if r, ok := rundir.ReadRecord(rd, key); !ok || r.Launcher != c.cmd.Process.Pid {
		t.Errorf("the record names %+v (ok %v), want C, pid %d", r, ok, c.cmd.Process.Pid)
	}
	d := startTakeover(t, "tcpserve", "--port", port, "--", self, addr)
	if code := c.wait(t); code != 0 {
		t.Errorf("takeover C exited %d when D replaced it, want 0; D's log:\n%s", code, d.stderr)
	}
	d.waitLog(t, `msg="took over"`)
}

// TestOldCrashDuringReload (issue 28, item 5): the serving generation,
// which never accepts (5 requests wait in its accept queue), dies while a
// HUP's new generation starts: before the new one binds ("late"), or after
// it bound beside the old socket but before it listens ("bind"). Its socket
// stays open and is the new generation's, which answers all 5; before the
// fix takeover closed it at once and the 5 were reset.
func TestOldCrashDuringReload(t *testing.T) {
	for _, when := range []string{"late", "bind"} {
		t.Run(when, func(t *testing.T) {
			self, _ := os.Executable()
			port := testutil.FreePort(t)
			addr := "127.0.0.1:" + port
			trigger := filepath.Join(t.TempDir(), "go")
			a := startTakeover(t, "noaccept", "-v", "--port", port, "--", self, addr, trigger, when)
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("takeover's log:\n%s", a.stderr)
				}
			})
			a.waitLog(t, `msg="took over"`)
			first := childOf(t, a, addr)
			const n = 5
			answers := make(chan error, n)
			for range n {
				go func() {
					c := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
					resp, err := c.Get("http://" + addr + "/")
					if err == nil {
						resp.Body.Close()
					}
					answers <- err
				}()
			}
			waitQueuedAt(t, addr, n)
			a.cmd.Process.Signal(syscall.SIGHUP)
			for a.line(t) != "started" {
			}
			crash(t, first, a.cmd.Process.Pid)
			a.waitLog(t, "the running generation exited during a reload") // and takeover has done with its sockets what it does
			os.WriteFile(trigger, nil, 0o644)
			ok := 0
			for range n {
				if err := <-answers; err != nil {
					t.Log(err)
				} else {
					ok++
				}
			}
			if ok != n {
				t.Errorf("%d of %d queued requests answered, want all", ok, n)
			}
		})
	}
}

// waitQueuedAt waits until n connections wait in the accept queues of the
// sockets listening at addr.
func waitQueuedAt(t *testing.T, addr string, n int) {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		ls, err := socktab.DiagTCPListeners()
		if err != nil {
			t.Fatal(err)
		}
		q := 0
		for _, s := range ls {
			if s.Addr == ap {
				q += int(s.Queued)
			}
		}
		if q >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections queued at %s after 60s, want %d", q, addr, n)
		}
	}
}

// crash SIGKILLs pid, a child of the takeover launcher, through a pidfd,
// and waits until it has been reaped.
func crash(t *testing.T, pid, launcher int) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if ppid, err := procfs.FS("/proc").PPID(pid); err != nil || ppid != launcher {
		t.Fatalf("pid %d is not the takeover's child (ppid %d, %v)", pid, ppid, err)
	}
	if err := unix.PidfdSendSignal(fd, unix.SIGKILL, nil, 0); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return // reaped
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not reaped in 30s", pid)
		}
	}
}

// TestUSR1MidSwap (issue 28, low: a USR1 mid-swap is read as "replaced"):
// while a newer takeover C waits for A's fenced server to drain (C's record
// names C already), a USR1 to A is for A's server, as at any other time:
// passed on, A not stopped. Only C's stop signal (its --signal, recorded)
// then ends A, with status 0. Before the fix A took the USR1 for C's stop
// signal: it let go of its sockets and stopped its server with USR1, and
// SIGKILL after --kill-timeout.
func TestUSR1MidSwap(t *testing.T) {
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	a := startTakeover(t, "tcpserve", "-v", "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
	first := childOf(t, a, addr)
	kept, _ := keepAlive(t, addr)
	c := startTakeover(t, "tcpserve", "--drain-timeout", "5m", "--port", port, "--", self, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A's log:\n%s\nC's log:\n%s", a.stderr, c.stderr)
		}
	})
	c.waitLog(t, "fenced=true")
	a.cmd.Process.Signal(syscall.SIGUSR1)
	for a.line(t) != "got USR1" {
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		s := a.stderr.String()
		if strings.Contains(s, "event=replaced") {
			t.Fatal("A took the USR1 for the newer takeover's stop signal")
		}
		if strings.Contains(s, "event=signal") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("A did not handle the USR1 in 60s")
		}
	}
	if !a.running() || testutil.ProcessGone(first) {
		t.Fatal("A or its server ended on the USR1")
	}
	kept.Close()
	if code := a.wait(t); code != 0 {
		t.Errorf("A exited %d when C stopped it, want 0", code)
	}
	if !strings.Contains(a.stderr.String(), "event=replaced") {
		t.Errorf("A did not take C's stop signal for \"replaced\"")
	}
}

// TestCrashDuringFencedReloadGivesUp (issue 28, item 3's give-up path in a
// reload): a HUP's new generation dies while the old generation's fenced
// server drains, and cannot come back. The old generation serves on under
// the same takeover, new connections back on its socket, none refused;
// before the fix takeover gave up and exited, leaving the old server
// running with no takeover.
func TestCrashDuringFencedReloadGivesUp(t *testing.T) {
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	a := startTakeover(t, "tcpserve", "--drain-timeout", "5m", "--max-restarts", "2", "--port", port, "--", self, addr, "crash:2:once")
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
	res := loadWhile(t, addr, func() {
		crashFenced(t, addr)
		a.waitLog(t, "the old generation serves on")
	})
	t.Logf("%d requests, %d refused, %d reset", res.Requests, res.Refused, res.Resets)
	if res.Refused > 0 || res.OK == 0 {
		t.Errorf("%d of %d requests refused, want none", res.Refused, res.Requests)
	}
	if !a.running() || testutil.ProcessGone(first) {
		t.Fatal("takeover or its old generation ended")
	}
	for i := 0; i < 10; i++ {
		if body, err := testutil.Get(addr, "/"); err != nil || !strings.Contains(body, pidField(first)) {
			t.Errorf("answered %q, %v; want the old generation %d", body, err, first)
		}
	}
	kept.Close() // or the server, draining on TERM, waits for the rest of its request
	a.cmd.Process.Signal(syscall.SIGTERM)
	if code := a.wait(t); code != 0 {
		t.Errorf("takeover exited %d on TERM, want its server's 0", code)
	}
	testutil.WaitGone(t, first)
}
