package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
)

// Targets besides TCP ports: unix stream sockets (--path) and UDP ports
// (--port udp:...), taken over by interception or passed (--sockets).
// Each test runs servers under takeover, swaps them under load, and counts
// what the clients saw: a connect to the path that fails (ENOENT,
// ECONNREFUSED), a request not answered, a datagram never echoed.

// unixServers are servers users run on a unix socket. Both unlink the path
// before their bind (a stale file would fail it) and on their way out:
// gunicorn, and a python server that does it by hand.
func unixServers() []realServer {
	wd, _ := os.Getwd()
	return []realServer{
		{
			name: "gunicorn", need: []string{"gunicorn"}, signal: "TERM", proto: "http", drains: true,
			argv: func(t *testing.T, path, dir string) []string {
				return []string{"gunicorn", "--chdir", filepath.Join(wd, "testdata", "real"), "--workers", "2", "--bind", "unix:" + path, "wsgi_app:app"}
			},
		},
		{
			name: "python", need: []string{"python3"}, signal: "TERM", proto: "http", drains: true,
			argv: func(t *testing.T, path, dir string) []string {
				return []string{"python3", filepath.Join(wd, "testdata", "unix_server.py"), path}
			},
		},
	}
}

// targetSwapCount is how many new takeovers replace the server in
// targetSwaps, before one HUP reload.
const targetSwapCount = 3

// A targetLoad is a load of proto (http or udp) against addr.
type targetLoad struct{ proto, addr string }

// targetSwaps starts h's server under takeover and, under loads (the first
// paces the swaps), replaces it by targetSwapCount new takeovers, each
// handed the sockets by the one before, then reloads the last by HUP.
// check, if set, looks at the target after the start and after each swap,
// once the server answers. It stops the last takeover and returns what
// each load saw.
func targetSwaps(h *realHarness, check func(what string), loads ...targetLoad) []*load.Result {
	t := h.t
	t.Helper()
	if h.bound == 0 {
		h.bound = 20 * time.Second
	}
	if check == nil {
		check = func(string) {}
	}
	h.cur = h.start()
	h.awaitSwapLine(h.cur, 1)
	h.awaitAnswer("the first start")
	check("the first start")
	h.load = startRealLoad(t, loads[0].proto, loads[0].addr)
	var others []*realLoad
	for _, l := range loads[1:] {
		others = append(others, startRealLoad(t, l.proto, l.addr))
	}
	h.awaitRequests("the first start")
	for i := 1; i <= targetSwapCount; i++ {
		what := fmt.Sprintf("new takeover %d", i)
		h.replace(what)
		if !strings.Contains(h.cur.stderr.String(), "via=unix-socket") {
			t.Errorf("%s: the sockets were not handed over between takeovers:\n%s", what, logsOf(h.cur))
		}
		check(what)
	}
	h.reload("a HUP reload")
	if !strings.Contains(h.cur.stderr.String(), "via=own-copy") {
		t.Errorf("the HUP reload did not hand the sockets over:\n%s", logsOf(h.cur))
	}
	check("a HUP reload")
	results := []*load.Result{h.load.stop(t)}
	for _, l := range others {
		results = append(results, l.stop(t))
	}
	h.stop()
	return results
}

// checkPathServed checks that path names a listening unix socket held by
// r's takeover and its server alone: no other generation's.
func checkPathServed(t *testing.T, path string, r *tkRun) {
	t.Helper()
	spec, err := target.ParsePath(path)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := owner.Listeners("/proc", spec, nil, false)
	if err != nil || len(ls) != 1 {
		t.Errorf("%s names %d listening sockets (%v), want 1", path, len(ls), err)
		return
	}
	ours := map[int]bool{r.cmd.Process.Pid: true}
	for _, p := range treeOf(r.cmd.Process.Pid) {
		ours[p.PID] = true
	}
	server := false
	for _, hd := range ls[0].Holders {
		if !ours[hd.PID] {
			t.Errorf("the socket at %s is held by pid %d (%s), which is neither takeover %d nor its server", path, hd.PID, owner.CommandLine(hd.PID), r.cmd.Process.Pid)
		}
		server = server || hd.PID != r.cmd.Process.Pid
	}
	if !server {
		t.Errorf("no process of takeover %d's server holds the socket at %s", r.cmd.Process.Pid, path)
	}
}

