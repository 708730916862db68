package socktab

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// The fixtures are internal/procfs's: testdata/proc there is a /proc of a few
// processes, which its tests and the main package's walk too.

func TestReadProcNetTCP(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name    string
		path    string
		want    []Socket
		wantErr error
	}{
		{
			name: "tcp with malformed lines skipped",
			path: "../procfs/testdata/proc/net/tcp",
			want: []Socket{
				{Inode: 5555, Addr: ap("127.0.0.1:8100"), UID: 1000},
				{Inode: 5556, Addr: ap("0.0.0.0:8100"), UID: 0},
				{Inode: 6000, Addr: ap("127.0.0.2:22"), UID: 0},
			},
		},
		{
			name: "tcp6 with a v4-mapped address",
			path: "../procfs/testdata/proc/net/tcp6",
			want: []Socket{
				{Inode: 8888, Addr: ap("[::1]:8100"), UID: 1000},
				{Inode: 8889, Addr: ap("[::]:8080"), UID: 0},
				{Inode: 8890, Addr: ap("127.0.0.1:8081"), UID: 0},
			},
		},
		{
			name: "truncated last line",
			path: "../procfs/testdata/proc-truncated/net/tcp",
			want: []Socket{{Inode: 5555, Addr: ap("127.0.0.1:8100"), UID: 1000}},
		},
		{name: "missing file", path: "../procfs/testdata/proc/net/nope", wantErr: os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readProcNetTCP(tt.path, tcpListen)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
				t.Errorf("readProcNetTCP(%s) (-want +got):\n%s", tt.path, diff)
			}
		})
	}
}

func FuzzParseProcNetLine(f *testing.F) {
	b, _ := os.ReadFile("../procfs/testdata/proc/net/tcp")
	b6, _ := os.ReadFile("../procfs/testdata/proc/net/tcp6")
	for _, l := range strings.Split(string(b)+string(b6), "\n") {
		f.Add(l)
	}
	f.Fuzz(func(t *testing.T, line string) {
		s, _, err := parseProcNetLine(line)
		if err == nil && !s.Addr.IsValid() {
			t.Fatalf("parseProcNetLine(%q) returned an invalid address", line)
		}
	})
}

func TestParseUnixDiagMsg(t *testing.T) {
	ne := binary.NativeEndian
	msg := func(typ uint8, attrs ...[]byte) []byte {
		m := make([]byte, unixDiagMsgLen)
		m[0], m[1], m[2] = unix.AF_UNIX, typ, 10
		ne.PutUint32(m[4:], 4711)
		for _, a := range attrs {
			m = append(m, a...)
		}
		return m
	}
	attr := func(kind uint16, vals ...uint32) []byte {
		a := make([]byte, 4+4*len(vals))
		ne.PutUint16(a[0:], uint16(len(a)))
		ne.PutUint16(a[2:], kind)
		for i, v := range vals {
			ne.PutUint32(a[4+4*i:], v)
		}
		return a
	}
	s, ok := parseUnixDiagMsg(msg(unix.SOCK_STREAM, attr(unixDiagRQLen, 3, 128), attr(unixDiagVFS, 99, 0x800001)))
	if !ok || s.Inode != 4711 || s.VFSIno != 99 || s.VFSDev != 0x800001 || s.Queued != 3 {
		t.Errorf("parseUnixDiagMsg = %+v, %v; want inode 4711, file 99 on 0x800001, 3 queued", s, ok)
	}
	if _, ok := parseUnixDiagMsg(msg(unix.SOCK_STREAM, attr(unixDiagRQLen, 0, 0))); ok {
		t.Error("a socket bound to no file: want it skipped")
	}
	if _, ok := parseUnixDiagMsg(msg(unix.SOCK_DGRAM, attr(unixDiagVFS, 99, 1))); ok {
		t.Error("a datagram socket: want it skipped")
	}
	if _, ok := parseUnixDiagMsg(msg(unix.SOCK_STREAM, []byte{200, 0, 1, 0})); ok {
		t.Error("an attribute longer than the message: want it skipped")
	}
}

