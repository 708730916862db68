package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// loadWhile runs two clients against addr until f returns, and returns what
// they saw.
func loadWhile(t *testing.T, addr string, f func()) *load.Result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan *load.Result, 1)
	go func() {
		loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: 2, Timeout: 30 * time.Second})
	}()
	defer func() {
		cancel()
		<-loaded
	}()
	f()
	cancel()
	r := <-loaded
	loaded <- r
	return r
}

// TestRespawnAfterKill9: a server killed with SIGKILL five times under
// load is restarted each time on the socket takeover holds: no connection
// is refused, requests that arrive meanwhile wait in the accept queue and
// are answered by the next process, only those in flight in the killed one
// are lost, takeover's pid never changes, and nothing is left behind.
func TestRespawnAfterKill9(t *testing.T) {
	for _, srv := range drainers(t) {
		t.Run(srv.name, func(t *testing.T) {
			testutil.RequireTool(t, srv.need)
			port := testutil.FreePort(t)
			addr := "127.0.0.1:" + port
			r := startUnder(t, srv, port)
			r.waitLog(t, "took over") // it has served: a death now is a crash
			const kills = 5
			res := loadWhile(t, addr, func() {
				for i := 1; i <= kills; i++ {
					child := childOf(t, r, addr)
					syscall.Kill(child, syscall.SIGKILL) // ours: its takeover, a child of this test, still holds it
					r.waitLogCount(t, `msg=restarted`, i)
					if !r.running() {
						t.Fatalf("takeover exited after kill %d:\n%s", i, r.stderr)
					}
				}
			})
			if res.Refused != 0 || res.Timeouts != 0 || res.FailedRequests() > 2*kills {
				t.Errorf("%d of %d requests failed (refused %d, reset %d, timeouts %d), want only those in flight in the killed processes (at most %d): %+v",
					res.FailedRequests(), res.Requests, res.Refused, res.Resets, res.Timeouts, 2*kills, res.Failures)
			}
			t.Logf("%d kills: %d requests, %d failed (in flight), longest wait %v", kills, res.Requests, res.FailedRequests(), load.Percentile(res.Latencies, 100))
			if !strings.Contains(r.stderr.String(), "queued=") {
				t.Errorf("the restart line does not say how many connections waited:\n%s", r.stderr)
			}
			last := childOf(t, r, addr)
			r.cmd.Process.Signal(syscall.SIGTERM)
			if code := r.wait(t); code != 0 && code != 128+int(syscall.SIGTERM) { // the JVM exits 143 on TERM
				t.Errorf("takeover exited %d after TERM, want the command's 0 (or 143, a JVM's)", code)
			}
			testutil.WaitGone(t, last)
			if ls := lookup(t, addr); len(ls) != 0 {
				t.Errorf("after TERM the port is still held: %+v", ls)
			}
		})
	}
}

