package main

// A real systemd 252 as PID 1 of a container, for tests that drive units with
// systemctl. The recipe and its pitfalls are in PLATFORMS.md ("systemd 252 as
// PID 1 of a container"): the host's own root, bound non-recursively onto an
// empty directory inside a private mount namespace, booted by systemd-nspawn
// with --volatile=overlay (read-only host tree, tmpfs on top).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// sdUnitDefaults begins the text of every service a test starts in an sdBox.
// Without StartLimitIntervalSec=0 more than 5 starts in 10 s fail the unit
// (and drop its file descriptor store); without LimitNOFILE=20000 a service
// gets 1024 open files, too few under load. Append the [Service] lines after
// it; a later "[Unit]" header adds to the first one (systemd merges repeated
// sections). Not for .socket units.
const sdUnitDefaults = "[Unit]\nStartLimitIntervalSec=0\n\n[Service]\nLimitNOFILE=20000\n"

const (
	sdBootTimeout = 30 * time.Second // boot to is-system-running running/degraded
	sdStopTimeout = 10 * time.Second // orderly halt before SIGKILL
	sdCmdTimeout  = 2 * time.Minute  // any one nsenter'd command
)

type sdOptions struct {
	// Seccomp true: nspawn's default seccomp filter, which answers EPERM to
	// pidfd_getfd among others. False: SYSTEMD_SECCOMP=0 in nspawn's
	// environment, so services get no filter, as on a real host.
	Seccomp bool
}

// sdBox is one booted container. Its methods may be called from any
// goroutine, including subtests of the test that booted it.
type sdBox struct {
	tb   testing.TB
	name string // machine name, also the name of its cgroups
	dir  string // temp dir holding root, units, share and the log
	root string // empty mount point for the bind of / (only in nspawn's mount namespace)
	// units is bound at /etc/systemd/system, share at /share.
	units, share string
	cgroups      []string // the cgroups made for nspawn, created in this order
	logPath      string   // nspawn's stdout and stderr

	daemonProc               // unshare, exec'ing sh, exec'ing systemd-nspawn: one pid
	bootTime   time.Duration // from starting nspawn to running/degraded

	mu   sync.Mutex
	pid1 int // the container's PID 1 as the host sees it

	closeOnce sync.Once
}

var sdBoots atomic.Int64 // makes machine names unique within this process

// bootSystemd boots a container with systemd as PID 1 and returns it once
// `systemctl is-system-running --wait` says running or degraded. It skips the
// test only when we are not root or systemd-nspawn is not installed (see
// testutil.RequireTool). Close,
// registered with tb.Cleanup, removes all it made; boot once per test function
// and share the box across its subtests (a boot takes about a second).
func bootSystemd(tb testing.TB, opt sdOptions) *sdBox {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("bootSystemd: needs root (systemd-nspawn, mounts, cgroups)")
	}
	for _, tool := range []string{"systemd-nspawn", "unshare", "nsenter"} {
		testutil.RequireTool(tb, tool)
	}

	b := &sdBox{tb: tb, name: fmt.Sprintf("takeover-test-%d-%d", os.Getpid(), sdBoots.Add(1))}
	tb.Cleanup(b.Close) // registered first, so it runs whatever fails below
	if err := b.prepare(); err != nil {
		tb.Fatalf("bootSystemd: %v", err)
	}
	began := time.Now()
	if err := b.start(opt); err != nil {
		tb.Fatalf("bootSystemd: %v", err)
	}
	state, err := b.waitBooted(began.Add(sdBootTimeout))
	if err != nil {
		tb.Fatalf("bootSystemd %s: %v\nnspawn output (tail):\n%s", b.name, err, fileTail(b.logPath, 4000))
	}
	b.bootTime = time.Since(began)
	if state == "degraded" {
		out, _ := b.Systemctl("list-units", "--failed", "--plain", "--no-legend")
		tb.Logf("bootSystemd %s: degraded; failed units:\n%s", b.name, out)
	}
	return b
}

