package main

// takeover in real containers: a private dockerd and a private podman
// (container_harness_test.go), takeover as the entrypoint of the image
// contrib/docker/Dockerfile builds (docker) and of a container run from the
// host's root (podman --rootfs), under each runtime's default seccomp
// profile, with and without CAP_SYS_PTRACE; docs/where-it-runs.md's rows
// quote the figures.

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/testutil"
)

// ctrPort is the port of contrib/docker/Dockerfile's ENTRYPOINT, which
// the tests run as it is (host network: the port is the host's).
const ctrPort = "8080"

// A ctrRuntime is docker or podman as the scenarios use them.
type ctrRuntime struct {
	name string
	cli  func(args ...string) (string, error)
	// app is the `run -d` arguments after the options: what runs as the
	// container's PID 1, takeover with the Dockerfile's flags, then argv.
	app func(argv ...string) []string
	// plain is the same for a container whose PID 1 is an idle process and
	// which has /usr/bin/sh (for a server not started under takeover).
	plain []string
	opts  []string // before the image or --rootfs
	rm    []string // removes a container at once
	tk    string   // takeover inside the app container
	// getfd: pidfd_getfd allowed under the default profile.
	getfd bool
}

// ctrApp is what the tests put on the containers' volume (/srv/app): a
// static takeover, the orphaner as "server", and "version".
type ctrApp struct{ dir string }

func (a ctrApp) setVersion(t *testing.T, v int) {
	t.Helper()
	tmp := filepath.Join(a.dir, "version.new")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(v)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(a.dir, "version")); err != nil {
		t.Fatal(err)
	}
}

// orphans is how many orphans the servers have left so far.
func (a ctrApp) orphans() int {
	b, _ := os.ReadFile(filepath.Join(a.dir, "orphans.log"))
	return len(strings.Fields(string(b)))
}

// buildStatic builds a static (CGO_ENABLED=0) binary of pkg into out.
func buildStatic(t *testing.T, pkg, out string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
}

// TestContainers: one private dockerd and one podman for every scenario.
func TestContainers(t *testing.T) {
	for _, a := range []string{"127.0.0.1:" + ctrPort, "0.0.0.0:" + ctrPort} {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("port %s (the Dockerfile's) is in use on this machine: %v", ctrPort, err)
		}
		ln.Close()
	}
	before := ctrHostState(t)
	d := startDocker(t)
	p := startPodman(t)
	t.Run("harness", func(t *testing.T) { ctrHarnessChecks(t, d, p) })

	app := ctrApp{dir: t.TempDir()}
	os.Chmod(app.dir, 0o755)
	buildStatic(t, ".", filepath.Join(app.dir, "takeover"))
	buildStatic(t, "./testdata/orphaner", filepath.Join(app.dir, "server"))

	// The image, from contrib/docker as a user builds it: the Dockerfile
	// and the static binary in a context of their own.
	ctx := t.TempDir()
	df, err := os.ReadFile("contrib/docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ctx, "Dockerfile"), df, 0o644)
	if b, err := os.ReadFile(filepath.Join(app.dir, "takeover")); err != nil || os.WriteFile(filepath.Join(ctx, "takeover"), b, 0o755) != nil {
		t.Fatalf("the build context: %v", err)
	}
	if out, err := d.Docker("build", "-q", "-t", "takeover-app", ctx); err != nil {
		t.Fatalf("%v: %s", err, out)
	}

	docker := ctrRuntime{name: "docker", cli: d.Docker, tk: "/usr/local/bin/takeover", rm: []string{"rm", "-f"},
		opts: []string{"--network", "host", "-v", app.dir + ":/srv/app"},
		app:  func(argv ...string) []string { return append([]string{"takeover-app"}, argv...) },
		// The base image has no /usr of its own: the host's, read-only.
		plain: []string{"-v", "/usr:/usr:ro", d.Image(), "/usr/bin/sleep", "infinity"},
	}
	podman := ctrRuntime{name: "podman", cli: p.Podman, tk: "/srv/app/takeover", getfd: true, rm: []string{"rm", "-f", "-t", "0"},
		opts: []string{"-v", app.dir + ":/srv/app"},
		app: func(argv ...string) []string {
			return append([]string{"--rootfs", p.RootFS(), "/srv/app/takeover", "--port", ctrPort, "--kill-timeout", "8s", "--"}, argv...)
		},
		plain: []string{"--rootfs", p.RootFS(), "/usr/bin/sleep", "infinity"},
	}
	for _, rt := range []ctrRuntime{docker, podman} {
		for _, caps := range [][]string{nil, {"--cap-add", "SYS_PTRACE"}} {
			profile := "default"
			if caps != nil {
				profile = "SYS_PTRACE"
			}
			t.Run(rt.name+"/"+profile+"/entrypoint", func(t *testing.T) { ctrEntrypoint(t, rt, app, caps) })
			t.Run(rt.name+"/"+profile+"/first-swap", func(t *testing.T) { ctrFirstSwap(t, rt, app, caps) })
		}
	}

	var cgroups []string
	for _, h := range d.host {
		if h.cgroup {
			cgroups = append(cgroups, h.path)
		}
	}
	d.Close()
	if !d.exited() {
		t.Errorf("after Close dockerd (pid %d) has not exited", d.cmd.Process.Pid)
	}
	ctrCheckGone(t, d.dir, cgroups)
	p.Close()
	ctrCheckGone(t, p.dir, nil)
	after := ctrHostState(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed on the host:\nbefore:\n%s\nafter:\n%s", k, v, after[k])
		}
	}
}

