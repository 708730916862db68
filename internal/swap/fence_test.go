package swap

import (
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/socktab"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// fenceListener is an old server's listening socket, as a raw fd: bound
// and listening on 127.0.0.1, without SO_REUSEPORT, as most servers bind.
func fenceListener(t testing.TB) (int, netip.AddrPort) {
	t.Helper()
	fd := tcpSocket(t)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 128); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	return fd, target.AddrPortOf(sa)
}

// joinFence fences own, a new server's socket, beside old, the listening
// socket at addr, as a bind of the new server does: own is bound into old's
// group, listens (backlog) and joins the fence.
func joinFence(t testing.TB, own, old int, addr netip.AddrPort, backlog int) *Fence {
	t.Helper()
	f, why := FenceBeside(Claim{Sock: own, Addr: addr, Spec: target.Spec{Addr: addr.Addr(), Port: addr.Port()}}, old)
	if f == nil {
		t.Fatalf("fenceBeside: %s", why)
	}
	if err := unix.Listen(own, backlog); err != nil {
		t.Fatal(err)
	}
	if err := f.Joined(own); err != nil {
		t.Fatalf("joined: %v", err)
	}
	return f
}

func tcpSocket(t testing.TB) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// connectN makes n connections to addr and waits until each is
// established (in some accept queue); the caller closes them.
func connectN(t *testing.T, addr netip.AddrPort, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	t.Cleanup(func() {
		for _, c := range cs {
			c.Close()
		}
	})
	return cs
}

// acceptAll accepts what waits in fd's queue, and keeps the accepted fds
// open (the caller closes them).
func acceptAll(t *testing.T, fd int) []int {
	t.Helper()
	var got []int
	for {
		c, _, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EAGAIN {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, c)
	}
}

// closeUnlessClosed closes fd unless the test closed it already (and set it
// to -1): a test that closes a socket itself still cleans it up on failure.
func closeUnlessClosed(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// TestFenceSteers: a socket bound beside a listening one joins its group;
// while it starts, every new connection goes to the old socket; once the
// fence is up, every one goes to the new socket, and the old server is
// finished once it has closed what it accepted.
func TestFenceSteers(t *testing.T) {
	old, addr := fenceListener(t)
	unix.SetNonblock(old, true)
	own := tcpSocket(t)
	f := joinFence(t, own, old, addr, 128)
	unix.SetNonblock(own, true)
	pids := []int{os.Getpid()}

	for _, c := range connectN(t, addr, 20) {
		c.Write([]byte("GET / HTTP/1.1\r\n\r\n")) // a request the old server has not answered
	}
	waitQueued(t, old, 20)
	if done, err := f.Finished(pids); done || err != nil {
		t.Errorf("finished with 20 connections queued = %v, %v; want false", done, err)
	}
	onOld, onNew := acceptAll(t, old), acceptAll(t, own)
	if len(onOld) != 20 || len(onNew) != 0 {
		t.Errorf("before the fence: %d connections reached the old socket and %d the new; want 20 and 0", len(onOld), len(onNew))
	}
	for deadline := time.Now().Add(10 * time.Second); unread(t, addr.Port()) < 20 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if done, _ := f.Finished(pids); done {
		t.Errorf("finished while the old server holds 20 accepted connections with requests unread")
	}

	if err := f.Raise(own); err != nil {
		t.Fatalf("raise: %v", err)
	}
	connectN(t, addr, 20)
	waitQueued(t, own, 20)
	lateOld, lateNew := acceptAll(t, old), acceptAll(t, own)
	if len(lateOld) != 0 || len(lateNew) != 20 {
		t.Errorf("fenced: %d connections reached the old socket and %d the new; want 0 and 20", len(lateOld), len(lateNew))
	}
	closeFDs(lateNew) // (they share the port: the test is one process)
	closeFDs(onOld)
	if done, err := f.Finished(pids); !done || err != nil {
		t.Errorf("finished once the old server closed what it accepted = %v, %v; want true", done, err)
	}
}

// unread counts the connections at port with bytes waiting to be read.
func unread(t *testing.T, port uint16) int {
	conns, err := socktab.DiagTCPConns(port)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range conns {
		if c.RQueue > 0 {
			n++
		}
	}
	return n
}

// waitQueued waits until fd's accept queue holds n connections.
func waitQueued(t *testing.T, fd, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			t.Fatal(err)
		}
		if int(info.Unacked) >= n { // a listener's tcpi_unacked is its accept queue
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the accept queue holds %d connections after 5s, want %d", info.Unacked, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFenceRollback: a new server that never becomes ready (its socket is
// closed before the fence goes up) loses nothing: every connection went to
// the old socket, which takes every later one too.
func TestFenceRollback(t *testing.T) {
	old, addr := fenceListener(t)
	unix.SetNonblock(old, true)
	own, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeUnlessClosed(own) })
	joinFence(t, own, old, addr, 128)
	connectN(t, addr, 10)
	unix.Close(own) // rolled back
	own = -1
	connectN(t, addr, 10)
	waitQueued(t, old, 20)
	got := acceptAll(t, old)
	defer closeFDs(got)
	if len(got) != 20 {
		t.Errorf("the old socket accepted %d connections, want 20", len(got))
	}
}

