package supervise

import (
	"net/netip"

	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// A held socket: the copy takeover keeps of a socket a generation bound to a
// target, so that a restart or the next generation can be given it.

// sockKey names a socket in the command: its process and fd, and the inode
// so that a closed and reused fd number is not mistaken for the old socket.
type sockKey struct {
	Tgid, FD int
}

type heldSock struct {
	copyFD int // takeover's own copy, kept for handoff to a later generation
	inode  uint64
	spec   target.PortSpec
	addr   netip.AddrPort // TCP and UDP
	via    string         // a socket systemd passed: how (inheritedSock.via)
	fence  *swap.Fence    // a new socket beside the old server's (fence_linux.go)
	sw     *swap.Swap     // the swap that took it (intercepted binds), dropped with it
}

// heldFor returns the generation's socket for the target (at addr, for
// TCP and UDP), if it still holds one.
func (g *generation) heldFor(spec target.PortSpec, addr netip.AddrPort) *heldSock {
	return g.heldWhere(func(s *heldSock) bool {
		return s.spec.Net == spec.Net && (spec.Net == target.NetUnix && s.spec == spec || spec.Net != target.NetUnix && s.addr == addr)
	})
}

// dupHeld returns a copy of the generation's socket for the target, or -1
// if it holds none: a socket to set options on that closeCopies cannot
// close (and its number be reused) meanwhile.
func (g *generation) dupHeld(spec target.PortSpec, addr netip.AddrPort) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.socks {
		if s.spec.Net == spec.Net && (spec.Net == target.NetUnix && s.spec == spec || spec.Net != target.NetUnix && s.addr == addr) {
			if fd, err := unix.FcntlInt(uintptr(s.copyFD), unix.F_DUPFD_CLOEXEC, 0); err == nil {
				return fd
			}
		}
	}
	return -1
}

// fencedSocks returns the generation's sockets bound beside an old
// server's in a fenced handoff.
func (g *generation) fencedSocks() []*heldSock {
	g.mu.Lock()
	defer g.mu.Unlock()
	var fs []*heldSock
	for _, s := range g.socks {
		if s.fence != nil {
			fs = append(fs, s)
		}
	}
	return fs
}

// heldForSpec returns the generation's socket for the target, at
// whatever address.
func (g *generation) heldForSpec(spec target.PortSpec) *heldSock {
	return g.heldWhere(func(s *heldSock) bool { return s.spec == spec })
}

// holdsSockets reports whether takeover holds copies of any of the
// generation's sockets.
func (g *generation) holdsSockets() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.socks) > 0 && !g.done
}

func (g *generation) heldByInode(ino uint64) *heldSock {
	return g.heldWhere(func(s *heldSock) bool { return s.inode == ino })
}

// dupByInode returns a new fd (close-on-exec), the caller's to close, for
// the generation's socket with inode ino. It is taken under the lock that
// closeCopies holds, so it is never a copy already closed, nor an fd
// number some other file has taken since.
func (g *generation) dupByInode(ino uint64) (int, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.socks {
		if s.inode == ino {
			fd, err := unix.FcntlInt(uintptr(s.copyFD), unix.F_DUPFD_CLOEXEC, 0)
			return fd, err == nil
		}
	}
	return -1, false
}

// heldWhere returns a socket the generation holds that match accepts.
func (g *generation) heldWhere(match func(*heldSock) bool) *heldSock {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.socks {
		if match(s) {
			return s
		}
	}
	return nil
}

// closeCopies closes takeover's copies of the generation's sockets, so that
// they keep no port from freeing once the generation is on its way out.
func (g *generation) closeCopies() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = true
	for k, s := range g.socks {
		unix.Close(s.copyFD)
		delete(g.socks, k)
	}
}
