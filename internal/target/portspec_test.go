package target

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestParsePortSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    Spec
		wantErr string
	}{
		{in: "8100", want: Spec{Port: 8100}},
		{in: ":8100", want: Spec{Port: 8100}},
		{in: "127.0.0.1:8100", want: Spec{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8100}},
		{in: "[::1]:8100", want: Spec{Addr: netip.MustParseAddr("::1"), Port: 8100}},
		{in: "[::]:8100", want: Spec{Addr: netip.MustParseAddr("::"), Port: 8100}},
		{in: "[::ffff:127.0.0.1]:80", want: Spec{Addr: netip.MustParseAddr("127.0.0.1"), Port: 80}},
		{in: "", wantErr: "empty port spec"},
		{in: "0", wantErr: "port 0 means any free port"},
		{in: "65536", wantErr: "not a number from 1 to 65535"},
		{in: "-1", wantErr: "not a number from 1 to 65535"},
		{in: "+80", wantErr: "not a number from 1 to 65535"},
		{in: "http", wantErr: "not a number"},
		{in: "localhost:8100", wantErr: "is not an IP address"},
		{in: "::1:8100", wantErr: "goes in brackets"},
		{in: "[::1:8100", wantErr: "unbalanced brackets"},
		{in: "[fe80::1%eth0]:80", wantErr: "zones are not accepted"},
		{in: "udp:5353", want: Spec{Net: NetUDP, Port: 5353}},
		{in: "udp:127.0.0.1:5353", want: Spec{Net: NetUDP, Addr: netip.MustParseAddr("127.0.0.1"), Port: 5353}},
		{in: "udp:[::1]:5353", want: Spec{Net: NetUDP, Addr: netip.MustParseAddr("::1"), Port: 5353}},
		{in: "tcp:8100", want: Spec{Port: 8100}},
		{in: "udp:", wantErr: "empty port spec"},
		{in: "udp:0", wantErr: "port 0 means any free port"},
		{in: "unix:/run/app.sock", wantErr: "named with --path"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parsePortSpec(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("parsePortSpec(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestSpecMatchesAndConflicts(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		spec      string
		addr      string
		match     bool
		held      string
		conflicts bool
	}{
		{"8100", "127.0.0.1:8100", true, "0.0.0.0:8100", true},
		{"8100", "[::1]:8100", true, "[::]:8100", true},
		{"8100", "127.0.0.1:8101", false, "127.0.0.1:8100", false},
		{"127.0.0.1:8100", "127.0.0.1:8100", true, "127.0.0.2:8100", false},
		{"127.0.0.1:8100", "0.0.0.0:8100", false, "127.0.0.1:8100", true},
		{"[::]:8100", "[::]:8100", true, "0.0.0.0:8100", true},
		{"0.0.0.0:8100", "[::]:8100", true, "[::1]:8100", true},
		{"[::1]:8100", "[::1]:8100", true, "127.0.0.1:8100", false},
	}
	for _, tt := range tests {
		t.Run(tt.spec+"/"+tt.addr+"/"+tt.held, func(t *testing.T) {
			spec, err := Parse(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if got := spec.Matches(ap(tt.addr)); got != tt.match {
				t.Errorf("%v.matches(%s) = %v, want %v", spec, tt.addr, got, tt.match)
			}
			if got := Conflicts(InetBind{Addr: ap(tt.addr)}, InetBind{Addr: ap(tt.held)}); got != tt.conflicts {
				t.Errorf("conflicts(%s, %s) = %v, want %v", tt.addr, tt.held, got, tt.conflicts)
			}
		})
	}
}

func FuzzParsePortSpec(f *testing.F) {
	for _, s := range []string{"8100", "127.0.0.1:8100", "[::1]:8100", "[::]:1", ":0", "[", "a:b:c", "udp:53", "udp:[::1]:53", "tcp:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		if p.Port == 0 {
			t.Fatalf("parsePortSpec(%q) accepted port 0", s)
		}
		// What it prints, it reads back the same.
		q, err := Parse(p.String())
		if err != nil || q != p {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, p, p.String(), q, err)
		}
	})
}

func TestParsePathSpec(t *testing.T) {
	t.Chdir(t.TempDir())
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "/run/app.sock", want: "/run/app.sock"},
		{in: "/run//x/../app.sock", want: "/run/app.sock"},
		{in: "", wantErr: "empty --path"},
		{in: "/" + strings.Repeat("a", 107), wantErr: "longer than a unix socket's path may be"},
	}
	for _, tt := range tests {
		got, err := ParsePath(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parsePathSpec(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != (Spec{Net: NetUnix, Path: tt.want}) {
			t.Errorf("parsePathSpec(%q) = %+v, %v; want the path %s", tt.in, got, err, tt.want)
		}
	}
	rel, err := ParsePath("app.sock")
	if err != nil || !strings.HasSuffix(rel.Path, "/app.sock") || !strings.HasPrefix(rel.Path, "/") {
		t.Errorf("parsePathSpec(app.sock) = %+v, %v; want it made absolute", rel, err)
	}
}

// Each target has its own lock and record, its own names where sockets are
// passed, and says what it is.
func TestTargetNames(t *testing.T) {
	tcp, _ := Parse("127.0.0.1:8100")
	udp, _ := Parse("udp:8100")
	sock, _ := ParsePath("/run/app.sock")
	other, _ := ParsePath("/run/other.sock")
	tests := []struct {
		spec                                      Spec
		key, fdName, starter, describe, stringRep string
	}{
		{tcp, "port-8100", "tcp-8100", "127.0.0.1:8100", "port 127.0.0.1:8100", "127.0.0.1:8100"},
		{udp, "udp-8100", "udp-8100", "8100", "UDP port 8100", "udp:8100"},
		{sock, sock.Key(), "unix-app.sock", "/run/app.sock", "unix socket /run/app.sock", "unix:/run/app.sock"},
	}
	for _, tt := range tests {
		got := [5]string{tt.spec.Key(), tt.spec.FdName(), tt.spec.StarterName(), tt.spec.Describe(), tt.spec.String()}
		want := [5]string{tt.key, tt.fdName, tt.starter, tt.describe, tt.stringRep}
		if got != want {
			t.Errorf("%+v: key, fdName, starterName, describe, String = %q, want %q", tt.spec, got, want)
		}
	}
	if !strings.HasPrefix(sock.Key(), "unix-") || sock.Key() == other.Key() {
		t.Errorf("unix keys %q and %q: want distinct unix- keys", sock.Key(), other.Key())
	}
	if tcp.SockType() != unix.SOCK_STREAM || sock.SockType() != unix.SOCK_STREAM || udp.SockType() != unix.SOCK_DGRAM {
		t.Error("sockType: want stream for TCP and unix, datagram for UDP")
	}
}

func TestStoreName(t *testing.T) {
	tests := []struct{ spec, want string }{
		{"8100", "tcp-8100"},
		{"127.0.0.1:8100", "tcp-127.0.0.1-8100"},
		{"[::1]:8100", "tcp---1-8100"},
		{"udp:8125", "udp-8125"},
	}
	for _, tt := range tests {
		spec, err := Parse(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		if got := spec.StoreName(); got != tt.want || strings.Contains(got, ":") {
			t.Errorf("storeName(%s) = %q, want %q (systemd refuses ':')", tt.spec, got, tt.want)
		}
	}
	path, _ := ParsePath("/run/app.sock")
	if got := path.StoreName(); got != "unix-/run/app.sock" {
		t.Errorf("storeName(--path /run/app.sock) = %q", got)
	}
}
