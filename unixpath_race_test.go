package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/takeover/takeover/internal/seccomp"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// The test binary is also the attacker of TestSocketModeNeverByName:
// TAKEOVER_SYMLINK_SWAPPER="DIR NAME TARGET" makes it watch DIR and, each
// time a socket file NAME is created there (NAME* : a name beginning so),
// rename a symlink to TARGET over it at once, then print "swapped MODE"
// (the socket file's mode as it was born). A mode of its own, not one of runHelper's, so that helpers_test.go
// stays untouched.
func init() {
	if spec := os.Getenv("TAKEOVER_SYMLINK_SWAPPER"); spec != "" {
		os.Exit(symlinkSwapper(spec))
	}
}

// TAKEOVER_TEST_NO_UNSHARE=1 makes the test binary exec os.Args[1:] under
// a seccomp filter that answers EPERM to unshare(2), as the default
// profiles of Docker and podman do without CAP_SYS_ADMIN.
func init() {
	if os.Getenv("TAKEOVER_TEST_NO_UNSHARE") != "1" {
		return
	}
	runtime.LockOSThread() // the filter binds to this thread, which execs
	insns := seccomp.Filter([]uint32{unix.SYS_UNSHARE}, unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM))
	prog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
	if err == nil {
		if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); errno != 0 {
			err = errno
		}
	}
	runtime.KeepAlive(insns)
	if err == nil {
		os.Unsetenv("TAKEOVER_TEST_NO_UNSHARE")
		err = syscall.Exec(os.Args[1], os.Args[1:], os.Environ())
	}
	fmt.Fprintln(os.Stderr, "no-unshare sandbox:", err)
	os.Exit(125)
}

func symlinkSwapper(spec string) int {
	f := strings.SplitN(spec, " ", 3)
	if len(f) != 3 {
		fmt.Printf("error: TAKEOVER_SYMLINK_SWAPPER=%q, want \"DIR NAME TARGET\"\n", spec)
		return 2
	}
	dir, name, target := f[0], f[1], f[2]
	runtime.LockOSThread() // the thread chrt made real-time, pinned beside takeover's
	ifd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	if _, err := unix.InotifyAddWatch(ifd, dir, unix.IN_CREATE); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	bait := filepath.Join(dir, ".bait")
	unix.Unlink(bait)
	if err := unix.Symlink(target, bait); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("watching")
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(ifd, buf)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			got := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if got != name && !(strings.HasSuffix(name, "*") && strings.HasPrefix(got, strings.TrimSuffix(name, "*"))) {
				continue
			}
			// The race: nothing but an lstat between the event and the
			// rename, on a real-time thread that preempts takeover's.
			path := filepath.Join(dir, got)
			var st unix.Stat_t
			if unix.Lstat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
				continue
			}
			if err := unix.Rename(bait, path); err != nil {
				fmt.Println("error:", err)
				return 1
			}
			fmt.Printf("swapped %#o\n", st.Mode&0o7777)
			if err := unix.Symlink(target, bait); err != nil {
				fmt.Println("error:", err)
				return 1
			}
		}
	}
}

