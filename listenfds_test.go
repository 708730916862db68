package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/fdpass"
	"github.com/takeover/takeover/internal/systemd"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestListenFDsNotOurs: variables whose LISTEN_PID is another process's are
// never passed on to the command (internal/systemd's
// TestInheritSocketsNotOurs: they are ignored).
func TestListenFDsNotOurs(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	cmd := exec.Command(takeoverBin(t), "--port", addr, "--", "/bin/sh", "-c", `echo "env LISTEN_FDS=$LISTEN_FDS LISTEN_PID=$LISTEN_PID FDSTORE=$FDSTORE"; exec "$0" "$1"`, os.Args[0], addr)
	cmd.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER=serve", "LISTEN_FDS=2", "LISTEN_PID=1", "LISTEN_FDNAMES=a:b", "FDSTORE=8")
	r := startRun(t, cmd)
	if line := r.line(t); line != "env LISTEN_FDS= LISTEN_PID= FDSTORE=" {
		t.Errorf("the command saw %q, want systemd's variables unset", line)
	}
	testutil.WaitServing(t, addr)
}

// TestSocketActivate: systemd's own tool (no systemd as PID 1) passes a
// socket; takeover gives it to an unmodified server at its bind, and one
// that fits no target is closed with a warning that names it.
func TestSocketActivate(t *testing.T) {
	testutil.RequireTool(t, "systemd-socket-activate")
	testutil.RequireTool(t, "python3")
	port, spare := testutil.FreePort(t), testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	cmd := exec.Command("systemd-socket-activate", "-l", addr, "-l", "127.0.0.1:"+spare, "--fdname=web:spare",
		takeoverBin(t), "--port", addr, "--", "python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", t.TempDir(), port)
	r := startRun(t, cmd)
	// systemd-socket-activate starts takeover at the first connection;
	// until the server accepts, the connection waits in the queue. Before
	// it has bound, connects are refused.
	var body string
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		body, err = testutil.Get(addr, "/")
		if !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("GET through the activated socket: %v\n%s", err, r.stderr)
	}
	if !strings.Contains(body, "Directory listing") {
		t.Errorf("answer %q is not python's", body)
	}
	r.waitLog(t, "via=listen-fds")
	r.waitLog(t, `a socket systemd passed is refused" fd=4 name=spare`)
	if strings.Contains(r.stderr.String(), "strategy=fresh") {
		t.Errorf("the server bound a socket of its own:\n%s", r.stderr)
	}
}

// TestFDStoreAcrossCrash imitates systemd's store with a NOTIFY_SOCKET of
// the test's own: takeover stores its socket once its server is ready; a
// takeover killed with SIGKILL leaves it there, and the next one, given it
// as LISTEN_FDS, serves on it: a connect made in between waits in the
// queue and is answered.
func TestFDStoreAcrossCrash(t *testing.T) {
	dir := t.TempDir()
	notifyPath := filepath.Join(dir, "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	spec, _ := target.Parse(addr)

	cmd := exec.Command(takeoverBin(t), "--port", addr, "--", os.Args[0], addr)
	cmd.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER=serve", "NOTIFY_SOCKET="+notifyPath)
	first := startRun(t, cmd)
	stored := -1
	for stored < 0 {
		msg, fds := readNotify(t, notify)
		if strings.Contains(msg, "FDSTORE=1") {
			if msg != "FDSTORE=1\nFDNAME="+spec.StoreName() || len(fds) != 1 {
				t.Fatalf("store message %q with %d fds", msg, len(fds))
			}
			stored = fds[0]
		}
	}
	// One owner of the fd: an os.File closes it when collected, so a raw
	// close as well would close some later fd of the test's.
	f := os.NewFile(uintptr(stored), "stored")
	defer f.Close()
	if kind, _, _, err := systemd.PassedKind(stored); err != nil || kind != "TCP "+addr {
		t.Fatalf("stored socket is %q (%v), want TCP %s", kind, err, addr)
	}
	server := childOf(t, first, addr)
	first.cmd.Process.Kill()
	first.wait(t)
	syscall.Kill(server, syscall.SIGKILL) // as KillMode=mixed does once the main process is gone
	testutil.WaitGone(t, server)

	// The port is kept by the store alone: a connect waits in its queue.
	answered := make(chan error, 1)
	go func() { _, err := testutil.Get(addr, "/"); answered <- err }()

	next := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$@"`, "sh", takeoverBin(t), "--port", addr, "--", os.Args[0], addr)
	next.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER=serve", "LISTEN_FDS=1", "LISTEN_FDNAMES="+spec.StoreName())
	next.ExtraFiles = []*os.File{f}
	r := startRun(t, next)
	if err := <-answered; err != nil {
		t.Fatalf("the connect made while no server ran failed: %v\n%s", err, r.stderr)
	}
	r.waitLog(t, "via=fd-store")
	if s := r.stderr.String(); strings.Contains(s, "refused") || strings.Contains(s, "strategy=fresh") {
		t.Errorf("the stored socket was not used:\n%s", s)
	}
}

// readNotify reads one message from a NOTIFY_SOCKET, with the fds it carries.
func readNotify(t *testing.T, c *net.UnixConn) (string, []int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*8))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatalf("no message on NOTIFY_SOCKET: %v", err)
	}
	return string(buf[:n]), fdpass.ReceivedFDs(oob[:oobn])
}

// TestOverstatedListenFDs: LISTEN_FDS counting more fds than were passed
// (LISTEN_PID takeover's own) must not have takeover close fds of its own
// (its port lock, its sockets, the Go runtime's epoll fd, which crashed it
// with "netpoll failed"): the command runs and serves, a socket that was
// passed is still taken, and takeover stops cleanly (issue 28, item 9).
func TestOverstatedListenFDs(t *testing.T) {
	for _, passOne := range []bool{false, true} {
		t.Run(fmt.Sprintf("passed=%v", passOne), func(t *testing.T) {
			port := testutil.FreePort(t)
			addr := "127.0.0.1:" + port
			cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=4 exec "$@"`, "sh",
				takeoverBin(t), "--port", addr, "--", os.Args[0], addr)
			cmd.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER=serve")
			if passOne {
				ln, err := net.Listen("tcp4", addr)
				if err != nil {
					t.Fatal(err)
				}
				f, err := ln.(*net.TCPListener).File()
				ln.Close()
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				cmd.ExtraFiles = []*os.File{f} // fd 3
			}
			r := startRun(t, cmd)
			if line := r.line(t); line != "listening "+addr {
				t.Fatalf("the command printed %q; stderr:\n%s", line, r.stderr)
			}
			if passOne {
				cmd.ExtraFiles[0].Close()
			}
			testutil.WaitServing(t, addr)
			r.waitLog(t, "an fd LISTEN_FDS counts is left alone")
			if passOne {
				r.waitLog(t, "via=listen-fds")
			}
			testutil.WaitServing(t, addr)
			if !r.running() || strings.Contains(r.stderr.String(), "fatal error") {
				t.Fatalf("takeover died; stderr:\n%s", r.stderr)
			}
			r.cmd.Process.Signal(syscall.SIGTERM)
			if code := r.wait(t); code != 0 {
				t.Fatalf("takeover exited %d after TERM, want 0; stderr:\n%s", code, r.stderr)
			}
		})
	}
}
