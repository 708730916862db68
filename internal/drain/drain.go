// Package drain decides, from what the kernel shows of a server's
// connections (socktab.Conn: their queues and tcp_info), whether the
// server has answered every request it read: whether it can be stopped
// now without losing one. It is pure: the caller dumps the connections
// (socktab.DiagTCPConns) and picks those of the server.
//
// HTTP/1.1 keep-alive connections are never closed by their clients, so a
// server that is waited for until its connections end waits for ever; a
// connection between two requests is idle, and a server whose connections
// are all idle has nothing under way. A connection is busy when:
//
//   - bytes wait in its receive queue: a request (or part of one) not yet
//     read;
//   - bytes wait in its send queue: a response not yet all sent and
//     acknowledged;
//   - data came in after the last data went out, or data came in and none
//     ever went out: a request read and not yet answered (a slow server
//     computing, or half a request read and the rest awaited);
//   - it has not been quiet for settle: data went either way within it
//     (a response written in parts, a stream that pushes).
//
// The kernel keeps the times of the last data in and out in jiffies (4 ms
// at HZ=250): a request answered within one tick reads as in and out at
// the same instant, and so does a request that came in the tick the
// previous response went out (a client sends its next request as soon as
// it has read a response, on loopback within microseconds) and that a slow
// server is still working on. An ACK that came in a tick or more after the
// last data in tells them apart: it acknowledges data sent after the
// request (a client delays the ACK of a response it does not answer, by
// 40 ms on Linux), where the next request carries the previous response's
// ACK in itself. Without one (a client that acknowledges at once, within
// the tick), the connection counts as busy, and waits for --drain-timeout
// as every open connection did before.
//
// Nor can the kernel tell a pipelined request the server read along with
// the one it answered, or a stream between two of its messages: those
// are the limits of looking from outside.
package drain

import (
	"time"

	"github.com/takeover/takeover/internal/socktab"
)

// Settle is how long a connection must have been quiet, both ways, to be
// taken for idle: five ticks, so that a response written in parts with a
// shorter pause, or a pipelined request answered soon after the one before
// it, is seen. It is short because every connection must be idle at one
// instant: with n connections each idle a fraction p of the time, all are
// at once p^n of the time, and each ms of settle lowers p.
const Settle = 20 * time.Millisecond

// FirstRequestWait is how long a connection that has carried nothing yet
// must have been open to be taken for idle (Idle).
const FirstRequestWait = time.Second

// Idle reports whether the server that holds c has answered every request
// it read on c and is not sending on it; why says what is under way when
// it is not.
func Idle(c socktab.Conn, settle time.Duration) (ok bool, why string) {
	switch {
	case !c.Info:
		return false, "the kernel gives no tcp_info"
	case c.RQueue > 0:
		return false, "bytes received and not read: a request not yet read"
	case c.WQueue > 0:
		return false, "bytes sent and not acknowledged: a response still going out"
	case c.BytesReceived == 0 && c.BytesAcked == 0:
		// Connected, and no data either way yet: nothing to answer yet,
		// but a client that opens a connection means to send on it, and
		// one starved of CPU between its connect and its write (50 load
		// workers on two cores) sends tens of ms later: its request would
		// meet a server that has exited. Only a connection unused for
		// FirstRequestWait is taken for idle (a browser's preconnect).
		// (The kernel counts the times from the handshake.)
		return c.LastDataRecv >= max(settle, FirstRequestWait), "connected, and its first request not sent yet"
	case c.BytesAcked == 0 && c.BytesReceived > 0:
		return false, "data came in and none ever went out: a request read and not answered"
	case c.LastDataRecv < c.LastDataSent:
		return false, "data came in after the last data went out: a request read and not answered"
	case min(c.LastDataRecv, c.LastDataSent) < settle:
		return false, "data went in or out within the settle time"
	case c.LastDataRecv == c.LastDataSent && c.LastAckRecv >= c.LastDataRecv:
		return false, "data came in and went out in the same tick, and no ACK since: a request answered at once, or one that came as the last response went out"
	}
	// Quiet for settle, and the last data went out after the last data
	// came in, or in the same tick and an ACK came after.
	return true, ""
}

