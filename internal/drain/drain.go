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