// checkPathGone checks that nothing is left at path.
func checkPathGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after the last stop %s is still there (%v)", path, err)
	}
}

// countFailures says how many requests failed, and how.
func countFailures(r *load.Result) string {
	return fmt.Sprintf("%d of %d failed (%d refused, %d reset, %d timeouts, %d other)",
		r.FailedRequests(), r.Requests, r.Refused, r.Resets, r.Timeouts, r.Failed)
}

// TestUnixServersSwappedUnderLoad: a server on a unix socket, under a loop
// of requests that each connect to the path anew, is replaced by 3 new
// takeovers and reloaded once by HUP: no connect fails (ENOENT,
// ECONNREFUSED) and no request; after each swap the path names the
// listener of the serving generation alone; after the last stop the path
// is gone and nothing is left running.
func TestUnixServersSwappedUnderLoad(t *testing.T) {
	takeoverBin(t)
	for _, srv := range unixServers() {
		t.Run(srv.name, func(t *testing.T) {
			srv.skipUnlessInstalled(t)
			procs := trackProcesses(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "app.sock")
			h := &realHarness{t: t, srv: srv, addr: path}
			h.argv = srv.argv(t, path, dir)
			r := targetSwaps(h, func(string) { checkPathServed(t, path, h.cur) }, targetLoad{"http", path})[0]
			checkPathGone(t, path)
			procs.checkNoneLeft(t, 20*time.Second)
			t.Logf("%s on %s: %d new takeovers and a HUP reload: %s", srv.name, path, targetSwapCount, countFailures(r))
			h.logFailures(r)
			if r.OK == 0 || r.FailedRequests() > 0 {
				t.Errorf("%s", countFailures(r))
			}
		})
	}
}

// TestNginxToUnixServerAcrossSwaps: nginx proxies a loopback port to a
// server on a unix socket (proxy_pass http://unix:PATH:, a new connection
// to the path for each request); under HTTP load through nginx the server
// behind it is replaced by 3 new takeovers and reloaded by HUP: no request
// fails (nginx answers 502 to any connect to the path that fails).
func TestNginxToUnixServerAcrossSwaps(t *testing.T) {
	(realServer{name: "nginx", need: []string{"nginx"}}).skipUnlessInstalled(t)
	takeoverBin(t)
	wd, _ := os.Getwd()
	for _, srv := range unixServers() {
		t.Run(srv.name, func(t *testing.T) {
			srv.skipUnlessInstalled(t)
			procs := trackProcesses(t)
			dir := t.TempDir()
			path := filepath.Join(dir, "app.sock") // where nginx-unix.conf proxies to
			port := testutil.FreePort(t)
			conf := filepath.Join(dir, "nginx.conf")
			fillTemplate(t, filepath.Join(wd, "testdata", "real", "nginx-unix.conf"), conf, port, dir)
			global := "daemon off;"
			if os.Geteuid() == 0 {
				global += " user root;" // its workers connect to a socket in root's private directory
			}
			nginx := startNginx(t, exec.Command("nginx", "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", global), "127.0.0.1:"+port)

			h := &realHarness{t: t, srv: srv, addr: path}
			h.argv = srv.argv(t, path, dir)
			r := targetSwaps(h, nil, targetLoad{"http", "127.0.0.1:" + port})[0]
			nginx()
			procs.checkNoneLeft(t, 20*time.Second)
			t.Logf("through nginx to %s: %d new takeovers and a HUP reload: %s", srv.name, targetSwapCount, countFailures(r))
			h.logFailures(r)
			if r.OK == 0 || r.FailedRequests() > 0 {
				t.Errorf("%s", countFailures(r))
				if b, err := os.ReadFile(filepath.Join(dir, "error.log")); err == nil {
					t.Logf("nginx's error.log:\n%s", tail(string(b), 4000))
				}
			}
		})
	}
}

