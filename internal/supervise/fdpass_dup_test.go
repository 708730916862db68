package supervise

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/fdpass"
	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// TestHeldSocketSurvivesClose: the fd a launcher serves a newer takeover
// is a dup of its copy, taken under the generation's lock (issue 28, low
// item "fdpass sends a held fd without dup or lock"). The generation may
// close its copies (closeCopies) the moment after the lookup, and a file
// opened then takes the number: what is sent must still be the socket.
func TestHeldSocketSurvivesClose(t *testing.T) {
	sock, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(sock, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(sock)
		t.Fatal(err)
	}
	inode := target.InodeOf(sock)
	l := &launcher{}
	g := &generation{holdings: swap.NewHoldings(1, false, nil)}
	g.holdings.Add(swap.SockKey{Tgid: 1, FD: 3}, &swap.Held{CopyFD: sock, Inode: inode}, nil)
	l.gens = []*generation{g}
	t.Cleanup(g.holdings.CloseCopies) // closes sock, if the test did not get that far

	fd, ok := l.heldSocket(inode)
	if !ok {
		t.Fatalf("heldSocket(%d) found nothing", inode)
	}
	g.holdings.CloseCopies()      // the generation on its way out, concurrently
	f, err := os.Open(os.DevNull) // takes the lowest free number: the copy's
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fd == sock {
		t.Fatalf("heldSocket returned the generation's own copy, fd %d, which closeCopies closed", fd)
	}
	defer unix.Close(fd)
	if got := target.InodeOf(fd); got != inode {
		t.Errorf("fd %d from heldSocket is inode %d after closeCopies, want the socket's %d", fd, got, inode)
	}
	if _, ok := l.heldSocket(inode); ok {
		t.Errorf("heldSocket found a socket after its generation closed its copies")
	}
}

// TestServeSocketsClosesPassed: the server closes the fd lookup gave it
// once it is passed (the lookup's dup): one end of a socket pair served
// that way reads EOF at the other once the peer has closed what it got.
func TestServeSocketsClosesPassed(t *testing.T) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	served, other := pair[0], pair[1]
	defer unix.Close(other)
	inode := target.InodeOf(served)
	lookups := 0
	path := filepath.Join(t.TempDir(), "launcher.sock")
	stop, err := fdpass.Serve(path, func(ino uint64) (int, bool) {
		lookups++
		if ino != inode || lookups > 1 {
			return -1, false
		}
		return served, true // the server's now
	})
	if err != nil {
		unix.Close(served)
		t.Fatal(err)
	}
	defer stop()
	fd, err := fdpass.Fetch(path, os.Getpid(), inode, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	// Bounded, not timed: EOF comes at once when the server closed its fd.
	tv := unix.NsecToTimeval((10 * time.Second).Nanoseconds())
	if err := unix.SetsockoptTimeval(other, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.Read(other, make([]byte, 1)); n != 0 || err != nil {
		t.Errorf("read at the other end = %d, %v; want EOF: the server still holds the fd it passed", n, err)
	}
}
