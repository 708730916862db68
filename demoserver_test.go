package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
)

// TestDemoServerRssminerNoShell: demo-server --rssminer never hands its
// address to a shell (issue 28, low item: it built `lsof -i:PORT | xargs
// kill` as a shell command): an address whose port is a command line is
// refused, and the command never runs.
func TestDemoServerRssminerNoShell(t *testing.T) {
	dir := t.TempDir()
	for i, port := range []string{"1;touch %s", "$(touch %s)", "`touch %s`", "1|touch %s"} {
		marker := filepath.Join(dir, "ran"+string(rune('a'+i)))
		addr := "127.0.0.1:" + strings.ReplaceAll(port, "%s", marker)
		var stdout, stderr bytes.Buffer
		code := runDemoServer([]string{"--rssminer", addr}, &stdout, &stderr)
		if code == 0 {
			t.Errorf("demo-server --rssminer %q exited 0, want a refusal", addr)
		}
		if _, err := os.Lstat(marker); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("demo-server --rssminer %q ran the shell command in its port (%s exists: %v)", addr, marker, err)
		}
		if !strings.Contains(stderr.String(), "not a number") {
			t.Errorf("demo-server --rssminer %q said %q; want the port refused as not a number", addr, stderr.String())
		}
	}
}

// TestDemoServerRssminerKillsHolder: the recipe still works without a
// shell: the holder of the port is killed (lsof's pid, SIGTERM) and the
// demo server binds the port once it is free.
func TestDemoServerRssminerKillsHolder(t *testing.T) {
	testutil.RequireTool(t, "lsof")
	holder := testutil.StartHelper(t, "serve", "127.0.0.1:0")
	exited := make(chan error, 1)
	go func() { exited <- holder.Cmd.Wait() }()
	r := startRun(t, exec.Command(takeoverBin(t), "demo-server", "--rssminer", holder.Addr))
	if l := r.line(t); l != "listening "+holder.Addr {
		t.Errorf("demo-server printed %q, want listening %s", l, holder.Addr)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the holder of the port exited with %v, want 0 (SIGTERM: it drains and exits)", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the holder of the port still runs 30s after demo-server --rssminer listened")
	}
}

// startDemoServer serves h on a loopback port with a drainingServer, in
// this process, and returns its address and the server.
func startDemoServer(t *testing.T, h demoHandler) (string, *drainingServer) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := newDrainingServer(h)
	d.serve(ln)
	t.Cleanup(d.drain)
	return ln.Addr().String(), d
}

// echoPath answers with the request's method, path and query.
func echoPath(r *demoRequest) string { return r.Method + " " + r.Path + "?" + r.Query.Encode() }

// dialDemo connects to addr, with a deadline on the whole test's exchange.
func dialDemo(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c, bufio.NewReader(c)
}

// readAnswer reads one response and its body.
func readAnswer(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	resp.Body.Close()
	return resp, string(b)
}

// waitEOF reads c until it is closed, and fails if it is not in 10s or
// sends more.
func waitEOF(t *testing.T, c net.Conn, br *bufio.Reader, what string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
		t.Errorf("%s: read %q, %v; want the connection closed", what, b, err)
	}
}

