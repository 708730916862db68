package main

// A private Docker 20.10 daemon and a private podman 4.3, for tests that run
// takeover in real containers. The recipe is in PLATFORMS.md ("Docker 20.10
// and podman 4.3"); what it leaves out, measured on this machine:
//
//   - Debian installs dockerd as /usr/sbin/dockerd; the client is
//     /usr/bin/docker (a /usr/local/bin/docker may come first on the PATH).
//   - dockerd writes /etc/docker/key.json unless its config file moves it
//     ("deprecated-key-path"), and puts containers under the cgroup /docker
//     unless --cgroup-parent names another. It, containerd and the shims make
//     /run/docker/plugins, /run/containerd/s and /opt/containerd/{bin,lib} at
//     fixed paths, and after exiting leave two mounts in its temp dirs: the
//     data root bound onto itself and the host's netns at exec/netns/default.
//   - podman writes /run/libpod, /dev/shm/libpod_lock, /etc/containers/networks,
//     /etc/cni/net.d/cni.lock and ~/.config/containers unless containers.conf
//     (tmp_dir, lock_type, network_config_dir, network_backend) and HOME move
//     them; /run/runc, /run/containers/networks and the cgroup libpod_parent
//     are fixed. It reads DOCKER_CONFIG (for registry auth) and fails if that
//     names a missing file. Passing runc a --root of our own breaks --rm (the
//     cleanup process conmon starts does not get the flag).
//   - `--rootfs /:O` needs no bind mount at all: overlayfs never crosses
//     mounts, so a lower layer of / is the root file system alone, read-only,
//     exactly what a non-recursive bind of / would give, and nothing is
//     mounted in the host's namespace outside podman's own storage.
//
// The fixed paths are recorded before the first daemon starts and removed
// after the last one is gone if they were missing and are empty
// (ctrHostDirs); everything else lives in one temp dir per daemon.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

const (
	dockerdPath = "/usr/sbin/dockerd"
	dockerPath  = "/usr/bin/docker"
	// Debian's netavark, in one of the helper_binaries_dir podman looks in.
	netavarkPath = "/usr/lib/podman/netavark"

	ctrStartTimeout = 60 * time.Second // dockerd answering `docker info`
	ctrStopTimeout  = 20 * time.Second // dockerd's orderly exit after SIGTERM
	ctrCmdTimeout   = 2 * time.Minute  // any one docker or podman command
	// What we did not start (containerd, its shims, conmon) exits on its own
	// once its daemon or container is gone; this long, then it is an error.
	ctrGoneTimeout = 10 * time.Second

	// ctrPath comes first on the PATH of dockerd and podman, so that Debian's
	// containerd, runc and conmon are the ones they find.
	ctrPath = "/usr/sbin:/usr/bin:/sbin:/bin"
)

var ctrStarts atomic.Int64 // makes names unique within this process

// ctrEnv is env without what would point dockerd, docker or podman at
// another daemon, configuration, home or service manager; the callers add
// their own.
func ctrEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "DOCKER_"), strings.HasPrefix(k, "CONTAINERS_"), strings.HasPrefix(k, "XDG_"):
			continue
		}
		switch k {
		case "HOME", "PATH", "REGISTRY_AUTH_FILE", "NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES":
			continue
		}
		out = append(out, kv)
	}
	path := ctrPath
	if p := os.Getenv("PATH"); p != "" {
		path += ":" + p
	}
	return append(out, "PATH="+path)
}

// ctrCommand is a command bounded by ctx whose whole process group is killed
// when ctx ends.
func ctrCommand(ctx context.Context, env []string, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	return cmd
}

// ctrRun runs a command bounded by ctrCmdTimeout and returns its combined
// output; an error names the command.
func ctrRun(env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ctrCmdTimeout)
	defer cancel()
	cmd := ctrCommand(ctx, env, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (timed out after %v)", err, ctrCmdTimeout)
		}
		return out.String(), fmt.Errorf("%s %s: %w", filepath.Base(name), strings.Join(args, " "), err)
	}
	return out.String(), nil
}

// ---- host paths no option moves ----

// A ctrHostDir is a directory outside our temp dirs that a daemon makes at a
// fixed path.
type ctrHostDir struct {
	path string
	// cgroup: a cgroup directory, removed with those below it, and only if
	// no process is in any of them.
	cgroup bool
	// shared: other programs may use it at the same time (another podman's
	// libpod_parent, another dockerd's /run/docker): if it is not empty when
	// we are done it is kept, and logged. Not shared: its name is ours
	// alone, and whatever is left in it is an error.
	shared bool
}

// ctrHostDirs counts the users of each fixed path in this process. The
// first user records whether the path existed; when the last one is done, a
// path that did not exist is removed again.
var ctrHostDirs struct {
	mu      sync.Mutex
	users   map[string]int
	existed map[string]bool
}

func ctrAcquireHostDirs(dirs []ctrHostDir) {
	h := &ctrHostDirs
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.users == nil {
		h.users, h.existed = map[string]int{}, map[string]bool{}
	}
	for _, d := range dirs {
		if h.users[d.path] == 0 {
			_, err := os.Lstat(d.path)
			h.existed[d.path] = err == nil
		}
		h.users[d.path]++
	}
}

