package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/intercept"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// takeoverBin builds the real takeover binary once per test run: the
// end-to-end tests run it as users do.
func takeoverBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "takeover-test")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755) // other users run it too (TestEnvironments)
		binPath = filepath.Join(dir, "takeover")
		build := exec.Command("go", "build", "-o", binPath, ".")
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // as README builds it: static, no runtime/cgo
		out, err := build.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// A tkRun is one takeover process started by a test.
type tkRun struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	lines  chan string // the command's stdout, line by line
	exited chan struct{}
	err    error // valid once exited is closed
}

// syncBuffer is a bytes.Buffer safe for one writer and many readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startTakeover runs takeover with args; helper, if set, is the test helper
// mode the command (the test binary) is to run as.
func startTakeover(t *testing.T, helper string, args ...string) *tkRun {
	t.Helper()
	cmd := exec.Command(takeoverBin(t), args...)
	cmd.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER="+helper)
	if os.Getenv(inContainerEnv) != "" {
		cmd = sandboxed(cmd) // TestLifecycleInContainer
	}
	return startRun(t, cmd)
}

// startRun starts cmd, a takeover (perhaps behind wrappers that exec it),
// and follows it as a tkRun.
func startRun(t testing.TB, cmd *exec.Cmd) *tkRun {
	t.Helper()
	r := &tkRun{cmd: cmd, stderr: &syncBuffer{}, lines: make(chan string, 100), exited: make(chan struct{})}
	cmd.Stderr = r.stderr
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case r.lines <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		// A process left behind may hold the output open: that must not
		// keep the test from seeing takeover exit.
		r.err = cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-r.exited:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-r.exited
		}
	})
	return r
}

// line waits for the next line the command prints.
func (r *tkRun) line(t *testing.T) string {
	t.Helper()
	select {
	case l := <-r.lines:
		return l
	case <-r.exited:
		t.Fatalf("takeover exited (%v) before printing a line; stderr:\n%s", r.err, r.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("no line in 60s; stderr:\n%s", r.stderr)
	}
	return ""
}

// waitLog waits for takeover's log to hold s, for at most 60 s.
func (r *tkRun) waitLog(t *testing.T, s string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(r.stderr.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("takeover's log lacks %q after 60s:\n%s", s, r.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wait waits for takeover to exit and returns its exit status.
func (r *tkRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("takeover did not exit in 60s; stderr:\n%s", r.stderr)
	}
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode()
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return 0
}

func (r *tkRun) running() bool {
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

// holdersTree returns the pids holding addr's listening socket.
func holdersOf(t *testing.T, addr string) map[int]bool {
	t.Helper()
	ls := lookup(t, addr)
	if len(ls) != 1 {
		t.Fatalf("%d listeners on %s, want 1", len(ls), addr)
	}
	return holderPIDs(ls[0])
}

// childOf returns the child pid of a takeover, from the holders of addr.
func childOf(t *testing.T, r *tkRun, addr string) int {
	t.Helper()
	for pid := range holdersOf(t, addr) {
		if ppid, _ := procfs.FS("/proc").PPID(pid); ppid == r.cmd.Process.Pid {
			return pid
		}
	}
	t.Fatalf("no child of takeover %d holds %s", r.cmd.Process.Pid, addr)
	return 0
}

// server describes how users start one kind of server on a port.
type server struct {
	name   string
	helper string
	argv   func(port string) []string
	need   string
}

func servers(t *testing.T) []server {
	self, _ := os.Executable()
	wd, _ := os.Getwd()
	return []server{
		{name: "go", helper: "serve", argv: func(p string) []string { return []string{self, "127.0.0.1:" + p} }},
		{name: "python", need: "python3", argv: func(p string) []string {
			return []string{"python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", t.TempDir(), p}
		}},
		{name: "node", need: "node", argv: func(p string) []string { return []string{"node", filepath.Join(wd, "testdata/server.js"), p} }},
		{name: "java", need: "java", argv: func(p string) []string { return []string{"java", filepath.Join(wd, "testdata/Server.java"), p} }},
	}
}

// checkReplaced checks that second replaced first on addr: first exited 0,
// saying in one line that second replaced it and how its child oldChild
// ended, the child is gone, and only second and its new child, which it
// returns, hold addr.
func checkReplaced(t *testing.T, first, second *tkRun, addr string, oldChild int) int {
	t.Helper()
	if code := first.wait(t); code != 0 {
		t.Fatalf("the first takeover exited %d, want 0; stderr:\n%s", code, first.stderr)
	}
	said := regexp.MustCompile(fmt.Sprintf(`(?m)^time=\S+ level=\S+ msg="replaced by a newer takeover; the server (drained|did not drain)[^"]*" takeover_pid=%d generation=\d+ pid=%d$`,
		second.cmd.Process.Pid, oldChild))
	if !said.MatchString(first.stderr.String()) {
		t.Errorf("the first takeover did not say that takeover %d replaced it, and how its server %d ended; stderr:\n%s", second.cmd.Process.Pid, oldChild, first.stderr)
	}
	testutil.WaitGone(t, oldChild)
	testutil.WaitServing(t, addr)
	newChild := childOf(t, second, addr)
	want := map[int]bool{second.cmd.Process.Pid: true, newChild: true}
	if got := holdersOf(t, addr); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("holders = %v, want takeover %d and its child %d only", got, second.cmd.Process.Pid, newChild)
	}
	return newChild
}

// TestReplaceRealServers: for each kind of server, a second takeover
// replaces the first; the first exits 0; one generation serves; nothing is
// left behind.
func TestReplaceRealServers(t *testing.T) {
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			testutil.RequireTool(t, srv.need)
			port := testutil.FreePort(t)
			addr := "127.0.0.1:" + port
			args := append([]string{"--strategy", "rebind", "--port", port, "--"}, srv.argv(port)...)

			first := startTakeover(t, srv.helper, args...)
			testutil.WaitServing(t, addr)
			oldChild := childOf(t, first, addr)

			second := startTakeover(t, srv.helper, args...)
			newChild := checkReplaced(t, first, second, addr, oldChild)
			second.waitLog(t, "strategy=rebind")

			second.cmd.Process.Signal(syscall.SIGTERM)
			code := second.wait(t)
			if srv.name == "go" && code != 0 {
				t.Errorf("takeover exited %d after TERM, want the child's 0", code)
			}
			testutil.WaitGone(t, newChild)
			if ls := lookup(t, addr); len(ls) != 0 {
				t.Errorf("after TERM the port is still held: %+v", ls)
			}
		})
	}
}

