package socktab

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDiagTCPRequests: a connection held in its handshake (the listener's
// TCP_DEFER_ACCEPT keeps it a request socket until the client sends) is
// reported with its addresses and a cookie; once the client sends, it
// leaves the handshake for the accept queue.
func TestDiagTCPRequests(t *testing.T) {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	unix.SetsockoptInt(ln, unix.IPPROTO_TCP, unix.TCP_DEFER_ACCEPT, 30)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	unix.Listen(ln, 16)
	sa, _ := unix.Getsockname(ln)
	addr := netip.AddrPortFrom(netip.AddrFrom4(sa.(*unix.SockaddrInet4).Addr), uint16(sa.(*unix.SockaddrInet4).Port))
	c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client := c.LocalAddr().(*net.TCPAddr).AddrPort()

	var got []Request
	for deadline := time.Now().Add(5 * time.Second); len(got) == 0; time.Sleep(time.Millisecond) {
		if got, err = DiagTCPRequests(addr.Port()); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("no request socket after 5s")
		}
	}
	if len(got) != 1 || got[0].Local != addr || got[0].Remote != client || got[0].Cookie == 0 {
		t.Fatalf("DiagTCPRequests(%d) = %+v; want one from %v to %v with a cookie", addr.Port(), got, client, addr)
	}
	c.Write([]byte("x"))
	for deadline := time.Now().Add(5 * time.Second); len(got) > 0; time.Sleep(time.Millisecond) {
		if got, err = DiagTCPRequests(addr.Port()); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("still in its handshake 5s after the client sent: %+v", got)
		}
	}
}
