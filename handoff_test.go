package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/fdpass"
	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// drainers are servers that finish requests in flight on SIGTERM: what the
// design asks of a service, and what a zero-failure handoff needs.
func drainers(t *testing.T) map[string]server {
	self, _ := os.Executable()
	wd, _ := os.Getwd()
	return map[string]server{
		"go":     {name: "go", helper: "serve", argv: func(p string) []string { return []string{self, "127.0.0.1:" + p} }},
		"python": {name: "python", need: "python3", argv: func(p string) []string { return []string{"python3", filepath.Join(wd, "testdata/server.py"), p} }},
		"node":   {name: "node", need: "node", argv: func(p string) []string { return []string{"node", filepath.Join(wd, "testdata/server.js"), p} }},
		// The JVM binds 127.0.0.1 through an IPv6 socket (::ffff:127.0.0.1)
		// unless told otherwise: a family no other server here shares.
		"java": {name: "java", need: "java", argv: func(p string) []string {
			return []string{"java", "-Djava.net.preferIPv4Stack=true", filepath.Join(wd, "testdata/DrainServer.java"), p}
		}},
	}
}

// startUnder starts a takeover of kind srv on port with extra flags.
func startUnder(t *testing.T, srv server, port string, flags ...string) *tkRun {
	t.Helper()
	args := append(append([]string{"--port", port}, flags...), "--")
	return startTakeover(t, srv.helper, append(args, srv.argv(port)...)...)
}

// TestHandoff50UnderLoad: 50 handoffs between unmodified servers, python,
// java, node and Go in every direction, under a concurrent request loop:
// no connection is refused and no request fails.
func TestHandoff50UnderLoad(t *testing.T) {
	kinds := drainers(t)
	for _, k := range kinds {
		testutil.RequireTool(t, k.need)
	}
	// Every ordered pair of the four kinds appears in this cycle.
	cycle := []string{"go", "python", "node", "java", "go", "node", "python", "java", "node", "go", "java", "python"}
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	prev := startUnder(t, kinds["go"], port, "--strategy", "handoff")
	testutil.WaitServing(t, addr)

	ctx, cancel := context.WithCancel(context.Background())
	loadDone := make(chan *load.Result)
	go func() { loadDone <- load.Run(ctx, load.Config{Addr: addr, Workers: 2}) }()

	const swaps = 50
	began := make([]time.Time, swaps+1)
	for i := 1; i <= swaps; i++ {
		kind := cycle[i%len(cycle)]
		began[i] = time.Now()
		next := startUnder(t, kinds[kind], port, "--strategy", "handoff")
		if code := prev.wait(t); code != 0 {
			cancel()
			t.Fatalf("swap %d (to %s): the old takeover exited %d; its stderr:\n%s\nthe new one's:\n%s", i, kind, code, prev.stderr, next.stderr)
		}
		if !strings.Contains(next.stderr.String(), "strategy=handoff") {
			cancel()
			t.Fatalf("swap %d (to %s) was not a handoff:\n%s", i, kind, next.stderr)
		}
		prev = next
	}
	cancel()
	r := <-loadDone
	t.Logf("%d handoffs, %d requests, %d failed (%d refused, %d reset, %d timeouts)",
		swaps, r.Requests, r.FailedRequests(), r.Refused, r.Resets, r.Timeouts)
	if r.Requests < swaps {
		t.Errorf("only %d requests were made during %d swaps", r.Requests, swaps)
	}
	// The socket never closes: no connection may be refused or reset.
	if r.Refused != 0 || r.Resets != 0 {
		t.Errorf("%d connections refused and %d reset during %d handoffs", r.Refused, r.Resets, swaps)
	}
	// What the servers do with connections they accepted is theirs; each
	// such failure is listed, with the swap under way when it began.
	for _, f := range r.Failures {
		i := 0
		for i < swaps && !f.At.Before(began[i+1]) {
			i++
		}
		msg := fmt.Sprintf("%s during swap %d (to %s): %s", f.Kind, i, cycle[i%len(cycle)], f.Err)
		if f.Kind == "refused" || f.Kind == "reset" {
			t.Error(msg)
		} else {
			t.Log(msg)
		}
	}
}