// startNginx starts nginx in the foreground and waits until it accepts on
// addr; the function it returns stops it gracefully (QUIT) and waits.
func startNginx(t *testing.T, cmd *exec.Cmd, addr string) (stop func()) {
	t.Helper()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop = func() {
		select {
		case <-exited:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(realKillTimeout):
			cmd.Process.Kill()
			<-exited
		}
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return stop
		}
		select {
		case <-exited:
			t.Fatalf("nginx exited before it accepted on %s", addr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not accept on %s: %v", addr, err)
		}
	}
}

// TestUDPEchoSwappedUnderLoad: a UDP echo server (python), under a loop of
// numbered datagrams, is replaced by 3 new takeovers and reloaded by HUP,
// each a handoff of the one socket: every datagram is echoed.
func TestUDPEchoSwappedUnderLoad(t *testing.T) {
	wd, _ := os.Getwd()
	srv := realServer{name: "python-udp", need: []string{"python3"}, signal: "TERM", proto: "udp", drains: true}
	srv.skipUnlessInstalled(t)
	takeoverBin(t)
	procs := trackProcesses(t)
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	h := &realHarness{t: t, srv: srv, addr: addr, argv: []string{"python3", filepath.Join(wd, "testdata", "udp_echo.py"), port}}
	r := targetSwaps(h, nil, targetLoad{"udp", addr})[0]
	procs.checkNoneLeft(t, 20*time.Second)
	t.Logf("UDP echo: %d new takeovers and a HUP reload: %d datagrams, %d echoed, %d lost", targetSwapCount, r.Requests, r.OK, r.FailedRequests())
	h.logFailures(r)
	if r.OK == 0 || r.FailedRequests() > 0 {
		t.Errorf("%d of %d datagrams lost or not echoed once (%s)", r.FailedRequests(), r.Requests, countFailures(r))
	}
}

// datagramTimeout is how long a client waits for a datagram's echo before
// it sends the next: generous, for a loaded 2-core machine. A datagram is
// never sent again: one whose echo never comes is lost.
const datagramTimeout = 2 * time.Second

// runDatagramLoad is load.Run for a UDP echo server: workers clients, each
// from its own socket sending numbered datagrams, each once the echo of the
// one before came or datagramTimeout passed, at most max in all. Echoes
// are counted by number, late ones too (read until datagramTimeout after
// the last send): a datagram never echoed is "lost", one echoed twice
// "failed".
func runDatagramLoad(ctx context.Context, addr string, workers int, max int64, done *atomic.Int64) *load.Result {
	var count atomic.Int64
	return load.RunWorkers(workers, func() *load.Result {
		r := &load.Result{}
		conn, err := net.Dial("udp", addr)
		if err != nil {
			r.Record(time.Now(), load.Classify(err), err.Error())
			return r
		}
		defer conn.Close()
		sent := make(map[uint64]time.Time)
		echoes := make(map[uint64]int)
		buf := make([]byte, 64)
		// await reads echoes until want's or until; it reports whether
		// want's came.
		await := func(want uint64, until time.Time) bool {
			conn.SetReadDeadline(until)
			for {
				n, err := conn.Read(buf)
				if errors.Is(err, syscall.ECONNREFUSED) {
					// An earlier datagram found no socket on the port.
					r.Record(time.Now(), "refused", err.Error())
					continue
				}
				if err != nil {
					return false
				}
				seq, err := strconv.ParseUint(string(buf[:n]), 10, 64)
				if t0, ok := sent[seq]; err != nil || !ok {
					r.Record(time.Now(), "failed", fmt.Sprintf("an echo of nothing sent: %.40q", buf[:n]))
				} else if echoes[seq]++; echoes[seq] == 1 {
					r.Record(t0, "", "")
				} else {
					r.Record(t0, "failed", fmt.Sprintf("datagram %d echoed %d times", seq, echoes[seq]))
				}
				if err == nil && seq == want {
					return true
				}
			}
		}
		for seq := uint64(1); ctx.Err() == nil && count.Add(1) <= max; seq++ {
			t0 := time.Now()
			if _, err := conn.Write([]byte(strconv.FormatUint(seq, 10))); err != nil {
				r.Record(t0, load.Classify(err), err.Error())
				continue
			}
			sent[seq] = t0
			await(seq, t0.Add(datagramTimeout))
			done.Add(1)
		}
		late := false
		for seq := range sent {
			late = late || echoes[seq] == 0
		}
		if late {
			await(0, time.Now().Add(datagramTimeout))
		}
		for seq, t0 := range sent {
			if echoes[seq] == 0 {
				r.Record(t0, "lost", fmt.Sprintf("datagram %d was never echoed", seq))
			}
		}
		return r
	})
}