// TestFenceRefused: no fence where the group would not be the old socket
// and the new one: a port where the server has an SO_REUSEPORT group of
// its own, or an old socket of another user; the sockets are left as they
// were, the new one unbound.
func TestFenceRefused(t *testing.T) {
	t.Run("server's own group", func(t *testing.T) {
		a := tcpSocket(t)
		unix.SetsockoptInt(a, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		unix.Bind(a, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		unix.Listen(a, 16)
		sa, _ := unix.Getsockname(a)
		addr := target.AddrPortOf(sa)
		b := tcpSocket(t)
		unix.SetsockoptInt(b, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		if err := unix.Bind(b, target.SockaddrOf(addr)); err != nil {
			t.Fatal(err)
		}
		unix.Listen(b, 16)
		checkRefused(t, a, addr, "2 sockets listen on "+addr.String(), 1)
	})
	t.Run("another user's socket", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("needs root to make a socket of another user")
		}
		runtime.LockOSThread()
		unix.Setfsuid(65534) // a socket's inode belongs to its maker's fsuid
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		unix.Setfsuid(0)
		runtime.UnlockOSThread()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
		unix.Listen(fd, 16)
		sa, _ := unix.Getsockname(fd)
		checkRefused(t, fd, target.AddrPortOf(sa), "the old socket belongs to uid 65534 and the new one to uid 0", 0)
	})
}

func checkRefused(t *testing.T, old int, addr netip.AddrPort, want string, reuseport int) {
	t.Helper()
	own := tcpSocket(t)
	c := Claim{Sock: own, Addr: addr, Spec: target.Spec{Addr: addr.Addr(), Port: addr.Port()}}
	f, why := FenceBeside(c, old)
	if f != nil || !strings.Contains(why, want) {
		t.Fatalf("fenceBeside = %v, %q; want nil and %q", f, why, want)
	}
	if v, _ := unix.GetsockoptInt(old, unix.SOL_SOCKET, unix.SO_REUSEPORT); v != reuseport {
		t.Errorf("the old socket's SO_REUSEPORT is %d after the refusal, want %d", v, reuseport)
	}
	if sa, _ := unix.Getsockname(own); target.AddrPortOf(sa).Port() != 0 {
		t.Errorf("the new socket was left bound to %v", target.AddrPortOf(sa))
	}
}

// TestFenceSettles: once the old socket has left the group, the group is
// pinned to the new one, so that a socket joining later (another process
// of the user, with SO_REUSEPORT) takes nothing from it.
func TestFenceSettles(t *testing.T) {
	old, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeUnlessClosed(old) })
	unix.Bind(old, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	unix.Listen(old, 16)
	sa, _ := unix.Getsockname(old)
	addr := target.AddrPortOf(sa)
	own := tcpSocket(t)
	f := joinFence(t, own, old, addr, 128)
	f.Raise(own)
	unix.Close(old) // the old server exited
	old = -1
	if !f.Settle(context.Background(), own) {
		t.Fatal("settle: the old socket did not leave the group")
	}
	stray := tcpSocket(t)
	unix.SetsockoptInt(stray, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err := unix.Bind(stray, target.SockaddrOf(addr)); err != nil {
		t.Fatal(err)
	}
	unix.Listen(stray, 128)
	unix.SetNonblock(own, true)
	unix.SetNonblock(stray, true)
	connectN(t, addr, 20)
	waitQueued(t, own, 20)
	onOwn, onStray := acceptAll(t, own), acceptAll(t, stray)
	defer closeFDs(onOwn)
	defer closeFDs(onStray)
	if len(onOwn) != 20 || len(onStray) != 0 {
		t.Errorf("after settle: %d connections reached the new socket and %d a later one; want 20 and 0", len(onOwn), len(onStray))
	}
}

// TestFenceWaitsForHandshakes: a connection still in its handshake on the
// old socket when the fence goes up (a request socket: here the server's
// TCP_DEFER_ACCEPT holds it there until the client sends, as a full
// accept queue does by dropping the client's ACK) is the old server's to
// finish: the drain waits for it to reach the old socket's queue and be
// accepted. Were the old socket closed before, the client, which counts
// itself connected, would be reset.
func TestFenceWaitsForHandshakes(t *testing.T) {
	old, addr := fenceListener(t)
	unix.SetNonblock(old, true)
	if err := unix.SetsockoptInt(old, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 30); err != nil {
		t.Fatal(err)
	}
	own := tcpSocket(t)
	f := joinFence(t, own, old, addr, 128)
	unix.SetNonblock(own, true)
	pids := []int{os.Getpid()}

	client := connectN(t, addr, 1)[0] // connected, as the client sees it
	waitHandshakes(t, addr, 1)
	if err := f.Raise(own); err != nil {
		t.Fatalf("raise: %v", err)
	}
	for i := range 2 { // raiseFences asks twice
		if done, err := f.Finished(pids); done || err != nil {
			t.Fatalf("finished (look %d) with a handshake under way on the old socket = %v, %v; want false", i+1, done, err)
		}
	}
	if _, err := client.Write([]byte("GET / HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitQueued(t, old, 1)
	if done, _ := f.Finished(pids); done {
		t.Errorf("finished with the connection in the old socket's queue")
	}
	got := acceptAll(t, old)
	if len(got) != 1 || len(acceptAll(t, own)) != 0 {
		t.Fatalf("the old socket accepted %d connections, want 1 (and the new one none)", len(got))
	}
	closeFDs(got)
	if done, err := f.Finished(pids); !done || err != nil {
		t.Errorf("finished once the old server closed what it accepted = %v, %v; want true", done, err)
	}
}

// waitHandshakes waits until n connections to addr are in their handshake.
func waitHandshakes(t *testing.T, addr netip.AddrPort, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		reqs, err := socktab.DiagTCPRequests(addr.Port())
		if err != nil {
			t.Fatal(err)
		}
		if len(reqs) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections to %s in their handshake after 5s, want %d", len(reqs), addr, n)
		}
	}
}
