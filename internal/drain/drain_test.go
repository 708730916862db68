package drain

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/socktab"
)

const ms = time.Millisecond

// quiet is a connection that answered its last request 500 ms ago.
func quiet() socktab.Conn {
	return socktab.Conn{State: 1, Info: true, LastDataRecv: 504 * ms, LastDataSent: 500 * ms, LastAckRecv: 500 * ms,
		BytesReceived: 80, BytesAcked: 120}
}

func TestIdle(t *testing.T) {
	with := func(f func(*socktab.Conn)) socktab.Conn { c := quiet(); f(&c); return c }
	for _, tc := range []struct {
		name string
		c    socktab.Conn
		idle bool
	}{
		{"answered, quiet since", quiet(), true},
		{"answered in the tick the request came, the client's ACK in the same tick", with(func(c *socktab.Conn) { c.LastDataRecv = c.LastDataSent }), false},
		{"a request that came the tick the last response went out, its ACK in it, not answered (a slow server: measured)", socktab.Conn{State: 1, Info: true,
			LastDataSent: 232 * ms, LastDataRecv: 232 * ms, LastAckRecv: 232 * ms, BytesReceived: 2500, BytesAcked: 2950}, false},
		{"answered at once, the client's delayed ACK later (measured)", socktab.Conn{State: 1, Info: true,
			LastDataSent: 188 * ms, LastDataRecv: 188 * ms, LastAckRecv: 140 * ms, BytesReceived: 480, BytesAcked: 590}, true},
		{"answered, the client's ACK a tick later", with(func(c *socktab.Conn) { c.LastDataRecv, c.LastAckRecv = c.LastDataSent, 496*ms }), true},
		{"a request waits unread", with(func(c *socktab.Conn) { c.RQueue, c.LastDataRecv = 78, 2*time.Second }), false},
		{"half a request unread", with(func(c *socktab.Conn) { c.RQueue = 10 }), false},
		{"a response still going out", with(func(c *socktab.Conn) { c.WQueue = 65536 }), false},
		{"a response sent, not yet acknowledged", with(func(c *socktab.Conn) { c.WQueue = 120 }), false},
		{"a request read, not answered (a slow server computing)", with(func(c *socktab.Conn) { c.LastDataRecv = 300 * ms }), false},
		{"half a request read, the rest awaited", with(func(c *socktab.Conn) { c.LastDataRecv, c.LastDataSent = 2*time.Second, 9*time.Second }), false},
		{"the first request read, not answered, sent in the handshake's tick", with(func(c *socktab.Conn) { c.LastDataRecv, c.BytesAcked = c.LastDataSent, 0 }), false},
		{"answered just now", with(func(c *socktab.Conn) { c.LastDataRecv, c.LastDataSent, c.LastAckRecv = 8*ms, 4*ms, 4*ms }), false},
		{"answered in the request's tick, just now (or a request that came as the last response left)", with(func(c *socktab.Conn) { c.LastDataRecv, c.LastDataSent, c.LastAckRecv = 4*ms, 4*ms, 4*ms }), false},
		{"pipelined: the first answered just now, the second read with it", with(func(c *socktab.Conn) { c.LastDataRecv, c.LastDataSent = 12*ms, 0 }), false},
		{"a stream pushing", with(func(c *socktab.Conn) { c.LastDataRecv, c.LastDataSent = 30*time.Second, 8*ms }), false},
		{"a stream between two messages (taken for idle: a limit)", with(func(c *socktab.Conn) { c.LastDataRecv, c.LastDataSent = 30*time.Second, 2*time.Second }), true},
		{"connected, nothing sent yet, for a while", socktab.Conn{State: 1, Info: true, LastDataRecv: 2 * time.Second, LastDataSent: 2 * time.Second}, true},
		{"connected just now, nothing sent yet", socktab.Conn{State: 1, Info: true, LastDataRecv: 4 * ms, LastDataSent: 4 * ms}, false},
		{"connected 100 ms ago, nothing sent yet (a client slow to send its first request)", socktab.Conn{State: 1, Info: true, LastDataRecv: 100 * ms, LastDataSent: 100 * ms}, false},
		{"the client closed after its answer (CLOSE_WAIT)", with(func(c *socktab.Conn) { c.State = 8 }), true},
		{"no tcp_info", socktab.Conn{State: 1}, false},
	} {
		ok, why := Idle(tc.c, Settle)
		if ok != tc.idle {
			t.Errorf("%s: Idle(%+v) = %v (%s); want %v", tc.name, tc.c, ok, why, tc.idle)
		}
		if !ok && why == "" {
			t.Errorf("%s: busy with no reason", tc.name)
		}
	}
}

