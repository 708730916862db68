package fdpass

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// The test binary is also a fetchSocket client, for the test that needs one
// running as another user: TAKEOVER_FDPASS_CLIENT="PID INODE PATH" makes it
// fetch, print "ok INODE" or "error: ...", and exit.
func init() {
	if spec := os.Getenv("TAKEOVER_FDPASS_CLIENT"); spec != "" {
		os.Exit(fdpassClient(spec))
	}
}

func fdpassClient(spec string) int {
	f := strings.SplitN(spec, " ", 3)
	if len(f) != 3 {
		fmt.Printf("error: TAKEOVER_FDPASS_CLIENT=%q, want \"PID INODE PATH\"\n", spec)
		return 2
	}
	pid, err1 := strconv.Atoi(f[0])
	inode, err2 := strconv.ParseUint(f[1], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		fmt.Println("error:", err)
		return 2
	}
	fd, err := Fetch(f[2], pid, inode, 30*time.Second)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ok", target.InodeOf(fd))
	return 0
}

// heldListener listens on 127.0.0.1:0 and returns the listener and a
// launcher-style copy of its fd, with the socket's inode.
func heldListener(t *testing.T) (ln net.Listener, fd int, inode uint64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var dupErr error
	err = rc.Control(func(f uintptr) { fd, dupErr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) })
	if err = errors.Join(err, dupErr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return ln, fd, target.InodeOf(fd)
}

// serveTest serves the sockets in held (inode to fd) at a new path in dir,
// or in a temporary directory if dir is "", until the test ends.
func serveTest(t *testing.T, dir string, held map[uint64]int) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "launcher.sock")
	stop, err := Serve(path, func(inode uint64) (int, bool) {
		fd, ok := held[inode]
		if !ok {
			return -1, false
		}
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) // the server closes it
		return dup, err == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return path
}

func TestFetchSocket(t *testing.T) {
	ln, held, inode := heldListener(t)
	path := serveTest(t, "", map[uint64]int{inode: held})

	fd, err := Fetch(path, os.Getpid(), inode, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	fetched := os.NewFile(uintptr(fd), "fetched")
	defer fetched.Close()
	if got := target.InodeOf(fd); got != inode {
		t.Fatalf("fetched inode %d, want %d", got, inode)
	}
	if flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("fetched fd flags %#x (%v), want FD_CLOEXEC", flags, err)
	}

	// A connection to the original address waits in the shared accept
	// queue, and the fetched socket accepts it.
	fln, err := net.FileListener(fetched)
	if err != nil {
		t.Fatal(err)
	}
	defer fln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	a, err := fln.Accept()
	if err != nil {
		t.Fatalf("accept on the fetched socket: %v", err)
	}
	defer a.Close()
	if a.RemoteAddr().String() != c.LocalAddr().String() {
		t.Errorf("accepted %s, want %s", a.RemoteAddr(), c.LocalAddr())
	}
}

func TestFetchSocketErrors(t *testing.T) {
	_, held, inode := heldListener(t)
	_, other, _ := heldListener(t)
	good := serveTest(t, "", map[uint64]int{inode: held})
	confused := serveTest(t, "", map[uint64]int{inode: other})
	silent := filepath.Join(t.TempDir(), "silent.sock")
	sln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: silent, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sln.Close() }) // never accepts, never reads

	tests := []struct {
		name    string
		path    string
		pid     int
		inode   uint64
		timeout time.Duration
		want    string // in the error
		is      error  // the error wraps, if not nil
	}{
		{"unknown inode", good, os.Getpid(), inode + 1, time.Minute, fmt.Sprintf("refused: no socket with inode %d", inode+1), nil},
		{"wrong pid", good, os.Getpid() + 1, inode, time.Minute, fmt.Sprintf("served by pid %d, not %d", os.Getpid(), os.Getpid()+1), nil},
		{"missing path", filepath.Join(t.TempDir(), "gone.sock"), os.Getpid(), inode, time.Minute, "no such file", unix.ENOENT},
		{"confused server", confused, os.Getpid(), inode, time.Minute, "not socket inode", nil},
		{"silent server", silent, os.Getpid(), inode, 300 * time.Millisecond, "receive reply: i/o timeout", os.ErrDeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			began := time.Now()
			fd, err := Fetch(tt.path, tt.pid, tt.inode, tt.timeout)
			took := time.Since(began)
			if err == nil {
				unix.Close(fd)
				t.Fatalf("fetched fd %d, want an error", fd)
			}
			prefix := fmt.Sprintf("fetch socket inode %d from takeover pid %d at %s: ", tt.inode, tt.pid, tt.path)
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q...%q", err, prefix, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q does not wrap %v", err, tt.is)
			}
			// Slack for a loaded machine, far below the minute the
			// other cases are allowed: they must fail at once.
			if limit := min(tt.timeout, 5*time.Second) + 5*time.Second; took > limit {
				t.Errorf("took %v, want under %v", took, limit)
			}
		})
	}
}

