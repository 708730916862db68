// Package fdpass passes listening sockets between takeovers over a unix
// socket with SCM_RIGHTS: a newer takeover asks an earlier one for the
// socket with a given inode (no ptrace rights needed).
package fdpass

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Launchers hand their listening sockets to each other over a unix socket
// with SCM_RIGHTS, as HAProxy's `expose-fd listeners` does: unlike
// pidfd_getfd it needs no ptrace right, which Yama and the default seccomp
// profiles of Docker and containerd deny.
//
// The protocol runs over SOCK_SEQPACKET, so each message arrives whole.
// A client sends any number of requests, one message each:
//
//	inode 12345
//
// and the server answers each with one message: "ok" carrying the socket
// (one fd, SCM_RIGHTS), or "no: REASON" carrying nothing. A server that
// refuses the peer answers its first request "no: REASON" and closes.

// fdpassIdle is how long a server waits for a peer's next request: a peer
// that connects and sends nothing holds a goroutine this long, no more.
const fdpassIdle = 2 * time.Second

// Serve listens on a unix SOCK_SEQPACKET socket at path (mode 0600; a
// stale file at path is replaced) and answers each request with the
// socket lookup returns for the requested inode, passed with SCM_RIGHTS.
// Only a peer of this process's effective uid, or root, is answered
// (SO_PEERCRED). It returns a func that stops serving, closes the listener
// and removes path; once it returns, lookup is not called again.
//
// lookup may be called from several goroutines at once. The fd it returns
// is the server's: it is closed once passed. (A dup of the socket, taken
// where nothing can close it first: the fd the holder keeps may be closed
// at any time.)
func Serve(path string, lookup func(inode uint64) (fd int, ok bool)) (stop func(), err error) {
	ln, err := listenSeqpacket(path)
	if err != nil {
		return nil, fmt.Errorf("serve sockets at %s: %w", path, err)
	}
	s := &sockServer{ln: ln, lookup: lookup, conns: map[*net.UnixConn]bool{}}
	s.wg.Add(1)
	go s.accept()
	var once sync.Once
	return func() { once.Do(func() { s.stop(path) }) }, nil
}

// listenSeqpacket listens at path, which only the owner may connect to.
// The mode is the socket's own, set with fchmod before bind: bind(2)
// gives the file the socket inode's mode (less the umask), so that no
// other user can connect at any time, and no path is ever chmodded (it
// could be a symlink by then).
//
// The socket is bound at a name of its own (.NAME.new) and renamed onto
// path, over any stale file there, once it listens: path never names a
// socket that no one listens on yet, which a takeover clearing what dead
// ones left (clearDead) would take for stale.
func listenSeqpacket(path string) (*net.UnixListener, error) {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket file: %w", err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // net.FileListener keeps a dup
	if err := unix.Fchmod(fd, 0o600); err != nil {
		return nil, fmt.Errorf("fchmod: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: tmp}); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	err = unix.Listen(fd, 64)
	if err == nil {
		err = os.Rename(tmp, path)
	}
	var ln net.Listener
	if err == nil {
		ln, err = net.FileListener(f)
	}
	if err != nil {
		os.Remove(tmp)
		os.Remove(path)
		return nil, fmt.Errorf("listen: %w", err)
	}
	return ln.(*net.UnixListener), nil
}

// A sockServer answers the requests of serveSockets' peers, each
// connection in its own goroutine, so that a slow peer delays no other.
type sockServer struct {
	ln     *net.UnixListener
	lookup func(inode uint64) (fd int, ok bool)
	wg     sync.WaitGroup // the accept loop and the connections

	mu      sync.Mutex
	conns   map[*net.UnixConn]bool // open connections, for stop to close
	stopped bool
}

func (s *sockServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of fds, or a peer that gave up: retry shortly, as
			// net/http does, rather than stop serving for good.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if !s.track(c) {
			c.Close()
			return
		}
		go s.serve(c)
	}
}

// track records c as open and counts its goroutine, unless the server
// stopped: stop must not miss a connection it should close.
func (s *sockServer) track(c *net.UnixConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.conns[c] = true
	s.wg.Add(1)
	return true
}

func (s *sockServer) forget(c *net.UnixConn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// stop closes the listener and every connection, waits until no goroutine
// can call lookup any more, and removes path.
func (s *sockServer) stop(path string) {
	s.ln.Close()
	s.mu.Lock()
	s.stopped = true
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	os.Remove(path)
}

// serve answers c's requests until it closes, stays idle for fdpassIdle,
// or the server stops.
func (s *sockServer) serve(c *net.UnixConn) {
	defer s.wg.Done()
	defer s.forget(c)
	// A refused peer is told in answer to its first request, not at once:
	// closing with its request unread would make its read fail with
	// ECONNRESET instead of returning the reason.
	refusal := allowedPeer(c)
	buf := make([]byte, 64)
	for {
		c.SetDeadline(time.Now().Add(fdpassIdle))
		n, _, flags, _, err := c.ReadMsgUnix(buf, nil)
		if err != nil || n == 0 { // n == 0: the peer closed
			return
		}
		if refusal != nil {
			sendReply(c, "no: "+refusal.Error(), -1)
			return
		}
		msg, fd := s.answer(buf[:n], flags&unix.MSG_TRUNC != 0)
		err = sendReply(c, msg, fd)
		if fd >= 0 {
			unix.Close(fd) // lookup's dup: the peer has its own now
		}
		if err != nil {
			return
		}
	}
}

// answer returns the reply to one request and the fd to pass with it, or
// -1. A truncated request is refused: its tail might be digits it lost.
func (s *sockServer) answer(req []byte, truncated bool) (string, int) {
	if truncated {
		return "no: request too long", -1
	}
	inode, err := parseInodeRequest(req)
	if err != nil {
		return "no: " + err.Error(), -1
	}
	fd, ok := s.lookup(inode)
	if !ok {
		return fmt.Sprintf("no: no socket with inode %d", inode), -1
	}
	return "ok", fd
}

// parseInodeRequest parses "inode 12345".
func parseInodeRequest(req []byte) (uint64, error) {
	num, ok := strings.CutPrefix(string(req), "inode ")
	if !ok {
		return 0, fmt.Errorf("bad request %q, want \"inode NUMBER\"", req)
	}
	inode, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad inode %q", num)
	}
	return inode, nil
}