// TestSocketModeNeverByName: takeover never sets the mode of a --path
// socket file by its name (issue 28, item 2). Root binds the socket in a
// directory another user owns; were its mode set by a chmod of the path
// after the bind, that user could rename a symlink over the new file in
// between, and root would chmod the symlink's target. Here the attacker,
// user nobody, owner of the directory, does just that at each start, on a
// real-time thread pinned to takeover's CPU, so that it runs between the
// bind and whatever follows it; the root-owned 0600 file it points to must
// keep its mode. Both binds are tried: takeover's own for start-server, and
// the one it makes for a command run as root (the plain --path launcher);
// each also where unshare(2) is refused, as in a container, which takes
// the other way to the mode. Without the attacker, the socket file gets
// the mode asked for: 0777 for start-server, the command's umask's for the
// launcher; and the attacker sees that mode from the file's birth.
func TestSocketModeNeverByName(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: root's bind in another user's directory is the point")
	}
	for _, tool := range []string{"setpriv", "taskset", "chrt"} {
		testutil.RequireTool(t, tool)
	}
	bin := takeoverBin(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := testutil.CopyTestBinary(t, testutil.OpenTempDir(t)) // nobody runs it
	dir := testutil.OpenTempDir(t)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("root's\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "app.sock")
	asNobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}

	type start struct {
		name       string
		argv       []string
		env        string
		ready      string // a line on stdout once the bind has returned
		mode       fs.FileMode
		uid        uint32 // the socket file's owner (and group)
		noUnshare  bool
		unattacked bool     // run without the attacker only
		first      []string // a takeover to start first, which argv replaces
		attacked   string   // the name the attacker swaps: the path's, or a side name's
	}
	var starts []start
	for _, noUnshare := range []bool{false, true} {
		for _, s := range []start{
			{"start-server", []string{bin, "start-server", "--path=" + path, "--", "sh", "-c", "echo worker started; exec sleep 600"},
				"", "worker started", 0o777, 0, noUnshare, false, nil, ""},
			{"launcher", []string{bin, "--path", path, "--", "sh", "-c", `umask 027 && exec "$0" "$@"`, helper, "unix:" + path},
				"TAKEOVER_TEST_HELPER=serve", "listening ", 0o750, 0, noUnshare, false, nil, ""},
			{"launcher as nobody", append(append([]string{bin, "--path", path, "--"}, asNobody...), "sh", "-c", `umask 077 && exec "$0" "$@"`, helper, "unix:"+path),
				"TAKEOVER_TEST_HELPER=serve", "listening ", 0o700, 65534, noUnshare, true, nil, ""},
			// A rename: the new socket is bound beside the path, at a
			// side name the attacker swaps instead.
			{"launcher replacing another by a rename", []string{bin, "--path", path, "--strategy", "rebind", "--", "sh", "-c", `umask 027 && exec "$0" "$@"`, helper, "unix:" + path},
				"TAKEOVER_TEST_HELPER=serve", "listening ", 0o750, 0, noUnshare, false,
				[]string{bin, "--path", path, "--", "sh", "-c", `umask 027 && exec "$0" "$@"`, helper, "unix:" + path}, ".app.sock.takeover-new-*"},
		} {
			if s.attacked == "" {
				s.attacked = "app.sock"
			}
			if noUnshare {
				s.name += " without unshare"
				s.argv = append([]string{self}, s.argv...)
				s.env += " TAKEOVER_TEST_NO_UNSHARE=1"
			}
			starts = append(starts, s)
		}
	}
	// launch starts argv as s says, pinned to CPU 0, and waits for its
	// ready line; it reports whether it came, or it exited first (if
	// mayFail).
	var launch func(t *testing.T, s start, argv []string, mayFail bool) (*tkRun, bool)
	// run starts s (after s.first, whose run it returns too).
	run := func(t *testing.T, s start, mayFail bool) (r, first *tkRun, ready bool) {
		t.Helper()
		os.Remove(path) // a symlink the attacker left, or a socket file
		if s.first != nil {
			argv := s.first
			if s.noUnshare {
				argv = append([]string{self}, s.first...)
			}
			first, _ = launch(t, s, argv, false)
		}
		r, ready = launch(t, s, s.argv, mayFail)
		return r, first, ready
	}
	launch = func(t *testing.T, s start, argv []string, mayFail bool) (*tkRun, bool) {
		t.Helper()
		cmd := exec.Command("taskset", append([]string{"-c", "0"}, argv...)...)
		cmd.Env = append(os.Environ(), strings.Fields(s.env)...)
		r := startRun(t, cmd)
		deadline := time.After(60 * time.Second)
		for {
			select {
			case l := <-r.lines:
				if strings.HasPrefix(l, s.ready) {
					return r, true
				}
			case <-r.exited:
				if !mayFail {
					t.Fatalf("%s exited (%v) before its bind returned:\n%s", s.name, r.err, r.stderr)
				}
				return r, false
			case <-deadline:
				t.Fatalf("%s: no %q in 60s:\n%s", s.name, s.ready, r.stderr)
			}
		}
	}
	stop := func(t *testing.T, r *tkRun) {
		t.Helper()
		r.cmd.Process.Signal(syscall.SIGTERM) // our unreaped child; a no-op once exited
		r.wait(t)
	}

	for _, s := range starts {
		r, first, _ := run(t, s, false)
		checkSocketFile(t, path, s.mode, s.uid, s.uid)
		stop(t, r)
		if first != nil {
			stop(t, first)
		}
	}

	// attack starts the attacker, for t: real-time (chrt -f), on CPU 0
	// with takeover, as nobody, swapping name. It returns what it says.
	attack := func(t *testing.T, name string) <-chan string {
		attacker := exec.Command("chrt", append(append([]string{"-f", "10", "taskset", "-c", "0"}, asNobody...), helper)...)
		attacker.Env = append(os.Environ(), "GOMAXPROCS=1", "TAKEOVER_SYMLINK_SWAPPER="+dir+" "+name+" "+secret)
		attacker.Stderr = os.Stderr
		out, err := attacker.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := attacker.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			attacker.Process.Kill() // our unreaped child: the pid is its own
			attacker.Wait()
		})
		swaps := make(chan string, 100)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				swaps <- sc.Text()
			}
			close(swaps)
		}()
		if l := <-swaps; l != "watching" {
			t.Fatalf("the attacker said %q", l)
		}
		return swaps
	}

	const rounds = 5
	for _, s := range starts {
		if s.unattacked {
			continue
		}
		t.Run(s.name, func(t *testing.T) {
			swaps := attack(t, s.attacked)
			flipped, failed := 0, 0
			for i := range rounds {
				r, first, ready := run(t, s, s.noUnshare) // there the bind fails when the file is replaced
				var l string
				select {
				case l = <-swaps:
				case <-time.After(60 * time.Second):
					t.Fatalf("start %d: the attacker saw no socket file made in 60s", i+1)
				}
				stop(t, r)
				if first != nil {
					stop(t, first)
				}
				if !ready {
					failed++
					if !strings.Contains(r.stderr.String(), "was replaced") {
						t.Errorf("start %d: %s failed, not because the socket file was replaced:\n%s", i+1, s.name, r.stderr)
					}
				}
				if want := fmt.Sprintf("swapped %#o", uint32(s.mode)); l != want && !s.noUnshare {
					t.Errorf("start %d: the attacker says %q: want %q, the socket file born with its mode", i+1, l, want)
				}
				fi, err := os.Stat(secret)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					flipped++
					t.Logf("start %d: root's 0600 file behind the symlink is now %v", i+1, fi.Mode())
					os.Chmod(secret, 0o600)
				}
			}
			t.Logf("%d of %d starts failed their bind (the socket file replaced), %d chmodded the symlink's target", failed, rounds, flipped)
			if flipped > 0 {
				t.Errorf("%s chmodded the symlink's target in %d of %d starts", s.name, flipped, rounds)
			}
		})
	}
}
