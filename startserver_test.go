package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/starter"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// The start_server tests run each scenario under Debian's start_server
// (Server::Starter 0.35) and under takeover's, side by side, and compare
// what the workers saw and what the files held, with pids replaced by the
// generation of the worker that had them.

const realStartServer = "/usr/bin/start_server"

// runStarterWorker is the "ssworker" helper: a server that takes its
// sockets from SERVER_STARTER_PORT as Server::Starter's own test servers
// do, serves HTTP on each stream socket (TCP or unix) and echoes datagrams
// on each UDP one, and notes to $SSWORKER_LOG its start (cwd and the
// variables $SSWORKER_SHOW names), every signal it gets, and its exit. It
// fails at once with SSWORKER_FAIL=1 or when its generation is one of
// $SSWORKER_FAIL_GENS ("1,2"), listens on nothing when SERVER_STARTER_PORT
// is set and empty, and exits on TERM, INT and the signals in
// $SSWORKER_EXIT_ON.
func runStarterWorker() int {
	gen := os.Getenv("SERVER_STARTER_GENERATION")
	note := func(format string, a ...any) {
		f, err := os.OpenFile(os.Getenv("SSWORKER_LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return
		}
		fmt.Fprintf(f, "%d %d %s "+format+"\n", append([]any{time.Now().UnixMilli(), os.Getpid(), gen}, a...)...)
		f.Close()
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGTERM)
	wd, _ := os.Getwd()
	var shown []string
	for _, name := range strings.Split(os.Getenv("SSWORKER_SHOW"), ",") {
		if v, ok := os.LookupEnv(name); ok && name != "" {
			shown = append(shown, name+"="+strconv.Quote(v))
		} else if name != "" {
			shown = append(shown, name+"-unset")
		}
	}
	note("start cwd=%s %s", wd, strings.Join(shown, " "))
	fmt.Printf("ssworker w%s says hello on stdout\n", gen)
	if os.Getenv("SSWORKER_FAIL") == "1" || slices.Contains(strings.Split(os.Getenv("SSWORKER_FAIL_GENS"), ","), gen) {
		note("fail")
		return 1
	}
	var ports []starter.Socket
	if v, ok := os.LookupEnv("SERVER_STARTER_PORT"); !ok || v != "" {
		var err error
		if ports, err = starter.ParseEnv(v); err != nil {
			note("bad SERVER_STARTER_PORT=%q", v)
			return 1
		}
	}
	srv := newDrainingServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%d %s", os.Getpid(), gen)
	}))
	var echoes []*datagramEcho
	for _, p := range ports {
		f := os.NewFile(uintptr(p.FD), p.Addr)
		if typ, _ := unix.GetsockoptInt(p.FD, unix.SOL_SOCKET, unix.SO_TYPE); typ == unix.SOCK_DGRAM {
			pc, err := net.FilePacketConn(f)
			if err != nil {
				note("bad fd %d: %v", p.FD, err)
				return 1
			}
			echoes = append(echoes, startEcho(pc, fmt.Sprintf("%d %s ", os.Getpid(), gen)))
			continue
		}
		ln, err := net.FileListener(f)
		if err != nil {
			note("bad fd %d: %v", p.FD, err)
			return 1
		}
		srv.serve(ln)
	}
	exitOn := append(strings.Split(os.Getenv("SSWORKER_EXIT_ON"), ","), "TERM", "INT")
	for s := range sigs {
		name := strings.TrimPrefix(unix.SignalName(s.(syscall.Signal)), "SIG")
		note("signal %s", name)
		if slices.Contains(exitOn, name) {
			srv.drain()
			for _, e := range echoes {
				e.stop()
			}
			note("exit")
			return 0
		}
	}
	return 0
}

// A datagramEcho answers each datagram on a UDP socket with a prefix and
// the datagram.
type datagramEcho struct {
	pc   net.PacketConn
	done chan struct{}
}

func startEcho(pc net.PacketConn, prefix string) *datagramEcho {
	e := &datagramEcho{pc: pc, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte(prefix), buf[:n]...), from)
		}
	}()
	return e
}

// stop drains: it reads no more datagrams (those queued are the next
// generation's, on the socket they share), answers the one it has read,
// and closes its copy of the socket.
func (e *datagramEcho) stop() {
	e.pc.SetReadDeadline(time.Now())
	<-e.done
	e.pc.Close()
}

// An ssImpl is one start_server: Debian's, or takeover's run through a
// symlink named start_server.
type ssImpl struct {
	name string
	bin  string
}

func ssImpls(t *testing.T) []ssImpl {
	t.Helper()
	testutil.RequireTool(t, realStartServer) // Debian's, to compare with
	link := filepath.Join(t.TempDir(), "start_server")
	if err := os.Symlink(takeoverBin(t), link); err != nil {
		t.Fatal(err)
	}
	return []ssImpl{{"start_server", realStartServer}, {"takeover", link}}
}

// sideBySide runs scenario under both start_servers at once and compares
// the transcripts they return.
func sideBySide(t *testing.T, scenario func(t *testing.T, impl ssImpl) string) {
	impls := ssImpls(t)
	got := make([]string, len(impls))
	t.Run("both", func(t *testing.T) {
		for i, impl := range impls {
			t.Run(impl.name, func(t *testing.T) {
				t.Parallel()
				got[i] = scenario(t, impl)
			})
		}
	})
	if t.Failed() {
		return
	}
	if got[0] != got[1] {
		t.Errorf("the two differ:\n--- %s\n%s\n--- %s\n%s", impls[0].name, got[0], impls[1].name, got[1])
		return
	}
	t.Logf("both:\n%s", got[0])
}

// An ssRun is one start_server started by a test.
type ssRun struct {
	impl                              ssImpl
	dir, addr                         string
	status, pidFile, log, envdir, out string
	cmd                               *exec.Cmd
	output                            *syncBuffer
	exited                            chan struct{}
	err                               error
}