func TestCrashBeforeBindLeavesOldServing(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	first := startTakeover(t, "serve", "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
	oldChild := childOf(t, first, addr)

	crash := startTakeover(t, "crash", "--port", port, "--", self)
	if code := crash.wait(t); code != 3 {
		t.Fatalf("takeover of a crashing command exited %d, want its 3", code)
	}
	if !first.running() || testutil.ProcessGone(oldChild) {
		t.Fatal("the old generation was stopped by a command that never bound")
	}
	testutil.WaitServing(t, addr)
	if got := childOf(t, first, addr); got != oldChild {
		t.Errorf("the port is held by %d, want the old %d", got, oldChild)
	}
}

func TestForeignHolderRefused(t *testing.T) {
	testutil.RequireTool(t, "python3")
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	py := exec.Command("python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", t.TempDir(), port)
	py.Stdout = io.Discard
	if err := py.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { py.Process.Kill(); py.Wait() })
	testutil.WaitServing(t, addr)

	self, _ := os.Executable()
	r := startTakeover(t, "serve", "--port", port, "--", self, addr)
	if code := r.wait(t); code == 0 {
		t.Fatalf("takeover exited 0 though the port is python's")
	}
	if s := r.stderr.String(); !strings.Contains(s, "not an earlier instance") || !strings.Contains(s, "--force") || !strings.Contains(s, fmt.Sprint(py.Process.Pid)) {
		t.Errorf("the refusal does not name the process and --force:\n%s", s)
	}
	if testutil.ProcessGone(py.Process.Pid) {
		t.Fatal("python was stopped though it is not an earlier instance")
	}
	testutil.WaitServing(t, addr)

	forced := startTakeover(t, "serve", "--force", "--port", port, "--", self, addr)
	exited := make(chan error, 1)
	go func() { exited <- py.Wait() }()
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("--force did not stop python; stderr:\n%s", forced.stderr)
	}
	testutil.WaitServing(t, addr)
	childOf(t, forced, addr)
}

