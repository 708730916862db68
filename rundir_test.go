package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// testUser creates a user of its own for the test (useradd) and returns its
// uid; userdel removes it at cleanup.
func testUser(t *testing.T) int {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a user")
	}
	testutil.RequireTool(t, "useradd")
	testutil.RequireTool(t, "userdel")
	name := fmt.Sprintf("tkvtest%d", rand.IntN(1e8))
	if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v\n%s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", name).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v\n%s", name, err, out)
		}
	})
	out, err := exec.Command("id", "-u", name).Output()
	if err != nil {
		t.Fatal(err)
	}
	uid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

// asUser runs argv as uid (its group the same number), with no
// supplementary groups and no capabilities.
func asUser(ctx context.Context, uid int, argv ...string) *exec.Cmd {
	id := strconv.Itoa(uid)
	argv = append([]string{"setpriv", "--reuid=" + id, "--regid=" + id, "--clear-groups", "--inh-caps=-all"}, argv...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// envWithout is the test's environment less the variables named, plus set.
func envWithout(drop []string, set ...string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return slices.ContainsFunc(drop, func(name string) bool { return strings.HasPrefix(kv, name+"=") })
	})
	return append(env, set...)
}

// dirState describes what a directory holds: each name with its mode and,
// for a symlink, its target; "" if it does not exist.
func dirState(t *testing.T, dir string) string {
	t.Helper()
	fi, err := os.Lstat(dir)
	if err != nil {
		return ""
	}
	s := fmt.Sprintf("%v;", fi.Mode())
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, _ := e.Info()
		target, _ := os.Readlink(filepath.Join(dir, e.Name()))
		s += fmt.Sprintf(" %s %v %s;", e.Name(), fi.Mode(), target)
	}
	return s
}

// TestRunDirOfAnotherUser: another local user (nobody) makes the victim's
// default run directory first, $TMPDIR/takeover-UID, mode 0777, with the
// port's lock file a symlink to a file of the victim's. The victim's
// takeover refuses the directory (exit 125, saying whose it is) and touches
// nothing: not the file, not the directory, and runs no command. (Before,
// it followed the symlink and overwrote the file with its pid and start
// time.)
func TestRunDirOfAnotherUser(t *testing.T) {
	testutil.RequireTool(t, "setpriv")
	victim := testUser(t)
	bin := takeoverBin(t) // in a directory every user may enter
	tmp, err := os.MkdirTemp("", "takeover-tmpdir")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, 0o1777); err != nil { // as /tmp
		t.Fatal(err)
	}
	home := filepath.Join(tmp, "home")
	secret := filepath.Join(home, "secret")
	os.Mkdir(home, 0o700)
	os.WriteFile(secret, []byte("the victim's\n"), 0o600)
	os.Chown(home, victim, victim)
	os.Chown(secret, victim, victim)
	marker := filepath.Join(home, "ran")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	port := testutil.FreePort(t)
	run := filepath.Join(tmp, fmt.Sprintf("takeover-%d", victim))
	plant := asUser(ctx, 65534, "sh", "-c", `mkdir -m 0777 "$1" && ln -s "$2" "$1/port-$3.lock"`, "sh", run, secret, port)
	if out, err := plant.CombinedOutput(); err != nil {
		t.Fatalf("nobody could not plant the directory: %v\n%s", err, out)
	}
	before := dirState(t, run)

	cmd := asUser(ctx, victim, bin, "--port", port, "--", "touch", marker)
	cmd.Env = envWithout([]string{"TAKEOVER_RUN_DIR", "XDG_RUNTIME_DIR", "TMPDIR"}, "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != supervise.ExitLauncher {
		t.Errorf("takeover exited with %v, want status %d; output:\n%s", err, supervise.ExitLauncher, out)
	}
	if want := fmt.Sprintf("run directory %s is owned by uid 65534, not by this user (uid %d)", run, victim); !strings.Contains(string(out), want) {
		t.Errorf("takeover's output lacks %q:\n%s", want, out)
	}
	if b, _ := os.ReadFile(secret); string(b) != "the victim's\n" {
		t.Errorf("the victim's file, the planted lock's target, now holds %q", b)
	}
	if after := dirState(t, run); after != before {
		t.Errorf("the planted directory changed:\nbefore %s\nafter  %s", before, after)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("takeover ran its command in a run directory it should refuse")
	}
}