// startSS starts impl on a free loopback port with a status file, a pid
// file and an envdir, the ssworker helper as its server program, env added
// to its environment and args before the "--".
func startSS(t *testing.T, impl ssImpl, env []string, args ...string) *ssRun {
	t.Helper()
	return startSSOn(t, impl, "127.0.0.1:"+testutil.FreePort(t), env, args...)
}

// startSSOn is startSS with --port=addr; with addr "", no --port.
func startSSOn(t *testing.T, impl ssImpl, addr string, env []string, args ...string) *ssRun {
	t.Helper()
	dir := t.TempDir()
	r := &ssRun{impl: impl, dir: dir, addr: addr,
		status: filepath.Join(dir, "status"), pidFile: filepath.Join(dir, "pid"),
		log: filepath.Join(dir, "workers.log"), envdir: filepath.Join(dir, "env"),
		output: &syncBuffer{}, exited: make(chan struct{})}
	os.Mkdir(r.envdir, 0o755)
	self, _ := os.Executable()
	argv := []string{"--status-file=" + r.status, "--pid-file=" + r.pidFile, "--envdir=" + r.envdir}
	if addr != "" {
		argv = append([]string{"--port=" + addr}, argv...)
	}
	argv = append(argv, args...)
	if !slices.Contains(args, "--") {
		argv = append(argv, "--", self)
	}
	r.cmd = exec.Command(impl.bin, argv...)
	r.cmd.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER=ssworker", "SSWORKER_LOG="+r.log)
	r.cmd.Env = append(r.cmd.Env, env...)
	r.cmd.Stdout, r.cmd.Stderr = r.output, r.output
	r.cmd.WaitDelay = 2 * time.Second
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		r.err = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() { r.cleanup(t) })
	return r
}

// cleanup stops the start_server if it still runs, then kills any worker
// of it left behind: each checked to be this run's before it is signalled.
func (r *ssRun) cleanup(t *testing.T) {
	select {
	case <-r.exited:
	default:
		r.cmd.Process.Signal(syscall.SIGTERM) // our unreaped child: the pid is its own
		select {
		case <-r.exited:
		case <-time.After(15 * time.Second):
			r.cmd.Process.Kill()
			<-r.exited
		}
	}
	self, _ := os.Executable()
	for _, e := range r.events() {
		if e.what != "start" || testutil.ProcessGone(e.pid) {
			continue
		}
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", e.pid))
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", e.pid))
		if exe == self && strings.Contains(string(environ), "\x00SSWORKER_LOG="+r.log+"\x00") {
			t.Logf("killing worker %d left behind by %s", e.pid, r.impl.name)
			syscall.Kill(e.pid, syscall.SIGKILL)
		}
	}
}

func (r *ssRun) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	select {
	case <-r.exited:
		t.Fatalf("%s exited (%v) before %v:\n%s", r.impl.name, r.err, sig, r.output)
	default:
	}
	r.cmd.Process.Signal(sig)
}

// wait waits for the start_server to exit and returns its exit status.
func (r *ssRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit in 30s:\n%s", r.impl.name, r.output)
	}
	var ee *exec.ExitError
	if errors.As(r.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// until polls cond (a file, a log) every 10ms for at most 30s.
func (r *ssRun) until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			status, _ := os.ReadFile(r.status)
			workers, _ := os.ReadFile(r.log)
			t.Fatalf("%s: no %s after 30s\nstatus file: %q\nworkers:\n%s\noutput:\n%s", r.impl.name, what, status, workers, r.output)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A workerEvent is a line of the ssworker log.
type workerEvent struct {
	ms   int64
	pid  int
	gen  string
	what string // start, fail, signal, exit
	rest string
}

func (r *ssRun) events() []workerEvent {
	b, _ := os.ReadFile(r.log)
	var evs []workerEvent
	for line := range strings.Lines(string(b)) {
		f := strings.SplitN(strings.TrimSpace(line), " ", 5)
		if len(f) < 4 {
			continue
		}
		ms, _ := strconv.ParseInt(f[0], 10, 64)
		pid, _ := strconv.Atoi(f[1])
		e := workerEvent{ms: ms, pid: pid, gen: f[2], what: f[3]}
		if len(f) == 5 {
			e.rest = f[4]
		}
		evs = append(evs, e)
	}
	return evs
}

// worker names a pid by the generation of the worker that had it: "w2".
func (r *ssRun) worker(pid int) string {
	for _, e := range r.events() {
		if e.pid == pid && e.what == "start" {
			return "w" + e.gen
		}
	}
	return "?" + strconv.Itoa(pid)
}

// statusText is the status file with each pid named by its worker.
func (r *ssRun) statusText() string {
	b, err := os.ReadFile(r.status)
	if err != nil {
		return "(none)"
	}
	var out strings.Builder
	for line := range strings.Lines(string(b)) {
		gen, pid, ok := strings.Cut(strings.TrimSuffix(line, "\n"), ":")
		n, err := strconv.Atoi(pid)
		if !ok || err != nil {
			fmt.Fprintf(&out, "%q (not GEN:PID)\n", line)
			continue
		}
		fmt.Fprintf(&out, "%s:%s\n", gen, r.worker(n))
	}
	return out.String()
}

// statusGens returns the generations the status file lists.
func (r *ssRun) statusGens() []int {
	gens, _ := starter.ReadStatus(r.status)
	return gens
}

// servedBy asks the port which worker answers.
func (r *ssRun) servedBy(t *testing.T) string {
	t.Helper()
	body := testutil.WaitServing(t, r.addr)
	pid, _, _ := strings.Cut(body, " ")
	n, _ := strconv.Atoi(pid)
	return r.worker(n)
}

// signals lists the signals each worker got, in order.
func (r *ssRun) signals() string {
	var out []string
	seen := map[string][]string{}
	var order []string
	for _, e := range r.events() {
		w := "w" + e.gen
		if _, ok := seen[w]; !ok {
			order = append(order, w)
			seen[w] = nil
		}
		if e.what == "signal" {
			seen[w] = append(seen[w], e.rest)
		}
	}
	for _, w := range order {
		out = append(out, fmt.Sprintf("%s got %v", w, seen[w]))
	}
	return strings.Join(out, "; ")
}

func (r *ssRun) has(what, gen string) bool {
	for _, e := range r.events() {
		if e.what == what && (gen == "" || e.gen == gen) {
			return true
		}
	}
	return false
}

func (r *ssRun) waitOneGen(t *testing.T, after int) int {
	t.Helper()
	var gen int
	r.until(t, fmt.Sprintf("status file with one generation after %d", after), func() bool {
		gens := r.statusGens()
		if len(gens) == 1 && gens[0] > after {
			gen = gens[0]
			return true
		}
		return false
	})
	return gen
}

// TestStartServerStatusFileOverHUP: the status file before and after a HUP
// (once the old worker is gone), who serves, the exit status after TERM,
// and the status and pid files removed at exit.
func TestStartServerStatusFileOverHUP(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		r := startSS(t, impl, nil)
		first := r.waitOneGen(t, 0)
		before, servedBefore := r.statusText(), r.servedBy(t)
		r.signal(t, syscall.SIGHUP)
		r.waitOneGen(t, first)
		r.until(t, "old worker's exit", func() bool { return r.has("exit", "1") })
		after, servedAfter := r.statusText(), r.servedBy(t)
		r.signal(t, syscall.SIGTERM)
		code := r.wait(t)
		_, statusErr := os.Stat(r.status)
		_, pidErr := os.Stat(r.pidFile)
		return fmt.Sprintf("before HUP: %q served by %s\nafter HUP: %q served by %s\nsignals: %s\nexit status after TERM: %d\nstatus file left: %v, pid file left: %v",
			before, servedBefore, after, servedAfter, r.signals(), code, statusErr == nil, pidErr == nil)
	})
}

