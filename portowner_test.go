package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
)

// lookup is the port lookup as `takeover who` runs it, against the live /proc.
func lookup(t *testing.T, spec string) []owner.Listener {
	t.Helper()
	ps, err := target.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := owner.Listeners("/proc", ps, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	return ls
}

func holderPIDs(l owner.Listener) map[int]bool {
	m := make(map[int]bool)
	for _, h := range l.Holders {
		m[h.PID] = true
	}
	return m
}

func TestWhoCommand(t *testing.T) {
	h := testutil.StartHelper(t, "serve", "127.0.0.1:0")
	pid := strconv.Itoa(h.Cmd.Process.Pid)
	_, port, _ := net.SplitHostPort(h.Addr)

	var out, errOut bytes.Buffer
	if code := run([]string{"who", port}, &out, &errOut); code != 0 {
		t.Fatalf("who %s = %d, stderr %q", port, code, errOut.String())
	}
	for _, want := range []string{h.Addr, "pid " + pid, "takeover would signal pid " + pid} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("who output lacks %q:\n%s", want, out.String())
		}
	}

	out.Reset()
	if code := run([]string{"who", "--json", h.Addr}, &out, &errOut); code != 0 {
		t.Fatalf("who --json = %d", code)
	}
	var js []whoListener
	if err := json.Unmarshal(out.Bytes(), &js); err != nil {
		t.Fatalf("who --json printed %q: %v", out.String(), err)
	}
	if len(js) != 1 || len(js[0].Holders) != 1 || fmt.Sprint(js[0].Holders[0].PID) != pid || js[0].Stop[0].PID != h.Cmd.Process.Pid {
		t.Errorf("who --json = %+v", js)
	}

	free := testutil.FreePort(t)
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
	got := []whoHolder{describeHolder(procfs.FS(proc), owner.Holder{PID: 4711, PPID: 1, FD: 3}), describeHolder(procfs.FS(proc), owner.Holder{PID: 4712, PPID: 1, FD: 5})}
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
	testutil.RequireTool(t, "setpriv")
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
	h := testutil.StartHelper(t, "serve", "127.0.0.1:0") // root's
	out, err := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", bin, "who", h.Addr).CombinedOutput()
	if err != nil {
		t.Fatalf("who as nobody: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "held by a process this user cannot see") {
		t.Errorf("who as nobody printed:\n%s", out)
	}
}
