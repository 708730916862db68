package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
)

// Real supervisors from Debian restart a service by stopping the pid they
// started and starting the command again. Each runs the demo server (which
// takes a second to start) under takeover --detach-on-stop, and, side by
// side, the server alone, under 2 HTTP clients and a slow request: 3
// restarts, a reload, then down.

// A supervisorKind says how to run and drive one supervisor on a service
// directory (or, for supervisord, a config that names it).
type supervisorKind struct {
	name  string
	tools []string
	// setup writes what the supervisor reads, and returns the command that
	// runs the supervisor in the foreground and the command that tells it
	// to exit (once the service is down).
	setup                 func(t *testing.T, dir, run string) (serve, exit []string)
	restart, reload, down func(dir string) []string
}

func supervisorKinds() []supervisorKind {
	svcDir := func(t *testing.T, dir, run string) string {
		d := filepath.Join(dir, "app")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "run"), []byte(run), 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	app := func(dir string) string { return filepath.Join(dir, "app") }
	conf := func(dir string) string { return filepath.Join(dir, "supervisord.conf") }
	return []supervisorKind{
		{
			name: "runit", tools: []string{"runsv", "sv"},
			setup: func(t *testing.T, dir, run string) ([]string, []string) {
				d := svcDir(t, dir, run)
				return []string{"runsv", d}, []string{"sv", "exit", d}
			},
			restart: func(dir string) []string { return []string{"sv", "restart", app(dir)} },
			reload:  func(dir string) []string { return []string{"sv", "hup", app(dir)} },
			down:    func(dir string) []string { return []string{"sv", "down", app(dir)} },
		},
		{
			name: "daemontools", tools: []string{"supervise", "svc"},
			setup: func(t *testing.T, dir, run string) ([]string, []string) {
				d := svcDir(t, dir, run)
				return []string{"supervise", d}, []string{"svc", "-dx", d}
			},
			restart: func(dir string) []string { return []string{"svc", "-t", app(dir)} },
			reload:  func(dir string) []string { return []string{"svc", "-h", app(dir)} },
			down:    func(dir string) []string { return []string{"svc", "-d", app(dir)} },
		},
		{
			name: "s6", tools: []string{"s6-supervise", "s6-svc"},
			setup: func(t *testing.T, dir, run string) ([]string, []string) {
				d := svcDir(t, dir, run)
				return []string{"s6-supervise", d}, []string{"s6-svc", "-dx", d}
			},
			restart: func(dir string) []string { return []string{"s6-svc", "-r", app(dir)} },
			reload:  func(dir string) []string { return []string{"s6-svc", "-h", app(dir)} },
			down:    func(dir string) []string { return []string{"s6-svc", "-d", app(dir)} },
		},
		{
			name: "supervisord", tools: []string{"supervisord", "supervisorctl"},
			setup: func(t *testing.T, dir, run string) ([]string, []string) {
				script := filepath.Join(dir, "run")
				if err := os.WriteFile(script, []byte(run), 0o755); err != nil {
					t.Fatal(err)
				}
				sock := filepath.Join(dir, "supervisor.sock")
				text := fmt.Sprintf("[unix_http_server]\nfile=%s\n\n[supervisord]\nnodaemon=true\nlogfile=%s\npidfile=%s\n\n"+
					"[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"+
					"[supervisorctl]\nserverurl=unix://%s\n\n[program:app]\ncommand=%s\nautorestart=true\nstartsecs=1\nredirect_stderr=true\nstdout_logfile=%s\n",
					sock, filepath.Join(dir, "supervisord.log"), filepath.Join(dir, "supervisord.pid"), sock, script, filepath.Join(dir, "app.log"))
				if err := os.WriteFile(conf(dir), []byte(text), 0o644); err != nil {
					t.Fatal(err)
				}
				return []string{"supervisord", "-c", conf(dir)}, []string{"supervisorctl", "-c", conf(dir), "shutdown"}
			},
			restart: func(dir string) []string { return []string{"supervisorctl", "-c", conf(dir), "restart", "app"} },
			reload:  func(dir string) []string { return []string{"supervisorctl", "-c", conf(dir), "signal", "HUP", "app"} },
			down:    func(dir string) []string { return []string{"supervisorctl", "-c", conf(dir), "stop", "app"} },
		},
	}
}

