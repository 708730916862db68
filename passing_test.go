package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/takeover/takeover/internal/ready"

	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// TestSocketPassing: with --sockets systemd and server-starter, takeover
// binds the port itself and passes the socket (LISTEN_FDS with LISTEN_PID
// the command's own pid; SERVER_STARTER_PORT in start_server's format);
// new takeovers take it over from each other and HUP reloads pass it on,
// under load, with no failed request; a crash is restarted on it.
func TestSocketPassing(t *testing.T) {
	self, _ := os.Executable()
	for _, tt := range []struct{ mode, helper string }{
		{supervise.SocketsSystemd, "activated"},
		{supervise.SocketsServerStarter, "starter"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			port := testutil.FreePort(t)
			addr := "127.0.0.1:" + port
			start := func() *tkRun {
				return startTakeover(t, tt.helper, "--sockets", tt.mode, "--port", addr, "--", self, addr)
			}
			cur := start()
			cur.waitLog(t, "strategy=fresh")
			if tt.mode == supervise.SocketsServerStarter {
				if line := cur.line(t); !strings.HasSuffix(line, " "+addr+"=3") {
					t.Errorf("the command saw %q, want SERVER_STARTER_PORT=%s=3", line, addr)
				}
			}
			cur, r := swapsUnderLoad(t, addr, cur, start, 2)
			if r.FailedRequests() != 0 {
				t.Errorf("%d of %d requests failed (refused %d, reset %d, timeouts %d): %v", r.FailedRequests(), r.Requests, r.Refused, r.Resets, r.Timeouts, r.Failures)
			}
			t.Logf("%s: 2 new takeovers and a HUP reload: %d requests, %d failed", tt.mode, r.Requests, r.FailedRequests())

			// The generation the HUP replaced may still be draining: kill
			// the one serving, which the last swap line names.
			syscall.Kill(lastNewPID(t, cur), syscall.SIGKILL)
			cur.waitLog(t, "msg=restarted")
			testutil.WaitServing(t, addr)
			cur.cmd.Process.Signal(syscall.SIGTERM)
			if code := cur.wait(t); code != 0 {
				t.Errorf("takeover exited %d after TERM:\n%s", code, cur.stderr)
			}
			if ls := lookup(t, addr); len(ls) != 0 {
				t.Errorf("after TERM the port is still held: %+v", ls)
			}
		})
	}
}

// TestReadyByNotify: --ready notify waits for the command's READY=1 on the
// NOTIFY_SOCKET takeover gives it, in either way of getting sockets, though
// the command accepts at once: the old server is stopped only after it.
func TestReadyByNotify(t *testing.T) {
	self, _ := os.Executable()
	for _, tt := range []struct{ mode, helper string }{
		{supervise.SocketsIntercept, "notifier"},
		{supervise.SocketsSystemd, "activated"},
	} {
		t.Run(tt.mode, func(t *testing.T) {
			marks := filepath.Join(t.TempDir(), "marks")
			t.Setenv("TAKEOVER_TEST_MARK", marks)
			port := testutil.FreePort(t)
			addr := "127.0.0.1:" + port
			old := startTakeover(t, "marked", "--port", addr, "--", self, addr)
			old.waitLog(t, "took over")
			next := startTakeover(t, tt.helper, "--sockets", tt.mode, "--ready", "notify", "--port", addr, "--", self, addr, "notify")
			if code := old.wait(t); code != 0 {
				t.Fatalf("the old takeover exited %d:\n%s\nnew:\n%s", code, old.stderr, next.stderr)
			}
			next.waitLog(t, "ready_by=notify")
			b, _ := os.ReadFile(marks)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) != 2 || !strings.HasSuffix(lines[0], "ready") || !strings.HasSuffix(lines[1], "stop signal") {
				t.Errorf("marks %q, want READY=1 before the old server's stop signal", lines)
			}
			if !strings.Contains(next.stderr.String(), "via=unix-socket") {
				t.Errorf("the socket was not handed over between takeovers:\n%s", next.stderr)
			}
		})
	}
}

// lastNewPID returns the new_pid of r's last swap line.
func lastNewPID(t *testing.T, r *tkRun) int {
	t.Helper()
	m := regexp.MustCompile(`msg="took over" generation=\d+ new_pid=(\d+)`).FindAllStringSubmatch(r.stderr.String(), -1)
	if len(m) == 0 {
		t.Fatalf("no swap line:\n%s", r.stderr)
	}
	pid, _ := strconv.Atoi(m[len(m)-1][1])
	return pid
}

// TestSocketPassingFDs: the command gets its passed sockets at fds 3, 4,
// ... and no other socket of takeover's.
func TestSocketPassingFDs(t *testing.T) {
	port := testutil.FreePort(t)
	r := startTakeover(t, "", "--sockets", supervise.SocketsSystemd, "--ready", ready.Interval, "--interval", "50ms",
		"--port", "127.0.0.1:"+port, "--path", filepath.Join(t.TempDir(), "app.sock"), "--", "sleep", "30")
	r.waitLog(t, "took over")
	if fds := socketFDsOf(t, lastNewPID(t, r)); !slices.Equal(fds, []int{3, 4}) {
		t.Errorf("the command holds sockets at fds %v, want the two passed ones at 3 and 4 alone", fds)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t)
}

// socketFDsOf returns the fds at which process pid holds sockets.
func socketFDsOf(t *testing.T, pid int) []int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var fds []int
	for _, e := range ents {
		link, _ := os.Readlink(dir + "/" + e.Name())
		if fd, err := strconv.Atoi(e.Name()); err == nil && strings.HasPrefix(link, "socket:") {
			fds = append(fds, fd)
		}
	}
	slices.Sort(fds)
	return fds
}