func TestFinished(t *testing.T) {
	busy := quiet()
	busy.RQueue = 5
	if ok, _, _ := Finished(nil, Settle); !ok {
		t.Error("no connection: not finished")
	}
	if ok, _, _ := Finished([]socktab.Conn{quiet(), quiet()}, Settle); !ok {
		t.Error("two idle connections: not finished")
	}
	ok, c, why := Finished([]socktab.Conn{quiet(), busy, quiet()}, Settle)
	if ok || c != busy || why == "" {
		t.Errorf("one busy connection among idle ones: Finished = %v, %+v, %q; want false, the busy one and why", ok, c, why)
	}
}

// TestIdleLoopback: a server's real connections over loopback. A request
// the server has not read, and one it has read and not answered, keep the
// connection busy however long it waits (the test waits several settle
// times); once answered, it turns idle after the settle time.
func TestIdleLoopback(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	const settle = 20 * ms

	dial := func() (client, server net.Conn) {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(); s.Close() })
		return c, s
	}
	// conn returns the server's end of the connection whose client is c.
	conn := func(c net.Conn) socktab.Conn {
		t.Helper()
		conns, err := socktab.DiagTCPConns(port)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range conns {
			if x.Remote == c.LocalAddr().(*net.TCPAddr).AddrPort() {
				return x
			}
		}
		t.Fatalf("no connection from %v among %+v", c.LocalAddr(), conns)
		return socktab.Conn{}
	}
	// state waits until the server's end is idle or busy as wanted, up
	// to 10s; the busy ones are looked at again after 10 settle times.
	state := func(what string, c net.Conn, idle bool) {
		t.Helper()
		if !idle {
			time.Sleep(10 * settle)
		}
		var x socktab.Conn
		var ok bool
		var why string
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(settle) {
			x = conn(c)
			if ok, why = Idle(x, settle); ok == idle || !idle || time.Now().After(deadline) {
				break
			}
		}
		if ok != idle {
			t.Errorf("%s: Idle = %v (%s) of %+v; want %v", what, ok, why, x, idle)
		}
	}
	const req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

	c0, s0 := dial()
	io.WriteString(c0, req[:10]) // at once, in the handshake's tick
	if _, err := io.ReadFull(s0, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	state("half a first request read, sent as it connected", c0, false)

	c, s := dial()
	state("connected, nothing sent", c, true)
	io.WriteString(c, req)
	state("a request not read", c, false)
	r := bufio.NewReader(s)
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if l == "\r\n" {
			break
		}
	}
	state("a request read, not answered", c, false)
	io.WriteString(s, resp)
	buf := make([]byte, len(resp))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	state("answered", c, true)

	// Two more requests, each sent as soon as the response before it was
	// read: the second comes in the tick the first's response went out,
	// carrying its ACK. Read, not answered, it is busy; answered (at once),
	// it is idle once the client's delayed ACK of the answer comes.
	io.WriteString(c, req)
	if _, err := io.ReadFull(r, make([]byte, len(req))); err != nil {
		t.Fatal(err)
	}
	io.WriteString(s, resp)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, req)
	if _, err := io.ReadFull(r, make([]byte, len(req))); err != nil {
		t.Fatal(err)
	}
	state("a request sent as the response before it was read, read and not answered", c, false)
	io.WriteString(s, resp)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	state("answered at once", c, true)

	// The next request on the same connection: half of it, read.
	io.WriteString(c, req[:10])
	if _, err := io.ReadFull(r, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	state("half a request read, the rest awaited", c, false)

	// A response the client does not read: it fills the client's window.
	c2, s2 := dial()
	io.WriteString(c2, req)
	if _, err := io.ReadFull(s2, make([]byte, len(req))); err != nil {
		t.Fatal(err)
	}
	go io.WriteString(s2, "HTTP/1.1 200 OK\r\n\r\n"+strings.Repeat("x", 16<<20))
	state("a response still going out", c2, false)
}