// ctrReleaseHostDirs ends one use of dirs (listed children first) and
// removes those no one uses any more that were missing before.
func ctrReleaseHostDirs(tb testing.TB, dirs []ctrHostDir) error {
	h := &ctrHostDirs
	h.mu.Lock()
	defer h.mu.Unlock()
	var errs []error
	for _, d := range dirs {
		if h.users[d.path]--; h.users[d.path] > 0 || h.existed[d.path] {
			continue
		}
		var err error
		if d.cgroup {
			err = removeCgroup(d.path)
		} else if err = os.Remove(d.path); errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		if err == nil {
			continue
		}
		if d.shared {
			tb.Logf("keeping %s (made during the test, still in use: %v)", d.path, err)
		} else {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ctrCgroupMounts lists the mount points of cgroup hierarchies (v1 and v2).
func ctrCgroupMounts() ([]string, error) {
	mounts, err := ctrMounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		if (m.fstype == "cgroup" || m.fstype == "cgroup2") && !slices.Contains(out, m.point) {
			out = append(out, m.point)
		}
	}
	return out, nil
}

// ctrCgroupDirs is name as a cgroup directory in every hierarchy.
func ctrCgroupDirs(name string, shared bool) ([]ctrHostDir, error) {
	mps, err := ctrCgroupMounts()
	if err != nil {
		return nil, err
	}
	var out []ctrHostDir
	for _, mp := range mps {
		out = append(out, ctrHostDir{path: filepath.Join(mp, name), cgroup: true, shared: shared})
	}
	return out, nil
}

// removeCgroup removes a cgroup directory and those below it, deepest
// first, unless a process is in one of them. A cgroup whose last process has
// just gone may be busy for a moment, hence the retries.
func removeCgroup(cg string) error {
	var dirs []string
	err := filepath.WalkDir(cg, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, dir := range dirs {
		if procs, err := os.ReadFile(filepath.Join(dir, "cgroup.procs")); err == nil && len(bytes.TrimSpace(procs)) > 0 {
			return fmt.Errorf("cgroup %s still has processes %q", dir, strings.Fields(string(procs)))
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		for try := 0; ; try++ {
			err := unix.Rmdir(dirs[i])
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || try == 50 {
				return fmt.Errorf("rmdir %s: %w", dirs[i], err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// ---- mounts and processes left in a temp dir ----

type ctrMount struct{ point, fstype string }

// ctrMounts reads this process's mount table (the host's: neither dockerd
// nor podman runs in a mount namespace of its own), in mount order.
func ctrMounts() ([]ctrMount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []ctrMount
	for _, line := range strings.Split(string(data), "\n") {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			continue
		}
		out = append(out, ctrMount{point: ctrUnescape(f[4]), fstype: f[sep+1]})
	}
	return out, nil
}

// ctrUnescape undoes mountinfo's octal escapes (\040 for a space, ...).
func ctrUnescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func ctrUnder(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// ctrMountsUnder lists the mount points at or below dir, in mount order.
func ctrMountsUnder(dir string) ([]string, error) {
	mounts, err := ctrMounts()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		if ctrUnder(m.point, dir) {
			out = append(out, m.point)
		}
	}
	return out, nil
}

// ctrUnmountUnder unmounts everything at or below dir, last mounted first
// (mounts stacked on one point come off one by one).
func ctrUnmountUnder(tb testing.TB, dir string) error {
	for range 1000 {
		points, err := ctrMountsUnder(dir)
		if err != nil {
			return err
		}
		if len(points) == 0 {
			return nil
		}
		mp := points[len(points)-1]
		err = unix.Unmount(mp, 0)
		if errors.Is(err, unix.EBUSY) {
			tb.Logf("unmount %s: %v; detaching it", mp, err)
			err = unix.Unmount(mp, unix.MNT_DETACH)
		}
		if err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("unmount %s: %w", mp, err)
		}
	}
	points, _ := ctrMountsUnder(dir)
	return fmt.Errorf("still mounted under %s: %q", dir, points)
}

// ctrProcsMentioning lists the live processes whose command line names dir:
// dockerd, containerd and the shims of a private dockerd, podman's conmon.
// Only we use our temp dirs, so each one is ours.
func ctrProcsMentioning(dir string) []string {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(cmdline) == 0 { // gone, or a zombie
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if slices.ContainsFunc(args, func(a string) bool { return strings.Contains(a, dir) }) {
			s := fmt.Sprintf("%d %s", pid, strings.Join(args, " "))
			if len(s) > 200 {
				s = s[:200] + "..."
			}
			out = append(out, s)
		}
	}
	return out
}

// ctrWaitProcsGone waits for the processes naming dir to exit on their own:
// they are not our children, so we signal none of them.
func ctrWaitProcsGone(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := ctrProcsMentioning(dir)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still running %v after their daemon or container went: %q", timeout, left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ctrRemoveDir removes a temp dir once nothing is mounted in it (RemoveAll
// would otherwise go into what is mounted there).
func ctrRemoveDir(dir string) error {
	if dir == "" {
		return nil
	}
	points, err := ctrMountsUnder(dir)
	if err != nil {
		return err
	}
	if len(points) > 0 {
		return fmt.Errorf("not removing %s: still mounted there: %q", dir, points)
	}
	return os.RemoveAll(dir)
}

// ctrMkdirTemp makes a temp dir for a daemon; its sockets must fit in a
// sockaddr_un (107 bytes), the deepest being containerd's
// exec/containerd/containerd.sock.ttrpc.
func ctrMkdirTemp(name string) (string, error) {
	dir, err := os.MkdirTemp("", name+"-")
	if err != nil {
		return "", err
	}
	if n := len(dir + "/exec/containerd/containerd.sock.ttrpc"); n > 107 {
		os.Remove(dir)
		return "", fmt.Errorf("temp dir %s too long for the daemons' sockets (%d > 107 bytes): set TMPDIR=/tmp", dir, n)
	}
	return dir, nil
}

// ctrTeardown is the end of a daemon's Close, once its containers are
// gone: it waits for the processes naming dir to exit on their own,
// unmounts what is left in dir, releases the fixed host paths and removes
// dir; every error, with those of the steps before (errs), fails tb.
func ctrTeardown(tb testing.TB, what, dir string, host []ctrHostDir, errs []error) {
	if err := ctrWaitProcsGone(dir, ctrGoneTimeout); err != nil {
		errs = append(errs, err)
	}
	if err := ctrUnmountUnder(tb, dir); err != nil {
		errs = append(errs, err)
	}
	if err := ctrReleaseHostDirs(tb, host); err != nil {
		errs = append(errs, err)
	}
	if err := ctrRemoveDir(dir); err != nil {
		errs = append(errs, err)
	}
	for _, err := range errs {
		tb.Errorf("%s: %v", what, err)
	}
}

// ---- docker ----

// dockerd is one private Docker daemon. Its methods may be called from any
// goroutine, including subtests of the test that started it.
type dockerd struct {
	tb      testing.TB
	name    string // also the cgroup parent of its containers
	dir     string // all its state: data, exec, socket, config, log
	sock    string
	logPath string
	image   string
	env     []string // for the docker client
	host    []ctrHostDir

	daemonProc // dockerd itself

	StartTime time.Duration // from starting dockerd to `docker info` answering
	ImageTime time.Duration // making the base image

	closeOnce sync.Once
}

// startDocker starts a private dockerd (all state in a temp dir; no
// iptables, no bridge, no IP forwarding or masquerading, no userland proxy,
// as PLATFORMS.md says) and returns once `docker info` answers and the base
// image (Image) is made. It skips the test when we are not root, and when
// dockerd is not installed as testutil.RequireTool does. Close, also registered with
// tb.Cleanup (so it runs on failure too), removes all it made; start one
// per test function and share it across its subtests. Containers have no
// network but the host's or none (--bridge=none): always pass --network
// host.
func startDocker(tb testing.TB) *dockerd {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("startDocker: needs root (dockerd, mounts, cgroups)")
	}
	for _, p := range []string{dockerdPath, dockerPath} {
		testutil.RequireTool(tb, p)
	}
	d := &dockerd{tb: tb, name: fmt.Sprintf("takeover-docker-%d-%d", os.Getpid(), ctrStarts.Add(1))}
	tb.Cleanup(d.Close) // registered first, so it runs whatever fails below
	if err := d.prepare(); err != nil {
		tb.Fatalf("startDocker: %v", err)
	}
	began := time.Now()
	if err := d.start(); err != nil {
		tb.Fatalf("startDocker: %v", err)
	}
	if err := d.waitReady(began.Add(ctrStartTimeout)); err != nil {
		tb.Fatalf("startDocker %s: %v\ndockerd log (tail):\n%s", d.name, err, fileTail(d.logPath, 4000))
	}
	d.StartTime = time.Since(began)
	began = time.Now()
	if err := d.makeImage(); err != nil {
		tb.Fatalf("startDocker %s: base image: %v", d.name, err)
	}
	d.ImageTime = time.Since(began)
	return d
}

func (d *dockerd) prepare() error {
	dir, err := ctrMkdirTemp(d.name)
	if err != nil {
		return err
	}
	d.dir = dir
	d.sock = filepath.Join(dir, "docker.sock")
	d.logPath = filepath.Join(dir, "dockerd.log")
	for _, sub := range []string{"data", "exec", "home", "client", "skel"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	// Our own config file: the host's /etc/docker/daemon.json is not read,
	// and the trust key is not written to /etc/docker/key.json.
	conf := fmt.Sprintf("{\"deprecated-key-path\": %q}\n", filepath.Join(dir, "key.json"))
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte(conf), 0o600); err != nil {
		return err
	}
	d.env = append(ctrEnv(os.Environ()), "HOME="+filepath.Join(dir, "home"),
		"DOCKER_HOST=unix://"+d.sock, "DOCKER_CONFIG="+filepath.Join(dir, "client"))
	cgroups, err := ctrCgroupDirs(d.name, false)
	if err != nil {
		return err
	}
	d.host = append(cgroups,
		ctrHostDir{path: "/run/docker/plugins", shared: true},
		ctrHostDir{path: "/run/docker", shared: true},
		ctrHostDir{path: "/run/containerd/s", shared: true},
		ctrHostDir{path: "/run/containerd", shared: true},
		ctrHostDir{path: "/opt/containerd/bin", shared: true},
		ctrHostDir{path: "/opt/containerd/lib", shared: true},
		ctrHostDir{path: "/opt/containerd", shared: true},
	)
	ctrAcquireHostDirs(d.host)
	return nil
}

func (d *dockerd) start() error {
	logf, err := os.Create(d.logPath)
	if err != nil {
		return err
	}
	defer logf.Close() // dockerd has its own copy
	cmd := exec.Command(dockerdPath,
		"--config-file", filepath.Join(d.dir, "daemon.json"),
		"--data-root", filepath.Join(d.dir, "data"),
		"--exec-root", filepath.Join(d.dir, "exec"),
		"-H", "unix://"+d.sock,
		"--pidfile", filepath.Join(d.dir, "docker.pid"),
		"--cgroup-parent", "/"+d.name,
		"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
		"--bridge=none", "--userland-proxy=false")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(ctrEnv(os.Environ()), "HOME="+filepath.Join(d.dir, "home"))
	if err := d.daemonProc.start(cmd); err != nil {
		return fmt.Errorf("start dockerd: %w", err)
	}
	return nil
}

func (d *dockerd) waitReady(deadline time.Time) error {
	var last error
	for {
		if d.exited() {
			return fmt.Errorf("dockerd exited: %v", d.waitErr)
		}
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		cmd := ctrCommand(ctx, d.env, dockerPath, "info", "--format", "{{.ServerVersion}}")
		out, err := cmd.CombinedOutput()
		cancel()
		if err == nil {
			return nil
		}
		last = fmt.Errorf("docker info: %v: %s", err, bytes.TrimSpace(out))
		if time.Now().After(deadline) {
			return fmt.Errorf("not answering after %v: %v", ctrStartTimeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ctrSkeleton makes the root of the base image in dir: usr-merge links,
// empty mount points, and just enough of /etc; /usr comes from the host at
// run time.
func ctrSkeleton(dir string) error {
	for _, sub := range []string{"usr", "etc", "proc", "sys", "dev", "tmp", "run"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	for _, l := range []string{"bin", "sbin", "lib", "lib64"} {
		if err := os.Symlink("usr/"+l, filepath.Join(dir, l)); err != nil {
			return err
		}
	}
	files := map[string]string{
		"passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		// nogroup: Debian's name for nobody's group.
		"group": "root:x:0:\nnogroup:x:65534:\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, "etc", name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	cache, err := os.ReadFile("/etc/ld.so.cache")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "etc", "ld.so.cache"), cache, 0o644)
}

// makeImage imports the skeleton as an image (no registry, no Dockerfile):
// tar -c . | docker import - NAME.
func (d *dockerd) makeImage() error {
	skel := filepath.Join(d.dir, "skel")
	if err := ctrSkeleton(skel); err != nil {
		return err
	}
	name := "takeover-base:latest"
	ctx, cancel := context.WithTimeout(context.Background(), ctrCmdTimeout)
	defer cancel()
	tar := ctrCommand(ctx, d.env, "tar", "-c", ".")
	tar.Dir = skel
	var tarErr bytes.Buffer
	tar.Stderr = &tarErr
	pipe, err := tar.StdoutPipe()
	if err != nil {
		return err
	}
	imp := ctrCommand(ctx, d.env, dockerPath, "import", "-", name)
	imp.Stdin = pipe
	var out bytes.Buffer
	imp.Stdout, imp.Stderr = &out, &out
	if err := tar.Start(); err != nil {
		return err
	}
	impErr := imp.Run()
	if err := tar.Wait(); err != nil {
		return fmt.Errorf("tar: %v: %s", err, tarErr.Bytes())
	}
	if impErr != nil {
		return fmt.Errorf("docker import: %v: %s", impErr, out.Bytes())
	}
	d.image = name
	return nil
}

// Docker runs /usr/bin/docker ARGS against this daemon and returns the
// combined output; it is bounded by ctrCmdTimeout (the process group is
// killed then), and an error names the command.
func (d *dockerd) Docker(args ...string) (string, error) {
	return ctrRun(d.env, dockerPath, args...)
}

// Image is the base image, made once per daemon: a skeleton root with the
// host's /etc/ld.so.cache and no /usr. Run it with
// `-v /usr:/usr:ro --network host`.
func (d *dockerd) Image() string { return d.image }

// Close removes every container, stops dockerd (SIGTERM, a bounded wait,
// then SIGKILL to its process group), waits for containerd and the shims to
// exit, unmounts what dockerd left in its temp dir, removes its cgroups, the
// fixed host paths it made and the temp dir. It is idempotent and also runs
// from the starting test's Cleanup; leftovers fail that test.
func (d *dockerd) Close() {
	d.closeOnce.Do(func() {
		if d.dir == "" {
			return
		}
		var errs []error
		if err := d.stop(); err != nil {
			errs = append(errs, err)
		}
		// containerd and the shims are dockerd's (containerd has its own
		// process group and a SIGKILL parent-death signal): not ours to signal.
		ctrTeardown(d.tb, "dockerd.Close "+d.name, d.dir, d.host, errs)
	})
}

func (d *dockerd) stop() error {
	if d.cmd == nil {
		return nil
	}
	if !d.exited() {
		out, err := d.Docker("ps", "-aq")
		if ids := strings.Fields(out); err == nil && len(ids) > 0 {
			if out, err := d.Docker(append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
				d.tb.Logf("dockerd %s: %v: %s", d.name, err, out)
			}
		} else if err != nil {
			d.tb.Logf("dockerd %s: %v: %s", d.name, err, out)
		}
	}
	began := time.Now()
	if !d.exited() {
		d.cmd.Process.Signal(syscall.SIGTERM) // pidfd-backed: never another process
	}
	select {
	case <-d.done:
		d.tb.Logf("dockerd %s: stopped in %v", d.name, time.Since(began).Round(time.Millisecond))
		return nil
	case <-time.After(ctrStopTimeout):
	}
	d.tb.Logf("dockerd %s: not stopped %v after SIGTERM; SIGKILL\ndockerd log (tail):\n%s", d.name, ctrStopTimeout, fileTail(d.logPath, 2000))
	// The group's id is dockerd's pid, ours until we reap it.
	if !d.exited() {
		syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	}
	select {
	case <-d.done:
		return fmt.Errorf("dockerd needed SIGKILL (%v after SIGTERM)", ctrStopTimeout)
	case <-time.After(5 * time.Second):
		return errors.New("dockerd survived SIGKILL for 5 s")
	}
}

// ---- podman ----

// podmanEnv is podman with a private configuration and private storage;
// the host's podman state (/var/lib/containers, /run/libpod, ...) is not
// touched. Its methods may be called from any goroutine.
type podmanEnv struct {
	tb     testing.TB
	name   string
	dir    string // conf, storage (root, runroot), tmp_dir, networks, HOME
	root   string
	run    string
	env    []string
	host   []ctrHostDir
	podman string

	StartTime time.Duration // `podman info` with the fresh storage

	closeOnce sync.Once
}

// startPodman prepares podman with its own containers.conf (named by
// CONTAINERS_CONF: Debian's /usr/share/containers/containers.conf with
// runtime = "runc"; default_ulimits nofile 20000, nproc 4096; netns = "host";
// no conmon cgroup; and its tmp_dir, file locks, events log and network
// configs in the temp dir), its own storage.conf and storage (--root,
// --runroot), and HOME. It checks that `podman info` answers with runc. It
// skips the test when we are not root, and when podman, runc or netavark is
// not installed as testutil.RequireTool does.
// Close, also registered with tb.Cleanup, removes all it made. Pods need an
// infra image from a registry: create them with --infra=false.
func startPodman(tb testing.TB) *podmanEnv {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("startPodman: needs root (rootful podman, cgroups)")
	}
	// podman needs netavark, its network backend, even with netns = "host":
	// without it, it fails with "could not find netavark".
	for _, tool := range []string{"podman", "runc", netavarkPath} {
		testutil.RequireTool(tb, tool)
	}
	bin, err := exec.LookPath("podman")
	if err != nil {
		tb.Fatal(err)
	}
	p := &podmanEnv{tb: tb, name: fmt.Sprintf("takeover-podman-%d-%d", os.Getpid(), ctrStarts.Add(1)), podman: bin}
	tb.Cleanup(p.Close)
	if err := p.prepare(); err != nil {
		tb.Fatalf("startPodman: %v", err)
	}
	began := time.Now()
	out, err := p.Podman("info", "--format", "{{.Host.OCIRuntime.Name}} {{.Store.GraphRoot}}")
	if err != nil {
		tb.Fatalf("startPodman: %v: %s", err, out)
	}
	if want := "runc " + p.root; strings.TrimSpace(out) != want {
		tb.Fatalf("startPodman: podman info says %q, want %q", strings.TrimSpace(out), want)
	}
	p.StartTime = time.Since(began)
	return p
}

func (p *podmanEnv) prepare() error {
	dir, err := ctrMkdirTemp(p.name)
	if err != nil {
		return err
	}
	p.dir = dir
	p.root = filepath.Join(dir, "root")
	p.run = filepath.Join(dir, "runroot")
	for _, sub := range []string{"root", "runroot", "tmp", "net", "home"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	base, err := os.ReadFile("/usr/share/containers/containers.conf")
	if err != nil {
		return fmt.Errorf("%w (Debian package containers-common)", err)
	}
	conf, err := pmConf(string(base), map[string][]string{
		"containers": {
			`default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]`, // root here lacks CAP_SYS_RESOURCE
			`netns = "host"`,        // else podman may make a bridge and nft rules
			`cgroups = "no-conmon"`, // no libpod_parent/conmon cgroups
		},
		"engine": {
			`runtime = "runc"`, // crun 1.8 fails on hybrid cgroups
			fmt.Sprintf("tmp_dir = %q", filepath.Join(dir, "tmp")), // else /run/libpod
			`lock_type = "file"`,          // in tmp_dir; else /dev/shm/libpod_lock
			`events_logger = "file"`,      // in tmp_dir
			`cgroup_manager = "cgroupfs"`, // PID 1 is not systemd
		},
		"network": {
			`network_backend = "netavark"`,                                    // else it may look at CNI's /etc/cni/net.d
			fmt.Sprintf("network_config_dir = %q", filepath.Join(dir, "net")), // else /etc/containers/networks
		},
	})
	if err != nil {
		return err
	}
	confPath := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return err
	}
	storage := fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n", p.root, p.run)
	storagePath := filepath.Join(dir, "storage.conf")
	if err := os.WriteFile(storagePath, []byte(storage), 0o644); err != nil {
		return err
	}
	home := filepath.Join(dir, "home")
	p.env = append(ctrEnv(os.Environ()), "CONTAINERS_CONF="+confPath, "CONTAINERS_STORAGE_CONF="+storagePath,
		"HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_DATA_HOME="+filepath.Join(home, ".local", "share"))
	cgroups, err := ctrCgroupDirs("libpod_parent", true)
	if err != nil {
		return err
	}
	p.host = append(cgroups,
		ctrHostDir{path: "/run/runc", shared: true}, // runc's state; podman gives it no --root
		ctrHostDir{path: "/run/containers/networks", shared: true},
		ctrHostDir{path: "/run/containers", shared: true},
	)
	ctrAcquireHostDirs(p.host)
	return nil
}

// pmConf is base (a containers.conf) with the lines of set added at the top
// of their tables (a table base lacks is added at the end). A line of base
// that sets one of those keys already is commented out, with the rest of a
// multi-line array: TOML refuses a key set twice.
func pmConf(base string, set map[string][]string) (string, error) {
	keys := map[string][]string{}
	for table, lines := range set {
		for _, l := range lines {
			k, _, ok := strings.Cut(l, "=")
			if !ok {
				return "", fmt.Errorf("pmConf: %q is not key = value", l)
			}
			keys[table] = append(keys[table], strings.TrimSpace(k))
		}
	}
	var out []string
	seen := map[string]bool{}
	table, inArray := "", false
	for _, line := range strings.Split(base, "\n") {
		trim := strings.TrimSpace(line)
		if inArray {
			out = append(out, "# "+line)
			inArray = !strings.Contains(trim, "]")
			continue
		}
		if strings.HasPrefix(trim, "[") && !strings.HasPrefix(trim, "[[") && strings.HasSuffix(trim, "]") {
			table = strings.TrimSpace(trim[1 : len(trim)-1])
			out = append(out, line)
			if lines, ok := set[table]; ok && !seen[table] {
				seen[table] = true
				out = append(out, lines...)
			}
			continue
		}
		if k, v, ok := strings.Cut(trim, "="); ok && slices.Contains(keys[table], strings.TrimSpace(k)) {
			out = append(out, "# "+line)
			v = strings.TrimSpace(v)
			inArray = strings.HasPrefix(v, "[") && !strings.Contains(v, "]")
			continue
		}
		out = append(out, line)
	}
	for _, table := range slices.Sorted(maps.Keys(set)) {
		if !seen[table] {
			out = append(out, "", "["+table+"]")
			out = append(out, set[table]...)
		}
	}
	return strings.Join(out, "\n") + "\n", nil
}

// Podman runs `podman --root R --runroot RR ARGS` with the private
// configuration and returns the combined output; it is bounded by
// ctrCmdTimeout, and an error names the command. With --rootfs the root
// takes the place of the image: every option of `podman run` (or create)
// comes before `--rootfs RootFS()`, the command and its arguments after it:
//
//	p.Podman("run", "--rm", "--cap-add", "SYS_PTRACE", "-v", dir+":/share:ro", "--rootfs", p.RootFS(), "/share/prog")
func (p *podmanEnv) Podman(args ...string) (string, error) {
	return ctrRun(p.env, p.podman, append([]string{"--root", p.root, "--runroot", p.run}, args...)...)
}

// RootFS is the value for --rootfs: the host's root file system as the
// read-only lower layer of an overlay podman makes in its private storage
// (":O"); writes inside go to the overlay and are lost with the container.
// Overlayfs never crosses mounts, so the container sees no host mount below
// / (no /proc, /tmp or /dev/shm contents of the host's), as with a
// non-recursive bind of /, and no mount is made in the host's namespace.
func (p *podmanEnv) RootFS() string { return "/:O" }

// Close removes all pods and containers (no grace period), runs `podman
// system reset --force` on the private storage (which removes root, runroot
// and tmp_dir), waits for conmon to exit, unmounts anything left in the temp
// dir, removes the fixed host paths podman made and the temp dir. It is
// idempotent and also runs from the starting test's Cleanup; leftovers fail
// that test.
func (p *podmanEnv) Close() {
	p.closeOnce.Do(func() {
		if p.dir == "" {
			return
		}
		var errs []error
		for _, args := range [][]string{
			{"pod", "rm", "-a", "-f", "-t", "0"},
			{"rm", "-a", "-f", "-t", "0"},
			{"system", "reset", "--force"},
		} {
			if out, err := p.Podman(args...); err != nil {
				errs = append(errs, fmt.Errorf("%v: %s", err, out))
			}
		}
		// conmon outlives `rm -f` by a moment, and is podman's: not ours to signal.
		ctrTeardown(p.tb, "podmanEnv.Close "+p.name, p.dir, p.host, errs)
	})
}

// ---- the test ----

// pidfdProbeSource is a static program run inside containers: it starts a
// child of its own, then reports pidfd_open and pidfd_getfd(pidfd, 0) on its
// own pid and on the child's, and its seccomp mode. Raw syscall numbers
// (434, 438: the same on every architecture) keep it free of modules.
const pidfdProbeSource = `package main

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

func name(e syscall.Errno) string {
	switch e {
	case 0:
		return "ok"
	case syscall.EPERM:
		return "EPERM"
	case syscall.EACCES:
		return "EACCES"
	case syscall.ENOSYS:
		return "ENOSYS"
	case syscall.EBADF:
		return "EBADF"
	case syscall.ESRCH:
		return "ESRCH"
	}
	return fmt.Sprintf("errno%d", int(e))
}

// getfd: pidfd_open(pid), then pidfd_getfd(pidfd, 0).
func getfd(pid int) (open, get string) {
	pidfd, _, e := syscall.Syscall(434, uintptr(pid), 0, 0)
	if e != 0 {
		return name(e), "-"
	}
	defer syscall.Close(int(pidfd))
	fd, _, e := syscall.Syscall(438, pidfd, 0, 0)
	if e == 0 {
		syscall.Close(int(fd))
	}
	return "ok", name(e)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "child" {
		os.Stdin.Read(make([]byte, 1)) // until the parent closes the pipe
		return
	}
	// fd 0 must be open for pidfd_getfd(pidfd, 0) on ourselves.
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, 0, syscall.F_GETFD, 0); e == syscall.EBADF {
		syscall.Open("/dev/null", syscall.O_RDONLY, 0)
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Println("pipe:", err)
		os.Exit(1)
	}
	child := exec.Command(os.Args[0], "child")
	child.Stdin = r // the child's fd 0
	if err := child.Start(); err != nil {
		fmt.Println("child:", err)
		os.Exit(1)
	}
	r.Close()
	seccomp := "?"
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "Seccomp:" {
				seccomp = f[1]
			}
		}
	}
	selfOpen, self := getfd(os.Getpid())
	childOpen, kid := getfd(child.Process.Pid)
	fmt.Printf("seccomp=%s open=%s,%s self=%s child=%s\n", seccomp, selfOpen, childOpen, self, kid)
	w.Close()
	child.Wait()
}
`

// buildPidfdProbe builds pidfdProbeSource, static (CGO_ENABLED=0), into
// dir/pidfd-probe.
func buildPidfdProbe(t *testing.T, dir string) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // go test puts GOROOT/bin on the PATH
	if err != nil {
		t.Fatalf("building the probe: %v", err)
	}
	src := t.TempDir()
	for name, text := range map[string]string{"main.go": pidfdProbeSource, "go.mod": "module pidfdprobe\n\ngo 1.21\n"} {
		if err := os.WriteFile(filepath.Join(src, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "pidfd-probe")
	cmd := exec.Command(goBin, "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=", "GOWORK=off", "GOTOOLCHAIN=local", "GO111MODULE=on")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build the probe: %v\n%s", err, out)
	}
	return bin
}

// ctrHostState is what a container run must not change on the host:
// network interfaces and firewall rules.
func ctrHostState(t *testing.T) map[string]string {
	t.Helper()
	state := map[string]string{}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	state["interfaces"] = strings.Join(names, " ")
	for _, c := range [][]string{{"nft", "list", "ruleset"}, {"iptables-save"}, {"ip6tables-save"}} {
		if _, err := exec.LookPath(c[0]); err != nil {
			continue
		}
		out, err := exec.Command(c[0], c[1:]...).CombinedOutput()
		if err != nil {
			t.Logf("%s: %v", strings.Join(c, " "), err)
		}
		// iptables-save stamps its output with the time.
		var keep []string
		for _, l := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(l, "#") {
				keep = append(keep, l)
			}
		}
		state[strings.Join(c, " ")] = strings.Join(keep, "\n")
	}
	return state
}

// ctrTimed runs f n times and returns how long each took.
func ctrTimed(t *testing.T, n int, f func() (string, error)) []time.Duration {
	t.Helper()
	var ds []time.Duration
	for range n {
		began := time.Now()
		out, err := f()
		ds = append(ds, time.Since(began).Round(time.Millisecond))
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	return ds
}

// ctrGet polls http://addr/path until it answers (nothing tells the host
// when a server in a container listens).
func ctrGet(addr, path string) (string, error) {
	var body string
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if body, err = testutil.Get(addr, path); err == nil {
			break
		}
	}
	return body, err
}

// ctrHarnessChecks checks the harness and the claims PLATFORMS.md makes
// of Docker 20.10 and podman 4.3: the default seccomp profiles (pidfd_getfd
// EPERM under docker's, allowed under podman's, allowed under both with
// CAP_SYS_PTRACE), the host network, run and exec times. TestContainers
// runs it, then checks that Close leaves nothing behind (ctrCheckGone).
func ctrHarnessChecks(t *testing.T, d *dockerd, p *podmanEnv) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Fatalf("the host network check serves with /usr/bin/python3: %v", err)
	}
	share, err := os.MkdirTemp("", "takeover-ctr-share-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(share) })
	if err := os.Chmod(share, 0o755); err != nil {
		t.Fatal(err)
	}
	buildPidfdProbe(t, share)
	if err := os.WriteFile(filepath.Join(share, "hello.txt"), []byte("hello from share\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	probes := []struct {
		name           string
		caps           []string
		docker, podman string // pidfd_getfd on oneself and on one's child
	}{
		{"default", nil, "EPERM", "ok"},
		{"SYS_PTRACE", []string{"--cap-add", "SYS_PTRACE"}, "ok", "ok"},
	}
	checkProbe := func(t *testing.T, out, want string) {
		t.Helper()
		got := strings.TrimSpace(out)
		t.Logf("probe: %s", got)
		if w := fmt.Sprintf("seccomp=2 open=ok,ok self=%s child=%s", want, want); got != w {
			t.Errorf("probe says %q, want %q", got, w)
		}
	}

	t.Run("docker", func(t *testing.T) {
		t.Logf("dockerd %s answering in %v; image %s made in %v", d.name, d.StartTime.Round(time.Millisecond), d.Image(), d.ImageTime.Round(time.Millisecond))
		run := func(opts ...string) []string {
			return append([]string{"run", "--rm", "--network", "host", "-v", "/usr:/usr:ro", "-v", share + ":/share:ro"}, opts...)
		}
		for _, pr := range probes {
			t.Run("pidfd_getfd/"+pr.name, func(t *testing.T) {
				out, err := d.Docker(append(run(pr.caps...), d.Image(), "/share/pidfd-probe")...)
				if err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				checkProbe(t, out, pr.docker)
			})
		}
		t.Run("hostnet", func(t *testing.T) {
			ds := ctrTimed(t, 3, func() (string, error) { return d.Docker(append(run(), d.Image(), "true")...) })
			t.Logf("docker run --rm IMAGE true: %v", ds)
			port := testutil.FreePort(t)
			if out, err := d.Docker("run", "-d", "--name", "harness-http", "--network", "host", "-v", "/usr:/usr:ro",
				"-v", share+":/share:ro", "-w", "/share", d.Image(),
				"/usr/bin/python3", "-m", "http.server", "-b", "127.0.0.1", port); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			defer d.Docker("rm", "-f", "harness-http")
			if body, err := ctrGet("127.0.0.1:"+port, "/hello.txt"); err != nil || body != "hello from share\n" {
				logs, _ := d.Docker("logs", "harness-http")
				t.Fatalf("GET from the host: %q, %v\ncontainer log:\n%s", body, err, logs)
			}
			ds = ctrTimed(t, 3, func() (string, error) { return d.Docker("exec", "harness-http", "true") })
			t.Logf("docker exec CONTAINER true: %v", ds)
		})
	})

	t.Run("podman", func(t *testing.T) {
		t.Logf("podman %s: info answered in %v", p.name, p.StartTime.Round(time.Millisecond))
		for _, pr := range probes {
			t.Run("pidfd_getfd/"+pr.name, func(t *testing.T) {
				args := append(append([]string{"run", "--rm", "-v", share + ":/share:ro"}, pr.caps...), "--rootfs", p.RootFS(), "/share/pidfd-probe")
				out, err := p.Podman(args...)
				if err != nil {
					t.Fatalf("%v: %s", err, out)
				}
				checkProbe(t, out, pr.podman)
			})
		}
		t.Run("hostnet", func(t *testing.T) {
			ds := ctrTimed(t, 3, func() (string, error) { return p.Podman("run", "--rm", "--rootfs", p.RootFS(), "true") })
			t.Logf("podman run --rm --rootfs %s true: %v", p.RootFS(), ds)
			port := testutil.FreePort(t)
			if out, err := p.Podman("run", "-d", "--name", "harness-http", "-v", share+":/share:ro", "-w", "/share",
				"--rootfs", p.RootFS(), "/usr/bin/python3", "-m", "http.server", "-b", "127.0.0.1", port); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			defer p.Podman("rm", "-f", "-t", "0", "harness-http")
			if body, err := ctrGet("127.0.0.1:"+port, "/hello.txt"); err != nil || body != "hello from share\n" {
				logs, _ := p.Podman("logs", "harness-http")
				t.Fatalf("GET from the host: %q, %v\ncontainer log:\n%s", body, err, logs)
			}
			ds = ctrTimed(t, 3, func() (string, error) { return p.Podman("exec", "harness-http", "true") })
			t.Logf("podman exec CONTAINER true: %v", ds)
		})
	})
}

// ctrCheckGone checks what Close promises: nothing of a daemon left on
// the host (its temp dir, mounts, processes and cgroups).
func ctrCheckGone(t *testing.T, dir string, cgroups []string) {
	t.Helper()
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Close %s: %v, want it gone", dir, err)
	}
	if points, err := ctrMountsUnder(dir); err != nil || len(points) > 0 {
		t.Errorf("after Close mounted under %s: %q %v", dir, points, err)
	}
	if procs := ctrProcsMentioning(dir); len(procs) > 0 {
		t.Errorf("after Close still running: %q", procs)
	}
	for _, cg := range cgroups {
		if _, err := os.Lstat(cg); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("after Close cgroup %s: %v, want it gone", cg, err)
		}
	}
}