// startHanging runs a server that ignores SIGTERM (helper mode hang or
// hangfork) under a takeover that waits a minute before it SIGKILLs it, and
// returns the takeover and the server's pid. The test kills the server
// itself when done.
func startHanging(t *testing.T, mode, addr string) (*tkRun, int) {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	self, _ := os.Executable()
	first := startTakeover(t, mode, "--kill-timeout", "60s", "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
	child := childOf(t, first, addr)
	t.Cleanup(func() { syscall.Kill(child, syscall.SIGKILL) })
	return first, child
}

// TestKillTimeout: an old server that ignores the stop signal is SIGKILLed
// after the new takeover's --kill-timeout, and the port is the new one's.
// The old takeover, which waits for it, is not killed: it exits 0.
func TestKillTimeout(t *testing.T) {
	for _, tt := range []struct{ strategy, says string }{
		{"rebind", "sigkill=true"},
		{"handoff", "did not exit within --kill-timeout; killing it"},
	} {
		t.Run(tt.strategy, func(t *testing.T) {
			port := testutil.FreePort(t)
			addr := "127.0.0.1:" + port
			first, oldChild := startHanging(t, "hang", addr)

			self, _ := os.Executable()
			second := startTakeover(t, "serve", "--strategy", tt.strategy, "--kill-timeout", "300ms", "--port", port, "--", self, addr)
			testutil.WaitGone(t, oldChild)
			if code := first.wait(t); code != 0 {
				t.Errorf("the replaced takeover exited %d, want 0; stderr:\n%s", code, first.stderr)
			}
			testutil.WaitServing(t, addr)
			childOf(t, second, addr)
			second.waitLog(t, tt.says) // the old server was SIGKILLed
		})
	}
}

// TestBindTimeout: when the port does not free within --bind-timeout (here
// a process that got the old socket after the lookup keeps it, out of reach
// of the SIGKILL), the command's bind fails with EADDRINUSE, takeover says
// why and exits with the command's status.
func TestBindTimeout(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	first, _ := startHanging(t, "hangfork", addr)
	self, _ := os.Executable()

	// slowlisten binds once (a Go net.Listen would retry a failed MPTCP bind
	// as plain TCP, a second takeover of its own).
	second := startTakeover(t, "slowlisten", "--strategy", "rebind", "--kill-timeout", "300ms", "--bind-timeout", "1s", "--port", port, "--", self, addr)
	for {
		if l := first.line(t); strings.HasPrefix(l, "forked ") {
			pid, _ := strconv.Atoi(strings.TrimPrefix(l, "forked "))
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
			break
		}
	}
	if code := second.wait(t); code != 1 {
		t.Fatalf("takeover exited %d, want the command's 1; stderr:\n%s", code, second.stderr)
	}
	s := second.stderr.String()
	for _, want := range []string{"still in use after 1", "address already in use"} {
		if !strings.Contains(s, want) {
			t.Errorf("stderr lacks %q:\n%s", want, s)
		}
	}
}

func TestSameExecutableReplaced(t *testing.T) {
	// A server started by hand, not under takeover, running the same
	// executable as the new command: an earlier instance.
	h := testutil.StartHelper(t, "serve", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(h.Addr)
	self, _ := os.Executable()
	r := startTakeover(t, "serve", "--port", port, "--", self, h.Addr)
	done := make(chan error, 1)
	go func() { done <- h.Cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("the old server did not drain and exit 0: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the old server was not stopped; stderr:\n%s", r.stderr)
	}
	testutil.WaitServing(t, h.Addr)
	childOf(t, r, h.Addr)
}

func TestNonTargetBindsPass(t *testing.T) {
	port := testutil.FreePort(t)
	self, _ := os.Executable()
	r := startTakeover(t, "extra", "--port", port, "--", self, "127.0.0.1:"+port)
	f := strings.Fields(r.line(t)) // listening ADDR udp ADDR other ADDR
	if len(f) != 6 || f[1] != "127.0.0.1:"+port || !strings.HasSuffix(f[3], ":"+port) || strings.HasSuffix(f[5], ":0") {
		t.Fatalf("the command printed %q", strings.Join(f, " "))
	}
	testutil.WaitServing(t, f[1])
	testutil.WaitServing(t, f[5]) // the port takeover was not told of is the command's own
}

func TestSignalsForwarded(t *testing.T) {
	port := testutil.FreePort(t)
	self, _ := os.Executable()
	r := startTakeover(t, "signals", "--port", port, "--", self, "127.0.0.1:"+port)
	r.line(t) // listening
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGQUIT} {
		r.cmd.Process.Signal(sig)
		if got, want := r.line(t), "got "+sig.String(); got != want {
			t.Errorf("after %v the command printed %q, want %q", sig, got, want)
		}
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Errorf("takeover exited %d after TERM, want the child's 0", code)
	}
}

func TestExitStatuses(t *testing.T) {
	self, _ := os.Executable()
	notExec := filepath.Join(t.TempDir(), "script")
	os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644)
	tests := []struct {
		name     string
		helper   string
		args     []string
		code     int
		inStderr string
	}{
		{"child status", "exit", []string{"-p", "1", "--", self, "7"}, 7, ""},
		{"child killed by a signal", "", []string{"-p", "1", "--", "sh", "-c", "kill -KILL $$"}, 128 + 9, ""},
		{"command not found", "", []string{"-p", "1", "--", "no-such-command-here"}, 127, "command not found: no-such-command-here"},
		{"command not executable", "", []string{"-p", "1", "--", notExec}, 126, "not executable"},
		{"no command", "", []string{"-p", "8100"}, 125, "no command"},
		{"no port", "", []string{"--", "true"}, 125, "no --port"},
		{"bad port", "", []string{"-p", "99999", "--", "true"}, 125, "not a number from 1 to 65535"},
		{"bad signal", "", []string{"-p", "1", "--signal", "FOO", "--", "true"}, 125, "not a signal name"},
		{"bad kill-timeout", "", []string{"-p", "1", "--kill-timeout", "-1s", "--", "true"}, 125, "--kill-timeout -1s: must be more than 0"},
		{"bind-timeout within kill-timeout", "", []string{"-p", "1", "--kill-timeout", "30s", "--bind-timeout", "30s", "--", "true"}, 125, "--bind-timeout 30s is not longer than --kill-timeout 30s"},
		{"bad strategy", "", []string{"-p", "1", "--strategy", "magic", "--", "true"}, 125, "want auto, handoff or rebind"},
		{"bad log format", "", []string{"-p", "1", "--log-format", "xml", "--", "true"}, 125, "want text or json"},
		{"unknown flag", "", []string{"--nope", "--", "true"}, 125, "flag provided but not defined"},
		{"bad ready", "", []string{"-p", "1", "--ready", "soon", "--", "true"}, 125, "want accept, listen, notify, interval or http://HOST:PORT/PATH"},
		{"ready-timeout within bind-timeout", "", []string{"-p", "1", "--ready-timeout", "10s", "--", "true"}, 125, "--ready-timeout 10s is not longer than --bind-timeout 15s"},
		{"zero ready-timeout", "", []string{"-p", "1", "--ready-timeout", "0s", "--", "true"}, 125, "must be more than 0"},
		{"bad lock-timeout", "", []string{"-p", "1", "--lock-timeout", "-1s", "--", "true"}, 125, "--lock-timeout -1s: must be more than 0"},
		{"bad restart", "", []string{"-p", "1", "--restart", "sometimes", "--", "true"}, 125, "want on-failure, always or never"},
		{"max-restarts out of range", "", []string{"-p", "1", "--max-restarts", "0", "--", "true"}, 125, "--max-restarts 0: want 1 to 1000"},
		{"bad restart-window", "", []string{"-p", "1", "--restart-window", "0s", "--", "true"}, 125, "--restart-window 0s: must be more than 0"},
		{"restart-delay out of range", "", []string{"-p", "1", "--restart-delay", "1m", "--", "true"}, 125, "--restart-delay 1m0s: want more than 0 and at most 15s"},
		{"fence neither on nor off", "", []string{"-p", "1", "--fence", "yes", "--", "true"}, 125, `--fence "yes": want on or off`},
		{"drain-timeout zero", "", []string{"-p", "1", "--drain-timeout", "0", "--", "true"}, 125, "--drain-timeout 0s: want more than 0 and at most 1h0m0s"},
		{"drain-timeout out of range", "", []string{"-p", "1", "--drain-timeout", "2h", "--", "true"}, 125, "--drain-timeout 2h0m0s: want more than 0 and at most 1h0m0s"},
		{"bad sockets", "", []string{"-p", "1", "--sockets", "inetd", "--", "true"}, 125, "want intercept, systemd or server-starter"},
		{"negative probation", "", []string{"-p", "1", "--probation", "-1s", "--", "true"}, 125, "--probation -1s: must not be negative (0: off)"},
		{"probation over a year", "", []string{"-p", "1", "--probation", "9000h", "--", "true"}, 125, "--probation 9000h0m0s: want at most"},
		{"health without probation", "", []string{"-p", "1", "--health", "http://127.0.0.1:1/", "--", "true"}, 125, "--health and --canary act during --probation"},
		{"canary without probation", "", []string{"-p", "1", "--canary", "10", "--", "true"}, 125, "--health and --canary act during --probation"},
		{"canary out of range", "", []string{"-p", "1", "--probation", "5s", "--canary", "100", "--", "true"}, 125, "--canary 100: want a percentage from 1 to 99"},
		{"health-failures out of range", "", []string{"-p", "1", "--probation", "5s", "--health-failures", "0", "--", "true"}, 125, "--health-failures 0: want 1 to 100"},
		{"health-interval zero", "", []string{"-p", "1", "--probation", "5s", "--health-interval", "0s", "--", "true"}, 125, "--health-interval 0s: must be more than 0"},
		{"health off the host", "", []string{"-p", "1", "--probation", "5s", "--health", "http://10.1.2.3:1/", "--", "true"}, 125, "--health http://10.1.2.3:1/: "},
		{"health not a target", "", []string{"-p", "1", "--probation", "5s", "--health", "http://127.0.0.1:2/", "--", "true"}, 125, "port 2 is not a TCP --port target"},
		{"bad interval", "", []string{"-p", "1", "--interval", "0s", "--", "true"}, 125, "--interval 0s: must be more than 0"},
		{"empty path", "", []string{"--path", "", "--", "true"}, 125, "empty --path: want the path of a unix socket"},
		{"path too long", "", []string{"--path", "/" + strings.Repeat("p", 107), "--", "true"}, 125, "108 bytes, longer than a unix socket's path may be (107)"},
		{"UDP port 0", "", []string{"-p", "udp:0", "--", "true"}, 125, "port 0 means any free port; name a fixed port from 1 to 65535"},
		{"UDP without a port", "", []string{"-p", "udp:", "--", "true"}, 125, "empty port spec: want PORT or ADDR:PORT"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startTakeover(t, tt.helper, tt.args...)
			if code := r.wait(t); code != tt.code || !strings.Contains(r.stderr.String(), tt.inStderr) {
				t.Errorf("takeover %q exited %d with stderr %q; want %d and %q", tt.args, code, r.stderr, tt.code, tt.inStderr)
			}
		})
	}
	out, err := exec.Command(takeoverBin(t), "version").Output()
	if err != nil || !strings.HasPrefix(string(out), "takeover ") {
		t.Errorf("takeover version = %q, %v", out, err)
	}
}

