package main

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/testutil"
)

// TestPID1Replaced: takeover as PID 1 of a PID namespace of its own (what a
// container's entrypoint is; unshare makes a real one), replaced by a
// takeover started inside it (what `docker exec` does): nothing fails, the
// replaced PID 1 stays (the namespace would end with it), passes a stop on
// to the takeover that serves, and exits 0 once it has exited; a request in
// flight at the stop is answered.
func TestPID1Replaced(t *testing.T) {
	testutil.RequireTool(t, "unshare")
	testutil.RequireTool(t, "nsenter")
	tk := takeoverBin(t)
	addr := "127.0.0.1:" + testutil.FreePort(t)
	init := startRun(t, exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
		tk, "--port", addr, "--", tk, "demo-server", "--init-delay", "300ms", addr))
	first := testutil.WaitServing(t, addr)
	hostPID1 := nsInit(t, init.cmd.Process.Pid)

	load := startSdLoad(addr)
	load.waitRequests(300)
	deploy := startRun(t, exec.Command("nsenter", "-t", strconv.Itoa(hostPID1), "-p", "-m",
		tk, "--port", addr, "--", tk, "demo-server", "--init-delay", "300ms", addr))
	deploy.waitLog(t, "took over")
	waitNewServer(t, addr, first)
	init.waitLog(t, "replaced as PID 1 of this PID namespace")
	r := load.stop() // 200 requests more, after the old server was told to stop
	if r.FailedRequests() != 0 {
		t.Errorf("a deploy into the namespace: %d of %d failed (%d refused): %v", r.FailedRequests(), r.Requests, r.Refused, r.Failures)
	}
	t.Logf("a takeover started inside replaced PID 1: %d requests, %d failed", r.Requests, r.FailedRequests())
	if !init.running() || testutil.ProcessGone(hostPID1) {
		t.Fatalf("PID 1 exited when replaced: the namespace ended with it\n%s", init.stderr)
	}

	slow := slowRequest(t, addr, "1s")
	signalHostPID(t, hostPID1, "TERM") // as docker stop does; unshare passes nothing on
	if err := <-slow; err != nil {
		t.Errorf("the request in flight at the stop: %v", err)
	}
	if code := init.wait(t); code != 0 {
		t.Errorf("PID 1 exited %d after the stop, want 0\n%s", code, init.stderr)
	}
	if code := deploy.wait(t); code != 0 {
		t.Errorf("the serving takeover exited %d after the stop, want 0\n%s", code, deploy.stderr)
	}
}

// nsInit returns the host pid of the PID 1 that unshare --fork (pid
// parent) started: its only child, takeover.
func nsInit(t *testing.T, parent int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids, _ := procfs.FS("/proc").PIDs()
		for _, pid := range pids {
			if ppid, err := procfs.FS("/proc").PPID(pid); err == nil && ppid == parent && owner.ProcName("/proc", pid) == "takeover" {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no takeover under unshare %d", parent)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// signalHostPID signals pid, checked first to be takeover under our unshare.
func signalHostPID(t *testing.T, pid int, sig string) {
	t.Helper()
	if !strings.Contains(owner.CommandLine(pid), "takeover") {
		t.Fatalf("pid %d is not takeover any more", pid)
	}
	if out, err := exec.Command("kill", "-"+sig, strconv.Itoa(pid)).CombinedOutput(); err != nil {
		t.Fatalf("kill -%s %d: %v: %s", sig, pid, err, out)
	}
}
