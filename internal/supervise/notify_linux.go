package supervise

// A generation's NOTIFY_SOCKET: where its command may send READY=1, and
// reading it (sd_notify's protocol, from the generation's own processes
// only).

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strings"

	"github.com/takeover/takeover/internal/procfs"
	"golang.org/x/sys/unix"
)

// notifySocket makes the NOTIFY_SOCKET generation num's command may send
// READY=1 to, and the variable that names it (none, with a warning, if it
// cannot be made). It is an abstract unix socket, which a command that runs
// as another user (setpriv, gosu, runuser) reaches, where it could not
// enter the run directory (0700). Anyone may send to it: readNotify takes
// READY=1 only from the generation's own processes (SCM_CREDENTIALS).
func (l *launcher) notifySocket(num int) (*net.UnixConn, []string) {
	c, name, err := bindNotify(l.self, num)
	if err != nil {
		l.log.Warn("no NOTIFY_SOCKET for the command: its READY=1 cannot be heard", "err", err)
		return nil, nil
	}
	return c, []string{"NOTIFY_SOCKET=" + name}
}

// bindNotify binds a datagram socket to a fresh abstract name with
// SO_PASSCRED set before the bind, so that every message it receives
// carries its sender's credentials.
func bindNotify(self, num int) (*net.UnixConn, string, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, "", fmt.Errorf("socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "notify")
	defer f.Close() // net.FileConn keeps a dup
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return nil, "", fmt.Errorf("SO_PASSCRED: %w", err)
	}
	var name string
	for try := 0; ; try++ {
		// Random, so that no one can take the name first.
		name = fmt.Sprintf("@takeover/%d/notify-%d-%08x", self, num, rand.Uint32())
		err = unix.Bind(fd, &unix.SockaddrUnix{Name: name})
		if err == nil {
			break
		}
		if err != unix.EADDRINUSE || try == 10 {
			return nil, "", fmt.Errorf("bind %s: %w", name, err)
		}
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, "", err
	}
	return c.(*net.UnixConn), name, nil
}

// attachNotify has the generation hear its command's READY=1 on c, which it
// closes once the command has exited.
func (g *generation) attachNotify(c *net.UnixConn) {
	if c == nil {
		return
	}
	g.onExit(func() { closeNotify(c) })
	go g.readNotify(c)
}

// closeNotify closes a NOTIFY_SOCKET (nil: nothing). Its name is abstract:
// there is no file to remove.
func closeNotify(c *net.UnixConn) {
	if c != nil {
		c.Close()
	}
}

// readNotify takes the command's READY=1 for readiness, when a process of
// the generation sent it. Any fds a message carries are closed.
func (g *generation) readNotify(c *net.UnixConn) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(64*4))
	warned := false
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		cred := notifySender(oob[:oobn])
		g.mu.Lock()
		heard := g.notified
		g.mu.Unlock()
		if heard || !slices.Contains(strings.Split(string(buf[:n]), "\n"), "READY=1") {
			continue
		}
		if cred == nil || !g.sentBy(int(cred.Pid)) {
			if !warned {
				warned = true
				from := "a sender without credentials"
				if cred != nil {
					from = fmt.Sprintf("pid %d (uid %d)", cred.Pid, cred.Uid)
				}
				g.log.Warn("ignored a READY=1 sent to the command's NOTIFY_SOCKET by a process not of the command; further ones are ignored silently",
					"from", from, "generation", g.num, "command_pid", g.pid)
			}
			continue
		}
		g.mu.Lock()
		g.notified = true
		g.mu.Unlock()
		select {
		case g.nudge <- struct{}{}:
		default:
		}
	}
}

// notifySender returns the credentials a notification carries (nil if
// none), and closes any fds it carries.
func notifySender(oob []byte) *unix.Ucred {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	for _, m := range msgs {
		if fds, err := unix.ParseUnixRights(&m); err == nil {
			for _, fd := range fds {
				unix.Close(fd)
			}
			continue
		}
		if c, err := unix.ParseUnixCredentials(&m); err == nil {
			cred = c
		}
	}
	return cred
}

// sentBy reports whether pid is the generation's command or one of its
// descendants. A sender that has exited by the time its message is read
// (and been reaped) cannot be told from another: its READY=1 is ignored.
func (g *generation) sentBy(pid int) bool {
	if pid <= 0 {
		return false
	}
	return slices.Contains(procfs.FS("/proc").WithDescendants([]int{g.pid}), pid)
}