// TestStartServerSignals: --signal-on-hup goes to the old worker on HUP,
// nothing to the new one; --signal-on-term goes to the worker on TERM.
func TestStartServerSignals(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		r := startSS(t, impl, []string{"SSWORKER_EXIT_ON=USR1,USR2"}, "--signal-on-hup=USR1", "--signal-on-term=usr2")
		first := r.waitOneGen(t, 0)
		r.signal(t, syscall.SIGHUP)
		r.waitOneGen(t, first)
		r.until(t, "old worker's exit", func() bool { return r.has("exit", "1") })
		afterHUP := r.signals()
		r.signal(t, syscall.SIGTERM)
		code := r.wait(t)
		return fmt.Sprintf("after HUP: %s\nafter TERM: %s\nexit status: %d", afterHUP, r.signals(), code)
	})
}

// TestStartServerRetryFirstStart: the first two workers die at once;
// start_server starts another every --interval until one lives, the
// socket bound all along: connections made during the retries wait in its
// accept queue and are answered by the third worker. Each failure is
// logged once; the status file is written once a worker has lived
// --interval.
func TestStartServerRetryFirstStart(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		r := startSS(t, impl, []string{"SSWORKER_FAIL_GENS=1,2"})
		var answers []func() (int, error)
		for _, gen := range []string{"1", "2"} {
			r.until(t, "worker "+gen+"'s failure", func() bool { return r.has("fail", gen) })
			read, err := dialAsk("tcp", r.addr)
			if err != nil {
				t.Fatalf("%s: a connect during the retries failed: %v", impl.name, err)
			}
			answers = append(answers, read)
			if r.has("start", "3") {
				t.Fatalf("%s: worker 3 started before the connect after worker %s's failure: the scenario did not queue it", impl.name, gen)
			}
		}
		during := r.statusText()
		r.waitOneGen(t, 0)
		var answered []string
		for _, read := range answers {
			pid, err := read()
			if err != nil {
				t.Fatalf("%s: a connection queued during the retries got no answer: %v", impl.name, err)
			}
			answered = append(answered, r.worker(pid))
		}
		after, served := r.statusText(), r.servedBy(t)
		r.signal(t, syscall.SIGTERM)
		code := r.wait(t)
		_, statusErr := os.Stat(r.status)
		return fmt.Sprintf("workers started: %s\nstatus file during the retries: %s\nconnections made during the retries answered by: %v\nthen: status %q, served by %s\nexit status after TERM: %d, status file left: %v",
			r.starts(), during, answered, after, served, code, statusErr == nil)
	})
}

// TestStartServerRetryAfterHUP: after a HUP the next two workers die at
// once; start_server starts another every --interval until one lives, and
// the running worker serves meanwhile (no request fails) and is stopped
// once the new one has lived --interval. The HUP is takeover's --restart,
// against either server: it returns once only the new generation is left.
// (Debian's --restart waits for exactly the generation after the one
// listed, which failed here: it would wait for ever.)
func TestStartServerRetryAfterHUP(t *testing.T) {
	client := takeoverBin(t)
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		r := startSS(t, impl, []string{"SSWORKER_FAIL_GENS=2,3"})
		r.waitOneGen(t, 0)
		var during string
		restarted := make(chan ctlResult, 1)
		answered, failed, firstErr := r.askDuring(t, func() (int, error) { return askHTTP("tcp", r.addr) }, func() {
			go func() {
				restarted <- runCtl(client, "start-server", "--restart", "--pid-file="+r.pidFile, "--status-file="+r.status)
			}()
			r.until(t, "worker 2's failure", func() bool { return r.has("fail", "2") })
			during = r.statusText()
		})
		t.Logf("%s: %d requests failed during the retries (first: %v)", impl.name, failed, firstErr)
		res := <-restarted
		if res.err != nil {
			t.Fatalf("takeover's --restart against %s: %v\n%s", impl.name, res.err, res.out)
		}
		after := r.statusText()
		r.signal(t, syscall.SIGTERM)
		code := r.wait(t)
		return fmt.Sprintf("workers started: %s\nstatus file during the retries: %q\nanswered over the retries: %v, failed %d\ntakeover's --restart: exit %d, then status %q\nsignals: %s\nexit status after TERM: %d",
			r.starts(), during, answered, failed, res.code, after, r.signals(), code)
	})
}