// TestRunDirRefused: takeover as root refuses a TAKEOVER_RUN_DIR that is
// another user's, open to others, or a symlink, with exit 125 and a
// message saying which; it creates nothing there and runs no command.
func TestRunDirRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make another user's directory")
	}
	bin := takeoverBin(t)
	for _, tt := range []struct {
		name string
		make func(t *testing.T, dir string)
		says string
	}{
		{"another user's", func(t *testing.T, dir string) {
			os.Mkdir(dir, 0o700)
			os.Chown(dir, 65534, 65534)
		}, "is owned by uid 65534, not by this user (uid 0)"},
		{"open to all", func(t *testing.T, dir string) {
			os.Mkdir(dir, 0o700)
			os.Chmod(dir, 0o777)
		}, "has mode 0777, not 0700"},
		{"open to the group", func(t *testing.T, dir string) {
			os.Mkdir(dir, 0o700)
			os.Chmod(dir, 0o770)
		}, "has mode 0770, not 0700"},
		{"a symlink", func(t *testing.T, dir string) {
			real := dir + ".real"
			os.Mkdir(real, 0o700)
			os.Symlink(real, dir)
		}, "is a symbolic link"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			top := t.TempDir()
			dir := filepath.Join(top, "run")
			tt.make(t, dir)
			before := dirState(t, dir)
			marker := filepath.Join(top, "ran")
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "--port", testutil.FreePort(t), "--", "touch", marker)
			cmd.Env = envWithout([]string{"TAKEOVER_RUN_DIR"}, "TAKEOVER_RUN_DIR="+dir)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != supervise.ExitLauncher {
				t.Errorf("takeover exited with %v, want status %d; output:\n%s", err, supervise.ExitLauncher, out)
			}
			if want := "takeover: run directory " + dir + " " + tt.says; !strings.Contains(string(out), want) {
				t.Errorf("takeover's output lacks %q:\n%s", want, out)
			}
			if after := dirState(t, dir); after != before {
				t.Errorf("the run directory changed:\nbefore %s\nafter  %s", before, after)
			}
			if _, err := os.Stat(marker); err == nil {
				t.Error("takeover ran its command")
			}
		})
	}
}