// TestSlowRequestSurvivesSwap: a request in flight on the old server when
// the swap happens completes with 200.
func TestSlowRequestSurvivesSwap(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	srv := drainers(t)["go"]
	first := startUnder(t, srv, port)
	testutil.WaitServing(t, addr)
	oldChild := childOf(t, first, addr)
	slow := make(chan error, 1)
	go func() {
		body, err := testutil.Get(addr, "/?sleep=3s")
		if err == nil && !strings.Contains(body, pidField(oldChild)) {
			err = fmt.Errorf("answered by the wrong server: %q", body)
		}
		slow <- err
	}()
	time.Sleep(300 * time.Millisecond) // let the request reach the old server
	startUnder(t, srv, port)
	if err := <-slow; err != nil {
		t.Errorf("the slow request failed: %v", err)
	}
	if code := first.wait(t); code != 0 {
		t.Errorf("the old takeover exited %d", code)
	}
}

// crashUnderLoad starts an old server, runs load, starts a new takeover of
// helper mode that crashes, and checks that the old one kept serving with
// no request failed.
func crashUnderLoad(t *testing.T, helper string, code int, flags ...string) {
	t.Helper()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	first := startUnder(t, drainers(t)["go"], port)
	testutil.WaitServing(t, addr)
	oldChild := childOf(t, first, addr)

	ctx, cancel := context.WithCancel(context.Background())
	loadDone := make(chan *load.Result)
	go func() { loadDone <- load.Run(ctx, load.Config{Addr: addr, Workers: 2}) }()
	args := append(append([]string{"--port", port}, flags...), "--", self, addr)
	crash := startTakeover(t, helper, args...)
	got := crash.wait(t)
	time.Sleep(200 * time.Millisecond) // load against the old server after the crash
	cancel()
	r := <-loadDone
	if got != code {
		t.Errorf("takeover exited %d, want the command's %d; stderr:\n%s", got, code, crash.stderr)
	}
	if !first.running() || testutil.ProcessGone(oldChild) {
		t.Fatal("the old server was stopped")
	}
	if r.FailedRequests() != 0 || r.OK == 0 {
		t.Errorf("%d of %d requests failed", r.FailedRequests(), r.Requests)
	}
	if got := childOf(t, first, addr); got != oldChild {
		t.Errorf("port held by %d, want the old %d", got, oldChild)
	}
}

func TestCrashAfterBindBeforeListen(t *testing.T) {
	crashUnderLoad(t, "bindcrash", 4)
}

func TestCrashDuringKillOldDelay(t *testing.T) {
	crashUnderLoad(t, "listencrash", 5, "--kill-old-delay", "3s")
}

// TestFamilyMismatch: the old server listens on 0.0.0.0, the new one asks
// for a dual-stack [::] (which takes 0.0.0.0 too): auto falls back to
// rebind, handoff refuses. (An IPv6-only [::] would not conflict:
// TestReplacedBeside.)
func TestFamilyMismatch(t *testing.T) {
	if !testutil.HasIPv6() {
		t.Skip("no IPv6 on this machine")
	}
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	old := startTakeover(t, "serve", "--port", port, "--", self, "tcp4:0.0.0.0:"+port)
	testutil.WaitServing(t, "127.0.0.1:"+port)

	refused := startTakeover(t, "serve", "--strategy", "handoff", "--port", port, "--", self, "[::]:"+port)
	if code := refused.wait(t); code == 0 {
		t.Fatal("--strategy handoff took an IPv4 socket for an IPv6 request")
	}
	if s := refused.stderr.String(); !strings.Contains(s, "the old socket is IPv4, the new server asked for IPv6") {
		t.Errorf("the refusal does not say why:\n%s", s)
	}
	if !old.running() {
		t.Fatal("the old server was stopped by a refused handoff")
	}

	auto := startTakeover(t, "serve", "--port", port, "--", self, "[::]:"+port)
	if code := old.wait(t); code != 0 {
		t.Fatalf("old takeover exited %d", code)
	}
	testutil.WaitServing(t, "[::1]:"+port)
	auto.waitLog(t, "strategy=rebind")
	if s := auto.stderr.String(); !strings.Contains(s, "IPv4") {
		t.Errorf("auto did not fall back to rebind and say why:\n%s", s)
	}
}