// ctrEntrypoint: takeover as PID 1 through a HUP reload, a crash of the
// server, a deploy by `exec -d`, a HUP passed on by the replaced PID 1,
// `takeover doctor` inside, and `stop` with a slow request in flight, under
// 2 clients from the host.
func ctrEntrypoint(t *testing.T, rt ctrRuntime, app ctrApp, caps []string) {
	addr := "127.0.0.1:" + ctrPort
	name := "app"
	app.setVersion(t, 1)
	orphans0 := app.orphans()
	args := append(append(append([]string{"run", "-d", "--name", name}, rt.opts...), caps...),
		rt.app("/srv/app/server", "demo-server", "--init-delay", "1s", addr)...)
	if out, err := rt.cli(args...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	defer rt.cli(append(rt.rm, name)...)
	logs := func() string { out, _ := rt.cli("logs", name); return out }
	inspect := func(format string) string {
		out, err := rt.cli("inspect", "-f", format, name)
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return strings.TrimSpace(out)
	}
	ctrWaitGen(t, addr, 1, logs)
	pid1, _ := strconv.Atoi(inspect("{{.State.Pid}}"))
	started := inspect("{{.State.StartedAt}}")
	stillUp := func(what string) {
		t.Helper()
		if got := inspect("{{.State.Pid}} {{.State.StartedAt}} {{.RestartCount}}"); got != fmt.Sprintf("%d %s 0", pid1, started) {
			t.Fatalf("after %s the container is %q, want PID 1 %d started %s, never restarted\n%s", what, got, pid1, started, logs())
		}
	}

	load := startSdLoad(addr)
	load.waitRequests(300)
	app.setVersion(t, 2)
	if out, err := rt.cli("kill", "-s", "HUP", name); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ctrWaitGen(t, addr, 2, logs)
	r := load.stop()
	report(t, rt.name+" kill -s HUP", r)
	if r.FailedRequests() != 0 {
		t.Errorf("a HUP reload: %d of %d failed", r.FailedRequests(), r.Requests)
	}

	load = startSdLoad(addr)
	load.waitRequests(300)
	server := ctrServer(t, addr, pid1)
	server.kill()
	ctrWaitRestarted(t, addr, server.PID, logs)
	r = load.stop()
	report(t, rt.name+" kill -9 of the server", r)
	stillUp("a crash of the server")
	if r.Refused != 0 || r.FailedRequests() > 2 {
		t.Errorf("a crash: %d refused, %d failed of %d (2 clients: at most 2 in flight in the killed server)", r.Refused, r.FailedRequests(), r.Requests)
	}

	load = startSdLoad(addr)
	load.waitRequests(300)
	app.setVersion(t, 3)
	if out, err := rt.cli("exec", "-d", name, rt.tk, "--port", ctrPort, "--kill-timeout", "8s", "--",
		"/srv/app/server", "demo-server", "--init-delay", "1s", addr); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ctrWaitGen(t, addr, 3, logs)
	ctrWaitLog(t, logs, "replaced as PID 1 of this PID namespace")
	app.setVersion(t, 4)
	if out, err := rt.cli("kill", "-s", "HUP", name); err != nil { // PID 1 passes it on
		t.Fatalf("%v: %s", err, out)
	}
	ctrWaitGen(t, addr, 4, logs)
	r = load.stop()
	report(t, rt.name+" exec -d takeover, then kill -s HUP to the replaced PID 1", r)
	stillUp("a deploy by exec")
	if r.FailedRequests() != 0 {
		t.Errorf("a deploy by exec and a HUP passed on: %d of %d failed", r.FailedRequests(), r.Requests)
	}

	doctor, _ := rt.cli("exec", name, rt.tk, "doctor")
	t.Logf("takeover doctor inside:\n%s", doctor)
	getfd := "warn     pidfd_getfd"
	if rt.getfd || caps != nil {
		getfd = "ok       pidfd_getfd"
	}
	if !strings.Contains(doctor, "takeover can work here") || !strings.Contains(doctor, getfd) {
		t.Errorf("takeover doctor inside: want %q and %q", "takeover can work here", getfd)
	}

	// Every start left an orphan; none stays a zombie.
	if n := app.orphans() - orphans0; n < 5 {
		t.Errorf("%d orphans left by 5 server starts, want 5", n)
	}
	if z := ctrZombies(pid1, 5*time.Second); len(z) > 0 {
		t.Errorf("zombies in the container: %v", z)
	}

	slow := slowRequest(t, addr, "2s")
	began := time.Now()
	if out, err := rt.cli("stop", "-t", "10", name); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	took := time.Since(began)
	if err := <-slow; err != nil {
		t.Errorf("the request in flight at %s stop: %v", rt.name, err)
	}
	if code := inspect("{{.State.ExitCode}}"); code != "0" {
		t.Errorf("after %s stop the container exited %s, want 0 (137: killed at the stop timeout)\n%s", rt.name, code, logs())
	}
	t.Logf("%s stop -t 10 with a 2s request in flight: answered, exit %s, in %v", rt.name, inspect("{{.State.ExitCode}}"), took.Round(time.Millisecond))
}

// ctrFirstSwap: a server not started under takeover, in a container whose
// PID 1 is idle, replaced by a takeover started by `exec`: a handoff where
// pidfd_getfd is allowed (0 failed), a rebind where it is not (what is
// queued at the old socket's close is reset).
func ctrFirstSwap(t *testing.T, rt ctrRuntime, app ctrApp, caps []string) {
	addr := "127.0.0.1:" + ctrPort
	name := "plain"
	app.setVersion(t, 1)
	args := append(append(append([]string{"run", "-d", "--name", name}, rt.opts...), caps...), rt.plain...)
	if out, err := rt.cli(args...); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	defer rt.cli(append(rt.rm, name)...)
	logs := func() string { b, _ := os.ReadFile(filepath.Join(app.dir, "first.log")); return string(b) }
	if out, err := rt.cli("exec", "-d", name, "/srv/app/server", "demo-server", addr); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ctrWaitGen(t, addr, 1, logs)
	os.Remove(filepath.Join(app.dir, "first.log"))
	load := startSdLoad(addr)
	load.waitRequests(300)
	app.setVersion(t, 2)
	if out, err := rt.cli("exec", "-d", name, "/usr/bin/sh", "-c", "exec /srv/app/takeover --port "+ctrPort+
		" -- /srv/app/server demo-server --init-delay 1s "+addr+" 2>/srv/app/first.log"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ctrWaitGen(t, addr, 2, logs)
	r := load.stop()
	want := "strategy=rebind"
	if rt.getfd || caps != nil {
		want = "strategy=handoff"
	}
	report(t, rt.name+" first swap of a plain server ("+want+")", r)
	if !strings.Contains(logs(), want) {
		t.Errorf("the first swap: want %s in takeover's log:\n%s", want, logs())
	}
	// A handoff shares the old server's socket: nothing fails. A rebind
	// cannot copy it: what waits in its queue when the old server closes
	// it is reset, at most one request per client (2).
	if allowed := map[bool]int{true: 0, false: 2}[want == "strategy=handoff"]; r.FailedRequests() > allowed {
		t.Errorf("the first swap (%s): %d of %d failed, want at most %d", want, r.FailedRequests(), r.Requests, allowed)
	}
}

// ctrWaitGen waits until addr answers gen=gen.
func ctrWaitGen(t *testing.T, addr string, gen int, logs func() string) {
	t.Helper()
	want := fmt.Sprintf("gen=%d\n", gen)
	var body string
	var err error
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if body, err = testutil.Get(addr, "/"); err == nil && strings.HasSuffix(body, want) {
			return
		}
	}
	t.Fatalf("%s does not answer %q after 60s (last %q, %v)\nlog:\n%s", addr, want, body, err, logs())
}

// ctrWaitRestarted waits until a process other than old answers on addr.
func ctrWaitRestarted(t *testing.T, addr string, old int, logs func() string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if body, err := testutil.Get(addr, "/"); err == nil && !strings.Contains(body, pidField(old)) {
			return
		}
	}
	t.Fatalf("no server but the killed one answers on %s after 60s\nlog:\n%s", addr, logs())
}

