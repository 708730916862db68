package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// TestRollbackLeavesOldSocketBlocking: an old server that accepts in a
// blocking loop (python, no settimeout) is handed over unfenced (a unix
// path; TCP with --fence off) to a new server whose socket is non-blocking
// and which never becomes ready. The handoff sets O_NONBLOCK on the shared
// socket; the rollback must take it back, or the old server's next
// accept(2) fails with EAGAIN and a failed deploy takes it down. After the
// rollback the old server answers three connections in a row.
func TestRollbackLeavesOldSocketBlocking(t *testing.T) {
	testutil.RequireTool(t, "python3")
	wd, _ := os.Getwd()
	script := filepath.Join(wd, "testdata/blocking_server.py")
	for _, tt := range []struct {
		name  string
		flags func(addr string) []string
		addr  func(t *testing.T) (network, addr string)
	}{
		{"tcp --fence off", func(a string) []string {
			_, p, _ := net.SplitHostPort(a)
			return []string{"--port", "127.0.0.1:" + p, "--fence", "off"}
		},
			func(t *testing.T) (string, string) { return "tcp", "127.0.0.1:" + testutil.FreePort(t) }},
		{"unix --path", func(a string) []string { return []string{"--path", a} },
			func(t *testing.T) (string, string) { return "unix", filepath.Join(t.TempDir(), "app.sock") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			network, addr := tt.addr(t)
			old := exec.Command("python3", script, addr)
			old.Stderr = os.Stderr
			out, err := old.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := old.Start(); err != nil {
				t.Fatal(err)
			}
			oldDone := make(chan error, 1)
			go func() { oldDone <- old.Wait() }()
			t.Cleanup(func() {
				old.Process.Kill()
				<-oldDone
			})
			lines := bufio.NewScanner(out)
			if !lines.Scan() || !strings.HasPrefix(lines.Text(), "listening ") {
				t.Fatalf("the old server did not start: %q", lines.Text())
			}
			oldIno := strings.TrimPrefix(lines.Text(), "listening ")
			askOld := func(when string) {
				t.Helper()
				c, err := net.DialTimeout(network, addr, 10*time.Second)
				if err != nil {
					t.Fatalf("%s: the old server does not answer: %v", when, err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil || !strings.HasPrefix(line, "ok ") {
					t.Fatalf("%s: the old server answered %q, %v", when, line, err)
				}
			}
			askOld("before the deploy")

			args := append(tt.flags(addr), "--strategy", "handoff", "--bind-timeout", "1s", "--ready-timeout", "3s", "--kill-timeout", "1s",
				"--", "python3", script, addr, "never")
			bad := startTakeover(t, "", args...)
			if got := bad.line(t); got != "listening "+oldIno {
				t.Fatalf("the new server printed %q, want %q: not handed the old socket\n%s", got, "listening "+oldIno, bad.stderr)
			}
			if code := bad.wait(t); code != supervise.ExitNotReady || !strings.Contains(bad.stderr.String(), "rolling back") {
				t.Fatalf("takeover exited %d, want %d and a rollback:\n%s", code, supervise.ExitNotReady, bad.stderr)
			}
			for _, when := range []string{"the first connection after the rollback", "the second", "the third"} {
				askOld(when)
			}
			select {
			case err := <-oldDone:
				oldDone <- err
				t.Fatalf("the old server exited (%v) after the rollback", err)
			default:
			}
		})
	}
}
