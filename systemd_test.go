package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/socktab"
	"github.com/takeover/takeover/internal/testutil"
)

// The units of contrib/systemd, run as written under a real systemd 252
// (systemd_harness_test.go), loaded from the host by 2 HTTP clients, with
// a server that takes a second to start (takeover demo-server --init-delay).

// sdStartDelay is how long the test's server takes to initialize.
const sdStartDelay = "1s"

// sdInstall puts what the units run in the box: takeover at
// /usr/local/bin/takeover (where contrib's units expect it), the test binary
// at /share/test-helper, and contrib/systemd's units in
// /etc/systemd/system, with the harness's defaults as a drop-in.
func sdInstall(t testing.TB, b *sdBox) {
	t.Helper()
	copyFile(t, takeoverBin(t), filepath.Join(b.Share(), "takeover"))
	self, _ := os.Executable()
	copyFile(t, self, filepath.Join(b.Share(), "test-helper"))
	if out, err := b.Run("install", "-m", "755", "/share/takeover", "/usr/local/bin/takeover"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, unit := range []string{"takeover@.service", "app.service", "app.socket"} {
		text, err := os.ReadFile(filepath.Join("contrib/systemd", unit))
		if err != nil {
			t.Fatal(err)
		}
		if b.WriteUnit(unit, string(text)) != nil {
			t.FailNow()
		}
	}
	if b.WriteUnit("takeover@.service.d/00-test.conf", sdUnitDefaults) != nil ||
		b.WriteUnit("app.service.d/00-test.conf", sdUnitDefaults) != nil {
		t.FailNow()
	}
}

// sdPut writes text at path inside the box.
func sdPut(t testing.TB, b *sdBox, path, text string) {
	t.Helper()
	tmp := filepath.Join(b.Share(), strings.ReplaceAll(strings.Trim(path, "/"), "/", "_"))
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := b.Run("install", "-D", "-m", "644", "/share/"+filepath.Base(tmp), path); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
}

// An sdService is one instance of contrib's takeover@.service.
type sdService struct {
	b          *sdBox
	unit, addr string
}

// sdDemo configures takeover@NAME to run the demo server, which takes
// sdStartDelay to start, on a free port; flags are more TAKEOVER_FLAGS.
func sdDemo(t testing.TB, b *sdBox, name, flags string) *sdService {
	t.Helper()
	addr := "127.0.0.1:" + testutil.FreePort(t)
	sdPut(t, b, "/etc/takeover/"+name+".conf", fmt.Sprintf(
		"PORT=%s\nCOMMAND=/usr/local/bin/takeover demo-server --init-delay %s %s\nTAKEOVER_FLAGS=%s\n", addr, sdStartDelay, addr, flags))
	s := &sdService{b: b, unit: "takeover@" + name + ".service", addr: addr}
	t.Cleanup(func() { b.Systemctl("stop", s.unit) })
	return s
}

// ctl runs systemctl VERB UNIT and fails the test, with the journal, if it fails.
func (s *sdService) ctl(t *testing.T, verb string) {
	t.Helper()
	if out, err := s.b.Systemctl(verb, s.unit); err != nil {
		t.Fatalf("systemctl %s %s: %v: %s\njournal:\n%s", verb, s.unit, err, out, s.b.Journal(s.unit))
	}
}

func (s *sdService) show(t *testing.T, prop string) string {
	t.Helper()
	out, err := s.b.Systemctl("show", "-p", prop, "--value", s.unit)
	if err != nil {
		t.Fatalf("systemctl show %s: %v: %s", prop, err, out)
	}
	return strings.TrimSpace(out)
}

// waitStatus waits for the unit's STATUS= to say "serving: generation N".
func (s *sdService) waitGeneration(t *testing.T, n int) {
	t.Helper()
	want := fmt.Sprintf("serving: generation %d,", n)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.HasPrefix(s.show(t, "StatusText"), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: StatusText %q after 30s, want %q...\njournal:\n%s", s.unit, s.show(t, "StatusText"), want, s.b.Journal(s.unit))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitMainPID waits for the unit to be active with a main pid other than old.
func (s *sdService) waitMainPID(t *testing.T, old int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pid := s.b.MainPID(s.unit)
		if pid != 0 && pid != old && s.show(t, "ActiveState") == "active" {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no new main pid after 30s (old %d)\njournal:\n%s", s.unit, old, s.b.Journal(s.unit))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// comm is the name of pid inside the box.
func (s *sdService) comm(t *testing.T, pid int) string {
	t.Helper()
	out, _ := s.b.Run("cat", fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(out)
}

// children are the pids whose parent is pid, inside the box.
func (s *sdService) children(t *testing.T, pid int) []int {
	t.Helper()
	out, _ := s.b.Run("ps", "-o", "pid=", "--ppid", strconv.Itoa(pid))
	var pids []int
	for _, f := range strings.Fields(out) {
		if n, err := strconv.Atoi(f); err == nil {
			pids = append(pids, n)
		}
	}
	return pids
}

// kill9 SIGKILLs pid inside the box, a process of the unit under test.
func (s *sdService) kill9(t *testing.T, pid int) {
	t.Helper()
	if out, err := s.b.Run("kill", "-9", strconv.Itoa(pid)); err != nil {
		t.Fatalf("kill -9 %d: %v: %s", pid, err, out)
	}
}

// A sdLoad is HTTP load from the host while one phase runs.
type sdLoad struct {
	cancel context.CancelFunc
	done   chan *load.Result
	count  atomic.Int64
}

func startSdLoad(addr string) *sdLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &sdLoad{cancel: cancel, done: make(chan *load.Result, 1)}
	go func() {
		l.done <- load.Run(ctx, load.Config{Addr: addr, Workers: 2, Timeout: 10 * time.Second, Done: &l.count})
	}()
	return l
}

// waitRequests lets the load run until n more requests have finished.
func (l *sdLoad) waitRequests(n int64) {
	target := l.count.Load() + n
	for deadline := time.Now().Add(30 * time.Second); l.count.Load() < target && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
}

func (l *sdLoad) stop() *load.Result {
	l.waitRequests(200)
	l.cancel()
	return <-l.done
}

// report logs a phase's figures, as the docs (docs/*.md) quote them.
func report(t *testing.T, phase string, r *load.Result) {
	t.Helper()
	t.Logf("%s: %d requests, %d failed (%d refused, %d reset, %d timeout), longest refused window %v, max latency %v",
		phase, r.Requests, r.FailedRequests(), r.Refused, r.Resets, r.Timeouts, r.LongestRefused().Round(time.Microsecond), maxLatency(r).Round(time.Millisecond))
	for i, f := range r.Failures {
		if i == 5 {
			break
		}
		t.Logf("  %s at %s: %s", f.Kind, f.At.Format("15:04:05.000"), f.Err)
	}
}

func maxLatency(r *load.Result) time.Duration {
	var m time.Duration
	for _, d := range r.Latencies {
		m = max(m, d)
	}
	return m
}

// TestSystemd runs contrib's units under a real systemd, as docs/systemd.md
// says, each scenario with its figure.
func TestSystemd(t *testing.T) {
	b := bootSystemd(t, sdOptions{})
	sdInstall(t, b)
	t.Run("lifecycle", func(t *testing.T) { sdLifecycle(t, b, "web") })
	t.Run("stop", func(t *testing.T) { sdStop(t, b) })
	t.Run("sockets-systemd", func(t *testing.T) { sdPassing(t, b) })
	t.Run("socket-unit", func(t *testing.T) { sdSocketUnit(t, b) })
	t.Run("no-fd-store", func(t *testing.T) { sdNoStore(t, b) })
	t.Run("two-services", func(t *testing.T) { sdTwoServices(t, b) })
	t.Run("timeouts", func(t *testing.T) { sdTimeouts(t, b) })
	t.Run("hardening", func(t *testing.T) { sdHardening(t, b) })
}

// TestSystemdNspawnFilter runs the lifecycle again under nspawn's own
// seccomp filter, which denies pidfd_getfd as a container's profile does.
func TestSystemdNspawnFilter(t *testing.T) {
	b := bootSystemd(t, sdOptions{Seccomp: true})
	sdInstall(t, b)
	sdLifecycle(t, b, "filtered")
	// The filter was there: takeover could not copy the command's sockets
	// and made them (internal/intercept/claim.go), as in a container.
	if j := b.Journal("takeover@filtered.service"); !strings.Contains(j, "pidfd_getfd") || !strings.Contains(j, "operation not permitted") {
		t.Errorf("nspawn's filter did not deny pidfd_getfd:\n%s", j)
	}
}

// sdLifecycle: Type=notify start, reloads, restarts, a crash of the server
// and one of takeover itself, each under load.
func sdLifecycle(t *testing.T, b *sdBox, name string) {
	s := sdDemo(t, b, name, "")
	s.ctl(t, "start")
	// Type=notify: start returns once the first generation is ready.
	if _, err := testutil.Get(s.addr, "/"); err != nil {
		t.Fatalf("right after systemctl start: %v", err)
	}
	if st := s.show(t, "StatusText"); !strings.HasPrefix(st, "serving: generation 1,") {
		t.Errorf("StatusText = %q, want takeover's serving: generation 1", st)
	}
	main := s.b.MainPID(s.unit)
	if c := s.comm(t, main); c != "takeover" {
		t.Fatalf("MainPID %d is %q, want takeover", main, c)
	}

	load := startSdLoad(s.addr)
	for gen := 2; gen <= 3; gen++ {
		load.waitRequests(300)
		s.ctl(t, "reload")
		s.waitGeneration(t, gen)
	}
	r := load.stop()
	report(t, "2 systemctl reload", r)
	if r.FailedRequests() != 0 {
		t.Errorf("reload: %d of %d requests failed, want 0", r.FailedRequests(), r.Requests)
	}
	if got := s.b.MainPID(s.unit); got != main {
		t.Errorf("MainPID %d after reloads, want takeover's %d", got, main)
	}

	load = startSdLoad(s.addr)
	for range 3 {
		load.waitRequests(300)
		s.ctl(t, "restart")
		main = s.waitMainPID(t, main)
	}
	r = load.stop()
	report(t, "3 systemctl restart", r)
	if r.Refused != 0 {
		t.Errorf("restart: %d refused, want 0", r.Refused)
	}
	if r.FailedRequests() != 0 {
		t.Errorf("restart: %d of %d requests failed, want 0 (the old server drains, the new one accepts the queue)", r.FailedRequests(), r.Requests)
	}
	if !strings.Contains(s.b.Journal(s.unit), "via=fd-store") {
		t.Errorf("no swap took the stored socket:\n%s", s.b.Journal(s.unit))
	}

	load = startSdLoad(s.addr)
	load.waitRequests(300)
	servers := s.children(t, main)
	if len(servers) != 1 {
		t.Fatalf("takeover %d has children %v, want its one server", main, servers)
	}
	s.kill9(t, servers[0])
	s.waitGeneration(t, 2) // the restarted command, under the same takeover
	r = load.stop()
	report(t, "kill -9 of the server", r)
	if r.Refused != 0 {
		t.Errorf("kill -9 of the server: %d refused, want 0", r.Refused)
	}
	if got := s.b.MainPID(s.unit); got != main {
		t.Errorf("MainPID %d after the server's crash, want takeover's %d", got, main)
	}

	load = startSdLoad(s.addr)
	load.waitRequests(300)
	s.kill9(t, main)
	main = s.waitMainPID(t, main)
	s.waitGeneration(t, 1)
	r = load.stop()
	report(t, "kill -9 of takeover (Restart=on-failure)", r)
	if r.Refused != 0 {
		t.Errorf("kill -9 of takeover: %d refused, want 0", r.Refused)
	}
}

// sdPassing: docs/socket-passing.md's --sockets systemd unit, the server taking LISTEN_FDS
// from takeover (as gunicorn does), reloaded and restarted under load.
func sdPassing(t *testing.T, b *sdBox) {
	name := "passing"
	addr := "127.0.0.1:" + testutil.FreePort(t)
	sdPut(t, b, "/etc/takeover/"+name+".conf", fmt.Sprintf(
		"PORT=%s\nCOMMAND=/share/test-helper %s\nTAKEOVER_FLAGS=--sockets systemd\nTAKEOVER_TEST_HELPER=activated\n", addr, addr))
	s := &sdService{b: b, unit: "takeover@" + name + ".service", addr: addr}
	t.Cleanup(func() { b.Systemctl("stop", s.unit) })
	s.ctl(t, "start")
	load := startSdLoad(s.addr)
	load.waitRequests(300)
	s.ctl(t, "reload")
	s.waitGeneration(t, 2)
	for range 2 {
		load.waitRequests(300)
		s.ctl(t, "restart")
	}
	r := load.stop()
	report(t, "--sockets systemd: a reload and 2 restarts", r)
	if r.FailedRequests() != 0 {
		t.Errorf("--sockets systemd: %d of %d failed (%d refused), want 0", r.FailedRequests(), r.Requests, r.Refused)
	}
	if j := b.Journal(s.unit); !strings.Contains(j, "via=fd-store") {
		t.Errorf("a restart did not pass the stored socket:\n%s", j)
	}
}

// sdStop: systemctl stop with KillMode=mixed lets a slow request in flight
// finish, then leaves nothing: no process, no socket, no stored socket.
func sdStop(t *testing.T, b *sdBox) {
	s := sdDemo(t, b, "stopper", "")
	s.ctl(t, "start")
	main := s.b.MainPID(s.unit)
	slow := slowRequest(t, s.addr, "2s")
	s.ctl(t, "stop")
	if err := <-slow; err != nil {
		t.Errorf("the slow request in flight at systemctl stop: %v", err)
	}
	if st := s.show(t, "ActiveState"); st != "inactive" {
		t.Errorf("after stop ActiveState = %q, want inactive (Result=%s)", st, s.show(t, "Result"))
	}
	if _, err := testutil.Get(s.addr, "/"); err == nil {
		t.Errorf("%s still answers after systemctl stop", s.addr)
	}
	if out, err := s.b.Run("test", "-e", fmt.Sprintf("/proc/%d", main)); err == nil {
		t.Errorf("takeover %d still runs after stop: %s", main, out)
	}
	if n := s.show(t, "NFileDescriptorStore"); n != "0" && n != "" {
		t.Errorf("NFileDescriptorStore = %s after stop, want 0", n)
	}
}

// slowRequest sends GET /?sleep=D to addr and returns once the server has
// accepted it (its listener's accept queue is empty again); the channel
// gets nil if a 200 answer comes back.
func slowRequest(t *testing.T, addr, sleep string) <-chan error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(load.HTTPRequest(addr, "/?sleep="+sleep)); err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort(addr)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		socks, err := socktab.DiagTCPListeners()
		if err != nil {
			t.Fatal(err)
		}
		queued := false
		for _, s := range socks {
			queued = queued || (s.Addr.Port() == ap.Port() && s.Queued > 0)
		}
		if !queued {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the slow request to %s was not accepted in 10s", addr)
		}
	}
	done := make(chan error, 1)
	go func() {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		answer, err := io.ReadAll(conn)
		if err == nil && !bytes.HasPrefix(answer, []byte("HTTP/1.0 200")) && !bytes.HasPrefix(answer, []byte("HTTP/1.1 200")) {
			err = fmt.Errorf("answer %.40q", answer)
		}
		done <- err
	}()
	return done
}

// sdSocketUnit: contrib's app.socket in front of an unmodified python
// http.server under takeover; the service restarted under load.
func sdSocketUnit(t *testing.T, b *sdBox) {
	port := testutil.FreePort(t)
	if b.WriteUnit("app.socket.d/port.conf", "[Socket]\nListenStream=\nListenStream=0.0.0.0:"+port+"\n") != nil ||
		b.WriteUnit("app.service.d/port.conf", "[Service]\nExecStart=\nExecStart=/usr/local/bin/takeover --port "+port+
			" -- /usr/bin/python3 -m http.server --bind 0.0.0.0 --directory /srv/app "+port+"\n") != nil {
		t.FailNow()
	}
	if out, err := b.Run("mkdir", "-p", "/srv/app"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	s := &sdService{b: b, unit: "app.service", addr: "127.0.0.1:" + port}
	sock := &sdService{b: b, unit: "app.socket"}
	t.Cleanup(func() { b.Systemctl("stop", "app.socket", "app.service") })
	sock.ctl(t, "start")
	load := startSdLoad(s.addr) // the first connect starts app.service
	main := 0
	for range 3 {
		load.waitRequests(300)
		main = s.waitMainPID(t, main)
		s.ctl(t, "restart")
	}
	r := load.stop()
	report(t, "socket unit, 3 restarts of app.service (python http.server)", r)
	if r.Refused != 0 {
		t.Errorf("socket unit: %d refused, want 0", r.Refused)
	}
	j := b.Journal("app.service")
	if !strings.Contains(j, "via=listen-fds") || strings.Contains(j, "strategy=fresh") {
		t.Errorf("the server did not get the socket unit's socket:\n%s", j)
	}
}

// sdNoStore: without FileDescriptorStoreMax= takeover serves on, and says
// once what the unit lacks.
func sdNoStore(t *testing.T, b *sdBox) {
	s := sdDemo(t, b, "nostore", "")
	if b.WriteUnit(s.unit+".d/nostore.conf", "[Service]\nFileDescriptorStoreMax=0\n") != nil {
		t.FailNow()
	}
	s.ctl(t, "start")
	s.ctl(t, "reload")
	s.waitGeneration(t, 2)
	s.ctl(t, "reload")
	s.waitGeneration(t, 3)
	j := b.Journal(s.unit)
	if n := strings.Count(j, "has no file descriptor store (FileDescriptorStoreMax=0)"); n != 1 {
		t.Errorf("the missing store is said %d times, want once:\n%s", n, j)
	}
	if !strings.Contains(j, "add FileDescriptorStoreMax=8") {
		t.Errorf("the warning does not say what to add:\n%s", j)
	}
}

// sdTwoServices: a second service for a port another serves is refused,
// and the message names the unit that serves it.
func sdTwoServices(t *testing.T, b *sdBox) {
	first := sdDemo(t, b, "first", "")
	first.ctl(t, "start")
	second := &sdService{b: b, unit: "takeover@second.service", addr: first.addr}
	sdPut(t, b, "/etc/takeover/second.conf", fmt.Sprintf("PORT=%s\nCOMMAND=/usr/local/bin/takeover demo-server %s\n", first.addr, first.addr))
	t.Cleanup(func() { b.Systemctl("stop", second.unit) })
	if out, err := b.Systemctl("start", second.unit); err == nil {
		t.Fatalf("the second service for %s started: %s", first.addr, out)
	}
	j := b.Journal(second.unit)
	if !strings.Contains(j, "of takeover@first.service, and this takeover runs in takeover@second.service") {
		t.Errorf("the refusal does not name the units:\n%s", j)
	}
	if st := first.show(t, "ActiveState"); st != "active" {
		t.Errorf("the first service is %s, want active", st)
	}
	if _, err := testutil.Get(first.addr, "/"); err != nil {
		t.Errorf("the first service stopped serving: %v", err)
	}
}

// sdTimeouts: TimeoutStopSec= longer than --kill-timeout lets takeover
// SIGKILL a server that ignores TERM and stop cleanly; shorter, systemd
// kills both first and the unit fails.
func sdTimeouts(t *testing.T, b *sdBox) {
	for _, tc := range []struct {
		name, stopSec string
		wantResult    string
		wantLog       string
	}{
		// takeover SIGKILLs the server at --kill-timeout, says so, and exits
		// with its status (137): the unit fails with exit-code, in 3 s.
		{"longer", "20s", "exit-code", "did not exit within --kill-timeout"},
		// systemd SIGKILLs takeover and the server at TimeoutStopSec.
		{"shorter", "1s", "timeout", "State 'stop-sigterm' timed out"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "hang-" + tc.name
			addr := "127.0.0.1:" + testutil.FreePort(t)
			sdPut(t, b, "/etc/takeover/"+name+".conf", fmt.Sprintf(
				"PORT=%s\nCOMMAND=/share/test-helper %s\nTAKEOVER_FLAGS=--kill-timeout 3s\nTAKEOVER_TEST_HELPER=hang\n", addr, addr))
			s := &sdService{b: b, unit: "takeover@" + name + ".service", addr: addr}
			t.Cleanup(func() { b.Systemctl("stop", s.unit) })
			if b.WriteUnit(s.unit+".d/stop.conf", "[Service]\nTimeoutStopSec="+tc.stopSec+"\n") != nil {
				t.FailNow()
			}
			s.ctl(t, "start")
			began := time.Now()
			b.Systemctl("stop", s.unit)
			took := time.Since(began)
			if got := s.show(t, "Result"); got != tc.wantResult {
				t.Errorf("TimeoutStopSec=%s with --kill-timeout 3s: Result=%s, want %s\n%s", tc.stopSec, got, tc.wantResult, b.Journal(s.unit))
			}
			if j := b.Journal(s.unit); !strings.Contains(j, tc.wantLog) {
				t.Errorf("the journal lacks %q:\n%s", tc.wantLog, j)
			}
			t.Logf("TimeoutStopSec=%s, --kill-timeout 3s, a server that ignores TERM: stop took %v, Result=%s", tc.stopSec, took.Round(time.Millisecond), s.show(t, "Result"))
			b.Systemctl("reset-failed", s.unit)
		})
	}
}

// sdHardening: the unit options docs/systemd.md names, each in a drop-in, with a
// reload and a restart under load.
func sdHardening(t *testing.T, b *sdBox) {
	for _, tc := range []struct {
		name, dropIn string
		wantLog      string // a line the journal must hold, where takeover must say what is missing
		wantFail     string // the unit cannot start: what the journal must say
	}{
		{name: "user", dropIn: "User=nobody\nLimitRTPRIO=1\nRuntimeDirectory=takeover-%i\nRuntimeDirectoryMode=0700\nEnvironment=TAKEOVER_RUN_DIR=/run/takeover-%i\n"},
		{name: "nonewprivs", dropIn: "NoNewPrivileges=yes\n"},
		{name: "syscallfilter", dropIn: "SystemCallFilter=@system-service\n", wantFail: "killed by SIGSYS"},
		// A call the filter lacks kills the caller, unless an errno is set:
		// then takeover makes the sockets it cannot copy (pidfd_getfd).
		{name: "syscallfilter-seccomp", dropIn: "SystemCallFilter=@system-service seccomp\nSystemCallErrorNumber=EPERM\n", wantLog: "cannot copy the command's sockets"},
		{name: "syscallfilter-seccomp-pidfd", dropIn: "SystemCallFilter=@system-service seccomp pidfd_getfd\n"},
		{name: "protectproc", dropIn: "ProtectProc=invisible\n"},
		{name: "privatetmp", dropIn: "PrivateTmp=yes\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := sdDemo(t, b, tc.name, "")
			if b.WriteUnit(s.unit+".d/hardening.conf", "[Service]\n"+tc.dropIn) != nil {
				t.FailNow()
			}
			if tc.wantFail != "" {
				if out, err := b.Systemctl("start", s.unit); err == nil {
					t.Fatalf("%s started: %s", s.unit, out)
				}
				if j := b.Journal(s.unit); !strings.Contains(j, tc.wantFail) {
					t.Errorf("the journal does not say %q:\n%s", tc.wantFail, j)
				}
				return
			}
			s.ctl(t, "start")
			load := startSdLoad(s.addr)
			load.waitRequests(300)
			s.ctl(t, "reload")
			s.waitGeneration(t, 2)
			load.waitRequests(300)
			s.ctl(t, "restart")
			s.waitGeneration(t, 1)
			r := load.stop()
			report(t, tc.name+": a reload and a restart", r)
			if r.Refused != 0 || r.FailedRequests() != 0 {
				t.Errorf("%s: %d failed (%d refused) of %d, want 0", tc.name, r.FailedRequests(), r.Refused, r.Requests)
			}
			j := b.Journal(s.unit)
			if tc.wantLog != "" && !strings.Contains(j, tc.wantLog) {
				t.Errorf("the journal does not say %q:\n%s", tc.wantLog, j)
			}
			for _, line := range strings.Split(j, "\n") {
				if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
					t.Logf("  journal: %s", line)
				}
			}
		})
	}
}