// TestServeSocketsConnection asks several things on one connection.
func TestServeSocketsConnection(t *testing.T) {
	_, fd1, inode1 := heldListener(t)
	_, fd2, inode2 := heldListener(t)
	path := serveTest(t, "", map[uint64]int{inode1: fd1, inode2: fd2})
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))

	tests := []struct {
		name, req string
		inode     uint64 // of the socket passed, 0 for a refusal
		refusal   string
	}{
		{"first", fmt.Sprintf("inode %d", inode1), inode1, ""},
		{"unknown", "inode 1", 0, "no socket with inode 1"},
		{"not a request", "hello", 0, `bad request "hello"`},
		{"not a number", "inode -1", 0, `bad inode "-1"`},
		{"too long", "inode " + strings.Repeat("0", 100) + "1", 0, "request too long"},
		{"second", fmt.Sprintf("inode %d", inode2), inode2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Write([]byte(tt.req)); err != nil {
				t.Fatal(err)
			}
			fd, err := receiveSocket(c)
			if tt.refusal != "" {
				if err == nil || !strings.Contains(err.Error(), tt.refusal) {
					t.Errorf("reply error %v, want %q", err, tt.refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			if got := target.InodeOf(fd); got != tt.inode {
				t.Errorf("got inode %d, want %d", got, tt.inode)
			}
		})
	}
}

// TestServeSocketsIdlePeer: a peer that connects and sends nothing delays
// no one, and the server hangs up on it.
func TestServeSocketsIdlePeer(t *testing.T) {
	_, held, inode := heldListener(t)
	path := serveTest(t, "", map[uint64]int{inode: held})
	idle, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	fd, err := Fetch(path, os.Getpid(), inode, 10*time.Second)
	if err != nil {
		t.Fatalf("fetch beside an idle peer: %v", err)
	}
	unix.Close(fd)

	idle.SetReadDeadline(time.Now().Add(fdpassIdle + 10*time.Second))
	if n, err := idle.Read(make([]byte, 16)); err != io.EOF {
		t.Errorf("idle peer read %d bytes, %v; want EOF", n, err)
	}
}

func TestServeSocketsStop(t *testing.T) {
	_, held, inode := heldListener(t)
	path := filepath.Join(t.TempDir(), "launcher.sock")
	if err := os.WriteFile(path, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}
	stop, err := Serve(path, func(uint64) (int, bool) {
		dup, err := unix.FcntlInt(uintptr(held), unix.F_DUPFD_CLOEXEC, 0) // the server closes it
		return dup, err == nil
	})
	if err != nil {
		t.Fatalf("serve over a stale file: %v", err)
	}
	t.Cleanup(stop)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket file mode %v, want a socket with mode 0600", fi.Mode())
	}
	open, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	// One answer first, so that the server has accepted the connection:
	// one still queued would be reset, not closed.
	open.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := open.Write([]byte(fmt.Sprintf("inode %d", inode))); err != nil {
		t.Fatal(err)
	}
	fd, err := receiveSocket(open)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)

	stop()
	stop() // a second stop is harmless

	if n, err := open.Read(make([]byte, 16)); err != io.EOF {
		t.Errorf("open connection read %d bytes, %v after stop; want EOF", n, err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file after stop: %v, want it removed", err)
	}
	if target.InodeOf(held) != inode {
		t.Error("stop closed the caller's socket")
	}
	if fd, err := Fetch(path, os.Getpid(), inode, 10*time.Second); err == nil {
		unix.Close(fd)
		t.Error("fetch after stop succeeded")
	}
}

// TestServeSocketsRefusesOtherUID runs a client as user nobody, able to
// reach the socket (mode 0666 here, in a directory anyone may enter), and
// makes sure the SO_PEERCRED check itself refuses it.
func TestServeSocketsRefusesOtherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as nobody")
	}
	testutil.RequireTool(t, "setpriv")
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal(err)
	}
	dir := testutil.OpenTempDir(t)
	client := testutil.CopyTestBinary(t, dir)
	_, held, inode := heldListener(t)
	path := serveTest(t, dir, map[uint64]int{inode: held})
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		as   []string // command prefix
		want string   // the client's output
	}{
		{"root", nil, fmt.Sprintf("ok %d\n", inode)},
		{"nobody", []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"},
			fmt.Sprintf("error: fetch socket inode %d from takeover pid %d at %s: refused: peer uid 65534 is neither root nor uid 0\n", inode, os.Getpid(), path)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			argv := append(append([]string{}, tt.as...), client)
			cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), fmt.Sprintf("TAKEOVER_FDPASS_CLIENT=%d %d %s", os.Getpid(), inode, path))
			out, _ := cmd.CombinedOutput()
			if string(out) != tt.want {
				t.Errorf("client printed %q, want %q", out, tt.want)
			}
		})
	}
}

func FuzzFDPassRequest(f *testing.F) {
	for _, s := range []string{"inode 12345", "inode ", "inode -1", "inode 18446744073709551616", "inode 0x10", "hello", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, req []byte) {
		inode, err := parseInodeRequest(req)
		if err != nil {
			return
		}
		if again, err := parseInodeRequest([]byte("inode " + strconv.FormatUint(inode, 10))); err != nil || again != inode {
			t.Errorf("%q parsed as %d, which does not round-trip: %d, %v", req, inode, again, err)
		}
		if !strings.HasPrefix(string(req), "inode ") {
			t.Errorf("%q accepted without the inode prefix", req)
		}
	})
}
