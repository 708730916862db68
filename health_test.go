package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// Health-gated readiness (--ready http://..., --ready-exec), issue 31.

// runHealthServe serves HTTP on addr over plain TCP (Go's MPTCP is never
// fenced) until SIGTERM: /healthz answers with the status in
// TAKEOVER_TEST_HEALTH (200 if unset; "hang": never, until the client
// leaves) and names the process; every other path as helloHandler does.
func runHealthServe(addr string) int {
	status, _ := strconv.Atoi(os.Getenv("TAKEOVER_TEST_HEALTH"))
	if status == 0 {
		status = http.StatusOK
	}
	ln, err := listenPlainTCP(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	if d, err := time.ParseDuration(os.Getenv("TAKEOVER_TEST_CRASH_AFTER")); err == nil {
		time.AfterFunc(d, func() { os.Exit(3) }) // a release that crashes under traffic (probation_test.go)
	}
	hello := helloHTTP()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && os.Getenv("TAKEOVER_TEST_HEALTH") == "hang" {
			<-r.Context().Done()
			return
		}
		if r.URL.Path == "/healthz" {
			w.WriteHeader(status)
			fmt.Fprintln(w, pidField(os.Getpid()))
			return
		}
		hello.ServeHTTP(w, r)
	})}
	// Until SIGTERM, then drain as the demo server does (net/http's own
	// Shutdown: stop accepting, finish what was accepted).
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	go srv.Serve(ln)
	<-term
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	return 0
}

// listenPlainTCP listens on addr over plain TCP: Go listens with MPTCP
// where the kernel has it, and an MPTCP socket is never fenced.
func listenPlainTCP(addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), "tcp", addr)
}

// probeLoop sends requests to addr, each on a new connection, until stop
// is called, and then reports how many failed and how many were answered
// by a process other than want (a pid field).
func probeLoop(addr, want string) (stop func() (failed, others int, first string)) {
	var mu sync.Mutex
	var failed, others int
	var firstBad string
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			body, err := testutil.Get(addr, "/")
			mu.Lock()
			switch {
			case err != nil:
				failed++
				if firstBad == "" {
					firstBad = err.Error()
				}
			case !strings.Contains(body, want):
				others++
				if firstBad == "" {
					firstBad = body
				}
			}
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return func() (int, int, string) {
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return failed, others, firstBad
	}
}

// healthApp writes an app script that runs the health server with health
// as its /healthz status, replacing the one there (a deploy); env are more
// of its environment's variables (NAME=VALUE).
func healthApp(t *testing.T, app string, health int, env ...string) {
	t.Helper()
	self, _ := os.Executable()
	script := fmt.Sprintf("#!/bin/sh\nTAKEOVER_TEST_HEALTH=%d %s exec %s \"$@\"\n", health, strings.Join(env, " "), self)
	if err := os.WriteFile(app+".new", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(app+".new", app); err != nil {
		t.Fatal(err)
	}
}

// TestHealthGateRollsBack: a release whose health URL answers 500 is
// rolled back at --ready-timeout, under load, and never given a
// connection: the old server (healthy, so a check that reached it would
// pass) answers every request, with the same pid; the log and the status
// file say what the check last got.
func TestHealthGateRollsBack(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	healthApp(t, app, 200)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	statusFile := filepath.Join(dir, "status.json")
	r := startTakeover(t, "healthserve", "--port", port, "--ready", "http://127.0.0.1:"+port+"/healthz",
		"--kill-timeout", "1s", "--bind-timeout", "2s", "--ready-timeout", "4s", "--status-file", statusFile, "--", app, addr)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("takeover's stderr:\n%s", r.stderr)
		}
	})
	r.waitLog(t, "passed its health check")
	testutil.WaitServing(t, addr)
	old := childOf(t, r, addr)

	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan *load.Result, 1)
	go func() { loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: 2}) }()
	stop := probeLoop(addr, pidField(old))

	healthApp(t, app, 500)
	r.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog(t, "rolling back")
	st := waitFailedReload(t, statusFile)
	failed, others, first := stop()
	cancel()
	res := <-loaded
	if failed != 0 || others != 0 || res.FailedRequests() != 0 {
		t.Errorf("during the bad release: %d probes failed, %d answered by another process than the old server %d (first: %q); load: %d of %d failed",
			failed, others, old, first, res.FailedRequests(), res.Requests)
	}
	t.Logf("load during the bad release: %d requests, %d failed; probes: %d failed, %d answered by another process", res.Requests, res.FailedRequests(), failed, others)
	if res.Requests == 0 {
		t.Error("the load sent no request")
	}
	log := r.stderr.String()
	if !strings.Contains(log, "500 Internal Server Error") {
		t.Errorf("the log does not say the check got 500")
	}
	if now := childOf(t, r, addr); now != old {
		t.Errorf("the server is pid %d after the rollback, want the old %d", now, old)
	}
	if st.LastFailedReload == nil || !strings.Contains(st.LastFailedReload.Why, "500 Internal Server Error") {
		t.Errorf("the status file's last failed reload = %+v, want the check's 500", st.LastFailedReload)
	}
}