// waitLogCount waits for s to appear n times in takeover's log.
func (r *tkRun) waitLogCount(t *testing.T, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(r.stderr.String(), s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("takeover's log holds %q fewer than %d times after 60s:\n%s", s, n, r.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRespawnUncaughtException is graceful's case: a node app that throws
// from an async callback on one URL dies; takeover restarts it, and the
// other clients see no refused connection.
func TestRespawnUncaughtException(t *testing.T) {
	testutil.RequireTool(t, "node")
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	wd, _ := os.Getwd()
	statusFile := filepath.Join(t.TempDir(), "status.json")
	r := startTakeover(t, "", "--status-file", statusFile, "--port", port, "--", "node", filepath.Join(wd, "testdata/crash.js"), port)
	r.waitLog(t, "took over")
	res := loadWhile(t, addr, func() {
		for i := 1; i <= 3; i++ {
			if _, err := testutil.Get(addr, "/crash"); err == nil {
				t.Fatal("/crash answered")
			}
			r.waitLogCount(t, "msg=restarted", i)
		}
	})
	if res.Refused != 0 || res.Timeouts != 0 {
		t.Errorf("other clients: %d of %d requests failed (refused %d, reset %d, timeouts %d)", res.FailedRequests(), res.Requests, res.Refused, res.Resets, res.Timeouts)
	}
	if !strings.Contains(r.stderr.String(), "status=1") {
		t.Errorf("the restart line does not give the dead process's status:\n%s", r.stderr)
	}
	r.waitLogCount(t, `msg="took over"`, 4) // the status file is written with the swap line
	var st supervise.Status
	b, err := os.ReadFile(statusFile)
	if err == nil {
		err = json.Unmarshal(b, &st)
	}
	if err != nil || st.Restarts != 3 || st.State != "serving" || st.LastRestart == nil || st.LastRestart.DeadStatus != 1 || st.LastRestart.Attempt != 3 {
		t.Errorf("status file after 3 restarts (%v):\n%s", err, b)
	}
}

// TestCrashLoopGivesUp: a command that serves and dies at once, again and
// again, is restarted after longer and longer back-offs, until
// --max-restarts; then takeover closes the sockets (connections are refused,
// not left hanging) and exits with the command's status.
func TestCrashLoopGivesUp(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	r := startTakeover(t, "listencrash", "--max-restarts", "3", "--port", port, "--", self, addr)
	if code := r.wait(t); code != 5 {
		t.Errorf("takeover exited %d, want the command's 5", code)
	}
	s := r.stderr.String()
	for _, want := range []string{"attempt=1", "backoff=100ms", "attempt=2", "backoff=150ms", "attempt=3", "backoff=225ms", "giving up"} {
		if !strings.Contains(s, want) {
			t.Errorf("the log lacks %q:\n%s", want, s)
		}
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
		t.Fatal("the port still accepts connections after takeover gave up")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("connect after giving up: %v, want refused", err)
	}
}

// TestBackoffInterrupted: during a back-off, a stop signal ends takeover at
// once with the last status; a HUP starts the next generation at once; a
// newer takeover receives the held sockets and replaces this one.
func TestBackoffInterrupted(t *testing.T) {
	self, _ := os.Executable()
	start := func(t *testing.T) (*tkRun, string) {
		port := testutil.FreePort(t)
		addr := "127.0.0.1:" + port
		r := startTakeover(t, "serve", "--restart-delay", "10s", "--port", port, "--", self, addr)
		r.waitLog(t, "took over")
		syscall.Kill(childOf(t, r, addr), syscall.SIGKILL)
		r.waitLog(t, "backoff=10s")
		return r, port
	}
	t.Run("stop", func(t *testing.T) {
		r, _ := start(t)
		r.cmd.Process.Signal(syscall.SIGTERM)
		if code := r.wait(t); code != 128+int(syscall.SIGKILL) {
			t.Errorf("takeover exited %d, want the last status %d", code, 128+int(syscall.SIGKILL))
		}
		if strings.Contains(r.stderr.String(), "msg=restarted") {
			t.Errorf("it restarted before stopping:\n%s", r.stderr)
		}
	})
	t.Run("hup", func(t *testing.T) {
		r, port := start(t)
		r.cmd.Process.Signal(syscall.SIGHUP)
		r.waitLog(t, "msg=restarted")
		testutil.WaitServing(t, "127.0.0.1:"+port)
	})
	t.Run("newer takeover", func(t *testing.T) {
		r, port := start(t)
		addr := "127.0.0.1:" + port
		newer := startTakeover(t, "serve", "--port", port, "--", self, addr)
		if code := r.wait(t); code != 0 {
			t.Errorf("the backing-off takeover exited %d, want 0 (replaced):\n%s", code, r.stderr)
		}
		newer.waitLog(t, "via=unix-socket")
		testutil.WaitServing(t, addr)
	})
}

// TestSocketsHeldThroughFailedRestarts: restarts that die before they bind
// leave the first generation's sockets held: connections are accepted by
// the kernel and queue until takeover gives up, and only then are refused.
func TestSocketsHeldThroughFailedRestarts(t *testing.T) {
	dir := t.TempDir()
	self, _ := os.Executable()
	app := filepath.Join(dir, "app")
	script := "#!/bin/sh\n[ -e " + dir + "/started ] && exit 3\ntouch " + dir + "/started\nexec " + self + " \"$@\"\n"
	if err := os.WriteFile(app, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	r := startTakeover(t, "serve", "--restart-delay", "300ms", "--max-restarts", "2", "--port", port, "--", app, addr)
	r.waitLog(t, "took over")
	syscall.Kill(childOf(t, r, addr), syscall.SIGKILL)
	r.waitLog(t, "attempt=2") // the first restart died before it bound
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("during the second back-off: %v, want the connection queued on the held socket", err)
	}
	c.Close()
	if code := r.wait(t); code != 3 {
		t.Errorf("takeover exited %d, want the last status 3", code)
	}
	if _, err := net.DialTimeout("tcp", addr, 2*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("after giving up: %v, want refused", err)
	}
}
