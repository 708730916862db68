package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/starter"
)

// runDemoServer implements `takeover demo-server [--init-delay D] ADDR`
// (or a unix socket's PATH): the
// built-in HTTP server of `takeover demo` and scripts/bench.sh. It starts
// slowly, as a JVM does, serves "pid=0012345 gen=", and drains on SIGTERM. Under
// Server::Starter it takes its socket from SERVER_STARTER_PORT.
const demoServerUsage = "usage: takeover demo-server [--init-delay D] [--rssminer] ADDR|PATH\n"

func runDemoServer(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("takeover demo-server", demoServerUsage)
	initDelay := fs.Duration("init-delay", 0, "how long to initialize before binding")
	rssminer := fs.Bool("rssminer", false, "after initializing, kill the port's holder (lsof | xargs kill) and retry the bind every 150ms, 30 times")
	if ok, code := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		badUsage(stderr, fs.Name(), "want one ADDR or PATH")
		return exitUsage
	}
	if *initDelay < 0 || *initDelay > time.Hour {
		fmt.Fprintf(stderr, "takeover demo-server: --init-delay %v: want 0 to 1h\n", *initDelay)
		return exitUsage
	}
	time.Sleep(*initDelay)
	var ln net.Listener
	var err error
	switch {
	case os.Getenv("SERVER_STARTER_PORT") != "":
		ln, err = serverStarterListener(os.Getenv("SERVER_STARTER_PORT"), fs.Arg(0))
	case *rssminer:
		ln, err = rssminerListen(fs.Arg(0))
	default:
		ln, err = net.Listen(load.Network(fs.Arg(0)), fs.Arg(0)) // a path is a unix socket's
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo-server: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	return serveDraining(ln, helloHandler())
}

// helloHandler answers "pid=0012345 gen=G": which process answered (of
// fixed width, so that ab, which counts an answer of another length as
// failed, counts only real failures), after ?sleep=D if asked.
func helloHandler() demoHandler {
	return func(r *demoRequest) string {
		if d, err := time.ParseDuration(r.Query.Get("sleep")); err == nil {
			time.Sleep(d)
		}
		return fmt.Sprintf("%s gen=%s\n", pidField(os.Getpid()), os.Getenv("TAKEOVER_TEST_GEN"))
	}
}

// pidField is how helloHandler names a process.
func pidField(pid int) string { return fmt.Sprintf("pid=%07d", pid) }

// A demoHandler answers a request with the body of a 200.
type demoHandler func(*demoRequest) string

// A demoRequest is what a demoHandler sees of a request.
type demoRequest struct {
	Method, Path string
	Query        url.Values
}

// serveDraining serves on ln until SIGTERM or SIGINT, then stops accepting,
// serves every request it accepted, and returns 0.
func serveDraining(ln net.Listener, h demoHandler) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	d := newDrainingServer(h)
	d.serve(ln)
	select {
	case err := <-d.served:
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	case <-term:
	}
	d.drain()
	return 0
}

// A drainingServer serves HTTP/1.1 (and 1.0) on listeners until drained:
// keep-alive, pipelined requests answered in order, a body read and
// dropped. It is the demo's server, on package net alone: net/http would
// link crypto/tls, x509 and http2 into every start of takeover, `who`'s
// too. The drain stops accepting, closes the connections that wait
// between requests, gives one accepted but still silent 5s to send its
// request, and answers every request begun with Connection: close.
type drainingServer struct {
	h         demoHandler
	listeners []net.Listener
	served    chan error // each accept loop's end
	conns     sync.WaitGroup
	drainOnce sync.Once

	mu       sync.Mutex
	draining bool
	state    map[net.Conn]connState
}

// A connState is where a connection is: accepted and silent (connNew),
// between two requests (connIdle), or reading or answering one.
type connState int

const (
	connActive connState = iota
	connNew
	connIdle
)

// Limits: how long a silent new connection may wait once the drain began,
// how long the drain waits for requests to finish, how large a request's
// head may be.
const (
	drainNewGrace = 5 * time.Second
	drainWait     = 30 * time.Second
	maxHeadBytes  = 1 << 20
)

func newDrainingServer(h demoHandler) *drainingServer {
	return &drainingServer{h: h, served: make(chan error, 16), state: map[net.Conn]connState{}}
}

// serve serves on ln until the drain (at most 16 listeners).
func (d *drainingServer) serve(ln net.Listener) {
	d.listeners = append(d.listeners, ln)
	go func() { d.served <- d.accept(ln) }()
}