// TestTwoAtOnce: two takeovers started together for one port serialize on
// the port lock; the later replaces the earlier, and one server remains.
func TestTwoAtOnce(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	a := startTakeover(t, "serve", "--port", port, "--", self, addr)
	b := startTakeover(t, "serve", "--port", port, "--", self, addr)
	var winner *tkRun
	select {
	case <-a.exited:
		winner = b
		if code := a.wait(t); code != 0 {
			t.Fatalf("takeover a exited %d; stderr:\n%s", code, a.stderr)
		}
	case <-b.exited:
		winner = a
		if code := b.wait(t); code != 0 {
			t.Fatalf("takeover b exited %d; stderr:\n%s", code, b.stderr)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("neither takeover gave way\na:\n%s\nb:\n%s", a.stderr, b.stderr)
	}
	testutil.WaitServing(t, addr)
	child := childOf(t, winner, addr)
	want := fmt.Sprint(map[int]bool{winner.cmd.Process.Pid: true, child: true})
	if got := fmt.Sprint(holdersOf(t, addr)); got != want {
		t.Errorf("holders = %s, want %s", got, want)
	}
}

// TestNoSeccompUnderSeccomp: a takeover inside a takeover cannot install
// its filter (the kernel allows one listener in a chain); it says so and
// exits 125.
func TestNoSeccompUnderSeccomp(t *testing.T) {
	bin := takeoverBin(t)
	r := startTakeover(t, "", "-p", "1", "--", bin, "-p", "2", "--", "true")
	if code := r.wait(t); code != 125 {
		t.Fatalf("nested takeover exited %d, want 125; stderr:\n%s", code, r.stderr)
	}
	if s := r.stderr.String(); !strings.Contains(s, "seccomp user notification is not available") || !strings.Contains(s, "--sockets systemd") {
		t.Errorf("stderr does not say what is missing and which mode needs none:\n%s", s)
	}
}

// TestSocketPassingNeedsNoSeccomp: where no seccomp listener can be had (here
// inside another takeover), --sockets systemd still works.
func TestSocketPassingNeedsNoSeccomp(t *testing.T) {
	bin := takeoverBin(t)
	self, _ := os.Executable()
	outer, inner := testutil.FreePort(t), testutil.FreePort(t)
	addr := "127.0.0.1:" + inner
	r := startTakeover(t, "activated", "-p", outer, "--", bin, "--sockets", "systemd", "-p", addr, "--", self, addr)
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := testutil.Get(addr, "/")
		if err == nil {
			break
		}
		if !r.running() || time.Now().After(deadline) {
			t.Fatalf("%s does not serve (%v); takeover running: %v\n%s", addr, err, r.running(), r.stderr)
		}
	}
	if !r.running() {
		t.Fatalf("takeover exited:\n%s", r.stderr)
	}
}

