package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/socktab"
)

func TestParsePortSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    portSpec
		wantErr string
	}{
		{in: "8100", want: portSpec{Port: 8100}},
		{in: ":8100", want: portSpec{Port: 8100}},
		{in: "127.0.0.1:8100", want: portSpec{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8100}},
		{in: "[::1]:8100", want: portSpec{Addr: netip.MustParseAddr("::1"), Port: 8100}},
		{in: "[::]:8100", want: portSpec{Addr: netip.MustParseAddr("::"), Port: 8100}},
		{in: "[::ffff:127.0.0.1]:80", want: portSpec{Addr: netip.MustParseAddr("127.0.0.1"), Port: 80}},
		{in: "", wantErr: "empty port spec"},
		{in: "0", wantErr: "port 0 means any free port"},
		{in: "65536", wantErr: "not a number from 1 to 65535"},
		{in: "-1", wantErr: "not a number from 1 to 65535"},
		{in: "+80", wantErr: "not a number from 1 to 65535"},
		{in: "http", wantErr: "not a number"},
		{in: "localhost:8100", wantErr: "is not an IP address"},
		{in: "::1:8100", wantErr: "goes in brackets"},
		{in: "[::1:8100", wantErr: "unbalanced brackets"},
		{in: "[fe80::1%eth0]:80", wantErr: "zones are not accepted"},
		{in: "udp:5353", want: portSpec{Net: netUDP, Port: 5353}},
		{in: "udp:127.0.0.1:5353", want: portSpec{Net: netUDP, Addr: netip.MustParseAddr("127.0.0.1"), Port: 5353}},
		{in: "udp:[::1]:5353", want: portSpec{Net: netUDP, Addr: netip.MustParseAddr("::1"), Port: 5353}},
		{in: "tcp:8100", want: portSpec{Port: 8100}},
		{in: "udp:", wantErr: "empty port spec"},
		{in: "udp:0", wantErr: "port 0 means any free port"},
		{in: "unix:/run/app.sock", wantErr: "named with --path"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parsePortSpec(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parsePortSpec(%q) error = %v, want one containing %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("parsePortSpec(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestSpecMatchesAndConflicts(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		spec      string
		addr      string
		match     bool
		held      string
		conflicts bool
	}{
		{"8100", "127.0.0.1:8100", true, "0.0.0.0:8100", true},
		{"8100", "[::1]:8100", true, "[::]:8100", true},
		{"8100", "127.0.0.1:8101", false, "127.0.0.1:8100", false},
		{"127.0.0.1:8100", "127.0.0.1:8100", true, "127.0.0.2:8100", false},
		{"127.0.0.1:8100", "0.0.0.0:8100", false, "127.0.0.1:8100", true},
		{"[::]:8100", "[::]:8100", true, "0.0.0.0:8100", true},
		{"0.0.0.0:8100", "[::]:8100", true, "[::1]:8100", true},
		{"[::1]:8100", "[::1]:8100", true, "127.0.0.1:8100", false},
	}
	for _, tt := range tests {
		t.Run(tt.spec+"/"+tt.addr+"/"+tt.held, func(t *testing.T) {
			spec, err := parsePortSpec(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if got := spec.matches(ap(tt.addr)); got != tt.match {
				t.Errorf("%v.matches(%s) = %v, want %v", spec, tt.addr, got, tt.match)
			}
			if got := conflicts(inetBind{Addr: ap(tt.addr)}, inetBind{Addr: ap(tt.held)}); got != tt.conflicts {
				t.Errorf("conflicts(%s, %s) = %v, want %v", tt.addr, tt.held, got, tt.conflicts)
			}
		})
	}
}

// The fixture under internal/procfs/testdata/proc is a prefork server (master 100, worker
// 101) run by a takeover launcher (90) on 127.0.0.1:8100, the launcher's own
// socket on 0.0.0.0:8100, and an sshd (200) on another port.
func TestListenersFixture(t *testing.T) {
	ls, err := listeners("internal/procfs/testdata/proc", portSpec{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8100}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []listener{{
		Socket:  socktab.Socket{Inode: 5555, Addr: netip.MustParseAddrPort("127.0.0.1:8100"), UID: 1000},
		Holders: []holder{{PID: 100, FD: 3, PPID: 90}, {PID: 101, FD: 4, PPID: 100}},
	}}
	if diff := cmp.Diff(want, ls, cmp.AllowUnexported(listener{}), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Fatalf("listeners (-want +got):\n%s", diff)
	}
	// Who manages a holder comes from the run directory's records, never
	// from the environment (the fixture's environ reads like nginx's
	// process title).
	got := stopTargets("internal/procfs/testdata/proc", ls[0], []int{90})
	wantT := []stopTarget{{PID: 90, Launcher: true, Holder: holder{PID: 100, FD: 3, PPID: 90}}}
	if diff := cmp.Diff(wantT, got); diff != "" {
		t.Errorf("stopTargets (-want +got):\n%s", diff)
	}
	got = stopTargets("internal/procfs/testdata/proc", ls[0], nil)
	wantT = []stopTarget{{PID: 100, Holder: holder{PID: 100, FD: 3, PPID: 90}}}
	if diff := cmp.Diff(wantT, got); diff != "" {
		t.Errorf("stopTargets without a recorded launcher (-want +got):\n%s", diff)
	}

	// A bare port names every address of both families.
	all, err := listeners("internal/procfs/testdata/proc", portSpec{Port: 8100}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	var inodes []uint64
	for _, l := range all {
		inodes = append(inodes, l.Inode)
	}
	if diff := cmp.Diff([]uint64{5555, 5556, 8888}, inodes); diff != "" {
		t.Errorf("inodes for port 8100 (-want +got):\n%s", diff)
	}
	// The launcher holding its own copy is itself the target, as a launcher.
	if got := stopTargets("internal/procfs/testdata/proc", all[1], []int{90}); len(got) != 1 || got[0].PID != 90 || !got[0].Launcher {
		t.Errorf("stopTargets(0.0.0.0:8100) = %+v, want pid 90", got)
	}
}

func TestListenersOnlyFirst(t *testing.T) {
	spec := portSpec{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8100}
	// Starting from the launcher finds master and worker without the full walk.
	ls, err := listeners("internal/procfs/testdata/proc", spec, []int{90}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || len(ls[0].Holders) != 2 {
		t.Fatalf("listeners from hint = %+v, want master and worker", ls)
	}
	// A hint that holds nothing falls back to the whole walk.
	ls, err = listeners("internal/procfs/testdata/proc", spec, []int{200}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || len(ls[0].Holders) != 2 {
		t.Fatalf("listeners from a wrong hint = %+v, want master and worker", ls)
	}
}

func TestNeverSignalled(t *testing.T) {
	for _, pid := range []int{1, os.Getpid(), os.Getppid()} {
		err := stopTarget{PID: pid}.forbidden("/proc")
		if !errors.Is(err, errNeverSignal) {
			t.Errorf("forbidden(pid %d) = %v, want errNeverSignal", pid, err)
		}
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := (stopTarget{PID: cmd.Process.Pid}).forbidden("/proc"); err != nil {
		t.Errorf("forbidden(child) = %v, want nil", err)
	}
}

// lookup is the port lookup as `takeover who` runs it, against the live /proc.
func lookup(t *testing.T, spec string) []listener {
	t.Helper()
	ps, err := parsePortSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := listeners("/proc", ps, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func holderPIDs(l listener) map[int]bool {
	m := make(map[int]bool)
	for _, h := range l.Holders {
		m[h.PID] = true
	}
	return m
}

func TestListenersLiveHelper(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			if addr[0] == '[' && !hasIPv6() {
				t.Skip("no IPv6 loopback on this machine")
			}
			h := startHelper(t, "serve", addr)
			ls := lookup(t, h.addr)
			if len(ls) != 1 {
				t.Fatalf("lookup(%s) found %d listeners, want 1", h.addr, len(ls))
			}
			pid := h.cmd.Process.Pid
			if !holderPIDs(ls[0])[pid] {
				t.Errorf("holders of %s = %+v, want pid %d", h.addr, ls[0].Holders, pid)
			}
			ts := stopTargets("/proc", ls[0], nil)
			if len(ts) != 1 || ts[0].PID != pid || ts[0].Launcher {
				t.Errorf("stopTargets = %+v, want pid %d, not a launcher", ts, pid)
			}
		})
	}
}

func TestListenersSpecificVersusWildcard(t *testing.T) {
	h := startHelper(t, "serve", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(h.addr)
	if ls := lookup(t, "127.0.0.2:"+port); len(ls) != 0 {
		t.Errorf("lookup(127.0.0.2:%s) = %+v, want nothing", port, ls)
	}
	for _, wild := range []string{"0.0.0.0:", "[::]:"} {
		if ls := lookup(t, wild+port); len(ls) != 0 {
			t.Errorf("lookup(%s%s) = %+v, want nothing", wild, port, ls)
		}
	}
	if ls := lookup(t, port); len(ls) != 1 {
		t.Errorf("lookup(%s) found %d listeners, want 1", port, len(ls))
	}
	// A wildcard listener (Go makes "0.0.0.0:0" a dual-stack [::]) is named
	// by a wildcard spec of either family, and not by a specific address.
	w := startHelper(t, "serve", "0.0.0.0:0")
	_, wport, _ := net.SplitHostPort(w.addr)
	for _, spec := range []string{"0.0.0.0:" + wport, "[::]:" + wport} {
		if ls := lookup(t, spec); len(ls) != 1 || !holderPIDs(ls[0])[w.cmd.Process.Pid] {
			t.Errorf("lookup(%s) = %+v, want pid %d", spec, ls, w.cmd.Process.Pid)
		}
	}
	if ls := lookup(t, "127.0.0.1:"+wport); len(ls) != 0 {
		t.Errorf("lookup(127.0.0.1:%s) = %+v, want nothing", wport, ls)
	}
}

func TestListenersPrefork(t *testing.T) {
	h := startHelper(t, "prefork")
	f := strings.Fields(h.line) // listening ADDR workers PID,PID
	ls := lookup(t, h.addr)
	if len(ls) != 1 {
		t.Fatalf("found %d listeners, want 1", len(ls))
	}
	got := holderPIDs(ls[0])
	want := map[int]bool{h.cmd.Process.Pid: true}
	for _, p := range strings.Split(f[3], ",") {
		pid, _ := strconv.Atoi(p)
		want[pid] = true
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("holders (-want +got):\n%s", diff)
	}
	ts := stopTargets("/proc", ls[0], nil)
	if len(ts) != 1 || ts[0].PID != h.cmd.Process.Pid {
		t.Errorf("stopTargets = %+v, want the master %d only", ts, h.cmd.Process.Pid)
	}
}

func TestListenersManagedByLauncher(t *testing.T) {
	h := startHelper(t, "wrapper", "127.0.0.1:0")
	ls := lookup(t, h.addr)
	if len(ls) != 1 || len(ls[0].Holders) != 1 {
		t.Fatalf("lookup = %+v, want one holder", ls)
	}
	if ls[0].Holders[0].PPID != h.cmd.Process.Pid {
		t.Fatalf("holder's parent = %d, want the wrapper %d", ls[0].Holders[0].PPID, h.cmd.Process.Pid)
	}
	// The wrapper is a launcher because the run directory records it.
	dir := testRunDir(t)
	if ts := stopTargets("/proc", ls[0], liveLaunchers(dir)); len(ts) != 1 || ts[0].PID == h.cmd.Process.Pid {
		t.Errorf("stopTargets with no record = %+v, want the server, not the wrapper %d", ts, h.cmd.Process.Pid)
	}
	st, err := procfs.FS("/proc").Stat(h.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeRecord(dir, portSpec{Net: netUnix, Path: "/run/app.sock"}.key(), genRecord{Launcher: h.cmd.Process.Pid, LauncherStart: st.Start}); err != nil {
		t.Fatal(err)
	}
	ts := stopTargets("/proc", ls[0], liveLaunchers(dir))
	if len(ts) != 1 || ts[0].PID != h.cmd.Process.Pid || !ts[0].Launcher {
		t.Errorf("stopTargets = %+v, want the launcher %d", ts, h.cmd.Process.Pid)
	}
}

func TestListenersPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed for this test: ", err)
	}
	port := freePort(t)
	cmd := exec.Command(py, "-u", "-m", "http.server", "--bind", "127.0.0.1", port)
	cmd.Dir = t.TempDir()
	h := startAndReadLine(t, cmd) // "Serving HTTP on 127.0.0.1 port N ..."
	if !strings.Contains(h.line, "port "+port) {
		t.Fatalf("python printed %q", h.line)
	}
	ls := lookup(t, "127.0.0.1:"+port)
	if len(ls) != 1 || !holderPIDs(ls[0])[cmd.Process.Pid] {
		t.Fatalf("lookup = %+v, want python's pid %d", ls, cmd.Process.Pid)
	}
}

func TestWhoCommand(t *testing.T) {
	h := startHelper(t, "serve", "127.0.0.1:0")
	pid := strconv.Itoa(h.cmd.Process.Pid)
	_, port, _ := net.SplitHostPort(h.addr)

	var out, errOut bytes.Buffer
	if code := run([]string{"who", port}, &out, &errOut); code != 0 {
		t.Fatalf("who %s = %d, stderr %q", port, code, errOut.String())
	}
	for _, want := range []string{h.addr, "pid " + pid, "takeover would signal pid " + pid} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("who output lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	if code := run([]string{"who", "--json", h.addr}, &out, &errOut); code != 0 {
		t.Fatalf("who --json = %d", code)
	}
	var js []whoListener
	if err := json.Unmarshal(out.Bytes(), &js); err != nil {
		t.Fatalf("who --json printed %q: %v", out.String(), err)
	}
	if len(js) != 1 || len(js[0].Holders) != 1 || fmt.Sprint(js[0].Holders[0].PID) != pid || js[0].Stop[0].PID != h.cmd.Process.Pid {
		t.Errorf("who --json = %+v", js)
	}

	free := freePort(t)
	tests := []struct {
		args     []string
		code     int
		inStderr string
	}{
		{[]string{"who", free}, 1, ""},
		{[]string{"who", "70000"}, 2, "not a number from 1 to 65535"},
		{[]string{"who"}, 2, "name at least one port"},
		{[]string{"who", "--nope", "80"}, 2, "flag provided but not defined"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		if code := run(tt.args, &out, &errOut); code != tt.code || !strings.Contains(errOut.String(), tt.inStderr) {
			t.Errorf("run(%q) = %d, stderr %q; want %d and %q", tt.args, code, errOut.String(), tt.code, tt.inStderr)
		}
	}
}

// freePort returns a port the kernel just gave out and released.
func freePort(t testing.TB) string {
	t.Helper()
	port, err := load.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(port)
}

func hasIPv6() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func FuzzParsePortSpec(f *testing.F) {
	for _, s := range []string{"8100", "127.0.0.1:8100", "[::1]:8100", "[::]:1", ":0", "[", "a:b:c", "udp:53", "udp:[::1]:53", "tcp:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePortSpec(s)
		if err != nil {
			return
		}
		if p.Port == 0 {
			t.Fatalf("parsePortSpec(%q) accepted port 0", s)
		}
		// What it prints, it reads back the same.
		q, err := parsePortSpec(p.String())
		if err != nil || q != p {
			t.Fatalf("round trip of %q: %v -> %q -> %v, %v", s, p, p.String(), q, err)
		}
	})
}

func FuzzParseSockaddr(f *testing.F) {
	f.Add([]byte{2, 0, 0x1f, 0xa4, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add(make([]byte, 28))
	f.Fuzz(func(t *testing.T, b []byte) {
		ap, _, ok := parseSockaddr(b)
		if ok && !ap.IsValid() {
			t.Fatalf("parseSockaddr(%x) = invalid %v", b, ap)
		}
	})
}

// TestWhoCannotSee: a listener whose holder this user cannot read is
// reported as held by a process this user cannot see, not as free.
// who says of a holder what its /proc says: user, command line and age,
// from the /proc it is given (a fixture here), read by internal/procfs.
func TestWhoDescribesHolder(t *testing.T) {
	proc := t.TempDir()
	stat := "4711 (java) S 1 4711 4711 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 50000 0 0"
	for name, text := range map[string]string{
		"uptime":         "1000.00 1900.00\n",
		"4711/stat":      stat,
		"4711/status":    "Name:\tjava\nTgid:\t4711\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapEff:\t0000000000000000\n",
		"4711/cmdline":   "java\x00-jar\x00app.jar\x00",
		"4712/cmdline":   "gone\x00", // no stat nor status: what can be read is said
		"4712/status":    "garbled",
		"4712/not-a-pid": "",
	} {
		path := filepath.Join(proc, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := []whoHolder{describeHolder(procfs.FS(proc), holder{PID: 4711, PPID: 1, FD: 3}), describeHolder(procfs.FS(proc), holder{PID: 4712, PPID: 1, FD: 5})}
	want := []whoHolder{
		{PID: 4711, PPID: 1, FD: 3, User: "root", Uptime: 500, Command: "java -jar app.jar"},
		{PID: 4712, PPID: 1, FD: 5, Command: "gone"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("describeHolder (-want +got):\n%s", diff)
	}
}

// The program links no gopsutil: its cpu package's init read /proc/stat
// twice at every start of takeover (a launcher, a shim, a who), and its
// process package forked a child and read seven files for one holder.
func TestNoGopsutilInTheProgram(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "gopsutil") {
			t.Errorf("takeover imports %s; read /proc through internal/procfs instead", dep)
		}
	}
}

func TestWhoCannotSee(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run who as another user")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatal("setpriv (util-linux) is needed: ", err)
	}
	// A copy of takeover that nobody may run.
	dir, err := os.MkdirTemp("", "takeover-who")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(takeoverBin(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "takeover")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	h := startHelper(t, "serve", "127.0.0.1:0") // root's
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "who", h.addr).CombinedOutput()
	if err != nil {
		t.Fatalf("who as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "held by a process this user cannot see") {
		t.Errorf("who as nobody printed:\n%s", out)
	}
}

func TestStillHolding(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ls := lookup(t, ln.Addr().String())
	if len(ls) != 1 {
		t.Fatalf("%d listeners on %s, want 1", len(ls), ln.Addr())
	}
	other := startHelper(t, "serve", "127.0.0.1:0") // holds a socket, not this one
	self, otherPID := os.Getpid(), other.cmd.Process.Pid
	inodes := []uint64{ls[0].Inode}

	got, err := stillHolding("/proc", inodes, []int{otherPID, self})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{self}, got); diff != "" {
		t.Errorf("while listening (-want +got):\n%s", diff)
	}
	ln.Close()
	got, err = stillHolding("/proc", inodes, []int{otherPID, self})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("after close: %v, want none", got)
	}
}