// TestDiagV6Only: sock_diag tells an IPv6-only listener from a dual-stack
// one (INET_DIAG_SKV6ONLY), on real sockets bound to [::] in a network
// namespace of the test's own (as root), and parseDiagMsg reads the
// attribute wherever it comes among the others.
func TestDiagV6Only(t *testing.T) {
	if unix.Geteuid() == 0 {
		if err := inPrivateNetns(func() error { return checkDiagV6Only(t) }); err != nil {
			t.Fatal(err)
		}
	} else {
		t.Log("not root: the real sockets are not checked (they bind [::], in a network namespace)")
	}
	ne := binary.NativeEndian
	msg := func(family uint8, attrs ...[]byte) []byte {
		m := make([]byte, diagMsgLen)
		m[0] = family
		binary.BigEndian.PutUint16(m[4:], 8100)
		ne.PutUint32(m[68:], 4711)
		for _, a := range attrs {
			m = append(m, a...)
		}
		return m
	}
	u8 := func(kind uint16, v uint8) []byte { // padded to 8 bytes, as the kernel does
		a := make([]byte, 8)
		ne.PutUint16(a[0:], 5)
		ne.PutUint16(a[2:], kind)
		a[4] = v
		return a
	}
	for _, tt := range []struct {
		name string
		m    []byte
		want bool
	}{
		{"v6only after another attribute", msg(unix.AF_INET6, u8(8, 0), u8(inetDiagSKV6Only, 1)), true},
		{"dual-stack", msg(unix.AF_INET6, u8(inetDiagSKV6Only, 0)), false},
		{"no attribute", msg(unix.AF_INET6), false},
		{"unpadded last attribute", msg(unix.AF_INET6, u8(inetDiagSKV6Only, 1)[:5]), true},
		{"an attribute longer than the message", msg(unix.AF_INET6, []byte{200, 0, inetDiagSKV6Only, 0, 1}), false},
		{"IPv4", msg(unix.AF_INET, u8(inetDiagSKV6Only, 1)), false},
	} {
		s, ok := parseDiagMsg(tt.m)
		if !ok || s.Inode != 4711 || s.Addr.Port() != 8100 || s.V6Only != tt.want {
			t.Errorf("%s: parseDiagMsg = %+v, %v; want inode 4711 on port 8100, V6Only %v", tt.name, s, ok, tt.want)
		}
	}
}

func checkDiagV6Only(t *testing.T) error {
	listen := func(addr netip.Addr, v6only int) (uint64, error) {
		s, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return 0, err
		}
		t.Cleanup(func() { unix.Close(s) })
		if err := unix.SetsockoptInt(s, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, v6only); err != nil {
			return 0, err
		}
		if err := unix.Bind(s, &unix.SockaddrInet6{Addr: addr.As16()}); err != nil {
			return 0, err
		}
		if err := unix.Listen(s, 1); err != nil {
			return 0, err
		}
		var st unix.Stat_t
		err = unix.Fstat(s, &st)
		return st.Ino, err
	}
	want := make(map[uint64]bool)
	for _, l := range []struct {
		addr   netip.Addr
		v6only int
		want   bool
	}{
		{netip.IPv6Unspecified(), 1, true},
		{netip.IPv6Unspecified(), 0, false},
		{netip.IPv6Loopback(), 0, true}, // the kernel sets it on a bind to one IPv6 address
	} {
		ino, err := listen(l.addr, l.v6only)
		if err != nil {
			return err
		}
		want[ino] = l.want
	}
	socks, err := DiagTCPListeners()
	if err != nil {
		return err
	}
	seen := 0
	for _, s := range socks {
		if w, ok := want[s.Inode]; ok {
			seen++
			if s.V6Only != w {
				t.Errorf("socket %d at %s: V6Only = %v, want %v", s.Inode, s.Addr, s.V6Only, w)
			}
		}
	}
	if seen != len(want) {
		t.Errorf("sock_diag listed %d of the %d listeners", seen, len(want))
	}
	return nil
}

// inPrivateNetns runs f on a thread of its own moved into a new network
// namespace with its loopback up. The thread ends with f, and the
// namespace with it.
func inPrivateNetns(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(s)
		ifr, _ := unix.NewIfreq("lo")
		ifr.SetUint16(unix.IFF_UP)
		if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return <-done
}
