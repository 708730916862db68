package ready

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// spinner accepts from fd 3 without ever blocking on it: non-blocking
// accepts between 1 ms sleeps, so that it is never caught in accept, poll,
// select or epoll, as a server under load whose accept loop always finds a
// connection pending is not. It keeps what it accepts.
const spinner = `
import socket, time
l = socket.socket(fileno=3)
l.setblocking(False)
print("spinning", flush=True)
held = []
while True:
    try:
        held.append(l.accept()[0])
    except BlockingIOError:
        time.sleep(0.001)
`

// lookerAt is a listener on loopback, shared as the old and the new server
// share one: the Socket takeover would hold, and a copy to pass.
type lookerAt struct {
	ln   *net.TCPListener
	f    *os.File // a copy of the socket: passed as fd 3, and takeover's copy
	sock Socket
}

func newLookerAt(t *testing.T) *lookerAt {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	spec, err := target.Parse(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return &lookerAt{ln: ln, f: f, sock: Socket{Target: spec, FD: int(f.Fd()), Inode: st.Ino}}
}

// look looks at the generation of pid, up to n times, until it is ready.
func (l *lookerAt) look(pid, n int) Result {
	var r Result
	for range n {
		r = Look("/proc", []Socket{l.sock}, Want{Targets: target.List{l.sock.Target}, Mode: Accept, PID: pid, Accepted: true})
		if r.Ready {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

// startPython runs script with the listener as fd 3 and waits for its
// first line.
func (l *lookerAt) startPython(t *testing.T, script string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("python3", append([]string{"-c", script}, args...)...)
	cmd.ExtraFiles = []*os.File{l.f}
	cmd.Stderr = os.Stderr
	testutil.StartAndReadLine(t, cmd) // killed at cleanup
	return cmd
}

// A server that accepts from a busy shared socket and is never caught
// waiting on it is ready once it holds a connection it accepted from it
// (before, it was never seen ready: "no process of it was seen accepting
// connections").
func TestLookAccepted(t *testing.T) {
	testutil.RequireTool(t, "python3")
	l := newLookerAt(t)
	cmd := l.startPython(t, spinner)
	if r := l.look(cmd.Process.Pid, 1); r.Ready {
		t.Fatalf("ready before any connection: %+v", r)
	}
	c, err := net.Dial("tcp", l.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Bounded: the spinner accepts within a few ms; 500 looks are 5 s or more.
	r := l.look(cmd.Process.Pid, 500)
	if !r.Ready || r.By != string(byAccepted) {
		t.Errorf("a server holding a connection it accepted, never caught waiting: %+v, want ready by %q", r, byAccepted)
	}
}

// The old server's connections are never taken for the new one's: the
// test process (the old server) accepts from the shared socket and holds
// the connection; the new generation holds the socket and the client's
// end of that connection (its local port is not the socket's), and never
// accepts: it is not ready.
func TestLookAcceptedNotTheOldServers(t *testing.T) {
	testutil.RequireTool(t, "python3")
	l := newLookerAt(t)
	const client = `
import socket, sys, time
l = socket.socket(fileno=3)
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
time.sleep(600)
`
	cmd := l.startPython(t, client, strconv.Itoa(l.ln.Addr().(*net.TCPAddr).Port))
	old, err := l.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	other, err := net.Dial("tcp", l.ln.Addr().String()) // one more the old server accepts
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	old2, err := l.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer old2.Close()
	if r := l.look(cmd.Process.Pid, 20); r.Ready {
		t.Errorf("a generation that holds the socket and never accepts, beside an old server that accepted: %+v, want not ready", r)
	}
}
