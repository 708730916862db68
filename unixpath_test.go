package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/takeover/takeover/internal/intercept"

	"github.com/takeover/takeover/internal/seccomp"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

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
		got, err := target.ParsePathSpec(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parsePathSpec(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != (target.PortSpec{Net: target.NetUnix, Path: tt.want}) {
			t.Errorf("parsePathSpec(%q) = %+v, %v; want the path %s", tt.in, got, err, tt.want)
		}
	}
	rel, err := target.ParsePathSpec("app.sock")
	if err != nil || !strings.HasSuffix(rel.Path, "/app.sock") || !strings.HasPrefix(rel.Path, "/") {
		t.Errorf("parsePathSpec(app.sock) = %+v, %v; want it made absolute", rel, err)
	}
}

// Each target has its own lock and record, its own names where sockets are
// passed, and says what it is.
func TestTargetNames(t *testing.T) {
	tcp, _ := target.ParsePortSpec("127.0.0.1:8100")
	udp, _ := target.ParsePortSpec("udp:8100")
	sock, _ := target.ParsePathSpec("/run/app.sock")
	other, _ := target.ParsePathSpec("/run/other.sock")
	tests := []struct {
		spec                                      target.PortSpec
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

// The filter traps bind and listen, and unlinks only with unix targets.
func TestTrappedCalls(t *testing.T) {
	for _, unlinks := range []bool{false, true} {
		calls := intercept.TrappedCalls(unlinks)
		for _, nr := range []uint32{unix.SYS_BIND, unix.SYS_LISTEN} {
			if !slices.Contains(calls, nr) {
				t.Errorf("unlinks=%v: system call %d not trapped", unlinks, nr)
			}
		}
		if got := slices.Contains(calls, unix.SYS_UNLINKAT); got != unlinks {
			t.Errorf("unlinks=%v: unlinkat trapped = %v", unlinks, got)
		}
		if nr := seccomp.SysUnlink; nr >= 0 && slices.Contains(calls, uint32(nr)) != unlinks {
			t.Errorf("unlinks=%v: unlink trapped = %v", unlinks, !unlinks)
		}
	}
}

// who names unix and UDP holders as it does TCP ones, and a unix path by
// the file there: a stale socket file has no holder.
func TestWhoUnixAndUDP(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/app.sock"
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	self := "pid " + strconv.Itoa(os.Getpid())
	udpAddr := pc.LocalAddr().String()
	for _, tt := range []struct{ arg, want string }{{path, "unix:" + path}, {"udp:" + udpAddr, "udp:" + udpAddr}} {
		var out, errOut bytes.Buffer
		if code := run([]string{"who", tt.arg}, &out, &errOut); code != 0 {
			t.Fatalf("who %s = %d, stderr %q", tt.arg, code, errOut.String())
		}
		if !strings.Contains(out.String(), tt.want) || !strings.Contains(out.String(), self) {
			t.Errorf("who %s printed %q; want %q and %q", tt.arg, out.String(), tt.want, self)
		}
	}

	// A socket file no one listens on any more (its server was killed).
	stale := dir + "/stale.sock"
	fd, _ := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: stale}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	regular := dir + "/file"
	os.WriteFile(regular, nil, 0o600)
	for _, tt := range []struct {
		arg      string
		code     int
		inStderr string
	}{{stale, 1, ""}, {dir + "/none.sock", 1, ""}, {regular, 1, "is not a socket"}} {
		var out, errOut bytes.Buffer
		if code := run([]string{"who", tt.arg}, &out, &errOut); code != tt.code || !strings.Contains(errOut.String(), tt.inStderr) {
			t.Errorf("who %s = %d, stderr %q; want %d and %q", tt.arg, code, errOut.String(), tt.code, tt.inStderr)
		}
	}
}

// BenchmarkUnlink: what an unlink(2) costs a command when takeover traps
// them (with a --path), against the same command without takeover; ns/op
// is the command's own measure of one unlink of a missing file.
func BenchmarkUnlink(b *testing.B) {
	self, _ := os.Executable()
	path := filepath.Join(b.TempDir(), "app.sock")
	for _, bc := range []struct {
		name string
		argv []string
	}{
		{"plain", []string{self}},
		{"trapped", []string{takeoverBin(b), "-q", "--path", path, "--restart", "never", "--", self}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cmd := exec.Command(bc.argv[0], append(bc.argv[1:], strconv.Itoa(b.N))...)
			cmd.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER=unlinker")
			out, err := cmd.Output()
			if err != nil {
				b.Fatalf("%v: %v", bc.argv, err)
			}
			ns, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
			if err != nil {
				b.Fatalf("the helper printed %q", out)
			}
			b.ReportMetric(ns, "ns/op")
		})
	}
}
