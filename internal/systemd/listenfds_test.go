package systemd

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// TestClassifyPassed: each kind of fd systemd may pass is taken for the
// right target or refused with a reason; never a socket of the wrong kind.
func TestClassifyPassed(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	tcpFD := fileFD(t, ln.(*net.TCPListener))
	udp, err := net.ListenPacket("udp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpFD := fileFD(t, udp.(*net.UDPConn))
	unbound, _ := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	defer unix.Close(unbound)
	unix.Bind(unbound, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	sockPath := filepath.Join(t.TempDir(), "app.sock")
	uln, err := net.Listen("unix", sockPath)
	if err != nil {
		t.Fatal(err)
	}
	defer uln.Close()
	unixFD := fileFD(t, uln.(*net.UnixListener))
	file, _ := os.Open("/dev/null")
	defer file.Close()
	closed, _ := unix.Dup(int(file.Fd()))
	unix.Close(closed)

	tcp, _ := target.Parse(fmt.Sprintf("127.0.0.1:%d", port))
	other, _ := target.Parse(strconv.Itoa(port + 1))
	udpSpec, _ := target.Parse(fmt.Sprintf("udp:%d", port))
	path, _ := target.ParsePath(sockPath)
	targets := target.List{tcp, udpSpec, path}

	tests := []struct {
		name     string
		fd       int
		fdName   string
		targets  target.List
		taken    []Passed
		wantSpec target.Spec
		wantVia  string
		wantErr  string
	}{
		{name: "tcp from a socket unit", fd: tcpFD, fdName: "app.socket", targets: targets, wantSpec: tcp, wantVia: "listen-fds"},
		{name: "tcp from the store", fd: tcpFD, fdName: tcp.StoreName(), targets: targets, wantSpec: tcp, wantVia: "fd-store"},
		{name: "udp", fd: udpFD, targets: targets, wantSpec: udpSpec, wantVia: "listen-fds"},
		{name: "unix path", fd: unixFD, targets: targets, wantSpec: path, wantVia: "listen-fds"},
		{name: "udp for a tcp target", fd: udpFD, targets: target.List{tcp}, wantErr: "fits no --port or --path"},
		{name: "another port", fd: tcpFD, targets: target.List{other}, wantErr: "fits no --port or --path"},
		{name: "stream socket that does not listen", fd: unbound, targets: targets, wantErr: "does not listen"},
		{name: "not a socket", fd: int(file.Fd()), targets: targets, wantErr: "not a socket"},
		{name: "not open", fd: closed, targets: targets, wantErr: "not open"},
		{name: "the same socket twice", fd: tcpFD, targets: targets, taken: []Passed{{FD: 99, Inode: target.InodeOf(tcpFD)}}, wantErr: "socket of fd 99 again"},
		{name: "a second socket for a target", fd: tcpFD, targets: targets, taken: []Passed{{FD: 99, Spec: tcp, Addr: netip.MustParseAddrPort(fmt.Sprintf("127.0.0.1:%d", port))}}, wantErr: "second socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := classifyPassed(tt.fd, tt.fdName, tt.targets, tt.taken)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("classifyPassed = %+v, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Spec != tt.wantSpec || got.Via != tt.wantVia || got.Inode != target.InodeOf(tt.fd) {
				t.Errorf("classifyPassed = %+v, want spec %v via %s", got, tt.wantSpec, tt.wantVia)
			}
		})
	}
}

// fileFD returns a close-on-exec fd of its own for a listener.
func fileFD(t *testing.T, l interface{ File() (*os.File, error) }) int {
	t.Helper()
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return int(f.Fd())
}

// TestInheritSocketsNotOurs: variables whose LISTEN_PID is another
// process's are ignored (the root's TestListenFDsNotOurs: and never passed
// on to the command).
func TestInheritSocketsNotOurs(t *testing.T) {
	got := Inherit(slog.New(slog.DiscardHandler), nil, func(k string) string {
		return map[string]string{"LISTEN_FDS": "1", "LISTEN_PID": "1"}[k]
	})
	if got != nil {
		t.Fatalf("inheritSockets took %v for LISTEN_PID=1", got)
	}
}