// TestStartServerStopDuringRetries: a worker that never lives is started
// again every --interval, for ever; --stop (each start_server's own) during
// the retries stops start_server, which exits 0 and removes its pid file.
// takeover's stops at once: it starts no worker after the TERM (Debian's
// starts one more first), and it logged each failure once.
func TestStartServerStopDuringRetries(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		r := startSS(t, impl, []string{"SSWORKER_FAIL=1"})
		r.until(t, "two failed workers", func() bool { return r.has("fail", "2") })
		before := r.starts()
		res := runCtl(impl.bin, "--stop", "--pid-file="+r.pidFile)
		if res.err != nil {
			t.Fatalf("--stop: %v\n%s", res.err, res.out)
		}
		code := r.wait(t)
		t.Logf("%s: workers started before the TERM: %s; by the exit: %s", impl.name, before, r.starts())
		if impl.name == "takeover" {
			if after := r.starts(); after != before {
				t.Errorf("workers started before the TERM: %s; by the exit: %s", before, after)
			}
			if fails, said := len(r.eventsOf("fail")), strings.Count(r.output.String(), retryLogged); fails != said {
				t.Errorf("%d workers failed, %d failures logged:\n%s", fails, said, r.output)
			}
		}
		_, pidErr := os.Stat(r.pidFile)
		_, statusErr := os.Stat(r.status)
		return fmt.Sprintf("--stop during the retries: exit %d; start_server's exit status %d; pid file left: %v, status file left: %v",
			res.code, code, pidErr == nil, statusErr == nil)
	})
}

// retryLogged is in takeover's line for each failed start it retries.
const retryLogged = "as start_server does"

// TestStartServerMaxRestarts: takeover's --max-restarts=2 bounds the
// retries of a worker that never lives: it is started 3 times, then
// takeover's start_server gives up, closes the socket (a connect is
// refused) and exits with the worker's status.
func TestStartServerMaxRestarts(t *testing.T) {
	impl := ssImpls(t)[1]
	r := startSS(t, impl, []string{"SSWORKER_FAIL=1"}, "--max-restarts=2")
	if code := r.wait(t); code != 1 {
		t.Errorf("exit status %d, want the worker's 1:\n%s", code, r.output)
	}
	if got := r.starts(); got != "w1 w2 w3" {
		t.Errorf("workers started: %s, want w1 w2 w3", got)
	}
	if out := r.output.String(); strings.Count(out, retryLogged) != 2 || !strings.Contains(out, "giving up") {
		t.Errorf("want two retries logged and the giving up:\n%s", out)
	}
	if c, err := net.Dial("tcp", r.addr); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after start_server gave up", r.addr)
	}
}

// TestStartServerRetryTakesOver: a takeover start_server started on the
// --path of a running one, whose first worker dies before it has lived
// --interval, starts another; the old one serves the path meanwhile and
// is stopped once the new worker has lived --interval.
func TestStartServerRetryTakesOver(t *testing.T) {
	impl := ssImpls(t)[1]
	path := filepath.Join(t.TempDir(), "app.sock")
	old := startSS(t, impl, nil, "--path="+path)
	old.waitOneGen(t, 0)
	next := startSS(t, impl, []string{"SSWORKER_FAIL_GENS=1"}, "--path="+path)
	next.until(t, "the new first worker's failure", func() bool { return next.has("fail", "1") })
	if pid, err := askHTTP("unix", path); err != nil || old.worker(pid) != "w1" {
		t.Fatalf("during the retries the path is answered by pid %d (%v), not by the old start_server's worker", pid, err)
	}
	if code := old.wait(t); code != 0 {
		t.Fatalf("the old start_server exited %d:\n%s", code, old.output)
	}
	next.waitOneGen(t, 0)
	if pid, err := askHTTP("unix", path); err != nil || next.worker(pid) != "w2" {
		t.Fatalf("the path is answered by pid %d (%v), not by the new start_server's second worker:\n%s", pid, err, next.output)
	}
	if out := next.output.String(); !strings.Contains(out, "strategy=handoff") {
		t.Errorf("the new start_server did not take the socket over:\n%s", out)
	}
}

// TestStartServerNoPort: with no --port and no --path, start_server runs
// the worker with SERVER_STARTER_PORT set and empty, and supervises it as
// any other: generation numbers, the status file, HUP, --restart and
// --stop (each start_server's own).
func TestStartServerNoPort(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		r := startSSOn(t, impl, "", []string{"SSWORKER_SHOW=SERVER_STARTER_PORT,SERVER_STARTER_GENERATION"})
		first := r.waitOneGen(t, 0)
		status := []string{r.statusText()}
		r.signal(t, syscall.SIGHUP)
		second := r.waitOneGen(t, first)
		r.until(t, "old worker's exit", func() bool { return r.has("exit", strconv.Itoa(first)) })
		status = append(status, r.statusText())
		restart := runCtl(impl.bin, "--restart", "--pid-file="+r.pidFile, "--status-file="+r.status)
		status = append(status, r.statusText())
		r.until(t, "old worker's exit", func() bool { return r.has("exit", strconv.Itoa(second)) })
		stop := runCtl(impl.bin, "--stop", "--pid-file="+r.pidFile)
		code := r.wait(t)
		_, pidErr := os.Stat(r.pidFile)
		_, statusErr := os.Stat(r.status)
		var seen []string
		for _, e := range r.eventsOf("start") {
			_, vars, _ := strings.Cut(e.rest, " ")
			seen = append(seen, "w"+e.gen+" "+vars)
		}
		return fmt.Sprintf("workers: %s\nstatus: %q, after HUP %q, after --restart (exit %d) %q\n--stop: exit %d, start_server exit %d, pid file left: %v, status file left: %v\nsignals: %s",
			strings.Join(seen, "; "), status[0], status[1], restart.code, status[2], stop.code, code, pidErr == nil, statusErr == nil, r.signals())
	})
}

// starts names the workers started, in order: "w1 w2 w3".
func (r *ssRun) starts() string {
	var ws []string
	for _, e := range r.eventsOf("start") {
		ws = append(ws, "w"+e.gen)
	}
	return strings.Join(ws, " ")
}

func (r *ssRun) eventsOf(what string) []workerEvent {
	var out []workerEvent
	for _, e := range r.events() {
		if e.what == what {
			out = append(out, e)
		}
	}
	return out
}

