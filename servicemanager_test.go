package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
)

// TestFakeSystemdIsNotTrusted: a server that calls itself "systemd"
// (prctl PR_SET_NAME) is no service manager: takeover replaces it as any
// earlier instance of the command, where it refused the port as "held by
// systemd alone" and would have left such a holder running beside a
// handoff.
func TestFakeSystemdIsNotTrusted(t *testing.T) {
	testutil.RequireTool(t, "python3")
	port := testutil.FreePort(t)
	server := `import ctypes, os, socket, sys
name = sys.argv[2].encode()
ctypes.CDLL(None).prctl(15, name, 0, 0, 0)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    c.sendall(name + b"\n")
    c.close()
`
	old := exec.Command("python3", "-c", server, port, "systemd")
	out, err := old.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	oldDone := make(chan struct{})
	go func() { old.Wait(); close(oldDone) }()
	t.Cleanup(func() {
		old.Process.Kill()
		<-oldDone
	})
	if sc := bufio.NewScanner(out); !sc.Scan() || sc.Text() != "listening" {
		t.Fatalf("the old server did not start: %q", sc.Text())
	}
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(old.Process.Pid) + "/comm"); string(comm) != "systemd\n" {
		t.Fatalf("the old server's comm is %q, want systemd", comm)
	}
	next := startTakeover(t, "", "--port", "127.0.0.1:"+port, "--kill-timeout", "2s", "--", "python3", "-c", server, port, "new")
	next.waitLog(t, "took over")
	if l := next.line(t); l != "listening" {
		t.Fatalf("the new server printed %q", l)
	}
	select {
	case <-oldDone:
	case <-time.After(30 * time.Second):
		t.Fatalf("the old server (comm systemd) still runs 30s after the swap:\n%s", next.stderr)
	}
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if l, err := bufio.NewReader(c).ReadString('\n'); l != "new\n" {
		t.Errorf("the port answered %q, %v; want the new server", l, err)
	}
}