// supervisedRun is what one run under a supervisor saw.
type supervisedRun struct {
	load       *load.Result
	slowOK     bool
	downTook   time.Duration // from `down` to nothing listening
	generation string        // what served last
}

// TestSupervisors: under each supervisor, takeover --detach-on-stop makes a
// restart refuse nothing and lets a slow request finish; the server alone
// is what the supervisor's users have today.
func TestSupervisors(t *testing.T) {
	for _, sk := range supervisorKinds() {
		t.Run(sk.name, func(t *testing.T) {
			for _, tool := range sk.tools {
				testutil.RequireTool(t, tool)
			}
			with := superviseRun(t, sk, true)
			alone := superviseRun(t, sk, false)
			for _, r := range []struct {
				name string
				run  supervisedRun
			}{{"takeover --detach-on-stop", with}, {"the server alone", alone}} {
				t.Logf("%s, %s: 3 restarts and a reload: %d requests, %d failed, %d refused, longest refused window %v, slow request answered: %v; down in %v",
					sk.name, r.name, r.run.load.Requests, r.run.load.FailedRequests(), r.run.load.Refused, r.run.load.LongestRefused().Round(time.Millisecond), r.run.slowOK, r.run.downTook.Round(time.Millisecond))
			}
			if with.load.FailedRequests() != 0 || !with.slowOK {
				t.Errorf("%s with takeover: %d of %d failed (%d refused), slow request answered: %v; want 0 and answered",
					sk.name, with.load.FailedRequests(), with.load.Requests, with.load.Refused, with.slowOK)
			}
			if alone.load.Refused == 0 {
				t.Errorf("%s alone refused nothing: the comparison measures nothing", sk.name)
			}
		})
	}
}

// detachFor is --detach-on-stop in TestSupervisors; killTimeout its --kill-timeout.
const (
	detachFor   = 3 * time.Second
	killTimeout = 3 * time.Second
)

func superviseRun(t *testing.T, sk supervisorKind, withTakeover bool) supervisedRun {
	dir := t.TempDir()
	addr := "127.0.0.1:" + testutil.FreePort(t)
	tk := takeoverBin(t)
	server := fmt.Sprintf("%s demo-server --init-delay 1s %s", tk, addr)
	status := filepath.Join(dir, "status.json")
	run := "#!/bin/sh\nexec 2>&1\nexec " + server + "\n"
	if withTakeover {
		run = fmt.Sprintf("#!/bin/sh\nexec 2>&1\nexec %s -v --detach-on-stop %v --kill-timeout %v --status-file %s --port %s -- %s\n",
			tk, detachFor, killTimeout, status, addr, server)
	}
	serve, exit := sk.setup(t, dir, run)
	sup := exec.Command(serve[0], serve[1:]...)
	sup.Dir = dir
	out, _ := os.Create(filepath.Join(dir, "supervisor.out"))
	sup.Stdout, sup.Stderr = out, out
	sup.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sup.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stopSupervisor(t, sup, exit, status, addr)
		if t.Failed() {
			b, _ := os.ReadFile(out.Name())
			t.Logf("the supervisor's and the service's output:\n%s", b)
		}
	})
	ctl := func(args []string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	served := testutil.WaitServing(t, addr)

	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan *load.Result, 1)
	go func() {
		loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: 2, Timeout: 10 * time.Second})
	}()
	slow := slowRequest(t, addr, "3s")
	seen := map[string]bool{pidOf(served): true}
	for _, step := range [][]string{sk.restart(dir), sk.restart(dir), sk.restart(dir), sk.reload(dir)} {
		ctl(step)
		served = waitUnseenServer(t, addr, seen)
	}
	slowErr := <-slow
	cancel()
	r := supervisedRun{load: <-loaded, slowOK: slowErr == nil, generation: served}
	if slowErr != nil {
		t.Logf("the slow request: %v", slowErr)
	}

	began := time.Now()
	ctl(sk.down(dir))
	waitNothingListens(t, addr, 30*time.Second)
	r.downTook = time.Since(began)
	return r
}