// accept accepts until ln is closed, and retries a passing failure (out
// of fds) as net/http does.
func (d *drainingServer) accept(ln net.Listener) error {
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() && !errors.Is(err, net.ErrClosed) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		d.conns.Add(1)
		go d.serveConn(c)
	}
}

// drain stops accepting, serves every request accepted, and returns once
// every connection is closed (or after drainWait, with a request still
// running).
func (d *drainingServer) drain() { d.drainOnce.Do(d.drainNow) }

func (d *drainingServer) drainNow() {
	for _, ln := range d.listeners {
		ln.Close()
	}
	for range d.listeners {
		<-d.served // every accepted connection is counted now
	}
	d.mu.Lock()
	d.draining = true
	for c, st := range d.state {
		d.wake(c, st)
	}
	d.mu.Unlock()
	done := make(chan struct{})
	go func() { d.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(drainNewGrace + drainWait):
	}
}

// wake ends a draining server's wait for c's next request: at once between
// requests, after drainNewGrace on a connection yet to send its first.
// d.mu is held.
func (d *drainingServer) wake(c net.Conn, st connState) {
	switch st {
	case connIdle:
		c.SetReadDeadline(time.Now())
	case connNew:
		c.SetReadDeadline(time.Now().Add(drainNewGrace))
	}
}

// setState records c's state; it reports false once c, between requests,
// should close as the server drains.
func (d *drainingServer) setState(c net.Conn, st connState) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.state[c] = st
	if d.draining {
		if st == connIdle {
			return false
		}
		d.wake(c, st)
	}
	return true
}

// serveConn answers c's requests in turn until either side closes.
func (d *drainingServer) serveConn(c net.Conn) {
	defer d.conns.Done()
	defer c.Close()
	defer func() {
		d.mu.Lock()
		delete(d.state, c)
		d.mu.Unlock()
	}()
	br := bufio.NewReader(c)
	bw := bufio.NewWriter(c)
	for st := connNew; ; st = connIdle {
		if !d.setState(c, st) {
			return
		}
		if _, err := br.Peek(1); err != nil {
			return // closed, or woken by the drain
		}
		d.mu.Lock()
		d.state[c] = connActive
		c.SetReadDeadline(time.Time{}) // a request begun is served
		d.mu.Unlock()
		req, status := readDemoRequest(br)
		if status != 0 {
			text := fmt.Sprintf("%d %s", status, statusText[status])
			fmt.Fprintf(bw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n%s", text, text)
			if bw.Flush() == nil {
				lingerClose(c)
			}
			return
		}
		body := d.h(req.demoRequest)
		d.mu.Lock()
		keep := req.keepAlive && !d.draining
		d.mu.Unlock()
		writeDemoResponse(bw, req, body, keep)
		if bw.Flush() != nil {
			return
		}
		if !keep {
			if req.keepAlive { // the drain's close: the client may have sent more
				lingerClose(c)
			}
			return
		}
	}
}

// lingerClose half-closes c and reads what the client still sends, for at
// most 500ms, before c is closed: a close with unread data would reset
// the connection, and the client could lose the answer written last (as
// net/http's closeWriteAndWait).
func lingerClose(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		io.Copy(io.Discard, c)
	}
}

// statusText names the statuses the server answers with.
var statusText = map[int]string{
	400: "Bad Request",
	431: "Request Header Fields Too Large",
	501: "Not Implemented",
	505: "HTTP Version Not Supported",
}

// A parsedRequest is a request read off a connection.
type parsedRequest struct {
	*demoRequest
	proto     string // "HTTP/1.0" or "HTTP/1.1"
	keepAlive bool   // the client asked to keep the connection (1.0) or did not refuse (1.1)
}