// prepare makes the temp dirs, the unit directory and the cgroups.
func (b *sdBox) prepare() error {
	dir, err := os.MkdirTemp("", b.name+"-")
	if err != nil {
		return err
	}
	b.dir = dir
	b.root = filepath.Join(dir, "root")
	b.units = filepath.Join(dir, "units")
	b.share = filepath.Join(dir, "share")
	b.logPath = filepath.Join(dir, "nspawn.log")
	for _, d := range []string{b.root, b.units, b.share} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	// Services may run as another user; the share must be readable to them.
	if err := os.Chmod(b.share, 0o755); err != nil {
		return err
	}
	// Our own /etc/systemd/system: the host's has units Debian enabled
	// (nginx, redis, postgresql, ...) that must not start inside.
	links := map[string]string{
		"default.target": "/lib/systemd/system/multi-user.target",
		// No login prompts, and no time sync (no CAP_SYS_TIME inside).
		"console-getty.service":     "/dev/null",
		"getty.target":              "/dev/null",
		"systemd-timesyncd.service": "/dev/null",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(b.units, name)); err != nil {
			return err
		}
	}
	for _, h := range []string{"unified", "systemd"} {
		cg := filepath.Join("/sys/fs/cgroup", h, b.name)
		if err := os.Mkdir(cg, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		b.cgroups = append(b.cgroups, cg)
	}
	return nil
}

// sdBootScript runs as the process we start, under unshare's private mount
// namespace, and execs nspawn in the same pid: $1 root, $2 units, $3 share,
// $4 machine name, $5 and $6 the cgroups. It joins the cgroups itself so that
// nspawn never runs outside them.
const sdBootScript = `set -e
echo $$ >"$5/cgroup.procs"
echo $$ >"$6/cgroup.procs"
mount --bind / "$1"
exec systemd-nspawn --register=no --keep-unit --machine="$4" -D "$1" --volatile=overlay \
	--bind="$2":/etc/systemd/system --bind="$3":/share --console=read-only \
	-b -- systemd.getty_auto=0 systemd.log_color=0`

func (b *sdBox) start(opt sdOptions) error {
	logf, err := os.Create(b.logPath)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command("unshare", "--mount", "--propagation", "private",
		"sh", "-c", sdBootScript, "sh", b.root, b.units, b.share, b.name, b.cgroups[0], b.cgroups[1])
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = sdEnv(os.Environ())
	if !opt.Seccomp {
		cmd.Env = append(cmd.Env, "SYSTEMD_SECCOMP=0")
	}
	if err := b.daemonProc.start(cmd); err != nil {
		return fmt.Errorf("start nspawn: %w", err)
	}
	return nil
}

