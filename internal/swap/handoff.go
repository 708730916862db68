package swap

import (
	"fmt"
	"net/netip"

	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// A handoff gives the new server the old server's listening socket in place
// of its own: the socket never closes, so no connection is refused and the
// connections waiting in its accept queue are accepted by the new server.
// A UDP socket is handed over the same way: the datagrams waiting in it are
// read by whichever server reads next.

// HandoffMismatch says why old cannot stand in for own, bound to the
// target spec (at addr for TCP and UDP), or "". The socket must be of the
// target's type and of the same family, bound to exactly that address,
// with the same IPV6_V6ONLY: an IPv4 socket is never handed to a server
// that asked for IPv6. A unix socket was found by the file at the path.
func HandoffMismatch(old, own int, spec target.Spec, addr netip.AddrPort) string {
	typ, err := unix.GetsockoptInt(old, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != spec.SockType() {
		return "the old socket is not of the new one's type"
	}
	oldFamily, err1 := unix.GetsockoptInt(old, unix.SOL_SOCKET, unix.SO_DOMAIN)
	ownFamily, err2 := unix.GetsockoptInt(own, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err1 != nil || err2 != nil || oldFamily != ownFamily {
		return fmt.Sprintf("the old socket is %s, the new server asked for %s", target.FamilyName(oldFamily), target.FamilyName(ownFamily))
	}
	if spec.Net == target.NetUnix {
		return ""
	}
	sa, err := unix.Getsockname(old)
	if err != nil {
		return "cannot read the old socket's address"
	}
	oldAddr := target.AddrPortOf(sa)
	if oldAddr != addr {
		return fmt.Sprintf("the old socket is bound to %s, the new server asked for %s", oldAddr, addr)
	}
	if ownFamily == unix.AF_INET6 {
		a, _ := unix.GetsockoptInt(old, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		b, _ := unix.GetsockoptInt(own, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
		if a != b {
			return "the old and new sockets differ in IPV6_V6ONLY"
		}
	}
	return ""
}

// A nonblockUndo takes back the O_NONBLOCK a handoff set on the old
// server's socket (injectSocket), through a copy of its own, should the
// swap be abandoned and the old server serve on alone.
type nonblockUndo struct{ fd int }

// watchBlocking returns, for a socket in blocking mode, what takes back an
// O_NONBLOCK set on it from now on; nil for one in non-blocking mode.
func watchBlocking(sock int) *nonblockUndo {
	flags, err := unix.FcntlInt(uintptr(sock), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_NONBLOCK != 0 {
		return nil
	}
	fd, err := unix.FcntlInt(uintptr(sock), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	return &nonblockUndo{fd}
}

// IfSet returns u if O_NONBLOCK has been set on the socket since
// watchBlocking, and lets go of it (nil) if not.
func (u *nonblockUndo) IfSet() *nonblockUndo {
	if u == nil {
		return nil
	}
	if flags, err := unix.FcntlInt(uintptr(u.fd), unix.F_GETFL, 0); err == nil && flags&unix.O_NONBLOCK != 0 {
		return u
	}
	u.Drop()
	return nil
}

// restore puts the socket back in blocking mode, and lets go of it.
func (u *nonblockUndo) restore() {
	if u == nil {
		return
	}
	if flags, err := unix.FcntlInt(uintptr(u.fd), unix.F_GETFL, 0); err == nil {
		unix.FcntlInt(uintptr(u.fd), unix.F_SETFL, flags&^unix.O_NONBLOCK)
	}
	u.Drop()
}

// Drop lets go of the socket, leaving its flags as they are.
func (u *nonblockUndo) Drop() {
	if u != nil && u.fd >= 0 {
		unix.Close(u.fd)
		u.fd = -1
	}
}