// TestReloadOnHUP: HUP starts a new generation of the command, resolved
// again on disk, under the same takeover pid; two HUPs in a row make two
// reloads; systemd hears READY=1, RELOADING=1 and READY=1 again.
func TestReloadOnHUP(t *testing.T) {
	dir := t.TempDir()
	self, _ := os.Executable()
	app := filepath.Join(dir, "app")
	writeApp := func(gen string) {
		// A slow start, as a JVM's, keeps each reload under way for a while.
		script := fmt.Sprintf("#!/bin/sh\nsleep 0.3\nTAKEOVER_TEST_GEN=%s exec %s \"$@\"\n", gen, self)
		tmp := app + ".new"
		if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		os.Rename(tmp, app) // a deploy replaces the file
	}
	writeApp("v1")

	notify := listenNotify(t, filepath.Join(dir, "notify"))
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify"))
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	statusFile, pidFile := filepath.Join(dir, "status.json"), filepath.Join(dir, "pid")
	r := startTakeover(t, "serve", "--port", port, "--status-file", statusFile, "--pid-file", pidFile, "--", app, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("takeover's stderr:\n%s", r.stderr)
		}
	})
	notify.expect(t, "READY=1")
	if body := testutil.WaitServing(t, addr); !strings.Contains(body, "gen=v1") {
		t.Fatalf("first generation answered %q", body)
	}
	if b, _ := os.ReadFile(pidFile); strings.TrimSpace(string(b)) != strconv.Itoa(r.cmd.Process.Pid) {
		t.Errorf("--pid-file holds %q, want %d", b, r.cmd.Process.Pid)
	}

	writeApp("v2")
	r.cmd.Process.Signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")
	// Until the old generation has drained, it may still answer from the
	// shared socket; then only the new binary does.
	body := ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if body = testutil.WaitServing(t, addr); strings.Contains(body, "gen=v2") {
			break
		}
	}
	if !strings.Contains(body, "gen=v2") {
		t.Errorf("after HUP the server answered %q, want the new binary's gen=v2", body)
	}

	// A HUP that comes during a reload is queued: one more reload follows,
	// not two. (Two HUPs sent before takeover handles the first are one
	// signal to the kernel.)
	r.cmd.Process.Signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1")
	r.cmd.Process.Signal(syscall.SIGHUP)
	notify.expect(t, "READY=1")
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")
	var st supervise.Status
	b, err := os.ReadFile(statusFile)
	if err != nil || json.Unmarshal(b, &st) != nil {
		t.Fatalf("--status-file: %v, %q", err, b)
	}
	if st.Generation != 4 || st.TakeoverPID != r.cmd.Process.Pid || len(st.LastSwap) != 1 || st.LastSwap[0].Strategy != "handoff" {
		t.Errorf("status after 3 reloads = %+v, want generation 4, a handoff, takeover pid %d", st, r.cmd.Process.Pid)
	}
	// READY=1 comes when the new generation listens; the old ones drain
	// and exit after it.
	want := fmt.Sprint(map[int]bool{r.cmd.Process.Pid: true, st.ChildPID: true})
	got := ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got = fmt.Sprint(holdersOf(t, addr)); got == want {
			break
		}
	}
	if got != want {
		t.Errorf("holders = %v, want takeover and generation 4's child only (%v)", got, want)
	}

	// A reload whose new generation fails leaves the running one serving.
	os.WriteFile(app+".new", []byte("#!/bin/sh\nexit 9\n"), 0o755)
	os.Rename(app+".new", app)
	r.cmd.Process.Signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1")
	notify.expect(t, "READY=1")
	if body := testutil.WaitServing(t, addr); !strings.Contains(body, pidField(st.ChildPID)) {
		t.Errorf("after a failed reload the server answered %q, want the old child %d", body, st.ChildPID)
	}
	if !strings.Contains(r.stderr.String(), "reload failed") {
		t.Errorf("the failed reload was not logged:\n%s", r.stderr)
	}
	// One swap line per generation that took over, and no more: a failed
	// reload must not complete the serving generation's swap again.
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Errorf("takeover exited %d after TERM", code)
	}
	if n := strings.Count(r.stderr.String(), `msg="took over"`); n != 4 {
		t.Errorf("%d swap lines for 4 generations:\n%s", n, r.stderr)
	}
}

type notifyListener struct {
	conn *net.UnixConn
}

// listenNotify stands in for systemd's notification socket.
func listenNotify(t *testing.T, path string) *notifyListener {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &notifyListener{conn: conn}
}

// expect reads the next message and checks that it starts with prefix.
// takeover's FDSTORE=1 messages (a NOTIFY_SOCKET not a takeover's is
// systemd's to it) are skipped, their sockets closed.
func (n *notifyListener) expect(t *testing.T, prefix string) {
	t.Helper()
	n.conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*8))
	for {
		k, oobn, _, _, err := n.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			t.Fatalf("waiting for %s: %v", prefix, err)
		}
		for _, fd := range fdpass.ReceivedFDs(oob[:oobn]) {
			unix.Close(fd)
		}
		msg := string(buf[:k])
		if strings.HasPrefix(msg, "FDSTORE=1\n") {
			continue
		}
		if !strings.HasPrefix(msg, prefix) {
			t.Fatalf("notification %q, want %s", msg, prefix)
		}
		return
	}
}