func TestPreforkReplaced(t *testing.T) {
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	self, _ := os.Executable()
	first := startTakeover(t, "prefork", "--port", port, "--", self, addr)
	f := strings.Fields(first.line(t)) // listening ADDR workers P,P
	old := holdersOf(t, addr)
	if len(old) != 4 { // takeover, master, two workers
		t.Fatalf("holders = %v (%s), want takeover, master and two workers", old, f)
	}
	second := startTakeover(t, "prefork", "--port", port, "--", self, addr)
	if code := first.wait(t); code != 0 {
		t.Fatalf("first takeover exited %d; stderr:\n%s", code, first.stderr)
	}
	second.line(t)
	for pid := range old {
		testutil.WaitGone(t, pid)
	}
	testutil.WaitServing(t, addr)
}

// TestNoPrivilegedBindForUnprivilegedChild: takeover runs as root, the
// command as nobody without capabilities; a port below
// ip_unprivileged_port_start stays out of its reach, as without takeover.
func TestNoPrivilegedBindForUnprivilegedChild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the command as another user")
	}
	testutil.RequireTool(t, "setpriv")
	testutil.RequireTool(t, "perl")
	if intercept.UnprivilegedPortStart() <= 1 {
		t.Skip("every port is unprivileged here")
	}
	port := ""
	for p := 900; p < 1000; p++ {
		if ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p)); err == nil {
			ln.Close()
			port = fmt.Sprint(p)
			break
		}
	}
	if port == "" {
		t.Skip("no free port below 1000")
	}
	r := startTakeover(t, "", "--port", port, "--",
		"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
		"perl", "-MSocket", "-e", fmt.Sprintf(`socket(S, PF_INET, SOCK_STREAM, 0) or die "socket: $!\n"; `+
			`bind(S, pack_sockaddr_in(%s, inet_aton("127.0.0.1"))) or die "bind: $!\n"; print "bound\n"`, port))
	if code := r.wait(t); code == 0 {
		t.Fatalf("the unprivileged command bound port %s through takeover; stderr:\n%s", port, r.stderr)
	}
	if s := r.stderr.String(); !strings.Contains(s, "bind: Permission denied") {
		t.Errorf("the command's bind did not fail with EACCES:\n%s", s)
	}
}