// echoOnce sends one datagram to a UDP echo server and waits for its echo.
func echoOnce(addr string) (kind, detail string) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return load.Classify(err), err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(datagramTimeout))
	if _, err := conn.Write([]byte("probe")); err != nil {
		return load.Classify(err), err.Error()
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		return load.Classify(err), err.Error()
	}
	if string(buf[:n]) != "probe" {
		return "failed", fmt.Sprintf("echo %.40q", buf[:n])
	}
	return "", ""
}

// TestUnixRenameAndRollback: with --strategy rebind a unix path is not
// handed over: the new server's socket is bound beside the path and
// renamed over it (strategy=rename), under a loop of connects with none
// failed. A new generation that listens and never accepts is rolled back
// at --ready-timeout (exit 124), and the path names the old server's
// socket again, which answers.
func TestUnixRenameAndRollback(t *testing.T) {
	self, _ := os.Executable()
	takeoverBin(t)
	procs := trackProcesses(t)
	path := filepath.Join(t.TempDir(), "app.sock")
	h := &realHarness{t: t, srv: realServer{name: "go", signal: "TERM", proto: "http", drains: true}, addr: path, bound: 20 * time.Second,
		argv: []string{"env", "TAKEOVER_TEST_HELPER=serve", self, "unix:" + path}}
	h.cur = h.start()
	h.awaitSwapLine(h.cur, 1)
	h.awaitAnswer("the first start")
	h.load = startRealLoad(t, "http", path)
	h.awaitRequests("the first start")
	h.extra = []string{"--strategy", "rebind"}
	h.replace("a rename")
	if s := swapLineOf(h.cur); !strings.Contains(s, "strategy=rename") {
		t.Errorf("--strategy rebind on a unix path swapped by %q, want strategy=rename", s)
	}
	checkPathServed(t, path, h.cur)
	r := h.load.stop(t)
	t.Logf("a rename: %s", countFailures(r))
	h.logFailures(r)
	if r.OK == 0 || r.FailedRequests() > 0 {
		t.Errorf("%s", countFailures(r))
	}

	// The never-ready server's socket is renamed over the path at its
	// listen: connects made until the rollback wait in its accept queue,
	// and fail when it closes. They are counted, not failed on.
	var before, after syscall.Stat_t
	if err := syscall.Stat(path, &before); err != nil {
		t.Fatal(err)
	}
	h.load = startRealLoad(t, "http", path)
	h.awaitRequests("the rename")
	never := startTakeover(t, "listenonly", "--path", path, "--strategy", "rebind",
		"--kill-timeout", "1s", "--bind-timeout", "2s", "--ready-timeout", "3s", "--", self, path)
	if code := never.wait(t); code != 124 || !strings.Contains(never.stderr.String(), "rolling back") {
		t.Errorf("a generation never ready: takeover exited %d, want 124 and a rollback\n%s", code, logsOf(never))
	}
	if err := syscall.Stat(path, &after); err != nil || after.Ino != before.Ino || after.Dev != before.Dev {
		t.Errorf("after the rollback %s is inode %d (%v), want the old server's %d", path, after.Ino, err, before.Ino)
	}
	checkPathServed(t, path, h.cur)
	h.awaitAnswer("the rollback")
	h.awaitRequests("the rollback")
	r = h.load.stop(t)
	t.Logf("a rollback: %s", countFailures(r))
	h.stop()
	checkPathGone(t, path)
	procs.checkNoneLeft(t, 20*time.Second)
}