func ctrWaitLog(t *testing.T, logs func() string, s string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if strings.Contains(logs(), s) {
			return
		}
	}
	t.Fatalf("the container's log lacks %q after 30s:\n%s", s, logs())
}

// ctrServer is the demo server holding addr in the PID namespace of the
// container whose PID 1 is pid1 (host pids).
func ctrServer(t *testing.T, addr string, pid1 int) procKey {
	t.Helper()
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid1))
	if err != nil {
		t.Fatal(err)
	}
	for pid := range holdersOf(t, addr) {
		// The server is `takeover demo-server ...`; the launcher's command
		// line names demo-server too, after its --.
		argv := strings.Fields(owner.CommandLine(pid))
		if n, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); n != ns || pid == pid1 || len(argv) < 2 || argv[1] != "demo-server" {
			continue
		}
		if _, _, start, err := statOf(pid); err == nil {
			return procKey{PID: pid, Start: start}
		}
	}
	t.Fatalf("no demo-server of the container (PID 1 %d) holds %s", pid1, addr)
	return procKey{}
}

// ctrZombies lists the zombies in pid1's PID namespace that are still
// there after wait: each is an orphan nobody reaped.
func ctrZombies(pid1 int, wait time.Duration) []int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid1))
	if err != nil {
		return nil
	}
	deadline := time.Now().Add(wait)
	for {
		var zombies []int
		pids, _ := procfs.FS("/proc").PIDs()
		for _, pid := range pids {
			if n, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); err != nil || n != ns {
				continue
			}
			if state, _, _, err := statOf(pid); err == nil && state == 'Z' {
				zombies = append(zombies, pid)
			}
		}
		if len(zombies) == 0 || time.Now().After(deadline) {
			return zombies
		}
		time.Sleep(50 * time.Millisecond)
	}
}