// A ctlResult is how a start_server --restart or --stop ended.
type ctlResult struct {
	code int
	out  string
	err  error // it could not run, or did not return within 60s
}

// runCtl runs a start_server client (--restart, --stop) to its end.
func runCtl(bin string, args ...string) ctlResult {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return ctlResult{out: string(out), err: fmt.Errorf("%v did not return in 60s", args)}
	case errors.As(err, &ee):
		return ctlResult{code: ee.ExitCode(), out: string(out)}
	case err != nil:
		return ctlResult{out: string(out), err: err}
	}
	return ctlResult{out: string(out)}
}

// TestStartServerKillOldDelay: with --kill-old-delay=2 both generations are
// listed while the old one waits, and it is signalled 2 s or more after the
// new one started.
func TestStartServerKillOldDelay(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		r := startSS(t, impl, nil, "--kill-old-delay=2")
		first := r.waitOneGen(t, 0)
		r.signal(t, syscall.SIGHUP)
		r.until(t, "two generations in the status file", func() bool { return len(r.statusGens()) == 2 })
		both, oldSignalled := r.statusText(), r.has("signal", "1")
		r.waitOneGen(t, first)
		r.until(t, "old worker's exit", func() bool { return r.has("exit", "1") })
		var newStart, oldSignal int64
		for _, e := range r.events() {
			switch {
			case e.what == "start" && e.gen != "1":
				newStart = e.ms
			case e.what == "signal" && e.gen == "1" && oldSignal == 0:
				oldSignal = e.ms
			}
		}
		after := r.statusText()
		t.Logf("%s: old worker signalled %d ms after the new one started", impl.name, oldSignal-newStart)
		return fmt.Sprintf("while both run: %q (old signalled yet: %v)\nafter: %q\nold signalled >= 2s after the new one started: %v\nsignals: %s",
			both, oldSignalled, after, oldSignal-newStart >= 2000, r.signals())
	})
}

// TestStartServerEnvdir: the envdir is read again for each generation: a
// changed file is picked up on HUP, a removed one unsets its variable, an
// empty one sets nothing, a dot file is skipped, only the first line
// counts; and --dir is the workers' working directory, where a relative
// server program is found.
func TestStartServerEnvdir(t *testing.T) {
	self, _ := os.Executable()
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		work := t.TempDir()
		if err := os.Symlink(self, filepath.Join(work, "server")); err != nil {
			t.Fatal(err)
		}
		r := startSS(t, impl, []string{"SSWORKER_SHOW=GREETING,EMPTY,.HIDDEN,ENVDIR"}, "--dir="+work, "--", "./server")
		write := func(name, text string) {
			if err := os.WriteFile(filepath.Join(r.envdir, name), []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		gen := r.waitOneGen(t, 0) // started with the envdir empty
		write("GREETING", "hello\n")
		write("EMPTY", "")
		write(".HIDDEN", "x\n")
		// Each change is made once the new worker has started, while it has
		// yet to live --interval: start_server reads the envdir when it
		// reaps the old worker, and may handle the next HUP in that same
		// turn of its loop.
		started := func(gen int) {
			r.until(t, fmt.Sprintf("worker %d's start", gen), func() bool { return r.has("start", strconv.Itoa(gen)) })
		}
		r.signal(t, syscall.SIGHUP)
		started(gen + 1)
		write("GREETING", "bye\nsecond line\n")
		gen = r.waitOneGen(t, gen)
		r.signal(t, syscall.SIGHUP)
		started(gen + 1)
		os.Remove(filepath.Join(r.envdir, "GREETING"))
		gen = r.waitOneGen(t, gen)
		r.signal(t, syscall.SIGHUP)
		r.waitOneGen(t, gen)
		var starts []string
		for _, e := range r.events() {
			if e.what == "start" {
				starts = append(starts, "w"+e.gen+" "+strings.NewReplacer(work, "WORKDIR", r.envdir, "ENVDIR").Replace(e.rest))
			}
		}
		return strings.Join(starts, "\n")
	})
}

// TestStartServerCrashAndLogFile: a worker killed with SIGKILL is
// replaced, and no connection is refused meanwhile (start_server keeps the
// socket; so does takeover); --log-file gets the workers' output, as a file
// or through "| command".
func TestStartServerCrashAndLogFile(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		logs := t.TempDir()
		file, piped := filepath.Join(logs, "file.log"), filepath.Join(logs, "piped.log")
		var out []string
		for _, logFile := range []string{file, "| cat >> " + piped} {
			r := startSS(t, impl, nil, "--log-file="+logFile)
			first := r.waitOneGen(t, 0)
			var pid int
			for _, e := range r.events() {
				if e.what == "start" {
					pid = e.pid
				}
			}
			if r.worker(pid) != "w1" || testutil.ProcessGone(pid) {
				t.Fatalf("worker 1 is not pid %d", pid)
			}
			syscall.Kill(pid, syscall.SIGKILL) // checked above: our worker, still running
			refused, served := 0, 0
			// One read of the status file per look: it is rewritten meanwhile.
			deadline := time.Now().Add(60 * time.Second)
			for gens := r.statusGens(); len(gens) != 1 || gens[0] == first; gens = r.statusGens() {
				if time.Now().After(deadline) {
					t.Fatalf("no new generation in the status file 60s after the SIGKILL: %q", r.statusText())
				}
				c, err := net.DialTimeout("tcp", r.addr, 5*time.Second)
				if err != nil {
					refused++
				} else {
					served++
					c.Close()
				}
				time.Sleep(5 * time.Millisecond)
			}
			status := r.statusText()
			r.signal(t, syscall.SIGTERM)
			code := r.wait(t)
			out = append(out, fmt.Sprintf("after SIGKILL: status %q, refused %d, exit status %d, output on stderr: %v", status, refused, code, r.output.String() != ""))
		}
		for _, name := range []string{file, piped} {
			b, _ := os.ReadFile(name)
			out = append(out, fmt.Sprintf("%s has w1's hello: %v, w2's: %v", filepath.Base(name),
				strings.Contains(string(b), "w1 says hello"), strings.Contains(string(b), "w2 says hello")))
		}
		return strings.Join(out, "\n")
	})
}