// TestStopDuringReload: TERM while a new generation is still starting stops
// both generations; nothing outlives takeover.
func TestStopDuringReload(t *testing.T) {
	dir := t.TempDir()
	self, _ := os.Executable()
	app := filepath.Join(dir, "slow-app")
	script := fmt.Sprintf("#!/bin/sh\n[ -e %s/started ] && exec sleep 30\ntouch %s/started\nexec %s \"$@\"\n", dir, dir, self)
	if err := os.WriteFile(app, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	notify := listenNotify(t, filepath.Join(dir, "notify"))
	t.Setenv("NOTIFY_SOCKET", filepath.Join(dir, "notify"))
	port := testutil.FreePort(t)
	r := startTakeover(t, "serve", "--port", port, "--", app, "127.0.0.1:"+port)
	notify.expect(t, "READY=1")
	r.cmd.Process.Signal(syscall.SIGHUP)
	notify.expect(t, "RELOADING=1") // the second generation sleeps in its script
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Errorf("takeover exited %d after TERM, want the child's 0", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := exec.Command("pgrep", "-f", dir).Output()
		if len(strings.TrimSpace(string(out))) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left behind: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestFailedReloadsLeakNothing: reloads whose new generation listens and
// then dies during --kill-old-delay leave the old generation serving, and
// takeover, which lives on, holds no more fds than before them.
func TestFailedReloadsLeakNothing(t *testing.T) {
	dir := t.TempDir()
	self, _ := os.Executable()
	app := filepath.Join(dir, "app")
	script := fmt.Sprintf("#!/bin/sh\nif [ -e %s/started ]; then TAKEOVER_TEST_HELPER=listencrash exec %s \"$@\"; fi\ntouch %s/started\nexec %s \"$@\"\n",
		dir, self, dir, self)
	if err := os.WriteFile(app, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	r := startTakeover(t, "serve", "--kill-old-delay", "2s", "--port", port, "--", app, addr)
	testutil.WaitServing(t, addr)
	oldChild := childOf(t, r, addr)
	// Should takeover exit without it (the bug this test is for), the old
	// generation must not outlive the test.
	t.Cleanup(func() { syscall.Kill(oldChild, syscall.SIGKILL) })
	fds := func() int {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", r.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	// The first generation's swap completes after --kill-old-delay, and
	// only then lets go of the port locks: count from there.
	if err := awaitSwapLine(nil, r, 1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	before := fds()
	const failed = "exited during --kill-old-delay"
	for i := 1; i <= 3; i++ {
		r.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(r.stderr.String(), failed) < i {
			if time.Now().After(deadline) {
				t.Fatalf("reload %d did not fail as planned; stderr:\n%s", i, r.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if after := fds(); after != before {
		t.Errorf("takeover holds %d fds after 3 failed reloads, %d before", after, before)
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", r.cmd.Process.Pid))
		for _, e := range ents {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", r.cmd.Process.Pid, e.Name()))
			t.Logf("fd %s -> %s", e.Name(), l)
		}
	}
	if got := childOf(t, r, addr); got != oldChild {
		t.Errorf("the port is held by %d, want the old generation's %d", got, oldChild)
	}
	testutil.WaitServing(t, addr)
}

// TestReloadRebind: in a reload by rebind the running generation is stopped
// when the new one binds, before the new one listens. takeover lives on
// for the new one, which serves; nothing is left behind.
func TestReloadRebind(t *testing.T) {
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	r := startTakeover(t, "slowlisten", "--strategy", "rebind", "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
	oldChild := childOf(t, r, addr)

	r.cmd.Process.Signal(syscall.SIGHUP)
	testutil.WaitGone(t, oldChild)
	testutil.WaitServing(t, addr)
	if !r.running() {
		t.Fatalf("takeover exited (%v) with its old generation; stderr:\n%s", r.err, r.stderr)
	}
	newChild := childOf(t, r, addr)
	if newChild == oldChild {
		t.Fatalf("the old generation %d still holds the port", oldChild)
	}
	r.waitLog(t, "generation=2")
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Errorf("takeover exited %d after TERM, want the child's 0; stderr:\n%s", code, r.stderr)
	}
	testutil.WaitGone(t, newChild)
}