// checkSocketFile checks that path is a socket file with mode perm, owned
// by uid and gid.
func checkSocketFile(t *testing.T, path string, perm fs.FileMode, uid, gid uint32) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != perm || st.Uid != uid || st.Gid != gid {
		t.Errorf("%s is %v owned by %d:%d, want a socket %v owned by %d:%d", path, fi.Mode(), st.Uid, st.Gid, fs.ModeSocket|perm, uid, gid)
	}
}

// TestUnixSocketFileOwnerAndMode: the socket file takeover binds for the
// command has the owner and the mode the command's own bind would have
// given it: its umask (077 gives srwx------), whether bound at the path or
// beside it for a rename, and its filesystem ids (a command run as nobody
// gets a file nobody owns).
func TestUnixSocketFileOwnerAndMode(t *testing.T) {
	self, _ := os.Executable()
	takeoverBin(t)
	t.Run("umask", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "app.sock")
		umasked := func(mask string) []string {
			return []string{"sh", "-c", `umask ` + mask + ` && exec "$0" "$@"`, self, "unix:" + path}
		}
		first := startTakeover(t, "serve", append([]string{"--path", path, "--"}, umasked("077")...)...)
		first.waitLog(t, "strategy=fresh")
		checkSocketFile(t, path, 0o700, uint32(os.Getuid()), uint32(os.Getgid()))
		second := startTakeover(t, "serve", append([]string{"--path", path, "--strategy", "rebind", "--"}, umasked("027")...)...)
		second.waitLog(t, "strategy=rename")
		if code := first.wait(t); code != 0 {
			t.Fatalf("the replaced takeover exited %d\n%s", code, logsOf(first, second))
		}
		checkSocketFile(t, path, 0o750, uint32(os.Getuid()), uint32(os.Getgid()))
	})
	t.Run("nobody", func(t *testing.T) {
		testutil.RequireTool(t, "setpriv")
		if os.Geteuid() != 0 {
			t.Skip("needs root to run the command as nobody")
		}
		dir := testutil.OpenTempDir(t)
		if err := os.Chown(dir, 65534, 65534); err != nil { // nobody may bind there
			t.Fatal(err)
		}
		bin := testutil.CopyTestBinary(t, dir)
		path := filepath.Join(dir, "app.sock")
		r := startTakeover(t, "serve", "--path", path, "--",
			"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "sh", "-c", `umask 077 && exec "$0" "$@"`, bin, "unix:"+path)
		r.waitLog(t, "strategy=fresh")
		checkSocketFile(t, path, 0o700, 65534, 65534)
		waitAnswer(t, path)
	})
	t.Run("nobody without the right to the directory", func(t *testing.T) {
		testutil.RequireTool(t, "setpriv")
		if os.Geteuid() != 0 {
			t.Skip("needs root to run the command as nobody")
		}
		dir := testutil.OpenTempDir(t) // root's, 0755: nobody may not create a file there
		bin := testutil.CopyTestBinary(t, dir)
		path := filepath.Join(dir, "app.sock")
		r := startTakeover(t, "serve", "--path", path, "--",
			"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", bin, "unix:"+path)
		if code := r.wait(t); code == 0 {
			t.Errorf("the command's bind in a directory it may not write succeeded under takeover (exit 0)")
		}
		if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("takeover created %s for a command that may not: %v", path, err)
		}
		if !strings.Contains(r.stderr.String(), "permission denied") {
			t.Errorf("the log does not say the bind was denied:\n%s", r.stderr)
		}
	})
}

