package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

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
