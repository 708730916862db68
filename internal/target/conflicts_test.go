package target

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// at is where a socket of kind k bound to port is, for Conflicts.
func at(k testutil.BindKind, port uint16) InetBind {
	return InetBind{Addr: netip.AddrPortFrom(netip.MustParseAddr(k.Addr), port), V6Only: k.V6Only}
}

var bindKinds = []testutil.BindKind{
	{Name: "v4 any", Addr: "0.0.0.0"},
	{Name: "v4 loopback", Addr: "127.0.0.1"},
	{Name: "v4 127.0.0.6", Addr: "127.0.0.6"}, // what the kernel stores as an IPv6 socket's IPv4 address
	{Name: "v6 any dual", Addr: "::"},
	{Name: "v6 any v6only", Addr: "::", V6Only: true},
	{Name: "v6 loopback", Addr: "::1"},
	{Name: "v6 loopback v6only", Addr: "::1", V6Only: true},
	{Name: "v4-mapped any", Addr: "::ffff:0.0.0.0"},
	{Name: "v4-mapped loopback", Addr: "::ffff:127.0.0.1"},
}

// conflictTable is what Linux answers (measured on 6.18): row the socket
// that listens, column the bind that follows on the same port, x for
// EADDRINUSE. It is symmetric.
var conflictTable = []string{
	"xxxx...xx", // v4 any
	"xx.x...xx", // v4 loopback
	"x.xx...x.", // v4 127.0.0.6
	"xxxxxxxxx", // v6 any dual
	"...xxxx..", // v6 any v6only
	"...xxxx..", // v6 loopback
	"...xxxx..", // v6 loopback v6only
	"xxxx...xx", // v4-mapped any
	"xx.x...xx", // v4-mapped loopback
}

// TestConflicts: conflicts decides as the kernel does for every pair of
// the table (an IPv4 bind and an IPv6-only [::] do not conflict, which
// nginx's `listen 80; listen [::]:80;` relies on), and, as root, the table
// is checked against the kernel itself: real sockets bound in a network
// namespace of the test's own.
func TestConflicts(t *testing.T) {
	const port = 8100
	for i, held := range bindKinds {
		for j, want := range bindKinds {
			if got, x := Conflicts(at(want, port), at(held, port)), conflictTable[i][j] == 'x'; got != x {
				t.Errorf("conflicts(%s, held %s) = %v, want %v", want.Name, held.Name, got, x)
			}
		}
	}
	if Conflicts(at(bindKinds[0], port), at(bindKinds[0], port+1)) {
		t.Error("conflicts across two ports")
	}
	if unix.Geteuid() != 0 {
		t.Skip("checking the table against the kernel needs root (a network namespace)")
	}
	err := testutil.InPrivateNetns(func() error {
		for i, held := range bindKinds {
			for j, want := range bindKinds {
				inUse, err := kernelConflicts(held, want)
				if err != nil {
					return fmt.Errorf("%s then %s: %w", held.Name, want.Name, err)
				}
				if x := conflictTable[i][j] == 'x'; inUse != x {
					t.Errorf("the kernel: %s listening, a bind of %s gets EADDRINUSE: %v; the table says %v", held.Name, want.Name, inUse, x)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// kernelConflicts binds a listener of kind held to a port the kernel
// picks, then tries kind want on the same port: reports EADDRINUSE.
func kernelConflicts(held, want testutil.BindKind) (bool, error) {
	h, err := held.Socket(0)
	if err != nil {
		return false, err
	}
	defer unix.Close(h)
	if err := unix.Listen(h, 1); err != nil {
		return false, err
	}
	sa, err := unix.Getsockname(h)
	if err != nil {
		return false, err
	}
	port := AddrPortOf(sa).Port()
	w, err := want.Socket(port)
	if errors.Is(err, unix.EADDRINUSE) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	unix.Close(w)
	return false, nil
}