// TestDaemonizingCommandWarned: a command that exits and leaves a process
// running (a server that daemonizes) gets a warning naming it; takeover
// exits with the command's status and kills nothing.
func TestDaemonizingCommandWarned(t *testing.T) {
	port := testutil.FreePort(t)
	r := startTakeover(t, "", "--port", port, "--", "sh", "-c", "sleep 30 </dev/null >/dev/null 2>&1 &")
	if code := r.wait(t); code != 0 {
		t.Fatalf("takeover exited %d, want the command's 0; stderr:\n%s", code, r.stderr)
	}
	m := regexp.MustCompile(`left processes running.*pids="?\[([0-9]+)\]`).FindStringSubmatch(r.stderr.String())
	if m == nil {
		t.Fatalf("no warning naming the process left behind:\n%s", r.stderr)
	}
	pid, _ := strconv.Atoi(m[1])
	defer syscall.Kill(pid, syscall.SIGKILL)
	if testutil.ProcessGone(pid) {
		t.Errorf("pid %d, left by the command, was killed", pid)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(b)) != "sleep" {
		t.Errorf("the warning names pid %d (%q), not the sleep the command left", pid, b)
	}
}

// TestProbeThenBind: a server that binds a probe socket to its port and
// closes it before its real bind (as port finders do) serves under
// takeover, fresh and when it replaces an earlier one: takeover lets go of
// its copy of the closed probe, which would keep the port (issue 28, item 7).
func TestProbeThenBind(t *testing.T) {
	testutil.RequireTool(t, "python3")
	wd, _ := os.Getwd()
	for _, probe := range []string{"bind", "listen"} {
		t.Run(probe, func(t *testing.T) {
			port := testutil.FreePort(t)
			addr := "127.0.0.1:" + port
			args := []string{"--port", port, "--", "python3", filepath.Join(wd, "testdata/probe_server.py"), port, probe}
			first := startTakeover(t, "", args...)
			if line := first.line(t); line != "listening "+addr {
				t.Fatalf("the command printed %q; stderr:\n%s", line, first.stderr)
			}
			testutil.WaitServing(t, addr)
			oldChild := childOf(t, first, addr)

			second := startTakeover(t, "", args...)
			if line := second.line(t); line != "listening "+addr {
				t.Fatalf("the second command printed %q; stderr:\n%s", line, second.stderr)
			}
			checkReplaced(t, first, second, addr, oldChild)
			if n := openSocketsOf(t, second.cmd.Process.Pid, port); n != 1 {
				t.Errorf("takeover holds %d sockets on port %s, want 1 (its copy of the server's)", n, port)
			}
		})
	}
}

