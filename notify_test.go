package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/testutil"
)

// asNobody runs the rest of a command line as user nobody, without
// capabilities.
var asNobody = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"}

// TestReadyNotifyAsAnotherUser: a command that runs as another user
// (setpriv, as gosu or runuser would) sends READY=1 to the NOTIFY_SOCKET
// takeover gives it, and --ready notify takes it: the old server is
// replaced. (Before, the socket was a file in the 0700 run directory: the
// command's send failed with EACCES, and the new server was rolled back
// at --ready-timeout every time.)
func TestReadyNotifyAsAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the command as another user")
	}
	testutil.RequireTool(t, "setpriv")
	client := testutil.CopyTestBinary(t, testutil.OpenTempDir(t)) // nobody may run it
	addr := "127.0.0.1:" + testutil.FreePort(t)
	old := startTakeover(t, "serve", append(append([]string{"--port", addr, "--"}, asNobody...), client, addr)...)
	old.waitLog(t, "took over")
	next := startTakeover(t, "notifier", append(append([]string{"--ready", "notify", "--ready-timeout", "30s", "--port", addr, "--"}, asNobody...), client, addr)...)
	select {
	case <-old.exited:
		if code := old.wait(t); code != 0 {
			t.Fatalf("the old takeover exited %d:\n%s", code, old.stderr)
		}
	case <-next.exited:
		t.Fatalf("the new takeover exited (%v) while the old one serves: its command's READY=1 was not heard:\n%s", next.err, next.stderr)
	case <-time.After(90 * time.Second):
		t.Fatalf("neither takeover exited in 90s; new:\n%s", next.stderr)
	}
	next.waitLog(t, "ready_by=notify")
}

// TestReadyNotifyOnlyFromTheGeneration: a READY=1 sent to the command's
// NOTIFY_SOCKET by a process that is not of the command's generation (this
// test) is ignored, with a warning naming the sender: the old server keeps
// serving. The command's own READY=1 then completes the swap. (Before, any
// process that could reach the socket's file made the new server ready.)
func TestReadyNotifyOnlyFromTheGeneration(t *testing.T) {
	self, _ := os.Executable()
	addr := "127.0.0.1:" + testutil.FreePort(t)
	old := startTakeover(t, "serve", "--port", addr, "--", self, addr)
	old.waitLog(t, "took over")
	next := startTakeover(t, "usr1notifier", "--ready", "notify", "--ready-timeout", "5m", "--port", addr, "--", self, addr)
	pid, sock := notifySocketOf(t, next.cmd.Process.Pid)

	c, err := net.Dial("unixgram", sock)
	if err != nil {
		t.Fatalf("dial the command's NOTIFY_SOCKET %s: %v", sock, err)
	}
	c.Write([]byte("READY=1"))
	c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for s := next.stderr.String(); !strings.Contains(s, "ignored a READY=1") && !strings.Contains(s, "took over"); s = next.stderr.String() {
		if time.Now().After(deadline) {
			t.Fatalf("after 60s, the new takeover neither ignored the forged READY=1 nor took over:\n%s", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	s := next.stderr.String()
	if strings.Contains(s, "took over") {
		t.Fatalf("a READY=1 from pid %d, not of the command, made the new server ready:\n%s", os.Getpid(), s)
	}
	if want := fmt.Sprintf("from=\"pid %d (uid %d)\"", os.Getpid(), os.Geteuid()); !strings.Contains(s, want) {
		t.Errorf("the warning does not name the sender (%s):\n%s", want, s)
	}
	if !old.running() {
		t.Fatalf("the old takeover exited on a forged READY=1:\n%s", old.stderr)
	}

	if l := next.line(t); !strings.HasPrefix(l, "listening") { // its SIGUSR1 handler is set
		t.Fatalf("the command printed %q, want its listening line", l)
	}
	syscall.Kill(pid, syscall.SIGUSR1) // the command's own READY=1
	select {
	case <-old.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("the old takeover still runs 60s after the command's own READY=1; new:\n%s", next.stderr)
	}
	if code := old.wait(t); code != 0 {
		t.Fatalf("the old takeover exited %d:\n%s", code, old.stderr)
	}
	next.waitLog(t, "ready_by=notify")
}

// notifySocketOf waits for a process under launcher pid with NOTIFY_SOCKET
// in its environment (the command, or the shim about to exec it) and
// returns its pid and the socket's name.
func notifySocketOf(t *testing.T, launcher int) (int, string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, pid := range procfs.FS("/proc").WithDescendants([]int{launcher})[1:] {
			b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
			for _, kv := range bytes.Split(b, []byte{0}) {
				if v, ok := strings.CutPrefix(string(kv), "NOTIFY_SOCKET="); ok {
					return pid, v
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process under takeover %d has a NOTIFY_SOCKET after 60s", launcher)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
