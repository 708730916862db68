package main

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
)

// TestFencedKeepAlive: fenced old servers that keep connections open and
// ignore the stop signal (issue 30). A keep-alive connection whose request
// was answered does not hold the swap: the drain ends with it open, long
// before --drain-timeout, the old server is stopped (SIGKILLed after
// --kill-timeout) and the old takeover exits 0. At the next swap, a
// connection whose server read half a request and awaits the rest holds
// the drain until --drain-timeout, and the log names it.
func TestFencedKeepAlive(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	first, oldChild := startHanging(t, "hangtcp", addr)
	kept, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	ask := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			return err
		}
		_, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err
	}
	if err := ask(kept); err != nil {
		t.Fatal(err)
	}

	self, _ := os.Executable()
	second := startTakeover(t, "hangtcp", "--drain-timeout", "40s", "--kill-timeout", "300ms", "--port", port, "--", self, addr)
	second.waitLog(t, "fenced=true")
	if err := ask(kept); err != nil { // the fence leaves accepted connections to their server
		t.Errorf("the kept connection, after the fence went up: %v", err)
	}
	second.waitLog(t, "has finished what it accepted")
	testutil.WaitGone(t, oldChild)
	if code := first.wait(t); code != 0 {
		t.Errorf("the replaced takeover exited %d, want 0; stderr:\n%s", code, first.stderr)
	}
	testutil.WaitServing(t, addr)
	newChild := childOf(t, second, addr)
	second.waitLog(t, "did not exit within --kill-timeout; killing it")
	if strings.Contains(second.stderr.String(), "within --drain-timeout") {
		t.Errorf("an answered keep-alive connection held the drain until --drain-timeout:\n%s", second.stderr)
	}
	if ask(kept) == nil {
		t.Errorf("the kept connection still answers after its server was killed")
	}

	half := halfRequest(t, addr)
	third := startTakeover(t, "hangtcp", "--drain-timeout", "1s", "--kill-timeout", "300ms", "--port", port, "--", self, addr)
	third.waitLog(t, "has not finished its connections within --drain-timeout")
	third.waitLog(t, half.LocalAddr().String())
	testutil.WaitGone(t, newChild)
	if code := second.wait(t); code != 0 {
		t.Errorf("the second takeover exited %d, want 0; stderr:\n%s", code, second.stderr)
	}
	testutil.WaitServing(t, addr)
}

// TestFencedFirstSwap: a redis not started under takeover (its socket
// without SO_REUSEPORT, copied with pidfd_getfd) is fenced at its first
// swap like any other: 0 failed under load, and it is stopped.
func TestFencedFirstSwap(t *testing.T) {
	testutil.RequireTool(t, "redis-server")
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	argv := []string{"redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir()}
	plain := exec.Command(argv[0], argv[1:]...)
	if err := plain.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { plain.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			plain.Process.Kill() // the pidfd-backed os.Process: never another process
			<-exited
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis does not listen on %s after 20s", addr)
		}
	}
	h := &realHarness{t: t, srv: realServer{name: "redis"}, addr: addr}
	h.load = startRealLoad(t, "redis", addr)
	h.awaitRequests("redis's start")

	r := startTakeover(t, "", append([]string{"--port", addr, "--"}, argv...)...)
	if err := awaitSwapLine(nil, r, 1, 20*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, r.stderr)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("the plain redis was not stopped; takeover's log:\n%s", r.stderr)
	}
	h.awaitRequests("the swap")
	res := h.load.stop(t)
	line := ""
	for _, l := range strings.Split(r.stderr.String(), "\n") {
		if strings.Contains(l, `msg="took over"`) {
			line = l
		}
	}
	for _, want := range []string{"strategy=handoff", "via=pidfd_getfd", "fenced=true"} {
		if !strings.Contains(line, want) {
			t.Errorf("the swap line lacks %s: %s", want, line)
		}
	}
	t.Logf("%d requests, %d failed (%d refused, %d reset); %s", res.Requests, res.FailedRequests(), res.Refused, res.Resets, line)
	if res.FailedRequests() > 0 || res.OK == 0 {
		t.Errorf("%d of %d requests failed, want 0", res.FailedRequests(), res.Requests)
	}
}

// TestHUPDuringDrain: a HUP while the fenced old generation drains (a
// connection whose server read half a request holds the drain until
// --drain-timeout) starts the next generation at once, where it used to
// wait for the drain to end; its bind waits for the swap before it, so
// that one old generation drains at a time, and then it takes over (issue
// 30). --ready-timeout (3s) is shorter than that wait: it does not count it.
func TestHUPDuringDrain(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	tk := startTakeover(t, "hangtcp", "-v", "--drain-timeout", "4s", "--ready-timeout", "3s", "--bind-timeout", "1s", "--kill-timeout", "300ms", "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
	first := childOf(t, tk, addr)
	t.Cleanup(func() { syscall.Kill(first, syscall.SIGKILL) })

	halfRequest(t, addr)
	tk.cmd.Process.Signal(syscall.SIGHUP)
	tk.waitLog(t, "generation=2")
	tk.waitLog(t, "fenced=true") // generation 2 took over; generation 1 drains
	tk.cmd.Process.Signal(syscall.SIGHUP)
	tk.waitLog(t, "the new generation's bind waits for the swap before it to complete")
	tk.waitLog(t, "has not finished its connections within --drain-timeout")
	tk.waitLogCount(t, `msg="took over"`, 3)
	log := tk.stderr.String()
	waits := strings.Index(log, "bind waits for the swap before it")
	cut := strings.Index(log, "within --drain-timeout")
	if waits > cut {
		t.Errorf("the second HUP's generation started only after the drain ended:\n%s", log)
	}
	if !strings.Contains(log[cut:], "the swap before it completed") {
		t.Errorf("no line says the waiting bind went on after the swap before it:\n%s", log)
	}
	if !regexp.MustCompile(`msg="took over" generation=3`).MatchString(log) {
		t.Errorf("generation 3 did not take over:\n%s", log)
	}
	testutil.WaitGone(t, first)
	testutil.WaitServing(t, addr)
}

// halfRequest opens a connection to addr and sends half a request on it:
// the server that accepts it reads that and waits for the rest, which holds
// a fenced drain of it until --drain-timeout. It is closed when the test
// ends.
func halfRequest(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHo")); err != nil {
		t.Fatal(err)
	}
	return c
}
