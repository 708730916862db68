package owner

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/socktab"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
)

// The fixture under internal/procfs/testdata/proc (procfs's own) is a
// prefork server (master 100, worker 101) run by a takeover launcher (90)
// on 127.0.0.1:8100, the launcher's own socket on 0.0.0.0:8100, and an
// sshd (200) on another port.
const fixtures procfs.FS = "../procfs/testdata/proc"

// The tests start helpers: the test binary again (testutil.RunHelper's
// serve, prefork and wrapper).
func TestMain(m *testing.M) { testutil.Main(m, nil) }

// lookup is the port lookup as `takeover who` runs it, against the live /proc.
func lookup(t *testing.T, spec string) []Listener {
	t.Helper()
	ps, err := target.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := Listeners("/proc", ps, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

// holderPIDs is the set of pids holding l.
func holderPIDs(l Listener) map[int]bool {
	m := make(map[int]bool)
	for _, h := range l.Holders {
		m[h.PID] = true
	}
	return m
}

func TestListenersFixture(t *testing.T) {
	ls, err := Listeners(fixtures, target.Spec{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8100}, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []Listener{{
		Socket:  socktab.Socket{Inode: 5555, Addr: netip.MustParseAddrPort("127.0.0.1:8100"), UID: 1000},
		Holders: []Holder{{PID: 100, FD: 3, PPID: 90}, {PID: 101, FD: 4, PPID: 100}},
	}}
	if diff := cmp.Diff(want, ls, cmp.AllowUnexported(Listener{}), cmp.Comparer(func(a, b netip.AddrPort) bool { return a == b })); diff != "" {
		t.Fatalf("listeners (-want +got):\n%s", diff)
	}
	// Who manages a holder comes from the run directory's records, never
	// from the environment (the fixture's environ reads like nginx's
	// process title).
	got := StopTargets(fixtures, ls[0], []int{90})
	wantT := []StopTarget{{PID: 90, Launcher: true, Holder: Holder{PID: 100, FD: 3, PPID: 90}}}
	if diff := cmp.Diff(wantT, got); diff != "" {
		t.Errorf("stopTargets (-want +got):\n%s", diff)
	}
	got = StopTargets(fixtures, ls[0], nil)
	wantT = []StopTarget{{PID: 100, Holder: Holder{PID: 100, FD: 3, PPID: 90}}}
	if diff := cmp.Diff(wantT, got); diff != "" {
		t.Errorf("stopTargets without a recorded launcher (-want +got):\n%s", diff)
	}

	// A bare port names every address of both families.
	all, err := Listeners(fixtures, target.Spec{Port: 8100}, nil, false)
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
	if got := StopTargets(fixtures, all[1], []int{90}); len(got) != 1 || got[0].PID != 90 || !got[0].Launcher {
		t.Errorf("stopTargets(0.0.0.0:8100) = %+v, want pid 90", got)
	}
}

func TestListenersOnlyFirst(t *testing.T) {
	spec := target.Spec{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8100}
	// Starting from the launcher finds master and worker without the full walk.
	ls, err := Listeners(fixtures, spec, []int{90}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || len(ls[0].Holders) != 2 {
		t.Fatalf("listeners from hint = %+v, want master and worker", ls)
	}
	// A hint that holds nothing falls back to the whole walk.
	ls, err = Listeners(fixtures, spec, []int{200}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || len(ls[0].Holders) != 2 {
		t.Fatalf("listeners from a wrong hint = %+v, want master and worker", ls)
	}
}

func TestNeverSignalled(t *testing.T) {
	for _, pid := range []int{1, os.Getpid(), os.Getppid()} {
		err := StopTarget{PID: pid}.Forbidden("/proc")
		if !errors.Is(err, errNeverSignal) {
			t.Errorf("forbidden(pid %d) = %v, want errNeverSignal", pid, err)
		}
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if err := (StopTarget{PID: cmd.Process.Pid}).Forbidden("/proc"); err != nil {
		t.Errorf("forbidden(child) = %v, want nil", err)
	}
}

func TestListenersLiveHelper(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(addr, func(t *testing.T) {
			if addr[0] == '[' && !testutil.HasIPv6() {
				t.Skip("no IPv6 loopback on this machine")
			}
			h := testutil.StartHelper(t, "serve", addr)
			ls := lookup(t, h.Addr)
			if len(ls) != 1 {
				t.Fatalf("lookup(%s) found %d listeners, want 1", h.Addr, len(ls))
			}
			pid := h.Cmd.Process.Pid
			if !holderPIDs(ls[0])[pid] {
				t.Errorf("holders of %s = %+v, want pid %d", h.Addr, ls[0].Holders, pid)
			}
			ts := StopTargets("/proc", ls[0], nil)
			if len(ts) != 1 || ts[0].PID != pid || ts[0].Launcher {
				t.Errorf("stopTargets = %+v, want pid %d, not a launcher", ts, pid)
			}
		})
	}
}

func TestListenersSpecificVersusWildcard(t *testing.T) {
	h := testutil.StartHelper(t, "serve", "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(h.Addr)
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
	w := testutil.StartHelper(t, "serve", "0.0.0.0:0")
	_, wport, _ := net.SplitHostPort(w.Addr)
	for _, spec := range []string{"0.0.0.0:" + wport, "[::]:" + wport} {
		if ls := lookup(t, spec); len(ls) != 1 || !holderPIDs(ls[0])[w.Cmd.Process.Pid] {
			t.Errorf("lookup(%s) = %+v, want pid %d", spec, ls, w.Cmd.Process.Pid)
		}
	}
	if ls := lookup(t, "127.0.0.1:"+wport); len(ls) != 0 {
		t.Errorf("lookup(127.0.0.1:%s) = %+v, want nothing", wport, ls)
	}
}

func TestListenersPrefork(t *testing.T) {
	h := testutil.StartHelper(t, "prefork")
	f := strings.Fields(h.Line) // listening ADDR workers PID,PID
	ls := lookup(t, h.Addr)
	if len(ls) != 1 {
		t.Fatalf("found %d listeners, want 1", len(ls))
	}
	got := holderPIDs(ls[0])
	want := map[int]bool{h.Cmd.Process.Pid: true}
	for _, p := range strings.Split(f[3], ",") {
		pid, _ := strconv.Atoi(p)
		want[pid] = true
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("holders (-want +got):\n%s", diff)
	}
	ts := StopTargets("/proc", ls[0], nil)
	if len(ts) != 1 || ts[0].PID != h.Cmd.Process.Pid {
		t.Errorf("stopTargets = %+v, want the master %d only", ts, h.Cmd.Process.Pid)
	}
}

func TestListenersManagedByLauncher(t *testing.T) {
	h := testutil.StartHelper(t, "wrapper", "127.0.0.1:0")
	ls := lookup(t, h.Addr)
	if len(ls) != 1 || len(ls[0].Holders) != 1 {
		t.Fatalf("lookup = %+v, want one holder", ls)
	}
	if ls[0].Holders[0].PPID != h.Cmd.Process.Pid {
		t.Fatalf("holder's parent = %d, want the wrapper %d", ls[0].Holders[0].PPID, h.Cmd.Process.Pid)
	}
	// The wrapper is a launcher because the run directory records it.
	dir := testutil.RunDir(t)
	if ts := StopTargets("/proc", ls[0], rundir.LiveLaunchers(dir)); len(ts) != 1 || ts[0].PID == h.Cmd.Process.Pid {
		t.Errorf("stopTargets with no record = %+v, want the server, not the wrapper %d", ts, h.Cmd.Process.Pid)
	}
	st, err := procfs.FS("/proc").Stat(h.Cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if err := rundir.WriteRecord(dir, target.Spec{Net: target.NetUnix, Path: "/run/app.sock"}.Key(), rundir.Record{Launcher: h.Cmd.Process.Pid, LauncherStart: st.Start}); err != nil {
		t.Fatal(err)
	}
	ts := StopTargets("/proc", ls[0], rundir.LiveLaunchers(dir))
	if len(ts) != 1 || ts[0].PID != h.Cmd.Process.Pid || !ts[0].Launcher {
		t.Errorf("stopTargets = %+v, want the launcher %d", ts, h.Cmd.Process.Pid)
	}
}

func TestListenersPython(t *testing.T) {
	testutil.RequireTool(t, "python3")
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal(err)
	}
	port := testutil.FreePort(t)
	cmd := exec.Command(py, "-u", "-m", "http.server", "--bind", "127.0.0.1", port)
	cmd.Dir = t.TempDir()
	h := testutil.StartAndReadLine(t, cmd) // "Serving HTTP on 127.0.0.1 port N ..."
	if !strings.Contains(h.Line, "port "+port) {
		t.Fatalf("python printed %q", h.Line)
	}
	ls := lookup(t, "127.0.0.1:"+port)
	if len(ls) != 1 || !holderPIDs(ls[0])[cmd.Process.Pid] {
		t.Fatalf("lookup = %+v, want python's pid %d", ls, cmd.Process.Pid)
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
	other := testutil.StartHelper(t, "serve", "127.0.0.1:0") // holds a socket, not this one
	self, otherPID := os.Getpid(), other.Cmd.Process.Pid
	inodes := []uint64{ls[0].Inode}

	got, err := StillHolding("/proc", inodes, []int{otherPID, self})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{self}, got); diff != "" {
		t.Errorf("while listening (-want +got):\n%s", diff)
	}
	ln.Close()
	got, err = StillHolding("/proc", inodes, []int{otherPID, self})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("after close: %v, want none", got)
	}
}