// TestDemoServerAnswers: the demo's server (on package net, not net/http)
// answers as net/http's did: helloHandler's body to net/http's client,
// HTTP/1.0 in HTTP/1.0 closed after the answer, a HEAD without a body,
// bodies (by length and chunked) read and dropped, the query parsed.
func TestDemoServerAnswers(t *testing.T) {
	addr, _ := startDemoServer(t, helloHandler())
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/?sleep=1ms")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := pidField(os.Getpid()) + " gen=" + os.Getenv("TAKEOVER_TEST_GEN") + "\n"; resp.StatusCode != 200 || string(b) != want {
		t.Errorf("GET / answered %d %q, want 200 %q", resp.StatusCode, b, want)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type %q, want net/http's text/plain; charset=utf-8", ct)
	}

	addr, _ = startDemoServer(t, echoPath)
	c, br := dialDemo(t, addr)
	c.Write([]byte("GET /a?x=1 HTTP/1.0\r\nHost: x\r\n\r\n"))
	if resp, body := readAnswer(t, br, "GET"); resp.Proto != "HTTP/1.0" || body != "GET /a?x=1" {
		t.Errorf("HTTP/1.0 GET answered %s %q, want HTTP/1.0 %q", resp.Proto, body, "GET /a?x=1")
	}
	waitEOF(t, c, br, "after an HTTP/1.0 answer without keep-alive")

	c, br = dialDemo(t, addr)
	c.Write([]byte("HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" +
		"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n" +
		"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	if resp, body := readAnswer(t, br, "HEAD"); resp.StatusCode != 200 || body != "" || resp.ContentLength != int64(len("HEAD /h?")) {
		t.Errorf("HEAD answered %d %q length %d, want 200, no body, length %d", resp.StatusCode, body, resp.ContentLength, len("HEAD /h?"))
	}
	for _, want := range []string{"POST /p?", "POST /c?", "GET /last?"} {
		if _, body := readAnswer(t, br, "GET"); body != want {
			t.Errorf("answered %q, want %q (the bodies before it read and dropped)", body, want)
		}
	}
	waitEOF(t, c, br, "after Connection: close")
}