// sdEnv drops what would make nspawn talk to a service manager of ours or
// change its seccomp choice.
func sdEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "SYSTEMD_SECCOMP":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// waitBooted finds the container's PID 1, then waits for the boot to end.
func (b *sdBox) waitBooted(deadline time.Time) (string, error) {
	for {
		if b.exited() {
			return "", fmt.Errorf("nspawn exited during boot: %v", b.waitErr)
		}
		if _, err := b.leader(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return "", errors.New("no systemd child of nspawn appeared")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var last string
	for {
		// --wait returns once the manager leaves starting; until the manager
		// is up far enough, systemctl fails to connect and we ask again.
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		out, _ := b.output(ctx, "systemctl", "is-system-running", "--wait")
		cancel()
		state := strings.TrimSpace(out)
		if state == "running" || state == "degraded" {
			return state, nil
		}
		last = state
		if b.exited() {
			return "", fmt.Errorf("nspawn exited during boot: %v (last state %q)", b.waitErr, last)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("not booted in %v: is-system-running says %q", sdBootTimeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leader returns the container's PID 1 as the host sees it: the child of our
// nspawn whose comm is systemd. Pids wrap within minutes here, so a pid found
// earlier is checked again on each use. Our nspawn's own pid cannot be reused
// before we reap it, which is what b.done tells.
func (b *sdBox) leader() (int, error) {
	if b.cmd == nil || b.exited() {
		return 0, errors.New("the container is not running")
	}
	nspawn := b.cmd.Process.Pid
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pid1 != 0 {
		if ppid, comm, err := sdProcStat(b.pid1); err == nil && ppid == nspawn && comm == "systemd" {
			return b.pid1, nil
		}
		b.pid1 = 0
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, comm, err := sdProcStat(pid); err == nil && ppid == nspawn && comm == "systemd" {
			b.pid1 = pid
			return pid, nil
		}
	}
	return 0, fmt.Errorf("nspawn (pid %d) has no systemd child", nspawn)
}

// sdProcStat reads a process's parent and comm from /proc/PID/stat.
func sdProcStat(pid int) (ppid int, comm string, err error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, "", err
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	s := string(data)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return 0, "", fmt.Errorf("/proc/%d/stat: unexpected %q", pid, s)
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 2 {
		return 0, "", fmt.Errorf("/proc/%d/stat: unexpected %q", pid, s)
	}
	ppid, err = strconv.Atoi(f[1])
	return ppid, s[open+1 : end], err
}

// output runs args inside the container with nsenter and returns the
// combined output. Its process group is killed if ctx ends first (nsenter
// forks to enter the pid namespace).
func (b *sdBox) output(ctx context.Context, args ...string) (string, error) {
	pid, err := b.leader()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(pid), "-a"}, args...)...)
	// The container's own root and /proc, but our environment would not fit.
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "SYSTEMD_COLORS=0"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

// Share is the host path of a directory bound into the container at /share:
// put binaries and configs for the services here (/tmp inside is a fresh tmpfs).
func (b *sdBox) Share() string { return b.share }

// WriteUnit writes a unit file (or a drop-in, "UNIT.d/NAME.conf") into the
// container's /etc/systemd/system and runs daemon-reload. A failure is reported with Errorf on the test that booted
// the box (safe from its subtests) and also returned, so a caller can stop.
// Services should begin with sdUnitDefaults.
func (b *sdBox) WriteUnit(name, text string) error {
	err := b.writeUnit(name, text)
	if err != nil {
		b.tb.Errorf("sdBox.WriteUnit: %v", err)
	}
	return err
}

func (b *sdBox) writeUnit(name, text string) error {
	dir, file := filepath.Split(name)
	if file == "" || strings.Contains(file, "..") || (dir != "" && !strings.HasSuffix(dir, ".d/")) || strings.Count(name, "/") > 1 {
		return fmt.Errorf("unit name %q: not a unit file name, nor UNIT.d/DROPIN.conf", name)
	}
	if dir != "" {
		if err := os.MkdirAll(filepath.Join(b.units, dir), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(b.units, name), []byte(text), 0o644); err != nil {
		return err
	}
	if out, err := b.Systemctl("daemon-reload"); err != nil {
		return fmt.Errorf("%w: %s", err, out)
	}
	return nil
}

// Systemctl runs systemctl --no-pager ARGS inside and returns its combined
// output. It is bounded by sdCmdTimeout; pass --no-block where a start may
// wait long on readiness.
func (b *sdBox) Systemctl(args ...string) (string, error) {
	return b.Run(append([]string{"systemctl", "--no-pager"}, args...)...)
}

// Run runs any command inside with nsenter and returns its combined output.
// It runs outside the container's cgroups and seccomp filter and with a
// minimal environment (PATH, LANG): use it to read state (journalctl, cat
// /proc/N/...), and start what is under test with systemctl or systemd-run.
func (b *sdBox) Run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), sdCmdTimeout)
	defer cancel()
	out, err := b.output(ctx, args...)
	if err != nil {
		return out, fmt.Errorf("in %s: %s: %w", b.name, strings.Join(args, " "), err)
	}
	return out, nil
}

// MainPID is the unit's main pid as the container sees it (inside its pid
// namespace, so read it with Run: b.Run("cat", "/proc/N/status")); 0 if none
// or on error.
func (b *sdBox) MainPID(unit string) int {
	out, err := b.Systemctl("show", "-p", "MainPID", "--value", unit)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(out))
	return pid
}

// Journal is the unit's journal, message text only, for failure messages.
func (b *sdBox) Journal(unit string) string {
	out, err := b.Run("journalctl", "-u", unit, "--no-pager", "-o", "cat")
	if err != nil {
		return fmt.Sprintf("%s(journal: %v)", out, err)
	}
	return out
}

// Close stops the container and removes all bootSystemd made: the nspawn
// process tree, its cgroups, the temp dirs (the mounts lived only in nspawn's
// private mount namespace and went with it). It is idempotent and also runs
// from the booting test's Cleanup; leftovers fail that test.
func (b *sdBox) Close() {
	b.closeOnce.Do(func() {
		if err := b.stop(); err != nil {
			b.tb.Errorf("sdBox.Close %s: %v", b.name, err)
		}
		if err := b.remove(); err != nil {
			b.tb.Errorf("sdBox.Close %s: %v", b.name, err)
		}
	})
}

// stop halts the container: poweroff inside, else SIGTERM to nspawn (an
// orderly halt too), then SIGKILL to the process group we started, and last
// cgroup.kill on our own cgroup for what the container may leave behind.
func (b *sdBox) stop() error {
	if b.cmd == nil {
		return nil
	}
	began := time.Now()
	if !b.exited() {
		ctx, cancel := context.WithTimeout(context.Background(), sdStopTimeout)
		_, err := b.output(ctx, "systemctl", "poweroff")
		cancel()
		if err != nil && !b.exited() {
			b.tb.Logf("sdBox %s: poweroff inside: %v; SIGTERM to nspawn", b.name, err)
			b.cmd.Process.Signal(syscall.SIGTERM) // pidfd-backed: never another process
		}
		select {
		case <-b.done:
			b.tb.Logf("sdBox %s: stopped in %v", b.name, time.Since(began).Round(time.Millisecond))
		case <-time.After(sdStopTimeout - time.Since(began)):
			b.tb.Logf("sdBox %s: not stopped in %v; SIGKILL\nnspawn output (tail):\n%s", b.name, sdStopTimeout, fileTail(b.logPath, 2000))
			// The group's id is nspawn's pid, ours until we reap it.
			if !b.exited() {
				syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
			}
			select {
			case <-b.done:
			case <-time.After(5 * time.Second):
				return errors.New("nspawn survived SIGKILL for 5 s")
			}
		}
	}
	// Normally empty by now; whatever is left was started by our nspawn.
	unified := b.cgroups[0]
	if sdPopulated(unified) {
		b.tb.Logf("sdBox %s: processes left in %s after nspawn exited; cgroup.kill", b.name, unified)
		if err := os.WriteFile(filepath.Join(unified, "cgroup.kill"), []byte("1"), 0); err != nil {
			return fmt.Errorf("cgroup.kill: %w", err)
		}
	}
	return sdWaitUnpopulated(unified, 5*time.Second)
}

// populated reads a cgroup2 directory's cgroup.events.
func sdPopulated(cg string) bool {
	data, err := os.ReadFile(filepath.Join(cg, "cgroup.events"))
	return err == nil && bytes.Contains(data, []byte("populated 1"))
}

// sdWaitUnpopulated waits for a cgroup2 directory to hold no process, woken by
// the kernel's modify event on cgroup.events.
func sdWaitUnpopulated(cg string, timeout time.Duration) error {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("inotify: %w", err)
	}
	defer unix.Close(fd)
	if _, err := unix.InotifyAddWatch(fd, filepath.Join(cg, "cgroup.events"), unix.IN_MODIFY); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("inotify %s: %w", cg, err)
	}
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 4096)
	for sdPopulated(cg) {
		left := time.Until(deadline)
		if left <= 0 {
			procs, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
			return fmt.Errorf("%s still populated after %v (procs: %q)", cg, timeout, procs)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left.Milliseconds())+1); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll: %w", err)
		}
		unix.Read(fd, buf) // drain; the loop reads the state again
	}
	return nil
}