// waitNewServer waits until addr is answered by another server process
// than the one whose answer was last.
func waitNewServer(t *testing.T, addr, last string) string {
	t.Helper()
	return waitUnseenServer(t, addr, map[string]bool{pidOf(last): true})
}

// waitUnseenServer waits until addr is answered by a server process that
// is not in seen, the pids that answered before, adds it and returns its
// answer. Not merely another than the last one: after a handoff that is
// not fenced (a Go server listens with MPTCP, which no SO_REUSEPORT
// program steers) the old server and the new one accept from the same
// socket until the new takeover's swap stops the old one, and the one
// before answers again meanwhile. Taken for a restart's new server, it ran
// TestSupervisors ahead of the takeovers: under load, 3 restarts and the
// reload went out within a second or two, the new takeovers waited in turn
// for the port lock (each swap until the server before had gone), and one
// 30 s wait was left to cover them all (issue 28, item 12).
func waitUnseenServer(t *testing.T, addr string, seen map[string]bool) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	var lastErr error
	for {
		body, err := testutil.Get(addr, "/")
		if pid := pidOf(body); err == nil && !seen[pid] {
			seen[pid] = true
			return body
		} else if err == nil {
			last = pid
		} else {
			lastErr = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no new server after 30s: answered last by %s, of those seen before (%s); last error: %v",
				addr, last, strings.Join(slices.Sorted(maps.Keys(seen)), " "), lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pidOf is the "pid=0012345" of a demo server's answer.
func pidOf(body string) string {
	pid, _, _ := strings.Cut(body, " ")
	return pid
}

func waitNothingListens(t *testing.T, addr string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for len(lookup(t, addr)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s still listened on %v after down", addr, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopSupervisor tells the supervisor to exit and waits for it; a detached
// launcher left behind (a failed test) is stopped by its pid from the
// status file, once its command line shows it is this test's.
func stopSupervisor(t *testing.T, sup *exec.Cmd, exit []string, status, addr string) {
	exec.Command(exit[0], exit[1:]...).Run()
	done := make(chan struct{})
	go func() { sup.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		syscall.Kill(-sup.Process.Pid, syscall.SIGKILL) // its own process group, made at start
		<-done
	}
	for pid := range holdersOfAny(addr) {
		if cmd := owner.CommandLine(pid); strings.Contains(cmd, status) || strings.Contains(cmd, "demo-server --init-delay 1s "+addr) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// holdersOfAny returns the pids holding addr's listeners, if any.
func holdersOfAny(addr string) map[int]bool {
	spec, err := target.Parse(addr)
	if err != nil {
		return nil
	}
	ls, err := owner.Listeners("/proc", spec, nil, false)
	pids := map[int]bool{}
	if err != nil {
		return pids
	}
	for _, l := range ls {
		for _, h := range l.Holders {
			pids[h.PID] = true
		}
	}
	return pids
}

// TestDetachOnStopFlag: bad values are refused before anything starts.
func TestDetachOnStopFlag(t *testing.T) {
	for _, v := range []string{"-1s", "2h", "soon"} {
		var errOut strings.Builder
		code := run([]string{"--detach-on-stop", v, "--port", "8100", "--", "true"}, &errOut, &errOut)
		if code != supervise.ExitLauncher || !strings.Contains(errOut.String(), "detach-on-stop") {
			t.Errorf("--detach-on-stop %s: exit %d, %q", v, code, errOut.String())
		}
	}
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	var errOut strings.Builder
	if code := run([]string{"--detach-on-stop", "10s", "--port", "8100", "--", "true"}, &errOut, &errOut); code != supervise.ExitLauncher ||
		!strings.Contains(errOut.String(), "FileDescriptorStoreMax") {
		t.Errorf("--detach-on-stop under systemd: exit %d, %q; want refused, pointing to the fd store", code, errOut.String())
	}
}

// TestDetachWaitsForOwnSwap: a supervisor restarts takeover --detach-on-stop
// twice in a row, the second time while the first restart's swap still
// holds the port lock (its old server finishes a slow request). The newer
// takeover the supervisor started waits behind that lock, so the detached
// launcher must not count --detach-on-stop from its front's exit: it is
// replaced, and no request fails. Before, it took the lock it held itself
// for "no newer takeover", stopped its server 2 s after the restart and
// exited mid-swap; the port closed, and clients were refused until the
// newer takeover bound it afresh.
func TestDetachWaitsForOwnSwap(t *testing.T) {
	tk := takeoverBin(t)
	addr := "127.0.0.1:" + testutil.FreePort(t)
	dir := t.TempDir()
	runDir := filepath.Join(dir, "run")
	t.Cleanup(func() { killServing(addr) })
	// A supervisor's restart: stop the front, wait for it to exit, start
	// the command again. The output goes to a file: the detached launcher
	// keeps writing to it.
	type front struct {
		cmd *exec.Cmd
		log string
	}
	n := 0
	start := func() front {
		t.Helper()
		n++
		log := filepath.Join(dir, fmt.Sprintf("takeover-%d.log", n))
		out, err := os.Create(log)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		cmd := exec.Command(tk, "--detach-on-stop", "2s", "--kill-timeout", "20s", "--port", addr, "--",
			tk, "demo-server", "--init-delay", "1s", addr)
		cmd.Env = append(os.Environ(), "TAKEOVER_RUN_DIR="+runDir)
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return front{cmd, log}
	}
	logOf := func(f front) string {
		b, _ := os.ReadFile(f.log)
		return string(b)
	}
	stop := func(f front) {
		t.Helper()
		f.cmd.Process.Signal(syscall.SIGTERM)
		if err := f.cmd.Wait(); err != nil {
			t.Fatalf("the front: %v on a stop, want exit 0; its log:\n%s", err, logOf(f))
		}
	}
	first := start()
	served := testutil.WaitServing(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	loaded := make(chan *load.Result, 1)
	go func() {
		loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: 2, Timeout: 10 * time.Second, Pause: 5 * time.Millisecond})
	}()
	// The first server drains this for 10 s once replaced: the first
	// restart's swap holds the port lock until then.
	slow := slowRequest(t, addr, "10s")
	stop(first)
	second := start()
	seen := map[string]bool{pidOf(served): true}
	served = waitUnseenServer(t, addr, seen)
	stop(second)
	third := start()
	served = waitUnseenServer(t, addr, seen)
	if err := <-slow; err != nil {
		t.Errorf("the slow request: %v", err)
	}
	for deadline := time.Now().Add(60 * time.Second); !strings.Contains(logOf(third), "took over"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the third takeover has not taken over in 60s:\n%s", logOf(third))
		}
	}
	time.Sleep(time.Second) // requests to the new server
	cancel()
	r := <-loaded
	if r.FailedRequests() != 0 {
		t.Errorf("%d of %d requests failed (%d refused) across two restarts, want 0; the second takeover's log:\n%s",
			r.FailedRequests(), r.Requests, r.Refused, logOf(second))
	}
	if s := logOf(second); strings.Contains(s, "no newer takeover came") {
		t.Errorf("the second takeover stopped its server while the third waited for its port lock:\n%s", s)
	}
	t.Logf("%d requests, %d failed; served last by %s", r.Requests, r.FailedRequests(), served)
	stop(third)
}

// killServing SIGKILLs what a failed test left holding addr: detached
// launchers and their servers, found by the address on their command line.
func killServing(addr string) {
	for range 3 {
		for pid := range holdersOfAny(addr) {
			if strings.Contains(owner.CommandLine(pid), addr) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}
