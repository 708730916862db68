package swap

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/takeover/takeover/internal/drain"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/socktab"
	"golang.org/x/sys/unix"
)

// Taking a fenced old server's keep-alive connections (issue 30). A server
// that does not close its keep-alive connections itself when it stops
// (Go's net/http without Shutdown, uvicorn, node) closes them with a
// request in flight on each, under clients that send request after request
// (a proxy's pool, a load test): the client's next request meets a closed
// connection. Before it is stopped, takeover takes a copy of each of its
// connections (pidfd_getfd) and shuts the copy for reading: the server
// reads the requests already sent, answers them, then reads an end of
// file, as from a client that has gone, and closes its descriptor. The
// connection stays open (takeover's copy holds it), no FIN goes out, and
// the next request its client sends waits in it, unread. Once the server
// has let go, takeover sends that request to the new server on a
// connection of its own, with "Connection: close" added to its header, and
// the answer back: the client reads a whole response that tells it to
// reconnect, and does, to the new server. A server that half-closes a
// connection when it reads the end of file (node's http, shutdown(2))
// sends its client a FIN all the same: that client sees the connection
// closed, as without this.
//
// A shut-down socket reads as at its end whenever nothing waits in it, so
// the copy is polled (its receive queue and state), not waited on.

// relayIdle is how long a taken connection whose client sends nothing is
// held before it is closed: as a server closes an idle keep-alive
// connection, and its client reconnects for its next request.
const relayIdle = drain.LoopPatience

// relayPoll is how often a taken connection's receive queue is looked at.
const relayPoll = time.Millisecond

// A takenConn is takeover's copy of one of the old server's connections,
// shut for reading.
type takenConn struct {
	sock     int
	inode    uint64
	repaired bool // in repair mode (takeBetween), not shut
}

// What a fence took (TakeConns): how many of the connections taken the old
// server still holds, how many had a request relayed, and the relays.
type taken struct {
	held     int
	repaired int // taken in repair mode (takeBetween)
	relayed  int
	relays   sync.WaitGroup
}

// Relayed returns how many taken connections had a request relayed to the
// new server, and how many were taken in repair mode.
func (f *Fence) Relayed() (relayed, repaired int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.taken.relayed, f.taken.repaired
}

// TakeConns takes every connection the old server (pids) holds on the
// fence's port, shuts each for reading, and starts relaying each, once no
// process of pids holds it any more, to the new server (relay), for up to
// limit. It returns how many it took, and the first error met (what it
// took before it is relayed all the same). AwaitReleased waits for the
// server to let go.
func (f *Fence) TakeConns(pids []int, limit time.Duration, log *slog.Logger) (int, error) {
	taken, err := f.takeBetween(pids)
	ours, holders, herr := f.heldConns(pids)
	if err == nil {
		err = herr
	}
	for i, c := range ours { // those takeBetween did not take
		h := holders[i][0]
		sock, ino, err := pidfd.CopySocket(h.PID, h.FD)
		if err != nil {
			continue
		}
		if ino != c.Inode || unix.Shutdown(sock, unix.SHUT_RD) != nil {
			unix.Close(sock) // the fd was closed and reused meanwhile
			continue
		}
		markTaken(ino, true)
		taken = append(taken, takenConn{sock: sock, inode: ino})
	}
	if len(taken) == 0 {
		return 0, err
	}
	f.mu.Lock()
	f.taken.held = len(taken)
	for _, t := range taken {
		if t.repaired {
			f.taken.repaired++
		}
	}
	f.mu.Unlock()
	dial := f.addr
	if dial.Addr().IsUnspecified() {
		lo := netip.IPv6Loopback()
		if dial.Addr().Unmap().Is4() {
			lo = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		}
		dial = netip.AddrPortFrom(lo, dial.Port())
	}
	deadline := time.Now().Add(limit)
	f.taken.relays.Add(1)
	go func() {
		defer f.taken.relays.Done()
		n := len(taken)
		relayed := f.relayReleased(taken, pids, dial, deadline)
		_, repaired := f.Relayed()
		log.Info("relayed the next request of the old server's keep-alive connections to the new server, each with Connection: close", "port", f.addr.String(), "taken", n, "in_repair_mode", repaired, "relayed", relayed)
	}()
	return len(taken), err
}