// TestStartServerRestartStop: start_server --restart and --stop, Debian's
// and takeover's, each against a running Debian start_server and a running
// takeover one (through --pid-file and --status-file): --restart returns
// once only the new generation is left, --stop once the server has exited.
func TestStartServerRestartStop(t *testing.T) {
	impls := ssImpls(t)
	var mu sync.Mutex
	got := map[string]string{}
	t.Run("all", func(t *testing.T) {
		for _, daemon := range impls {
			for _, client := range impls {
				name := "server=" + daemon.name + ",client=" + client.name
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					r := startSS(t, daemon, nil)
					r.waitOneGen(t, 0)
					ctl := func(args ...string) int {
						res := runCtl(client.bin, args...)
						if res.err != nil {
							t.Fatalf("%v\n%s", res.err, res.out)
						}
						if res.code != 0 {
							t.Logf("%v: exit %d:\n%s", args, res.code, res.out)
						}
						return res.code
					}
					code := ctl("--restart", "--pid-file="+r.pidFile, "--status-file="+r.status)
					status := r.statusText() // at once: --restart returns once it reads so
					served := r.servedBy(t)
					stopCode := ctl("--stop", "--pid-file="+r.pidFile)
					// The lock goes with the pid file's close, a moment before
					// the server's exit.
					select {
					case <-r.exited:
					case <-time.After(5 * time.Second):
						t.Errorf("the server still runs 5s after --stop returned")
					}
					exit := r.wait(t)
					_, pidErr := os.Stat(r.pidFile)
					mu.Lock()
					defer mu.Unlock()
					got[name] = fmt.Sprintf("--restart: exit %d, then status %q, served by %s\n--stop: exit %d, server exited %d, pid file left: %v, signals: %s",
						code, status, served, stopCode, exit, pidErr == nil, r.signals())
				})
			}
		}
	})
	var want string
	for name, g := range got {
		if want == "" {
			want = g
			t.Logf("%s:\n%s", name, g)
		} else if g != want {
			t.Errorf("%s differs:\n%s\nwant (as another pair):\n%s", name, g, want)
		}
	}
}

// TestStartServerUnixPath: --path, after the --port: SERVER_STARTER_PORT
// names it as given, after the port; a stale socket file there is removed
// with start_server's warning; the new one is srwxrwxrwx; a worker serves
// on it and no connect to it fails while a HUP swaps the workers
// (asserted for takeover's); the file is gone once start_server has
// exited.
func TestStartServerUnixPath(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		path := filepath.Join(t.TempDir(), "app.sock")
		stale, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = unix.Bind(stale, &unix.SockaddrUnix{Name: path}) // bound, never listened on: a stale file
		unix.Close(stale)
		if err != nil {
			t.Fatal(err)
		}
		r := startSS(t, impl, []string{"SSWORKER_SHOW=SERVER_STARTER_PORT"}, "--path="+path)
		r.waitOneGen(t, 0)
		st, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		answered, failed, firstErr := r.askDuringHUP(t, func() (int, error) { return askHTTP("unix", path) })
		t.Logf("%s: %d requests to %s failed during the HUP swap (first: %v)", impl.name, failed, path, firstErr)
		if impl.name == "takeover" && failed > 0 {
			t.Errorf("%d requests to %s failed during the HUP swap; the first: %v", failed, path, firstErr)
		}
		r.signal(t, syscall.SIGTERM)
		code := r.wait(t)
		_, err = os.Lstat(path)
		return fmt.Sprintf("SERVER_STARTER_PORT=%s\nstale socket file removed with a warning: %v\nsocket file: %v\nanswered on the path over the HUP: %v\nexit status after TERM: %d, socket file left: %v",
			r.starterEnv(map[string]string{r.addr: "ADDR", path: "PATH"}), strings.Contains(r.output.String(), "removing existing socket file:"+path),
			st.Mode(), answered, code, !errors.Is(err, os.ErrNotExist))
	})
}

// TestStartServerPathTakenOver: a takeover start_server started on the
// --path of a running one takes its socket over (Server::Starter's would
// remove the file and bind a new one, cutting the old server off): the old
// one exits 0 and leaves the file, which the new one's worker answers on,
// and removes at its own exit.
func TestStartServerPathTakenOver(t *testing.T) {
	impl := ssImpls(t)[1]
	path := filepath.Join(t.TempDir(), "app.sock")
	old := startSS(t, impl, nil, "--path="+path)
	old.waitOneGen(t, 0)
	next := startSS(t, impl, nil, "--path="+path)
	if code := old.wait(t); code != 0 {
		t.Fatalf("the old start_server exited %d:\n%s", code, old.output)
	}
	next.waitOneGen(t, 0)
	pid, err := askHTTP("unix", path)
	if err != nil || next.worker(pid) != "w1" {
		t.Fatalf("the path is answered by pid %d (%v), not by the new start_server's worker:\n%s", pid, err, next.output)
	}
	if out := next.output.String(); !strings.Contains(out, "strategy=handoff") || strings.Contains(out, "removing existing socket file") {
		t.Errorf("the new start_server did not take the socket over:\n%s", out)
	}
	next.signal(t, syscall.SIGTERM)
	next.wait(t)
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket file is left after the last start_server exited: %v", err)
	}
}