// waitFailedReload waits, for at most 30 s, until the status file records
// a failed reload.
func waitFailedReload(t *testing.T, path string) supervise.Status {
	t.Helper()
	var st supervise.Status
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &st) == nil && st.LastFailedReload != nil {
			return st
		}
	}
	t.Fatalf("the status file records no failed reload after 30s")
	return st
}

// TestHealthGatePasses: a release whose health URL answers 200 passes and
// takes over from another takeover's server, which serves every request
// meanwhile; the check was answered by the new server (the log's answer
// names its pid) while the old one still served.
func TestHealthGatePasses(t *testing.T) {
	var stop func() (int, int, string)
	b, old, addr := swapChecked(t, func(addr string) { stop = probeLoop(addr, "pid=") })
	failed, _, first := stop()
	if failed != 0 {
		t.Errorf("%d requests failed during the swap (first: %q)", failed, first)
	}
	nw := childOf(t, b, addr)
	log := b.stderr.String()
	passed := log[strings.Index(log, "passed its health check"):]
	passed, _, _ = strings.Cut(passed, "\n")
	if !strings.Contains(passed, pidField(nw)) || strings.Contains(passed, pidField(old)) {
		t.Errorf("the check was answered %q; want by the new server %d, not the old %d", passed, nw, old)
	}
	if strings.Index(log, "passed its health check") > strings.Index(log, `msg="took over"`) {
		t.Errorf("the swap completed before the check passed")
	}
}

// swapChecked starts takeover A with a healthy server on a free port, has
// during (if set) run once it serves, then takeover B with a healthy
// server, --ready checking it, and flags, and waits until B has taken over
// and A exited 0. It returns B, A's server and the address.
func swapChecked(t *testing.T, during func(addr string), flags ...string) (b *tkRun, old int, addr string) {
	t.Helper()
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	addr = "127.0.0.1:" + port
	a := startTakeover(t, "healthserve", "--port", port, "--", self, addr)
	testutil.WaitServing(t, addr)
	old = childOf(t, a, addr)
	if during != nil {
		during(addr)
	}
	args := append([]string{"--port", port, "--ready", "http://127.0.0.1:" + port + "/healthz"}, flags...)
	b = startTakeover(t, "healthserve", append(args, "--", self, addr)...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("A's stderr:\n%s\nB's stderr:\n%s", a.stderr, b.stderr)
		}
	})
	b.waitLog(t, `msg="took over"`)
	if code := a.wait(t); code != 0 {
		t.Errorf("takeover A exited %d, want 0 (replaced)", code)
	}
	return b, old, addr
}