// TestRunDirLeftovers: a takeover that starts clears what dead takeovers
// left in the run directory (a lock and record naming a dead launcher, the
// socket of a killed launcher, another whose pid now belongs to a process
// that does not listen there, an earlier version's notify socket, a
// record's temporary file), and nothing a live one uses: the files of a
// takeover that serves, which then hands its socket over through its unix
// socket, and a lock another process holds.
func TestRunDirLeftovers(t *testing.T) {
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	t.Setenv("TAKEOVER_RUN_DIR", dir)
	self, _ := os.Executable()
	addr := "127.0.0.1:" + testutil.FreePort(t)
	live := startTakeover(t, "serve", "--port", addr, "--", self, addr)
	live.waitLog(t, "took over")
	liveFiles := dirNames(t, dir)

	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	gone := dead.Process.Pid
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	closedSocket := func(name, network string) {
		ln, err := net.ListenUnix(network, &net.UnixAddr{Name: filepath.Join(dir, name), Net: network})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close()
	}
	stale := []string{"port-1.lock", "port-1.json", fmt.Sprintf("launcher-%d.sock", gone), fmt.Sprintf("launcher-%d.sock", os.Getpid()),
		fmt.Sprintf("notify-%d-1.sock", gone), fmt.Sprintf(".port-1.json.%d.42", gone), fmt.Sprintf(".launcher-%d.sock.new", gone)}
	write("port-1.lock", fmt.Sprintf("%d 1\n", gone))
	write("port-1.json", fmt.Sprintf(`{"launcher_pid":%d,"launcher_start":1}`, gone))
	closedSocket(stale[2], "unixpacket")
	closedSocket(stale[3], "unixpacket") // this test's pid, alive, listening there no more
	if c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, stale[4]), Net: "unixgram"}); err == nil {
		c.Close() // a datagram socket's file stays
	}
	write(stale[5], "{")
	closedSocket(stale[6], "unixpacket")
	write("port-2.lock", "")
	held, err := os.OpenFile(filepath.Join(dir, "port-2.lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := syscall.Flock(int(held.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}

	other := "127.0.0.1:" + testutil.FreePort(t)
	next := startTakeover(t, "serve", "--port", other, "--", self, other)
	next.waitLog(t, "took over")
	names := dirNames(t, dir)
	for _, name := range stale {
		if slices.Contains(names, name) {
			t.Errorf("%s, left by a dead takeover, is still there", name)
		}
	}
	for _, name := range append(liveFiles, "port-2.lock") {
		if !slices.Contains(names, name) {
			t.Errorf("%s, of a live takeover or process, was removed", name)
		}
	}
	after := startTakeover(t, "serve", "--port", addr, "--", self, addr)
	if code := live.wait(t); code != 0 {
		t.Fatalf("the live takeover exited %d:\n%s", code, live.stderr)
	}
	after.waitLog(t, "via=unix-socket")
}

// TestRecordsSynced: the generation record and the --status-file are
// written through a temporary file that is fsynced before its rename, and
// the directory is fsynced after it, so that a crash leaves the old
// contents or the new, never an empty file. strace shows the calls.
func TestRecordsSynced(t *testing.T) {
	testutil.RequireTool(t, "strace")
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	status := filepath.Join(t.TempDir(), "status.json")
	trace := filepath.Join(t.TempDir(), "trace")
	self, _ := os.Executable()
	port := testutil.FreePort(t)
	addr := "127.0.0.1:" + port
	cmd := exec.Command("strace", "-f", "-qq", "-o", trace, "-e", "trace=openat,fsync,fdatasync,renameat,renameat2",
		takeoverBin(t), "--status-file", status, "--port", addr, "--", self, addr)
	cmd.Env = envWithout([]string{"TAKEOVER_RUN_DIR"}, "TAKEOVER_RUN_DIR="+dir, "TAKEOVER_TEST_HELPER=serve")
	r := startRun(t, cmd)
	r.waitLog(t, "took over") // the record and the status file are written before it
	tk := procfs.FS("/proc").WithDescendants([]int{r.cmd.Process.Pid})
	if len(tk) < 2 {
		t.Fatalf("strace has no child")
	}
	syscall.Kill(tk[1], syscall.SIGTERM) // takeover; strace ends with it
	r.wait(t)
	b, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	calls := straceCalls(string(b))
	for _, file := range []string{"port-" + port + ".json", "status.json"} {
		t.Run(file, func(t *testing.T) {
			checkSyncedRename(t, calls, file)
		})
	}
}

// A straceCall is one system call strace saw: its name, arguments and
// result, however strace split it across lines.
type straceCall struct {
	name, args, result string
}

// straceCalls reads `strace -f -o` output, joining "<unfinished ...>" calls
// with their "<... resumed>" ends, in the order the calls began.
func straceCalls(out string) []straceCall {
	var calls []straceCall
	pending := map[string]int{} // pid: index of its unfinished call
	for _, line := range strings.Split(out, "\n") {
		pid, rest, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		if strings.HasPrefix(rest, "<... ") {
			i, ok := pending[pid]
			if !ok {
				continue
			}
			delete(pending, pid)
			_, tail, _ := strings.Cut(rest, "resumed>")
			args, result, _ := strings.Cut(tail, " = ")
			calls[i].args = strings.TrimSpace(calls[i].args + args)
			calls[i].result = result
			continue
		}
		name, tail, ok := strings.Cut(rest, "(")
		if !ok {
			continue
		}
		if head, unfinished := strings.CutSuffix(tail, " <unfinished ...>"); unfinished {
			pending[pid] = len(calls)
			calls = append(calls, straceCall{name: name, args: head})
			continue
		}
		args, result, _ := strings.Cut(tail, " = ")
		calls = append(calls, straceCall{name: name, args: strings.TrimSpace(args), result: result})
	}
	return calls
}

// checkSyncedRename checks that the last rename onto file came from a
// temporary file fsynced after it was opened, and that the directory was
// fsynced after the rename.
func checkSyncedRename(t *testing.T, calls []straceCall, file string) {
	t.Helper()
	ren := -1
	for i, c := range calls {
		if strings.HasPrefix(c.name, "renameat") && strings.Contains(c.args, `"`+file+`"`) {
			ren = i
		}
	}
	if ren < 0 {
		t.Fatalf("no rename onto %s", file)
	}
	args := strings.Split(calls[ren].args, ", ")
	if len(args) < 4 {
		t.Fatalf("rename with arguments %q", calls[ren].args)
	}
	dirFD, tmp := args[0], args[1]
	open := -1
	for i := ren - 1; i >= 0 && open < 0; i-- {
		if calls[i].name == "openat" && strings.Contains(calls[i].args, tmp) {
			open = i
		}
	}
	if open < 0 {
		t.Fatalf("no open of %s before its rename", tmp)
	}
	tmpFD := strings.Fields(calls[open].result)[0]
	synced := func(fd string, from, to int) bool {
		for _, c := range calls[from:to] {
			if (c.name == "fsync" || c.name == "fdatasync") && strings.TrimSuffix(c.args, ")") == fd {
				return true
			}
		}
		return false
	}
	if !synced(tmpFD, open, ren) {
		t.Errorf("%s (fd %s) was renamed onto %s without an fsync", tmp, tmpFD, file)
	}
	if !synced(dirFD, ren, len(calls)) {
		t.Errorf("the directory (fd %s) was not fsynced after the rename onto %s", dirFD, file)
	}
}