// TestStartServerUDP: --port HOST:uPORT binds a UDP port, named without
// its u in SERVER_STARTER_PORT; a worker echoes datagrams on it and none
// is lost while a HUP swaps the workers (asserted for takeover's).
func TestStartServerUDP(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		udpAddr := pc.LocalAddr().String()
		pc.Close()
		host, port, _ := net.SplitHostPort(udpAddr)
		r := startSS(t, impl, []string{"SSWORKER_SHOW=SERVER_STARTER_PORT"}, "--port="+host+":u"+port)
		r.waitOneGen(t, 0)
		c, err := net.Dial("udp", udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		seq := 0
		answered, lost, firstErr := r.askDuringHUP(t, func() (int, error) {
			seq++
			return askDatagram(c, seq)
		})
		t.Logf("%s: %d datagrams to %s lost during the HUP swap (first: %v)", impl.name, lost, udpAddr, firstErr)
		if impl.name == "takeover" && lost > 0 {
			t.Errorf("%d datagrams to %s lost during the HUP swap; the first: %v", lost, udpAddr, firstErr)
		}
		r.signal(t, syscall.SIGTERM)
		code := r.wait(t)
		return fmt.Sprintf("SERVER_STARTER_PORT=%s\nanswered over the HUP: %v\nexit status after TERM: %d",
			r.starterEnv(map[string]string{r.addr: "ADDR", udpAddr: "UDPADDR"}), answered, code)
	})
}

// TestStartServerDaemonize: with --daemonize the process started exits 0
// at once; the daemon, another process in a new session with stdin from
// /dev/null, writes and locks the pid file, serves, logs to --log-file,
// and --stop stops it.
func TestStartServerDaemonize(t *testing.T) {
	sideBySide(t, func(t *testing.T, impl ssImpl) string {
		logFile := filepath.Join(t.TempDir(), "start_server.log")
		r := startSS(t, impl, nil, "--daemonize", "--log-file="+logFile)
		code := r.wait(t)
		said := regexp.MustCompile(`pid:\d+`).ReplaceAllString(r.output.String(), "pid:N")
		var pid int
		r.until(t, "the daemon's pid in the pid file", func() bool {
			b, _ := os.ReadFile(r.pidFile)
			pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
			return pid > 0
		})
		t.Cleanup(func() { r.stopDaemon(t, pid) })
		sid, err := unix.Getsid(pid)
		mine, _ := unix.Getsid(0)
		stdin, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/0", pid))
		daemon := fmt.Sprintf("not the first process: %v, in a new session: %v, stdin %s, holds the pid file's lock: %v",
			pid != r.cmd.Process.Pid, err == nil && sid != mine, stdin, checkRunning(r.pidFile, pid) == nil)
		r.waitOneGen(t, 0)
		served := r.servedBy(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, impl.bin, "--stop", "--pid-file="+r.pidFile).CombinedOutput()
		if err != nil {
			t.Fatalf("--stop: %v\n%s", err, out)
		}
		r.until(t, "the daemon's exit", func() bool { return testutil.ProcessGone(pid) })
		b, _ := os.ReadFile(logFile)
		_, pidErr := os.Stat(r.pidFile)
		_, statusErr := os.Stat(r.status)
		return fmt.Sprintf("first process: exit %d, said %q\ndaemon: %s\nserved by %s; the log has w1's hello: %v\n--stop: exit 0, daemon gone; pid file left: %v, status file left: %v",
			code, said, daemon, served, strings.Contains(string(b), "w1 says hello"), pidErr == nil, statusErr == nil)
	})
}

// stopDaemon stops a daemonized start_server left running, once it is
// checked to be this run's (its environment names the run's worker log).
func (r *ssRun) stopDaemon(t *testing.T, pid int) {
	isOurs := func() bool {
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		return !testutil.ProcessGone(pid) && strings.Contains(string(environ), "\x00SSWORKER_LOG="+r.log+"\x00")
	}
	if !isOurs() {
		return
	}
	t.Logf("stopping the daemon %d left running by %s", pid, r.impl.name)
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(15 * time.Second); isOurs(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			return
		}
	}
}

// askDuringHUP asks r's workers with ask, one request at a time, while r
// is HUPed: from an answer of the first worker until the old worker has
// exited and the new one has answered (at most 20000 requests). It returns
// the workers that answered, in order, how many requests failed, and the
// first failure.
func (r *ssRun) askDuringHUP(t *testing.T, ask func() (pid int, err error)) (answered []string, failed int, firstErr error) {
	t.Helper()
	return r.askDuring(t, ask, func() { r.signal(t, syscall.SIGHUP) })
}

// askDuring is askDuringHUP with reload in place of the HUP: what starts
// a new generation (and whatever is to be seen while it starts).
func (r *ssRun) askDuring(t *testing.T, ask func() (pid int, err error), reload func()) (answered []string, failed int, firstErr error) {
	t.Helper()
	first := r.statusGens()
	if len(first) != 1 {
		t.Fatalf("%s: status file lists %v, want one generation", r.impl.name, first)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 20000 {
			if ctx.Err() != nil {
				return
			}
			pid, err := ask()
			mu.Lock()
			if err != nil {
				failed++
				if firstErr == nil {
					firstErr = err
				}
			} else if w := r.worker(pid); !slices.Contains(answered, w) {
				answered = append(answered, w)
			}
			mu.Unlock()
		}
	}()
	seen := func(n int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(answered) >= n
		}
	}
	r.until(t, "an answer", seen(1))
	reload()
	r.waitOneGen(t, first[0])
	r.until(t, "old worker's exit", func() bool { return r.has("exit", strconv.Itoa(first[0])) })
	r.until(t, "an answer from the new worker", seen(2))
	cancel()
	<-done
	return answered, failed, firstErr
}

// askHTTP makes one HTTP request to addr (a network's address, a unix
// socket's path) and returns the pid that answered.
func askHTTP(network, addr string) (int, error) {
	read, err := dialAsk(network, addr)
	if err != nil {
		return 0, err
	}
	return read()
}

// dialAsk connects to addr and sends an HTTP request at once; read reads
// the answer, later if need be, and returns the pid that answered.
func dialAsk(network, addr string) (read func() (int, error), err error) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	return func() (int, error) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("%s: %q, %v", resp.Status, b, err)
		}
		pid, _, _ := strings.Cut(string(b), " ")
		return strconv.Atoi(pid)
	}, nil
}

// askDatagram sends datagram seq over c and returns the pid that echoed
// it; one not echoed within 2s is lost.
func askDatagram(c net.Conn, seq int) (int, error) {
	want := fmt.Sprintf(" seq %d", seq)
	if _, err := c.Write([]byte(want[1:])); err != nil {
		return 0, err
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 1500)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return 0, fmt.Errorf("datagram%s: %w", want, err)
		}
		if reply := string(buf[:n]); strings.HasSuffix(reply, want) { // "PID GEN seq N"; an older reply is skipped
			pid, _, _ := strings.Cut(reply, " ")
			return strconv.Atoi(pid)
		}
	}
}