// TestReadyExec: --ready-exec runs by sh -c with the new server's pid and
// port in its environment; one that exits 0 makes the server ready, one
// that never does has it rolled back at --ready-timeout, with its exit
// status and last line in the log.
func TestReadyExec(t *testing.T) {
	self, _ := os.Executable()
	t.Run("passes", func(t *testing.T) {
		port := testutil.FreePort(t)
		addr := "127.0.0.1:" + port
		check := `test -d /proc/"$TAKEOVER_NEW_PID" && test "$TAKEOVER_PORT" = ` + port + ` && echo "checked $TAKEOVER_NEW_PID"`
		r := startTakeover(t, "healthserve", "--port", port, "--ready-exec", check, "--", self, addr)
		r.waitLog(t, "passed its health check")
		testutil.WaitServing(t, addr)
		if child := childOf(t, r, addr); !strings.Contains(r.stderr.String(), fmt.Sprintf(`checked %d`, child)) {
			t.Errorf("the check did not see the new server's pid %d:\n%s", child, r.stderr)
		}
	})
	t.Run("fails", func(t *testing.T) {
		port := testutil.FreePort(t)
		addr := "127.0.0.1:" + port
		r := startTakeover(t, "healthserve", "--port", port, "--ready-exec", `echo "not yet: $TAKEOVER_PORTS"; exit 3`,
			"--kill-timeout", "1s", "--bind-timeout", "2s", "--ready-timeout", "3s", "--", self, addr)
		if code := r.wait(t); code != supervise.ExitNotReady {
			t.Errorf("takeover exited %d, want %d (rolled back)", code, supervise.ExitNotReady)
		}
		if log := r.stderr.String(); !strings.Contains(log, "exit status 3") || !strings.Contains(log, `not yet: `+port) {
			t.Errorf("the log lacks the check's exit and output:\n%s", log)
		}
	})
}

// TestHealthCheckHangs: a health URL that never answers does not hold the
// swap: each request gives up after its own timeout, and the generation
// is rolled back at --ready-timeout, the log saying the check timed out.
func TestHealthCheckHangs(t *testing.T) {
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	t.Setenv("TAKEOVER_TEST_HEALTH", "hang")
	r := startTakeover(t, "healthserve", "--port", port, "--ready", "http://127.0.0.1:"+port+"/healthz",
		"--kill-timeout", "1s", "--bind-timeout", "2s", "--ready-timeout", "5s", "--", self, addr)
	if code := r.wait(t); code != supervise.ExitNotReady {
		t.Errorf("takeover exited %d, want %d (rolled back)", code, supervise.ExitNotReady)
	}
	if log := r.stderr.String(); !strings.Contains(log, "no answer within 2s") || !strings.Contains(log, "has not passed its health check") {
		t.Errorf("the log does not say the check timed out:\n%s", log)
	}
}

// TestReadyBadInput: a health check that would leave the host, or not
// reach a --port, or is not plain http, is refused at start.
func TestReadyBadInput(t *testing.T) {
	for _, c := range []struct{ ready, want string }{
		{"http://10.9.8.7:8100/healthz", "sends its health checks nowhere off the host"},
		{"http://example.com:8100/", "not an IP address"},
		{"http://127.0.0.1:8101/", "not a TCP --port target"},
		{"https://127.0.0.1:8100/", "plain http only"},
		{"garbage", "want accept, listen, notify, interval or http://"},
	} {
		out, err := exec.Command(takeoverBin(t), "--port", "8100", "--ready", c.ready, "--", "true").CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("--ready %s: %v, %q; want a failure that says %q", c.ready, err, out, c.want)
		}
	}
}

// TestHealthGateUnfenced: with --fence off the two servers share one
// socket and the check reaches whichever accepts it; the swap still
// completes once a check passes, and the log says the check could not be
// steered.
func TestHealthGateUnfenced(t *testing.T) {
	b, _, _ := swapChecked(t, nil, "--fence", "off")
	if log := b.stderr.String(); !strings.Contains(log, "the handoff of the health check's port is not fenced") || !strings.Contains(log, "passed its health check") {
		t.Errorf("B's log does not say the check was unfenced and passed:\n%s", log)
	}
}