// TestDemoServerKeepAlive: a connection serves one request after another
// (HTTP/1.1 by default, HTTP/1.0 when asked, as ab -k does), and pipelined
// requests, sent at once, are answered in order.
func TestDemoServerKeepAlive(t *testing.T) {
	addr, _ := startDemoServer(t, echoPath)
	c, br := dialDemo(t, addr)
	for _, p := range []string{"/1", "/2", "/3"} {
		c.Write([]byte("GET " + p + " HTTP/1.1\r\nHost: x\r\n\r\n"))
		if resp, body := readAnswer(t, br, "GET"); resp.Close || body != "GET "+p+"?" {
			t.Errorf("request %s on a kept connection answered %q close=%v", p, body, resp.Close)
		}
	}
	c, br = dialDemo(t, addr)
	for _, p := range []string{"/a", "/b"} {
		c.Write([]byte("GET " + p + " HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"))
		resp, body := readAnswer(t, br, "GET")
		if resp.Header.Get("Connection") != "keep-alive" || body != "GET "+p+"?" {
			t.Errorf("HTTP/1.0 keep-alive request %s answered %q, Connection %q; want it kept", p, body, resp.Header.Get("Connection"))
		}
	}
	c, br = dialDemo(t, addr)
	var pipelined []byte
	for i := range 20 {
		pipelined = fmt.Appendf(pipelined, "GET /%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
	}
	c.Write(pipelined)
	for i := range 20 {
		if _, body := readAnswer(t, br, "GET"); body != fmt.Sprintf("GET /%d?", i) {
			t.Fatalf("pipelined answer %d is %q, want GET /%d? (in order)", i, body, i)
		}
	}
}

// TestDemoServerMalformed: a request that is not HTTP/1 is answered 400
// (or 505, 501, 431, as net/http does) and its connection closed.
func TestDemoServerMalformed(t *testing.T) {
	addr, _ := startDemoServer(t, echoPath)
	for _, tc := range []struct {
		req    string
		status int
	}{
		{"GARBAGE\r\n\r\n", 400},
		{"GET /\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
		{"GET / HTTP/2.0\r\n\r\n", 505},
		{"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", maxHeadBytes) + "\r\n\r\n", 431},
	} {
		c, br := dialDemo(t, addr)
		go c.Write([]byte(tc.req + "GET /after HTTP/1.1\r\nHost: x\r\n\r\n"))
		resp, _ := readAnswer(t, br, "GET")
		if resp.StatusCode != tc.status {
			t.Errorf("%.40q answered %d, want %d", tc.req, resp.StatusCode, tc.status)
		}
		waitEOF(t, c, br, fmt.Sprintf("after %.40q", tc.req))
	}
}

// TestDemoServerDrain: the drain stops accepting, closes a connection
// idle between requests, lets a connection accepted but silent send its
// request, finishes the request in flight, and answers those last two
// with Connection: close; then it returns.
func TestDemoServerDrain(t *testing.T) {
	started, release := make(chan string, 4), make(chan struct{})
	addr, d := startDemoServer(t, func(r *demoRequest) string {
		if r.Path == "/slow" {
			started <- r.Path
			<-release
		}
		return r.Path
	})
	idle, idleBR := dialDemo(t, addr)
	idle.Write([]byte("GET /idle HTTP/1.1\r\nHost: x\r\n\r\n"))
	readAnswer(t, idleBR, "GET")
	busy, busyBR := dialDemo(t, addr)
	busy.Write([]byte("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
	<-started
	silent, silentBR := dialDemo(t, addr)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		d.mu.Lock()
		n := len(d.state)
		d.mu.Unlock()
		if n == 3 {
			break // the silent connection is accepted
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server holds %d connections after 30s, want 3", n)
		}
	}

	drained := make(chan struct{})
	go func() { d.drain(); close(drained) }()
	waitEOF(t, idle, idleBR, "the idle keep-alive connection")
	if c, err := net.DialTimeout("tcp", addr, 10*time.Second); err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		if b, _ := io.ReadAll(c); len(b) > 0 {
			t.Errorf("a connection made during the drain was answered %q; want none accepted", b)
		}
		c.Close()
	}
	silent.Write([]byte("GET /silent HTTP/1.1\r\nHost: x\r\n\r\n"))
	if resp, body := readAnswer(t, silentBR, "GET"); body != "/silent" || !resp.Close {
		t.Errorf("the connection accepted before the drain, silent till after, was answered %q close=%v; want /silent with Connection: close", body, resp.Close)
	}
	waitEOF(t, silent, silentBR, "the silent connection, answered")
	select {
	case <-drained:
		t.Fatal("the drain returned with a request in flight")
	default:
	}
	close(release)
	resp, body := readAnswer(t, busyBR, "GET")
	if resp.StatusCode != 200 || body != "/slow" || !resp.Close {
		t.Errorf("the request in flight was answered %d %q close=%v, want 200 /slow with Connection: close", resp.StatusCode, body, resp.Close)
	}
	waitEOF(t, busy, busyBR, "the drained busy connection")
	select {
	case <-drained:
	case <-time.After(30 * time.Second):
		t.Fatal("the drain did not return 30s after its last request ended")
	}
}

// TestDemoServerTermDrains: takeover demo-server drains on SIGTERM: its
// idle keep-alive connection is closed and it exits 0.
func TestDemoServerTermDrains(t *testing.T) {
	r := startRun(t, exec.Command(takeoverBin(t), "demo-server", "127.0.0.1:0"))
	addr, ok := strings.CutPrefix(r.line(t), "listening ")
	if !ok {
		t.Fatalf("demo-server did not say where it listens; stderr:\n%s", r.stderr)
	}
	c, br := dialDemo(t, addr)
	c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if _, body := readAnswer(t, br, "GET"); !strings.Contains(body, pidField(r.cmd.Process.Pid)) {
		t.Errorf("demo-server answered %q, want its pid", body)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	waitEOF(t, c, br, "the idle keep-alive connection at SIGTERM")
	if code := r.wait(t); code != 0 {
		t.Errorf("demo-server exited %d after SIGTERM, want 0; stderr:\n%s", code, r.stderr)
	}
}

// TestNoOSUserInTheProgram: takeover does not link os/user, which asks the
// C library (cgo) for a user's name; procfs.UserName reads /etc/passwd.
// (net/http came back with --metrics: prometheus/client_golang serves and
// writes the metrics through it; the demo's server stays on package net.)
// Tests may use both.
func TestNoOSUserInTheProgram(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "os/user" {
			t.Errorf("takeover imports os/user; procfs.UserName reads /etc/passwd")
		}
	}
}