// starterEnv is the SERVER_STARTER_PORT r's first worker saw, with each
// of names replaced by its stand-in and fd numbers by FD: start_server's
// sockets start at fd 4 (its fd 3 is taken), takeover's at 3.
func (r *ssRun) starterEnv(names map[string]string) string {
	var v string
	for _, e := range r.events() {
		if _, q, ok := strings.Cut(e.rest, "SERVER_STARTER_PORT="); e.what == "start" && ok {
			quoted, _ := strconv.QuotedPrefix(q)
			v, _ = strconv.Unquote(quoted)
			break
		}
	}
	var pairs []string
	for _, k := range slices.SortedFunc(maps.Keys(names), func(a, b string) int { return len(b) - len(a) }) {
		pairs = append(pairs, k, names[k])
	}
	v = strings.NewReplacer(pairs...).Replace(v)
	return regexp.MustCompile(`=\d+(;|$)`).ReplaceAllString(v, "=FD$1")
}

// TestStartServerRefuses: bad input is refused with exit status 2 and a
// line that says what is wrong, before anything is bound. A file at a --path
// that is not a socket is refused (exit status 1), where start_server
// would remove it.
func TestStartServerRefuses(t *testing.T) {
	bin := takeoverBin(t)
	notSocket := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notSocket, []byte("keep me\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	long := "/tmp/" + strings.Repeat("x", 110) + ".sock"
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--port=8000"}, exitUsage, "server program not specified"},
		{[]string{"--port=8000", "--max-restarts=0", "--", "true"}, exitUsage, "--max-restarts=0: want 1 to 1000"},
		{[]string{"--port=8000=4", "--port=8001=4", "--", "true"}, exitUsage, "both ask for fd 4"},
		{[]string{"--port=8000", "--signal-on-hup=NOPE", "--", "true"}, exitUsage, "--signal-on-hup"},
		{[]string{"--port=[::1]8000", "--", "true"}, exitUsage, "want PORT, HOST:PORT"},
		{[]string{"--port=127.0.0.1:8000", "--port=127.0.0.1:8000", "--", "true"}, exitUsage, "named twice"},
		{[]string{"--port=u70000", "--", "true"}, exitUsage, `--port u70000: port "70000" is not a number from 1 to 65535`},
		{[]string{"--port=127.0.0.1:u0", "--", "true"}, exitUsage, "port 0 means any free port"},
		{[]string{"--port=127.0.0.1:uu53", "--", "true"}, exitUsage, "want PORT, HOST:PORT"},
		{[]string{"--path=", "--", "true"}, exitUsage, "empty --path"},
		{[]string{"--path=" + long, "--", "true"}, exitUsage, "longer than a unix socket's path may be"},
		{[]string{"--path=/tmp/x.sock", "--path=/tmp/../tmp/x.sock", "--", "true"}, exitUsage, "--path /tmp/../tmp/x.sock: named twice"},
		{[]string{"--port=8000", "--daemonize", "--", "true"}, exitUsage, "--log-file option must be specified together with --daemonize"},
		{[]string{"--path=" + notSocket, "--", "true"}, exitFailure, "is there and is not a socket"},
	} {
		cmd := exec.Command(bin, append([]string{"start-server"}, tt.args...)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tt.code || !strings.Contains(string(out), tt.want) {
			t.Errorf("start_server %q: %v, %q; want exit status %d and %q", tt.args, err, out, tt.code, tt.want)
		}
	}
	if b, err := os.ReadFile(notSocket); err != nil || string(b) != "keep me\n" {
		t.Errorf("the file at --path was changed: %q, %v", b, err)
	}
	out, err := exec.Command(bin, "start-server", "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), starter.Version+" ") {
		t.Errorf("--version: %q, %v", out, err)
	}
}

// TestStartServerPortArgs: start_server's --port forms, and the fds they
// are passed at.
// TestStartServerStalePIDFile: --stop and --restart signal only a
// start_server that holds its pid file's lock; a stale file's pid, here a
// process of the test's that is no start_server, is left alone.
func TestStartServerStalePIDFile(t *testing.T) {
	bin := takeoverBin(t)
	dir := t.TempDir()
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	pidFile, statusFile := filepath.Join(dir, "pid"), filepath.Join(dir, "status")
	os.WriteFile(pidFile, []byte(strconv.Itoa(sleeper.Process.Pid)+"\n"), 0o644)
	os.WriteFile(statusFile, []byte("1:"+strconv.Itoa(sleeper.Process.Pid)+"\n"), 0o644)
	for _, flag := range []string{"--stop", "--restart"} {
		out, err := exec.Command(bin, "start-server", flag, "--pid-file="+pidFile, "--status-file="+statusFile).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "nothing holds its lock") {
			t.Errorf("%s against a stale pid file: %v, %q; want a refusal", flag, err, out)
		}
	}
	if testutil.ProcessGone(sleeper.Process.Pid) {
		t.Fatal("the stale pid file's process was signalled")
	}
}

// TestStartServerForeignHolder: a port held by a server that is neither
// under takeover nor the same program is refused, nothing is signalled, and
// the message says what to do without naming a flag start_server lacks.
func TestStartServerForeignHolder(t *testing.T) {
	h := testutil.StartHelper(t, "serve", "127.0.0.1:0")
	out, err := exec.Command(takeoverBin(t), "start-server", "--port="+h.Addr, "--", "true").CombinedOutput()
	if err == nil {
		t.Fatalf("start_server on a port a foreign server holds succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "stop it first (start_server has no --force)") || strings.Contains(string(out), "pass --force") {
		t.Errorf("the refusal does not say what to do in start_server's terms:\n%s", out)
	}
	if _, err := testutil.Get(h.Addr, "/"); err != nil {
		t.Errorf("the foreign server no longer serves: %v", err)
	}
}