// openSocketsOf counts the TCP sockets on port that process pid holds.
func openSocketsOf(t *testing.T, pid int, port string) int {
	t.Helper()
	out, err := exec.Command("ss", "-Htanp", "sport", "= :"+port).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	return strings.Count(string(out), "pid="+strconv.Itoa(pid)+",")
}

// TestShimSilent: when the shim's answer never comes, takeover does not
// block for good: it kills what the shim has become through the pidfd it
// took at the clone, and exits 125 (issue 28, item 11). The test-only
// _TAKEOVER_TEST_SHIM_SILENT has the shim exec the command without
// answering ("exec": as when the launcher's receive fails after the exec,
// main then waited for ever for the command to exit), or wait for ever
// without answering ("hang": main waited for ever for the answer; now
// --ready-timeout bounds the wait).
func TestShimSilent(t *testing.T) {
	for _, mode := range []string{"exec", "hang"} {
		t.Run(mode, func(t *testing.T) {
			port := testutil.FreePort(t)
			token := fmt.Sprintf("3599.%d", time.Now().UnixNano()%1e9) // names the command in /proc
			cmd := exec.Command(takeoverBin(t), "--kill-timeout", "1s", "--bind-timeout", "2s", "--ready-timeout", "3s", "--port", port, "--", "sleep", token)
			cmd.Env = append(os.Environ(), intercept.ShimSilentEnv+"="+mode)
			r := startRun(t, cmd)
			t.Cleanup(func() {
				for _, pid := range procsWith(token) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			if code := r.wait(t); code != supervise.ExitLauncher {
				t.Errorf("takeover exited %d, want %d; stderr:\n%s", code, supervise.ExitLauncher, r.stderr)
			}
			want := "cannot start the command"
			if mode == "hang" {
				want = "did not hand over the bind filter within --ready-timeout"
			}
			if !strings.Contains(r.stderr.String(), want) {
				t.Errorf("takeover's log lacks %q:\n%s", want, r.stderr)
			}
			if left := procsWith(token); len(left) > 0 {
				t.Errorf("takeover left its command running: pids %v", left)
			}
		})
	}
}

// procsWith returns the live processes whose command line holds arg.
func procsWith(arg string) []int {
	pids, _ := procfs.FS("/proc").PIDs()
	var found []int
	for _, pid := range pids {
		cmd, err := procfs.FS("/proc").Cmdline(pid)
		if err == nil && strings.Contains(cmd, arg) && !testutil.ProcessGone(pid) {
			found = append(found, pid)
		}
	}
	return found
}