// allowedPeer refuses a peer that is neither root nor of this process's
// effective uid: they could not have taken the socket from /proc either.
func allowedPeer(c *net.UnixConn) error {
	cred, err := peerCred(c)
	if err != nil {
		return err
	}
	if euid := os.Geteuid(); cred.Uid != 0 && int(cred.Uid) != euid {
		return fmt.Errorf("peer uid %d is neither root nor uid %d", cred.Uid, euid)
	}
	return nil
}

func peerCred(c *net.UnixConn) (*unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var credErr error
	err = rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return nil, fmt.Errorf("read peer credentials: %w", err)
	}
	return cred, nil
}

// sendReply sends msg, with fd unless it is -1. The kernel takes its own
// reference to the socket at sendmsg: the caller's fd stays open, the
// caller's to close.
func sendReply(c *net.UnixConn, msg string, fd int) error {
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, err := c.WriteMsgUnix([]byte(msg), oob, nil)
	return err
}

// Fetch asks the launcher serving at path for its socket with the
// given inode and returns a new fd for it (close-on-exec). The server must
// be process wantPID (checked with SO_PEERCRED), so a stale path reused by
// another process is never trusted. It never waits more than timeout in
// total (connect, send, receive).
func Fetch(path string, wantPID int, inode uint64, timeout time.Duration) (int, error) {
	fd, err := fetch(path, wantPID, inode, time.Now().Add(timeout))
	if err != nil {
		return -1, fmt.Errorf("fetch socket inode %d from takeover pid %d at %s: %w", inode, wantPID, path, err)
	}
	return fd, nil
}

func fetch(path string, wantPID int, inode uint64, deadline time.Time) (int, error) {
	d := net.Dialer{Deadline: deadline}
	conn, err := d.Dial("unixpacket", path)
	if err != nil {
		return -1, fmt.Errorf("dial: %w", bareOpError(err))
	}
	c := conn.(*net.UnixConn)
	defer c.Close()
	c.SetDeadline(deadline)
	cred, err := peerCred(c)
	if err != nil {
		return -1, err
	}
	if int(cred.Pid) != wantPID {
		return -1, fmt.Errorf("the socket is served by pid %d, not %d", cred.Pid, wantPID)
	}
	if _, err := c.Write([]byte("inode " + strconv.FormatUint(inode, 10))); err != nil {
		return -1, fmt.Errorf("send request: %w", bareOpError(err))
	}
	fd, err := receiveSocket(c)
	if err != nil {
		return -1, err
	}
	if err := checkSocket(fd, inode); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// receiveSocket reads one reply and returns the fd an "ok" carries. Any
// other fd that arrives is closed, so a confused server leaks none into us.
func receiveSocket(c *net.UnixConn) (int, error) {
	buf := make([]byte, 256)
	oob := make([]byte, unix.CmsgSpace(4)) // room for one fd; the kernel drops the rest (MSG_CTRUNC)
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, fmt.Errorf("receive reply: %w", bareOpError(err))
	}
	fds := ReceivedFDs(oob[:oobn])
	reply := string(buf[:n])
	if reply != "ok" || len(fds) != 1 || flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return -1, badReply(reply, len(fds), flags)
	}
	return fds[0], nil
}

// ReceivedFDs returns the fds in the control messages oob (already
// close-on-exec: net receives with MSG_CMSG_CLOEXEC).
func ReceivedFDs(oob []byte) []int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var fds []int
	for _, m := range msgs {
		got, err := unix.ParseUnixRights(&m)
		if err == nil {
			fds = append(fds, got...)
		}
	}
	return fds
}

func badReply(reply string, nfds, flags int) error {
	if reason, ok := strings.CutPrefix(reply, "no: "); ok {
		return fmt.Errorf("refused: %s", reason)
	}
	switch {
	case reply == "":
		return errors.New("the server closed the connection without answering")
	case flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0:
		return fmt.Errorf("truncated reply %.20q", reply)
	case reply == "ok":
		return fmt.Errorf("reply ok carries %d fds, want 1", nfds)
	}
	return fmt.Errorf("unexpected reply %.20q", reply)
}

// checkSocket makes sure fd is the socket asked for: a confused or
// impostor server must not hand us some other socket to serve on.
func checkSocket(fd int, inode uint64) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat received fd: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Ino != inode {
		return fmt.Errorf("received fd is inode %d (mode %#o), not socket inode %d", st.Ino, st.Mode&unix.S_IFMT, inode)
	}
	return nil
}

// bareOpError drops net's "read unixpacket ->PATH:" prefix, which repeats
// what fetchSocket's error already says.
func bareOpError(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}

// fetchTimeout bounds asking an earlier takeover for its socket.
const FetchTimeout = 2 * time.Second