// readDemoRequest reads a request's head and its body (which it drops),
// or returns the status that refuses it: 400 (malformed), 431 (a head
// over maxHeadBytes), 501 (a transfer coding other than chunked), 505
// (not HTTP/1).
func readDemoRequest(br *bufio.Reader) (*parsedRequest, int) {
	budget := maxHeadBytes
	line := func() (string, int) {
		var b []byte
		for {
			frag, err := br.ReadSlice('\n')
			if budget -= len(frag); budget < 0 {
				return "", 431
			}
			b = append(b, frag...)
			if err == nil {
				return strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"), 0
			}
			if err != bufio.ErrBufferFull {
				return "", 400
			}
		}
	}
	first, status := line()
	if status != 0 {
		return nil, status
	}
	method, rest, ok1 := strings.Cut(first, " ")
	target, proto, ok2 := strings.Cut(rest, " ")
	if !ok1 || !ok2 || method == "" || strings.ContainsAny(method, "\t ") {
		return nil, 400
	}
	var minor int
	switch proto {
	case "HTTP/1.0":
	case "HTTP/1.1":
		minor = 1
	default:
		if strings.HasPrefix(proto, "HTTP/") {
			return nil, 505
		}
		return nil, 400
	}
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, 400
	}
	req := &parsedRequest{demoRequest: &demoRequest{Method: method, Path: u.Path, Query: u.Query()}, proto: proto}
	connection, length, chunked, hasLength := "", int64(0), false, false
	for {
		l, status := line()
		if status != 0 {
			return nil, status
		}
		if l == "" {
			break
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, 400
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(name) {
		case "connection":
			connection += "," + strings.ToLower(value)
		case "content-length":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 || (hasLength && n != length) {
				return nil, 400
			}
			length, hasLength = n, true
		case "transfer-encoding":
			if !strings.EqualFold(value, "chunked") {
				return nil, 501
			}
			chunked = true
		}
	}
	if chunked && hasLength {
		return nil, 400
	}
	tokens := strings.Split(connection, ",")
	has := func(tok string) bool {
		return slices.ContainsFunc(tokens, func(t string) bool { return strings.TrimSpace(t) == tok })
	}
	req.keepAlive = !has("close") && (minor == 1 || has("keep-alive"))
	var bodyErr error
	if chunked {
		bodyErr = discardChunked(br)
	} else {
		_, bodyErr = io.CopyN(io.Discard, br, length)
	}
	if bodyErr != nil {
		return nil, 400
	}
	return req, 0
}

// discardChunked reads a chunked body, and its trailer, and drops them.
func discardChunked(br *bufio.Reader) error {
	for {
		l, err := br.ReadString('\n')
		if err != nil || len(l) > 4096 {
			return errors.New("bad chunk")
		}
		size, _, _ := strings.Cut(strings.TrimSpace(l), ";")
		n, err := strconv.ParseInt(size, 16, 64)
		if err != nil || n < 0 {
			return errors.New("bad chunk size")
		}
		if n == 0 {
			for { // the trailer, up to its blank line
				l, err := br.ReadString('\n')
				if err != nil || len(l) > 4096 {
					return errors.New("bad trailer")
				}
				if strings.TrimSpace(l) == "" {
					return nil
				}
			}
		}
		if _, err := io.CopyN(io.Discard, br, n); err != nil {
			return err
		}
		if l, err := br.ReadString('\n'); err != nil || strings.TrimSpace(l) != "" {
			return errors.New("bad chunk end")
		}
	}
}

// writeDemoResponse writes a 200 with body (none to a HEAD), in the
// request's protocol, with the headers net/http would send.
func writeDemoResponse(bw *bufio.Writer, req *parsedRequest, body string, keep bool) {
	fmt.Fprintf(bw, "%s 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain; charset=utf-8\r\nDate: %s\r\n",
		req.proto, len(body), time.Now().UTC().Format("Mon, 02 Jan 2006 15:04:05 GMT"))
	switch {
	case !keep && req.proto == "HTTP/1.1":
		bw.WriteString("Connection: close\r\n")
	case keep && req.proto == "HTTP/1.0":
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	if req.Method != "HEAD" {
		bw.WriteString(body)
	}
}

// serverStarterListener returns the listener SERVER_STARTER_PORT passes for
// addr (or the only one, when there is one).
func serverStarterListener(env, addr string) (net.Listener, error) {
	ports, err := starter.ParseEnv(env)
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	for _, p := range ports {
		if len(ports) == 1 || p.Addr == addr || p.Addr == port || strings.HasSuffix(p.Addr, ":"+port) {
			return net.FileListener(os.NewFile(uintptr(p.FD), p.Addr))
		}
	}
	return nil, fmt.Errorf("SERVER_STARTER_PORT %q passes no socket for %s", env, addr)
}

// rssminerListen is the 2012 Rssminer recipe, as its post describes it: once
// initialized, kill whatever listens on the port, then retry the bind every
// 150 ms, up to 30 times. The recipe's `lsof | xargs kill` is run as argv,
// never through a shell: the port is a number, the pids are lsof's.
func rssminerListen(addr string) (net.Listener, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q of %s: not a number from 0 to 65535", portStr, addr)
	}
	out, _ := exec.Command("lsof", "-t", "-sTCP:LISTEN", "-i:"+strconv.FormatUint(port, 10)).Output()
	for _, f := range strings.Fields(string(out)) {
		// As xargs kill, but never pid 1, a group (0, -1) or this process.
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	for range 30 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(150 * time.Millisecond)
	}
	return nil, err
}
