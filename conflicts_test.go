package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// A bindKind is one way a server binds a port, for the conflict table.
type bindKind struct {
	name   string
	addr   string // without the port
	v6only bool   // IPV6_V6ONLY, for an IPv6 socket
}

func (k bindKind) ipv6() bool { return strings.Contains(k.addr, ":") }

func (k bindKind) at(port uint16) target.InetBind {
	return target.InetBind{Addr: netip.AddrPortFrom(netip.MustParseAddr(k.addr), port), V6Only: k.v6only}
}

var bindKinds = []bindKind{
	{name: "v4 any", addr: "0.0.0.0"},
	{name: "v4 loopback", addr: "127.0.0.1"},
	{name: "v4 127.0.0.6", addr: "127.0.0.6"}, // what the kernel stores as an IPv6 socket's IPv4 address
	{name: "v6 any dual", addr: "::"},
	{name: "v6 any v6only", addr: "::", v6only: true},
	{name: "v6 loopback", addr: "::1"},
	{name: "v6 loopback v6only", addr: "::1", v6only: true},
	{name: "v4-mapped any", addr: "::ffff:0.0.0.0"},
	{name: "v4-mapped loopback", addr: "::ffff:127.0.0.1"},
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
			if got, x := target.Conflicts(want.at(port), held.at(port)), conflictTable[i][j] == 'x'; got != x {
				t.Errorf("conflicts(%s, held %s) = %v, want %v", want.name, held.name, got, x)
			}
		}
	}
	if target.Conflicts(bindKinds[0].at(port), bindKinds[0].at(port+1)) {
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
					return fmt.Errorf("%s then %s: %w", held.name, want.name, err)
				}
				if x := conflictTable[i][j] == 'x'; inUse != x {
					t.Errorf("the kernel: %s listening, a bind of %s gets EADDRINUSE: %v; the table says %v", held.name, want.name, inUse, x)
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
func kernelConflicts(held, want bindKind) (bool, error) {
	h, err := bindKindSocket(held, 0)
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
	port := target.AddrPortOf(sa).Port()
	w, err := bindKindSocket(want, port)
	if errors.Is(err, unix.EADDRINUSE) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	unix.Close(w)
	return false, nil
}

func bindKindSocket(k bindKind, port uint16) (int, error) {
	a := netip.MustParseAddr(k.addr)
	family := unix.AF_INET6
	var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(port), Addr: a.As16()}
	if !k.ipv6() {
		family = unix.AF_INET
		sa = &unix.SockaddrInet4{Port: int(port), Addr: a.As4()}
	}
	s, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if k.ipv6() {
		v := 0
		if k.v6only {
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

// TestWhoDualStack: `takeover who ADDR:P` lists what a takeover of that
// spec would replace, the listeners a bind there conflicts with: for
// 127.0.0.1:P the 0.0.0.0:P listener (which takes that address too) and
// not the IPv6-only [::]:P beside it; for [::1]:P that one, said to be
// IPv6 only; for P both. Real sockets, in a network namespace of the
// test's own.
func TestWhoDualStack(t *testing.T) {
	if unix.Geteuid() != 0 {
		t.Skip("needs root: it binds the wildcards in a network namespace")
	}
	err := testutil.InPrivateNetns(func() error {
		var port uint16
		for _, k := range []bindKind{bindKinds[0], bindKinds[4]} { // v4 any, v6 any v6only
			s, err := bindKindSocket(k, port)
			if err != nil {
				return fmt.Errorf("bind %s: %w", k.name, err)
			}
			defer unix.Close(s)
			if err := unix.Listen(s, 1); err != nil {
				return err
			}
			sa, _ := unix.Getsockname(s)
			port = target.AddrPortOf(sa).Port()
		}
		p := strconv.Itoa(int(port))
		v4, v6 := "0.0.0.0:"+p+" (socket inode", "[::]:"+p+" (socket inode"
		for _, tt := range []struct {
			spec      string
			want, not []string
		}{
			{"127.0.0.1:" + p, []string{v4}, []string{v6}},
			{"[::1]:" + p, []string{v6, "IPv6 only"}, []string{v4}},
			{p, []string{v4, v6, "IPv6 only"}, nil},
		} {
			var out, errOut bytes.Buffer
			if code := run([]string{"who", tt.spec}, &out, &errOut); code != 0 {
				t.Errorf("who %s = %d, want 0; it printed:\n%s%s", tt.spec, code, out.String(), errOut.String())
				continue
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("who %s lacks %q:\n%s", tt.spec, w, out.String())
				}
			}
			for _, n := range tt.not {
				if strings.Contains(out.String(), n) {
					t.Errorf("who %s lists %q, which a bind there does not conflict with:\n%s", tt.spec, n, out.String())
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
