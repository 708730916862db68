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
// caught blocked (python's ThreadingHTTPServer under 50 clients was caught
// in poll(2) once in about 150 looks, 3 to 7 s), and one that polls with
// non-blocking accepts never is. Fenced, the new generation's own socket
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
// from which some process of pids holds a connection: one sock_diag dump
// per port and one walk of pids' fds, done only when a socket was not seen
// waited on.
func accepted(proc procfs.FS, pids []int, socks []Socket, unseen map[uint64]bool) map[uint64]bool {
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
	dumped := make(map[uint16]bool)
	for ino := range unseen {
		a, ok := addrs[ino]
		if !ok || dumped[a.addr.Port()] {
			continue
		}
		dumped[a.addr.Port()] = true
		conns, err := socktab.DiagTCPConns(a.addr.Port())
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
	inodes := make([]uint64, 0, len(from))
	for ino := range from {
		inodes = append(inodes, ino)
	}
	holders, err := proc.Holders(inodes, pids)
	if err != nil {
		return nil
	}
	got := make(map[uint64]bool)
	for i, hs := range holders {
		if len(hs) > 0 {
			got[from[inodes[i]]] = true
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
