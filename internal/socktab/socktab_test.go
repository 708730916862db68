package socktab

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
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
