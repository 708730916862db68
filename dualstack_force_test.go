package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
)

// TestForceLeavesIPv6OnlyService: `takeover --force --port P` for a server
// that binds 0.0.0.0:P leaves alone another service's IPv6-only [::]:P,
// which that bind does not conflict with: it is neither counted nor
// stopped, and both serve. (Taken for dual-stack, it was stopped: a
// rebind.) In a network namespace of the test's own.
func TestForceLeavesIPv6OnlyService(t *testing.T) {
	testutil.RequireTool(t, "ip")
	if os.Geteuid() != 0 {
		t.Skip("needs root: it makes a network namespace")
	}
	takeoverBin(t)
	ns := newNetns(t)
	procs := trackProcesses(t)
	port := testutil.FreePort(t)
	runDir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(runDir, 0o700); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	svc := exec.Command("ip", "netns", "exec", ns.name, self, "tcp6:[::]:"+port) // Go's tcp6 wildcard is IPv6-only
	svc.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER=serve")
	h := testutil.StartAndReadLine(t, svc) // ip execs the helper: its pid is the service's
	_, _, start, err := statOf(h.Cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	service := procKey{h.Cmd.Process.Pid, start}

	cmd := exec.Command("ip", "netns", "exec", ns.name, takeoverBin(t), "--force", "--port", port, "--", self, "tcp4:0.0.0.0:"+port)
	cmd.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER=serve", "TAKEOVER_RUN_DIR="+runDir)
	r := startRun(t, cmd)
	if err := awaitSwapLine(nil, r, 1, 30*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, logsOf(r))
	}
	for _, addr := range []string{"127.0.0.1:" + port, "[::1]:" + port} {
		if kind, detail := ns.request(t, addr); kind != "" {
			t.Errorf("%s does not answer: %s: %s", addr, kind, detail)
		}
	}
	if !service.alive() {
		t.Errorf("the IPv6-only service on [::]:%s was stopped by a takeover of 0.0.0.0:%s, which does not conflict with it\n%s", port, port, logsOf(r))
	}
	if l := lastSwapLine(r); !strings.Contains(l, "strategy=fresh") || strings.Contains(l, "old_pid=") {
		t.Errorf("the swap line names an old server: %s", l)
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	r.wait(t)
	h.Cmd.Process.Signal(syscall.SIGTERM)
	h.Cmd.Wait()
	procs.checkNoneLeft(t, 20*time.Second)
}
