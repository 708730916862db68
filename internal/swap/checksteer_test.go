package swap

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSteerCheck: while a fence holds new connections for the old socket,
// the connection from the checking socket's address and port reaches the
// new socket, and every other one the old socket; after EndCheck, all go
// to the old one again. On IPv4 and IPv6.
func TestSteerCheck(t *testing.T) {
	for _, lo := range []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()} {
		t.Run(lo.String(), func(t *testing.T) {
			old, nw, port := groupOfTwo(t, lo)
			f := &Fence{}
			if err := f.Joined(nw); err != nil {
				t.Fatal(err)
			}
			from := checkSource(t, lo)
			d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(from)}
			if err := f.SteerCheck(nw, from); err != nil {
				t.Fatalf("SteerCheck: %v", err)
			}
			connectN(t, port, 5)
			c, err := d.Dial("tcp", port.String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := f.EndCheck(nw); err != nil {
				t.Fatal(err)
			}
			connectN(t, port, 3)
			gotOld, gotNew := acceptAll(t, old), acceptAll(t, nw)
			defer closeFDs(gotOld)
			defer closeFDs(gotNew)
			if len(gotNew) != 1 || len(gotOld) != 8 {
				t.Fatalf("the new socket accepted %d connections and the old one %d; want 1 (the check's) and 8", len(gotNew), len(gotOld))
			}
			peer, _ := unix.Getpeername(gotNew[0])
			if p := portOf(peer); p != int(from.Port()) {
				t.Fatalf("the new socket's connection is from port %d, not the check's %d", p, from.Port())
			}
		})
	}
}

// groupOfTwo makes two listening sockets on lo, at one port, in one
// SO_REUSEPORT group: old (index 0) and nw (index 1), as a fence has them;
// it skips the test if it cannot bind lo.
func groupOfTwo(t *testing.T, lo netip.Addr) (old, nw int, port netip.AddrPort) {
	t.Helper()
	var family int
	var sa unix.Sockaddr
	if lo.Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Addr: lo.As4()}
	} else {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: lo.As16()}
	}
	listener := func(sa unix.Sockaddr) int {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		if err := unix.Bind(fd, sa); err != nil {
			t.Skipf("cannot bind %v: %v", lo, err)
		}
		if err := unix.Listen(fd, 1024); err != nil {
			t.Fatal(err)
		}
		return fd
	}
	old = listener(sa)
	bound, _ := unix.Getsockname(old)
	port = netip.AddrPortFrom(lo, uint16(portOf(bound)))
	nw = listener(bound) // joins the group second: index 1
	return old, nw, port
}

// checkSource returns an address and port on lo for a checking socket to
// bind: bound first, so that its port is known, and one no connection uses.
func checkSource(t *testing.T, lo netip.Addr) netip.AddrPort {
	t.Helper()
	probe, err := net.ListenTCP("tcp", &net.TCPAddr{IP: lo.AsSlice()})
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	return netip.MustParseAddrPort(probe.Addr().String())
}

func portOf(sa unix.Sockaddr) int {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port
	case *unix.SockaddrInet6:
		return a.Port
	}
	return 0
}