// remove deletes the cgroups (children first: nspawn and the container's
// systemd made payload/..., supervisor) and the temp dir.
func (b *sdBox) remove() error {
	var errs []error
	for i := len(b.cgroups) - 1; i >= 0; i-- {
		if err := removeCgroup(b.cgroups[i]); err != nil {
			errs = append(errs, err)
		}
	}
	// nspawn's propagation dir for this machine, in the host's /run (not a
	// tmpfs here, so nspawn refuses to remove it itself).
	if err := os.RemoveAll(filepath.Join("/run/systemd/nspawn/propagate", b.name)); err != nil {
		errs = append(errs, err)
	}
	if b.dir != "" {
		// root is a mount point of the host's / in nspawn's namespace only.
		// Remove it on its own first: if it ever were mounted here,
		// RemoveAll of dir would recurse into the host's root.
		if err := os.Remove(b.root); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("not removing %s: %w", b.dir, err))
		} else if err := os.RemoveAll(b.dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// TestSystemdHarness checks the harness and the claims PLATFORMS.md makes of
// it: Type=notify, the seccomp choice, and the shared network namespace.
func TestSystemdHarness(t *testing.T) {
	for _, tc := range []struct {
		name    string
		seccomp bool
		want    string // Seccomp: in a service's /proc/PID/status
	}{
		{"seccomp", true, "2"},
		{"noseccomp", false, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bootSystemd(t, sdOptions{Seccomp: tc.seccomp})
			t.Logf("%s booted in %v", b.name, b.bootTime.Round(time.Millisecond))

			t.Run("notify", func(t *testing.T) {
				// The second [Unit] header checks that sdUnitDefaults can be extended.
				b.WriteUnit("harness-notify.service", sdUnitDefaults+
					"Type=notify\nNotifyAccess=all\nTimeoutStartSec=20s\n"+
					"ExecStart=/bin/sh -c 'systemd-notify --ready --status=hello; exec sleep 300'\n"+
					"[Unit]\nDescription=harness notify check\n")
				if out, err := b.Systemctl("start", "harness-notify.service"); err != nil {
					t.Fatalf("%v: %s\njournal:\n%s", err, out, b.Journal("harness-notify.service"))
				}
				show := func(prop string) string {
					out, err := b.Systemctl("show", "-p", prop, "--value", "harness-notify.service")
					if err != nil {
						t.Errorf("%v: %s", err, out)
					}
					return strings.TrimSpace(out)
				}
				for prop, want := range map[string]string{
					"ActiveState": "active", "StatusText": "hello",
					"Description": "harness notify check", "LimitNOFILE": "20000", "StartLimitIntervalUSec": "0",
				} {
					if got := show(prop); got != want {
						t.Errorf("%s = %q, want %q", prop, got, want)
					}
				}
				pid := b.MainPID("harness-notify.service")
				if pid <= 0 {
					t.Fatalf("MainPID = %d", pid)
				}
				status, err := b.Run("cat", fmt.Sprintf("/proc/%d/status", pid))
				if err != nil {
					t.Fatalf("%v: %s", err, status)
				}
				var seccomp []string
				for _, line := range strings.Split(status, "\n") {
					if strings.HasPrefix(line, "Seccomp") {
						seccomp = append(seccomp, strings.Join(strings.Fields(line), " "))
					}
				}
				t.Logf("main pid %d: %s", pid, strings.Join(seccomp, ", "))
				if len(seccomp) == 0 || seccomp[0] != "Seccomp: "+tc.want {
					t.Errorf("service's %v, want Seccomp: %s", seccomp, tc.want)
				}
				if out, err := b.Systemctl("stop", "harness-notify.service"); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				if got := show("ActiveState"); got != "inactive" {
					t.Errorf("after stop ActiveState = %q, want inactive", got)
				}
			})

			t.Run("hostnet", func(t *testing.T) {
				// Served from /share, which also shows the share is readable inside.
				if err := os.WriteFile(filepath.Join(b.Share(), "hello.txt"), []byte("hello from share\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				port := testutil.FreePort(t)
				b.WriteUnit("harness-http.service", sdUnitDefaults+
					"Type=exec\nWorkingDirectory=/share\n"+
					"ExecStart=/usr/bin/python3 -m http.server -b 127.0.0.1 "+port+"\n")
				if out, err := b.Systemctl("start", "harness-http.service"); err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				defer b.Systemctl("stop", "harness-http.service")
				// Nothing tells the host when python listens: poll.
				var body string
				var err error
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					if body, err = testutil.Get("127.0.0.1:"+port, "/hello.txt"); err == nil {
						break
					}
				}
				if err != nil || body != "hello from share\n" {
					t.Fatalf("GET from the host: %q, %v\njournal:\n%s", body, err, b.Journal("harness-http.service"))
				}
			})

			b.Close()
			// What Close promises: nothing of the box left on the host.
			for _, p := range append([]string{b.dir}, b.cgroups...) {
				if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("after Close %s: %v, want it gone", p, err)
				}
			}
			if !b.exited() {
				t.Errorf("after Close nspawn (pid %d) has not exited", b.cmd.Process.Pid)
			}
		})
	}
}
