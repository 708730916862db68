package main

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
)

// TestFencedKeepAlive: a fenced old server that keeps a connection open
// (a keep-alive client) and ignores the stop signal: the new takeover
// stops it after --drain-timeout, says so, and SIGKILLs it after
// --kill-timeout; the old takeover exits 0, the new server serves, and the
// kept connection was served by the old server until it was killed.
func TestFencedKeepAlive(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	first, oldChild := startHanging(t, "hangtcp", addr)
	kept, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	ask := func() error {
		kept.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := kept.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			return err
		}
		_, err := http.ReadResponse(bufio.NewReader(kept), nil)
		return err
	}
	if err := ask(); err != nil {
		t.Fatal(err)
	}

	self, _ := os.Executable()
	second := startTakeover(t, "hangtcp", "--drain-timeout", "1s", "--kill-timeout", "300ms", "--port", port, "--", self, addr)
	second.waitLog(t, "fenced=true")
	if err := ask(); err != nil { // the fence leaves accepted connections to their server
		t.Errorf("the kept connection, after the fence went up: %v", err)
	}
	testutil.WaitGone(t, oldChild)
	if code := first.wait(t); code != 0 {
		t.Errorf("the replaced takeover exited %d, want 0; stderr:\n%s", code, first.stderr)
	}
	testutil.WaitServing(t, addr)
	childOf(t, second, addr)
	for _, want := range []string{
		"has not finished its connections within --drain-timeout",
		"did not exit within --kill-timeout; killing it",
	} {
		second.waitLog(t, want)
	}
	if ask() == nil {
		t.Errorf("the kept connection still answers after its server was killed")
	}
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