// waitAnswer waits, at most 10 s, for an HTTP answer at addr.
func waitAnswer(t *testing.T, addr string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if err = probeOnce("http", addr); err == nil {
			return
		}
	}
	t.Errorf("%s does not answer: %v", addr, err)
}

// TestForeignUnixServerReplaced: a python server on a unix socket, not
// started under takeover, which unlinks its path when it stops, is
// replaced by takeover --force under a loop of connects: takeover puts the
// path back (and says so), the swap completes, and at the end the path
// names the new server's socket. Connects that fail between the unlink
// and the path's return are counted, not failed on.
func TestForeignUnixServerReplaced(t *testing.T) {
	srv := unixServers()[1]
	srv.skipUnlessInstalled(t)
	takeoverBin(t)
	procs := trackProcesses(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "app.sock")
	argv := srv.argv(t, path, dir)
	plain := testutil.StartAndReadLine(t, exec.Command(argv[0], argv[1:]...))
	_, _, start, err := statOf(plain.Cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	h := &realHarness{t: t, srv: srv, addr: path, bound: 20 * time.Second, argv: argv, extra: []string{"--force"}}
	h.load = startRealLoad(t, "http", path)
	h.awaitRequests("the plain server's start")
	ev := swapEvent{what: "the takeover of the plain server", began: time.Now()}
	h.cur = h.start()
	h.awaitSwapLine(h.cur, 1)
	h.awaitGone("the plain server", []procKey{{plain.Cmd.Process.Pid, start}}, h.cur)
	h.cur.waitLog(t, "removed its unix socket's path on its way out; takeover put it back")
	ev.end = time.Now()
	h.events = append(h.events, ev)
	h.awaitRequests("the swap")
	r := h.load.stop(t)
	checkPathServed(t, path, h.cur)
	h.awaitAnswer("the swap")
	var first, last time.Time
	for _, f := range r.Failures {
		if first.IsZero() || f.At.Before(first) {
			first = f.At
		}
		if f.At.After(last) {
			last = f.At
		}
	}
	t.Logf("a foreign server replaced: %s, within %v", countFailures(r), last.Sub(first))
	h.logFailures(r)
	if r.OK == 0 {
		t.Errorf("no request succeeded")
	}
	h.stop()
	checkPathGone(t, path)
	procs.checkNoneLeft(t, 20*time.Second)
}

// TestSocketPassingPathAndUDP: with --sockets systemd and server-starter,
// takeover binds a unix path and a UDP port itself and passes both
// (LISTEN_FDNAMES unix-BASE:udp-PORT; SERVER_STARTER_PORT PATH=3;ADDR=4),
// to a server that serves HTTP on the one and echoes on the other. A socket
// file a server left at the path does not keep the first from binding it.
// Under a loop of connects to the path and one of datagrams, 3 new
// takeovers and a HUP reload: no request fails and no datagram is lost,
// each generation sees exactly the variables it should, and the last
// takeover removes the file it bound.
func TestSocketPassingPathAndUDP(t *testing.T) {
	self, _ := os.Executable()
	takeoverBin(t)
	for _, mode := range []string{supervise.SocketsSystemd, supervise.SocketsServerStarter} {
		t.Run(mode, func(t *testing.T) {
			procs := trackProcesses(t)
			path := filepath.Join(t.TempDir(), "app.sock")
			port := testutil.FreePort(t)
			udp := "127.0.0.1:" + port
			stale, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			stale.(*net.UnixListener).SetUnlinkOnClose(false)
			stale.Close()
			h := &realHarness{t: t, srv: realServer{name: "passed", signal: "TERM", proto: "http", drains: true}, addr: path,
				argv:  []string{"env", "TAKEOVER_TEST_HELPER=passed", self},
				extra: []string{"--sockets", mode, "--port", "udp:" + udp}}
			check := func(what string) {
				want := "listening LISTEN_FDS=2 LISTEN_FDNAMES=unix-app.sock:udp-" + port
				if mode == supervise.SocketsServerStarter {
					want = fmt.Sprintf("listening SERVER_STARTER_PORT=%s=3;%s=4 SERVER_STARTER_GENERATION=%d", path, udp, swapLines(h.cur))
				}
				if got := h.cur.line(t); got != want {
					t.Errorf("after %s the command saw %q, want %q", what, got, want)
				}
			}
			rs := targetSwaps(h, check, targetLoad{"http", path}, targetLoad{"udp", udp})
			checkPathGone(t, path)
			procs.checkNoneLeft(t, 20*time.Second)
			t.Logf("%s: %d new takeovers and a HUP reload: requests %s; %d datagrams, %d lost",
				mode, targetSwapCount, countFailures(rs[0]), rs[1].Requests, rs[1].FailedRequests())
			for _, r := range rs {
				h.logFailures(r)
				if r.OK == 0 || r.FailedRequests() > 0 {
					t.Errorf("%s", countFailures(r))
				}
			}
		})
	}
}

// TestUnixPathOutlivesFailures: a server that unlinks its path when it
// fails, as servers do, never takes the path from its clients: not when it
// crashes (takeover restarts it on the socket it holds), not when the new
// generation of a reload fails after its bind (the old one keeps serving).
// Connects never find the path missing; the last stop removes it.
func TestUnixPathOutlivesFailures(t *testing.T) {
	testutil.RequireTool(t, "python3")
	wd, _ := os.Getwd()
	dir := t.TempDir()
	path, failFile := filepath.Join(dir, "app.sock"), filepath.Join(dir, "fail")
	r := startTakeover(t, "", "--path", path, "--", "python3", filepath.Join(wd, "testdata", "unix_server.py"), path, failFile)
	r.waitLog(t, "took over")
	clients := startRealLoad(t, "http", path)
	answers := func(what string) {
		t.Helper()
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("%s: the path is gone: %v\n%s", what, err, r.stderr)
		}
		waitAnswer(t, path)
	}

	syscall.Kill(lastNewPID(t, r), syscall.SIGUSR1) // it unlinks its path and exits 1
	r.waitLog(t, "msg=restarted")
	answers("after a crash")
	crash := clients.stop(t)
	// The crashed server cuts what it had accepted (a reset, or an empty
	// answer): at most one request per client. A connect must never find
	// the path missing or refused.
	var missing, inFlight []load.Failure
	for _, f := range crash.Failures {
		if f.Kind == "refused" || strings.Contains(f.Err, "no such file") {
			missing = append(missing, f)
		} else {
			inFlight = append(inFlight, f)
		}
	}
	if crash.Requests == 0 || len(missing) > 0 || len(inFlight) > 2 {
		t.Errorf("a crash: %d requests, %d found the path missing or refused, %d cut in flight (2 clients: at most 2): %v",
			crash.Requests, len(missing), len(inFlight), crash.Failures)
	}
	t.Logf("a crash: %d requests, %d refused, %d cut in flight in the crashed server", crash.Requests, crash.Refused, len(inFlight))

	clients = startRealLoad(t, "http", path)
	os.WriteFile(failFile, nil, 0o600)
	r.cmd.Process.Signal(syscall.SIGHUP)
	r.waitLog(t, "reload failed")
	os.Remove(failFile)
	answers("after a failed reload")
	res := clients.stop(t)
	if res.Requests == 0 || res.FailedRequests() != 0 {
		t.Errorf("a failed reload: %s: %v", countFailures(res), res.Failures)
	}
	t.Logf("a failed reload: %s", countFailures(res))
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t); code != 0 {
		t.Errorf("takeover exited %d after TERM:\n%s", code, r.stderr)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after the last stop the path is still there: %v", err)
	}
}