// AwaitReleased waits, up to wait, until the old server holds none of the
// connections TakeConns took: it has answered what it had read on them.
// It reports whether it did.
func (f *Fence) AwaitReleased(ctx context.Context, wait time.Duration) bool {
	end := time.Now().Add(wait)
	for {
		f.mu.Lock()
		n := f.taken.held
		f.mu.Unlock()
		if n == 0 {
			return true
		}
		if time.Now().After(end) || ctx.Err() != nil {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// WaitRelays waits until every relay of the fence has ended (each is
// bounded by TakeConns's limit).
func (f *Fence) WaitRelays() { f.taken.relays.Wait() }

// repairOff takes t's socket out of repair mode, if it is in it: a socket
// closed in it vanishes without a FIN or a reset, and its client waits.
func (t takenConn) repairOff() {
	if t.repaired {
		unix.SetsockoptInt(t.sock, unix.IPPROTO_TCP, unix.TCP_REPAIR, tcpRepairOffNoWP)
	}
}

func (t takenConn) close() {
	t.repairOff()
	unix.Close(t.sock)
	markTaken(t.inode, false)
}

// heldConns returns the connections to the fence's address that one of
// pids holds, and their holders. (A server with two of them on one port,
// nginx's `listen 80; listen [::]:80;`, has a fence for each: each takes
// its own; a wildcard address's takes those to any address not taken.)
func (f *Fence) heldConns(pids []int) ([]socktab.Conn, [][]procfs.Holder, error) {
	conns, err := socktab.DiagTCPConns(f.addr.Port())
	if err != nil {
		return nil, nil, err
	}
	want := f.addr.Addr().Unmap()
	conns = slices.DeleteFunc(conns, func(c socktab.Conn) bool {
		return !want.IsUnspecified() && c.Local.Addr().Unmap() != want || beingTaken(c.Inode)
	})
	return heldConns("/proc", conns, pids)
}

// The connections this process has taken and not yet let go of, by inode:
// one taken by a fence is another's to leave alone.
var takenNow struct {
	sync.Mutex
	inodes map[uint64]bool
}

func beingTaken(inode uint64) bool {
	takenNow.Lock()
	defer takenNow.Unlock()
	return takenNow.inodes[inode]
}

// markTaken notes that inode is taken (on) or let go of.
func markTaken(inode uint64, on bool) {
	takenNow.Lock()
	defer takenNow.Unlock()
	if takenNow.inodes == nil {
		takenNow.inodes = map[uint64]bool{}
	}
	if on {
		takenNow.inodes[inode] = true
	} else {
		delete(takenNow.inodes, inode)
	}
}

// betweenFor is how long takeBetween looks for connections between two
// requests (a variable for the tests, which set it to 0 to take each
// connection shut for reading).
var betweenFor = 200 * time.Millisecond

// takeBetween takes, for up to betweenFor, each connection of pids on port
// that is seen between two requests (its client's next request waits in it
// unread: the server has answered the one before) and puts takeover's copy
// of it in repair mode (TCP_REPAIR, CAP_NET_ADMIN): the server's next read
// or write on it fails (EPERM), and it closes its descriptor as after any
// error on a connection, without the half-close (shutdown(2)) with which
// some servers answer an end of file (node's http). The request stays
// queued for the new server. Where repair mode is refused, none is taken.
func (f *Fence) takeBetween(pids []int) ([]takenConn, error) {
	var taken []takenConn
	for end := time.Now().Add(betweenFor); time.Now().Before(end); time.Sleep(relayPoll) {
		ours, holders, err := f.heldConns(pids)
		if err != nil {
			return taken, err
		}
		left := 0 // not taken yet (heldConns leaves out those taken)
		for i, c := range ours {
			left++
			if c.RQueue == 0 {
				continue
			}
			h := holders[i][0]
			sock, ino, err := pidfd.CopySocket(h.PID, h.FD)
			if err != nil {
				continue
			}
			if ino != c.Inode || !drain.RequestLine(peekHead(sock)) {
				unix.Close(sock)
				continue
			}
			if err := unix.SetsockoptInt(sock, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
				unix.Close(sock)
				return taken, nil // not CAP_NET_ADMIN: shut them all
			}
			t := takenConn{sock: sock, inode: ino, repaired: true}
			if inq, err := unix.IoctlGetInt(sock, unix.SIOCINQ); err != nil || inq == 0 {
				// The server read the request between the look and the
				// repair mode: it is working on it, and must be able to
				// answer. Out of repair mode at once; shut it later.
				t.close()
				continue
			}
			markTaken(ino, true)
			taken = append(taken, t)
			left--
		}
		if left == 0 {
			break
		}
	}
	return taken, nil
}

// relayReleased relays each of taken once no process of pids holds it,
// until deadline; what is still held then is closed.
func (f *Fence) relayReleased(taken []takenConn, pids []int, dial netip.AddrPort, deadline time.Time) (relayed int) {
	var wg sync.WaitGroup
	for len(taken) > 0 {
		inodes := make([]uint64, len(taken))
		for i, t := range taken {
			inodes[i] = t.inode
		}
		found, err := procfs.FS("/proc").Holders(inodes, pids)
		if err != nil || time.Now().After(deadline) {
			break
		}
		taken = slices.DeleteFunc(taken, func(t takenConn) bool {
			i := slices.Index(inodes, t.inode)
			if len(found[i]) > 0 {
				return false
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer markTaken(t.inode, false)
				t.repairOff()
				if relay(t.sock, dial, deadline) {
					f.mu.Lock()
					f.taken.relayed++
					f.mu.Unlock()
				}
			}()
			return true
		})
		f.setHeld(len(taken))
		time.Sleep(2 * time.Millisecond)
	}
	for _, t := range taken {
		t.close()
	}
	f.setHeld(0)
	wg.Wait()
	relayed, _ = f.Relayed()
	return relayed
}

func (f *Fence) setHeld(n int) {
	f.mu.Lock()
	f.taken.held = n
	f.mu.Unlock()
}

// relay waits up to relayIdle for its client's next request on sock (a
// taken connection, closed when it returns), sends it to the new server
// at dial with "Connection: close" added, and the answer back, until the
// new server closes or deadline. It reports whether a request was
// relayed. What is not an HTTP/1.x request (a WebSocket's frame, another
// protocol) is not relayed: the connection is closed, as the old server's
// exit would have closed it.
func relay(sock int, dial netip.AddrPort, deadline time.Time) bool {
	defer unix.Close(sock)
	idle := time.Now().Add(relayIdle)
	if deadline.Before(idle) {
		idle = deadline
	}
	head, open := readTaken(sock, idle)
	if len(head) == 0 {
		return false // gone, or idle: closed, as a server closes an idle one
	}
	if !drain.RequestLine(head) {
		return false // not HTTP/1.x (a stream's frame): closed, as by the old server's exit
	}
	for open && !bytes.ContainsRune(head, '\n') && len(head) < 8192 && time.Now().Before(deadline) {
		var more []byte
		more, open = readTaken(sock, deadline)
		head = append(head, more...)
	}
	head = closeAfter(head)
	d := net.Dialer{Deadline: deadline}
	up, err := d.Dial("tcp", dial.String())
	if err != nil {
		return false
	}
	defer up.Close()
	up.SetDeadline(deadline)
	if _, err := up.Write(head); err != nil {
		return false
	}
	done := make(chan struct{})
	go func() { // the client's further data (a request's body)
		defer close(done)
		for open && time.Now().Before(deadline) {
			var b []byte
			b, open = readTaken(sock, deadline)
			if len(b) > 0 {
				if _, err := up.Write(b); err != nil {
					return
				}
			}
		}
		up.(*net.TCPConn).CloseWrite()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := up.Read(buf)
		if n > 0 && writeTaken(sock, buf[:n], deadline) != nil {
			break
		}
		if err != nil {
			break
		}
	}
	unix.Shutdown(sock, unix.SHUT_WR) // after a whole response: the client reconnects
	up.SetDeadline(time.Now())        // ends the other direction's write
	<-done
	return true
}

// readTaken returns what waits in the taken connection sock, waiting for
// something until deadline; open is false once its client has closed it
// (or it failed) and nothing is left.
func readTaken(sock int, deadline time.Time) (b []byte, open bool) {
	for {
		n, err := unix.IoctlGetInt(sock, unix.SIOCINQ)
		if err != nil {
			return nil, false
		}
		if n > 0 {
			b = make([]byte, min(n, 64<<10))
			k, _, err := unix.Recvfrom(sock, b, unix.MSG_DONTWAIT)
			if err != nil || k == 0 {
				return nil, false
			}
			return b[:k], true
		}
		info, err := unix.GetsockoptTCPInfo(sock, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil || info.State != tcpEstablished {
			return nil, false // its client closed it (CLOSE_WAIT), or reset it
		}
		if time.Now().After(deadline) {
			return nil, true
		}
		time.Sleep(relayPoll)
	}
}

const (
	tcpEstablished   = 1
	tcpRepairOffNoWP = -1 // TCP_REPAIR_OFF_NO_WP: no window probe
)

// writeTaken writes b to the taken connection sock, whose file flags its
// old server set (blocking or not), until deadline.
func writeTaken(sock int, b []byte, deadline time.Time) error {
	for len(b) > 0 {
		n, err := unix.SendmsgN(sock, b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			wait := time.Until(deadline)
			if wait <= 0 {
				return unix.ETIMEDOUT
			}
			unix.Poll([]unix.PollFd{{Fd: int32(sock), Events: unix.POLLOUT}}, int(min(wait, 100*time.Millisecond)/time.Millisecond)+1)
		case err != nil:
			return err
		default:
			b = b[n:]
		}
	}
	return nil
}

// closeAfter adds "Connection: close" to the header of the HTTP/1.x
// request that head begins, after its request line: the new server
// answers it and closes, and its client opens a new connection for the
// next. (A second Connection header field adds its token to the first's:
// RFC 9110, 5.3.)
func closeAfter(head []byte) []byte {
	i := bytes.IndexByte(head, '\n')
	if i < 0 {
		return head
	}
	out := make([]byte, 0, len(head)+19)
	out = append(out, head[:i+1]...)
	out = append(out, "Connection: close\r\n"...)
	return append(out, head[i+1:]...)
}
