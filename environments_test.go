package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/testutil"
)

// An environment is a place takeover runs: as root, in a container whose
// default seccomp profile refuses pidfd_getfd and the ptrace family (the
// sandbox helper), as an unprivileged user with no capabilities, or both.
type environment struct {
	name      string
	container bool
	nobody    bool
}

var environments = []environment{
	{name: "root"},
	{name: "container", container: true},
	{name: "nobody", nobody: true},
	{name: "container-nobody", container: true, nobody: true},
}

// command returns argv run in the environment, with runDir as the run
// directory.
func (e environment) command(t *testing.T, runDir string, argv ...string) *exec.Cmd {
	if e.nobody {
		argv = append([]string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "TAKEOVER_RUN_DIR="+runDir)
	if e.container {
		cmd = sandboxed(cmd)
	}
	return cmd
}

// runDirFor makes a run directory the environment's user owns.
func (e environment) runDirFor(t *testing.T) string {
	top, err := os.MkdirTemp("", "takeover-env")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	os.Chmod(top, 0o755)
	dir := filepath.Join(top, "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if e.nobody {
		os.Chown(dir, 65534, 65534)
	}
	return dir
}

// TestEnvironments: in each environment, under load, a server not started
// under takeover is replaced (by handoff where pidfd_getfd is allowed; where
// it is not, by rebind, or for a unix socket by a rename over its path),
// then takeovers replace each other and reload on HUP by handoff, the
// sockets passing between takeovers over their unix sockets; every swap
// completes; no request fails after the first swap; nothing is left
// behind. The server listens on a TCP port, then on a unix socket.
func TestEnvironments(t *testing.T) {
	testutil.RequireTool(t, "setpriv")
	if os.Geteuid() != 0 {
		t.Skip("needs root to run as nobody")
	}
	bin := takeoverBin(t)
	for _, e := range environments {
		for _, kind := range []string{"tcp", "unix"} {
			t.Run(e.name+"/"+kind, func(t *testing.T) {
				dir := e.runDirFor(t)
				addr, target, first := "127.0.0.1:"+testutil.FreePort(t), []string{"--port"}, "strategy=handoff"
				if kind == "unix" {
					sockDir := filepath.Join(filepath.Dir(dir), "sock")
					os.Mkdir(sockDir, 0o755)
					if e.nobody {
						os.Chown(sockDir, 65534, 65534)
					}
					addr, target = filepath.Join(sockDir, "app.sock"), []string{"--path"}
				}
				target = append(target, addr)
				if e.container {
					// nothing but pidfd_getfd could copy the plain server's socket
					first = map[string]string{"tcp": "strategy=rebind", "unix": "strategy=rename"}[kind]
				}
				server := []string{bin, "demo-server", addr}
				start := func() *tkRun {
					return startRun(t, e.command(t, dir, append(append(append([]string{bin}, target...), "--"), server...)...))
				}

				plainRun := startRun(t, e.command(t, dir, server...))
				testutil.WaitServing(t, addr)
				cur := start()
				if code := plainRun.wait(t); code != 0 {
					t.Fatalf("the plain server exited %d", code)
				}
				cur.waitLog(t, first)
				if kind == "unix" {
					// The plain server (Go) removed its path on its way out:
					// the swap ends when takeover has put it back.
					cur.waitLog(t, "takeover put it back")
				}
				if e.container && !strings.Contains(cur.stderr.String(), "SYS_PTRACE") {
					t.Errorf("the log does not say what to allow:\n%s", cur.stderr)
				}

				cur, r := swapsUnderLoad(t, addr, cur, start, 3)
				if r.Requests == 0 || r.FailedRequests() != 0 {
					t.Errorf("%d of %d requests failed (refused %d, reset %d, timeouts %d); the first: %v\nthe last takeover's log:\n%s",
						r.FailedRequests(), r.Requests, r.Refused, r.Resets, r.Timeouts, r.Failures[:min(3, len(r.Failures))], cur.stderr)
				}
				t.Logf("%s/%s: 3 handoffs between takeovers and a HUP reload: %d requests, %d failed", e.name, kind, r.Requests, r.FailedRequests())
				cur.cmd.Process.Signal(syscall.SIGTERM)
				if code := cur.wait(t); code != 0 {
					t.Errorf("the last takeover exited %d after TERM:\n%s", code, cur.stderr)
				}
				if kind == "tcp" {
					if ls := lookup(t, addr); len(ls) != 0 {
						t.Errorf("after TERM the port is still held: %+v", ls)
					}
				} else if _, err := os.Lstat(addr); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("after TERM the socket file is still there: %v", err)
				}
				if names := dirNames(t, dir); len(names) != 0 {
					t.Errorf("the run directory keeps %v", names)
				}
			})
		}
	}
}

