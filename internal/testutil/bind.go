package testutil

import (
	"net/netip"
	"strings"

	"golang.org/x/sys/unix"
)

// A BindKind is one way a server binds a port (target's conflict table,
// `takeover who` on a dual-stack port).
type BindKind struct {
	Name   string
	Addr   string // without the port
	V6Only bool   // IPV6_V6ONLY, for an IPv6 socket
}

// IPv6 says whether the kind binds an IPv6 socket.
func (k BindKind) IPv6() bool { return strings.Contains(k.Addr, ":") }

// Socket makes a TCP socket of kind k bound to port (0: one the kernel
// picks); the caller listens and closes it.
func (k BindKind) Socket(port uint16) (int, error) {
	a := netip.MustParseAddr(k.Addr)
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
	if !k.IPv6() {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: int(port), Addr: a.As4()}
	}
	s, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if k.IPv6() {
		v := 0
		if k.V6Only {
			v = 1
		}
		if err := unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v); err != nil {
			unix.Close(s)
			return -1, err
		}
	}
	if err := unix.Bind(s, sa); err != nil {
		unix.Close(s)
		return -1, err
	}
	return s, nil
}
