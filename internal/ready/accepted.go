package ready

import (
	"net/netip"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/socktab"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// A server that has accepted a connection accepts: when no process of the
// generation is caught waiting on a socket, a connection it holds that came
// from that socket is proof as good. It matters where the socket is shared
// with the old server (a passed socket, a handoff, --fence off) and busy:
// a server whose accept loop always finds a connection pending is rarely
// caught blocked (python's ThreadingHTTPServer under 50 clients, its main
// thread mostly running or waiting for the GIL, was caught in poll(2) once
// in 150 to 200 looks, 3 to 4 s), and one that polls with non-blocking
// accepts never is. Fenced, the new generation's own socket
// gets no connection before it is ready, so this never fires early.
//
// sock_diag does not say which listener a connection came from, only its
// addresses: a connection counts for a socket when its local address is
// the socket's (the same family; any address for a wildcard socket) and
// no other wanted socket has that address (then it could have come from
// either: only waits count there). Only the generation's processes are
// walked for it, so the old server's connections are never taken for the
// new one's: the new generation is a new process tree, which cannot hold
// a connection the old server accepted unless the old server sent it one.

// listenerAddr is the bound address of the listening socket fd, and its
// family.
type listenerAddr struct {
	addr   netip.AddrPort
	family uint8
}

func sockAddr(fd int) (listenerAddr, bool) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return listenerAddr{}, false
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return listenerAddr{netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), unix.AF_INET}, true
	case *unix.SockaddrInet6:
		return listenerAddr{netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), uint16(sa.Port)), unix.AF_INET6}, true
	}
	return listenerAddr{}, false
}

// mayHaveCome tells whether c may have been accepted from a socket
// listening at l: the kernel gives a listener only connections to its own
// address and family (a dual-stack IPv6 socket's IPv4 clients are IPv6
// connections to a mapped address, which sock_diag's addresses unmap).
func (l listenerAddr) mayHaveCome(c socktab.Conn) bool {
	return c.Family == l.family && c.Local.Port() == l.addr.Port() &&
		(l.addr.Addr().IsUnspecified() || c.Local.Addr() == l.addr.Addr())
}

// accepted returns, of the TCP sockets in socks (inodes in unseen), those
// from which some process of pids holds a connection. A server's end of a
// connection has an inode from its accept to its close, and sock_diag
// lists it with its addresses all that time (after the server's shutdown
// too: FIN_WAIT1 and 2, where python's socketserver spends most of a
// connection's life). The dump takes milliseconds (the kernel walks its
// whole established hash; 15 to 30 ms on a loaded host with many
// TIME_WAIT sockets), longer than python holds a connection, so the fds
// are read before and after it: a connection the dump saw was held at one
// of the two reads unless it was accepted after the first and closed
// before the second; the next looks catch another. An inode names one
// socket while it is open, so a match is the same connection. The dump (one per
// family and port) is skipped while the generation holds no socket but its
// listeners: an idle or fenced one costs a read of its fds.
func accepted(proc procfs.FS, pids []int, socks []Socket, unseen map[uint64]bool) map[uint64]bool {
	held := make(map[uint64]bool)
	readHeld := func() {
		for _, pid := range pids {
			proc.Sockets(pid, held) // a process gone meanwhile holds nothing
		}
		for _, s := range socks {
			delete(held, s.Inode)
		}
	}
	readHeld()
	if len(held) == 0 {
		return nil
	}
	addrs := make(map[uint64]listenerAddr)
	for _, s := range socks {
		if s.Target.Net == target.NetUDP || s.Target.Net == target.NetUnix {
			continue
		}
		if a, ok := sockAddr(s.FD); ok {
			addrs[s.Inode] = a
		}
	}
	from := make(map[uint64]uint64) // a connection's inode: its socket's
	type dump struct {
		family uint8
		port   uint16
	}
	dumped := make(map[dump]bool)
	for ino := range unseen {
		a, ok := addrs[ino]
		d := dump{a.family, a.addr.Port()}
		if !ok || dumped[d] {
			continue
		}
		dumped[d] = true
		conns, err := socktab.DiagTCPHeld(d.family, d.port)
		if err != nil {
			continue
		}
		for _, c := range conns {
			if l, ok := onlyListener(addrs, c); ok && unseen[l] {
				from[c.Inode] = l
			}
		}
	}
	if len(from) == 0 {
		return nil
	}
	readHeld()
	got := make(map[uint64]bool)
	for conn, l := range from {
		if held[conn] {
			got[l] = true
		}
	}
	return got
}

// onlyListener returns the one socket of addrs that c may have come from,
// if exactly one.
func onlyListener(addrs map[uint64]listenerAddr, c socktab.Conn) (uint64, bool) {
	var found uint64
	n := 0
	for ino, a := range addrs {
		if a.mayHaveCome(c) {
			found, n = ino, n+1
		}
	}
	return found, n == 1
}