// inContainerEnv makes startTakeover run every takeover inside the
// emulated container profile.
const inContainerEnv = "TAKEOVER_TEST_IN_CONTAINER"

// TestLifecycleInContainer runs the lifecycle tests again with every
// takeover inside the emulated container profile (no pidfd_getfd): swaps,
// reloads, kill timeouts, rollbacks, restarts and back-offs all work there,
// on TCP, UDP and unix sockets.
func TestLifecycleInContainer(t *testing.T) {
	if os.Getenv(inContainerEnv) != "" {
		t.Skip("already inside")
	}
	const tests = "^(TestContainerInEffect|TestHandoff50UnderLoad|TestReloadOnHUP|TestStopDuringReload|TestFailedReloadsLeakNothing|TestKillTimeout|TestTwoAtOnce|TestPreforkReplaced|TestSignalsForwarded|" +
		"TestReadyTimeoutRollsBack|TestLockWaitIsBounded|TestRespawnAfterKill9|TestCrashLoopGivesUp|TestBackoffInterrupted|TestBlockingModeLeftToServers|" +
		"TestUDPEchoSwappedUnderLoad|TestUnixServersSwappedUnderLoad|TestUnixPathOutlivesFailures|TestUnixRenameAndRollback)$"
	cmd := exec.Command(os.Args[0], "-test.run", tests, "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), inContainerEnv+"=1")
	out, err := cmd.CombinedOutput()
	passed := strings.Count(string(out), "--- PASS: Test")
	if err != nil || passed < 19 || !strings.Contains(string(out), "--- PASS: TestContainerInEffect") {
		t.Fatalf("in the container (%v, %d tests passed):\n%s", err, passed, tail(string(out), 8000))
	}
	t.Logf("%d tests passed with takeover in the emulated container profile", passed)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestContainerInEffect proves, inside TestLifecycleInContainer, that
// takeover runs in the emulated profile: it cannot copy sockets.
func TestContainerInEffect(t *testing.T) {
	if os.Getenv(inContainerEnv) == "" {
		t.Skip("only inside TestLifecycleInContainer")
	}
	port := testutil.FreePort(t)
	self, _ := os.Executable()
	r := startTakeover(t, "serve", "--port", port, "--", self, "127.0.0.1:"+port)
	r.waitLog(t, "took over")
	if !strings.Contains(r.stderr.String(), "cannot copy the command's sockets") {
		t.Errorf("takeover copied sockets: the profile is not in effect:\n%s", r.stderr)
	}
}

// swapsUnderLoad replaces cur by swaps new takeovers (from start), each
// taking the socket over its predecessor's unix socket, then reloads the
// last with HUP, under two clients that make 1000 requests before each
// swap and after the last; it returns the takeover that serves and what
// the clients saw.
func swapsUnderLoad(t *testing.T, addr string, cur *tkRun, start func() *tkRun, swaps int) (*tkRun, *load.Result) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var done atomic.Int64
	loaded := make(chan *load.Result, 1)
	go func() { loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: 2, Done: &done}) }()
	more := func() {
		until := done.Load() + 1000
		for deadline := time.Now().Add(30 * time.Second); done.Load() < until && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
	}
	for i := 1; i <= swaps; i++ {
		more()
		next := start()
		if code := cur.wait(t); code != 0 {
			cancel()
			t.Fatalf("swap %d: the old takeover exited %d:\n%s\nthe new one:\n%s", i, code, cur.stderr, next.stderr)
		}
		next.waitLog(t, "via=unix-socket")
		cur = next
	}
	more()
	cur.cmd.Process.Signal(syscall.SIGHUP)
	cur.waitLog(t, "via=own-copy")
	more()
	cancel()
	return cur, <-loaded
}