func TestRequestLine(t *testing.T) {
	for _, tc := range []struct {
		head string
		want bool
	}{
		{"GET / HT", true},
		{"OPTIONS ", true},
		{"POST /x", true},
		{"PRI * HT", true}, // HTTP/2's preface is one too, once, when the connection opens
		{"GET", false},     // too short to tell
		{"get / HT", false},
		{"CONNECTX", false},
		{"\x81\x85abcd", false},     // a WebSocket frame, masked
		{"\x00\x00\x12\x04", false}, // an HTTP/2 frame
		{"*2\r\n$4\r\n", false},     // redis
		{"GE / HTT", false},
		{"", false},
	} {
		if got := RequestLine([]byte(tc.head)); got != tc.want {
			t.Errorf("RequestLine(%q) = %v, want %v", tc.head, got, tc.want)
		}
	}
}

// TestLoops: a connection is a loop once two distinct requests were seen
// waiting on it and its client still sends; AllLooping holds when every
// connection not idle is one.
func TestLoops(t *testing.T) {
	waiting := func(cookie, recv uint64) socktab.Conn {
		return socktab.Conn{Cookie: cookie, State: 1, Info: true, RQueue: 40, BytesReceived: recv, BytesAcked: recv * 2,
			LastDataRecv: 0, LastDataSent: 4 * ms, LastAckRecv: 4 * ms}
	}
	req := []byte("GET / HT")
	l := Loops{}
	a := waiting(1, 400)
	if !l.Peek(a) {
		t.Fatal("a connection never looked at: not worth a peek")
	}
	l.Saw(a, req)
	if l.Peek(a) {
		t.Error("the same request, seen already: worth a peek")
	}
	l.Saw(a, req) // the same request again: still one
	if l.Looping(a) {
		t.Error("one request seen: a loop")
	}
	a2 := waiting(1, 440)
	if !l.Peek(a2) {
		t.Error("data came in since the request seen: not worth a peek")
	}
	l.Saw(a2, req)
	if !l.Looping(a2) {
		t.Errorf("two requests seen, the client sending: not a loop (%+v)", l)
	}
	if l.Peek(waiting(1, 480)) {
		t.Error("a loop already: worth a peek")
	}
	slow := a2
	slow.RQueue, slow.LastDataRecv = 0, 2*time.Second
	if l.Looping(slow) {
		t.Error("a request read 2 s ago and not answered (a slow one): a loop")
	}

	// A binary stream (a WebSocket) never shows a request line.
	b := waiting(2, 100)
	l.Saw(b, []byte("\x81\x85abcd"))
	b = waiting(2, 150)
	l.Saw(b, []byte("\x81\x85abcd"))
	if l.Looping(b) {
		t.Error("a WebSocket's frames: a loop")
	}

	idle := quiet()
	if n, _, _, ok := l.AllLooping([]socktab.Conn{a2, idle}, Settle); !ok || n != 1 {
		t.Errorf("a loop and an idle connection: AllLooping = %d, %v; want 1, true", n, ok)
	}
	if n, held, why, ok := l.AllLooping([]socktab.Conn{a2, b}, Settle); ok || n != 1 || held != b || why == "" {
		t.Errorf("a loop and a stream: AllLooping = %d, %+v, %q, %v; want 1, the stream, why, false", n, held, why, ok)
	}
	if _, _, _, ok := l.AllLooping([]socktab.Conn{idle}, Settle); ok {
		t.Error("nothing busy: AllLooping holds (the drain's own rule says finished then)")
	}
}