// Finished reports whether a server whose connections are conns has
// answered every request it read: every connection is idle. Otherwise busy
// is the first connection that is not, and why says what it is doing.
func Finished(conns []socktab.Conn, settle time.Duration) (ok bool, busy socktab.Conn, why string) {
	for _, c := range conns {
		if ok, why := Idle(c, settle); !ok {
			return false, c, why
		}
	}
	return true, socktab.Conn{}, ""
}

// A server that does not close its keep-alive connections, under clients
// that send request after request on them (a proxy's pool, a load test),
// is never idle on all of them at one instant: waiting for that holds a
// deploy until --drain-timeout and then loses the same requests, those in
// flight when it is stopped. A connection whose client has sent new
// requests on it since the fence went up, and is still sending, is such a
// loop: the server is stopped once every connection still busy is one,
// after LoopPatience (in which an instant with all of them idle may yet
// come: clients that pause between requests, as browsers do). Then the
// server closes them as it stops (one request in flight on each, unless it
// answers it with Connection: close), a few seconds sooner than at
// --drain-timeout.
//
// Only HTTP/1.x counts: a request line is seen waiting unread on the
// connection (the caller peeks at its receive queue). A stream (a
// WebSocket, HTTP/2 and gRPC, a server pushing events) never shows one
// after its first request, and holds the drain until --drain-timeout, as
// the one thing that is for. Nor does a request the server is still
// working on after LoopActive: no new data came in on it since.

const (
	LoopPatience = time.Second
	// LoopActive is how recently a loop must have received data: its
	// client is still sending request after request.
	LoopActive = 100 * time.Millisecond
)

// Loops notes, per connection (by cookie), the distinct HTTP/1.x requests
// seen waiting unread on it since the fence went up.
type Loops map[uint64]loopSeen

type loopSeen struct {
	n    int    // distinct requests seen
	recv uint64 // BytesReceived when the last was seen
}

// Peek reports whether c is worth a look at its receive queue: it is not
// known for a loop yet, and data came in since the request seen there
// last. (Not only when sock_diag saw bytes waiting: a server that reads
// as soon as data comes, and works on it after, leaves a request waiting
// only for moments, and by the time of the look that was may be read and
// another come.)
func (l Loops) Peek(c socktab.Conn) bool {
	s, ok := l[c.Cookie]
	return s.n < 2 && (!ok || s.recv != c.BytesReceived)
}

// Saw notes that head, the first bytes waiting unread on c, were looked at.
func (l Loops) Saw(c socktab.Conn, head []byte) {
	if !RequestLine(head) {
		return
	}
	s := l[c.Cookie]
	if s.recv != c.BytesReceived || s.n == 0 {
		s.n++
		s.recv = c.BytesReceived
	}
	l[c.Cookie] = s
}

// Looping reports whether c is a keep-alive loop: two requests seen on it
// (the first answered before the second came), and data came in within
// LoopActive.
func (l Loops) Looping(c socktab.Conn) bool {
	return l[c.Cookie].n >= 2 && c.LastDataRecv < LoopActive
}

// AllLooping reports whether every connection of conns that is not idle is
// a loop, and how many are (false if none is busy); otherwise held is the
// first busy one that is not a loop, and why says what it is doing.
func (l Loops) AllLooping(conns []socktab.Conn, settle time.Duration) (n int, held socktab.Conn, why string, ok bool) {
	for _, c := range conns {
		idle, busy := Idle(c, settle)
		switch {
		case idle:
		case l.Looping(c):
			n++
		case why == "":
			held, why = c, busy
			if l[c.Cookie].n > 0 {
				why += "; a keep-alive connection that has not sent request after request within " + LoopActive.String()
			}
		}
	}
	return n, held, why, why == "" && n > 0
}

// RequestLine reports whether b begins an HTTP/1.x request: a method in
// capitals (GET, POST, OPTIONS, ...) and a space.
func RequestLine(b []byte) bool {
	for i, c := range b {
		switch {
		case c == ' ':
			return i >= 3
		case c < 'A' || c > 'Z' || i == 7:
			return false
		}
	}
	return false
}
