package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/takeover/takeover/internal/doctor"
	"github.com/takeover/takeover/internal/intercept"

	"github.com/google/go-cmp/cmp"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// doctorOutput is one run of `takeover doctor`: its exit status and its
// report, check by check (the first line of each).
type doctorOutput struct {
	code   int
	text   string
	status map[string]string // check -> status
	line   map[string]string // check -> its line and the lines under it
}

func runDoctorCmd(t *testing.T, cmd *exec.Cmd) doctorOutput {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	d := doctorOutput{code: cmd.ProcessState.ExitCode(), text: stdout.String(), status: map[string]string{}, line: map[string]string{}}
	if stderr.Len() > 0 {
		t.Logf("stderr of %v:\n%s", cmd.Args, stderr.String())
	}
	re := regexp.MustCompile(`^(ok|warn|missing) +([^:]+): `)
	last := ""
	for _, l := range strings.Split(d.text, "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			last = m[2]
			d.status[last] = m[1]
			d.line[last] = l
			continue
		}
		if last != "" && strings.HasPrefix(l, "         - ") {
			d.line[last] += "\n" + l
		}
	}
	return d
}

// expect checks statuses (a check may be allowed several) and that each
// check's text contains the given strings.
func (d doctorOutput) expect(t *testing.T, code int, status map[string][]string, texts map[string][]string) {
	t.Helper()
	if d.code != code {
		t.Errorf("exit status %d, want %d", d.code, code)
	}
	for check, want := range status {
		got, ok := d.status[check]
		if !ok {
			t.Errorf("no %q line", check)
			continue
		}
		found := false
		for _, w := range want {
			found = found || got == w
		}
		if !found {
			t.Errorf("%q is %s, want %s:\n%s", check, got, strings.Join(want, " or "), d.line[check])
		}
	}
	for check, want := range texts {
		for _, w := range want {
			if !strings.Contains(d.line[check], w) {
				t.Errorf("the %q line does not say %q:\n%s", check, w, d.line[check])
			}
		}
	}
	if t.Failed() {
		t.Logf("the whole report:\n%s", d.text)
	}
}

var (
	isOK      = []string{"ok"}
	isWarn    = []string{"warn"}
	isMissing = []string{"missing"}
)

// doctorEnv is the environment without takeover's variables, with
// TAKEOVER_RUN_DIR set to dir.
func doctorEnv(dir string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "TAKEOVER_") && !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") {
			env = append(env, kv)
		}
	}
	return append(env, "TAKEOVER_RUN_DIR="+dir)
}

// TestDoctorAsRoot: as root on this machine, everything takeover uses
// works.
func TestDoctorAsRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o700)
	cmd := exec.Command(takeoverBin(t), "doctor")
	cmd.Env = doctorEnv(dir)
	d := runDoctorCmd(t, cmd)
	d.expect(t, 0, map[string][]string{
		"kernel":                    isOK,
		"seccomp listener":          isOK,
		"SECCOMP_IOCTL_NOTIF_ADDFD": isOK,
		"/proc/PID/mem":             isOK,
		"pidfd_open":                isOK,
		"pidfd_getfd":               isOK,
		"/proc":                     isOK,
		"Yama ptrace_scope":         isOK, // root has CAP_SYS_PTRACE
		"real-time rebind":          isOK,
		"run directory":             isOK,
		"ports":                     isOK,
	}, map[string][]string{
		"seccomp listener": {"bind(2) of 127.0.0.1:0 reached this process"},
		"real-time rebind": {"SCHED_FIFO", "CAP_SYS_NICE yes"},
		"run directory":    {dir + " (TAKEOVER_RUN_DIR)", "mode 0700"},
	})
	if !strings.HasPrefix(d.text, "takeover doctor: Linux ") || !strings.Contains(d.text, "as root (uid 0, gid 0)") || !strings.Contains(d.text, "CAP_SYS_PTRACE yes") {
		t.Errorf("the header does not name the kernel, the user and its capabilities:\n%s", d.text)
	}
	if !strings.HasSuffix(d.text, "\ntakeover can work here.\n") {
		t.Errorf("the summary is not that takeover can work here:\n%s", d.text)
	}
}

// TestDoctorSandbox: in a container's default seccomp profile, pidfd_getfd
// is refused. takeover can still work (it falls back), so the doctor warns,
// says what to add, and exits 0; the seccomp listener still installs.
func TestDoctorSandbox(t *testing.T) {
	cmd := exec.Command(takeoverBin(t), "doctor")
	cmd.Env = doctorEnv(filepath.Join(t.TempDir(), "run"))
	d := runDoctorCmd(t, sandboxed(cmd))
	d.expect(t, 0, map[string][]string{
		"seccomp listener":          isOK,
		"SECCOMP_IOCTL_NOTIF_ADDFD": isOK,
		"/proc/PID/mem":             isOK,
		"pidfd_open":                isOK,
		"pidfd_getfd":               isWarn,
		"/proc":                     isOK,
	}, map[string][]string{
		"pidfd_getfd": {
			"operation not permitted", "seccomp profile",
			"docker run --cap-add SYS_PTRACE", "securityContext.capabilities.add: [SYS_PTRACE]",
			"falls back to creating sockets itself and passing them between takeovers over unix sockets",
		},
	})
	if !regexp.MustCompile(`[1-9] seccomp filter\(s\) above this process`).MatchString(d.text) {
		t.Errorf("the header does not say the doctor runs under a seccomp filter:\n%s", d.text)
	}
	if !strings.Contains(d.text, "takeover can work here, with") {
		t.Errorf("the summary is not that takeover can work here, with warnings:\n%s", d.text)
	}
}

// TestDoctorUnprivileged: as nobody, without capabilities, takeover still
// works; the rebind's thread may not run real-time, which the doctor warns
// about and says how to allow. A run directory nobody cannot create is
// missing, and the doctor exits 1.
func TestDoctorUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the doctor as another user")
	}
	testutil.RequireTool(t, "setpriv")
	// nobody must reach the binary: takeoverBin's directory is root's only.
	pub, err := os.MkdirTemp("", "takeover-doctor")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pub) })
	bin := filepath.Join(pub, "takeover")
	copyFile(t, takeoverBin(t), bin)
	if err := os.Chmod(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	runDirs := filepath.Join(pub, "nobody")
	if err := os.Mkdir(runDirs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(runDirs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	asNobody := func(runDir string) *exec.Cmd {
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", bin, "doctor")
		cmd.Env = doctorEnv(runDir)
		return cmd
	}
	var rtprio unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_RTPRIO, &rtprio)
	rt, rtSays := isWarn, []string{"may not run as SCHED_FIFO", "CAP_SYS_NICE no", "LimitRTPRIO=1", "AmbientCapabilities=CAP_SYS_NICE"}
	if rtprio.Cur >= 1 {
		rt, rtSays = isOK, []string{"SCHED_FIFO", "RLIMIT_RTPRIO"}
	}
	ports := "this user may bind ports " + fmt.Sprint(intercept.UnprivilegedPortStart()) + " and up"
	if intercept.UnprivilegedPortStart() <= 0 {
		ports = "every user may bind every port"
	}

	t.Run("works", func(t *testing.T) {
		runDir := filepath.Join(runDirs, "run")
		d := runDoctorCmd(t, asNobody(runDir))
		d.expect(t, 0, map[string][]string{
			"seccomp listener":  isOK,
			"/proc/PID/mem":     isOK,
			"pidfd_getfd":       isOK, // of its own child
			"/proc":             isOK,
			"Yama ptrace_scope": {"ok", "warn"},
			"real-time rebind":  rt,
			"run directory":     isOK,
			"ports":             isOK,
		}, map[string][]string{
			"real-time rebind": rtSays,
			"run directory":    {runDir + " (TAKEOVER_RUN_DIR) does not exist yet; takeover will create it"},
			"ports":            {ports},
		})
		if !strings.Contains(d.text, "(uid 65534, gid 65534)") || !strings.Contains(d.text, "CAP_SYS_PTRACE no, CAP_SYS_NICE no, CAP_NET_BIND_SERVICE no") {
			t.Errorf("the header does not name nobody and its lack of capabilities:\n%s", d.text)
		}
		if _, err := os.Stat(runDir); err == nil {
			t.Errorf("the doctor created %s", runDir)
		}
	})
	t.Run("run directory out of reach", func(t *testing.T) {
		runDir := filepath.Join(t.TempDir(), "run") // under root's 0700 directory
		d := runDoctorCmd(t, asNobody(runDir))
		d.expect(t, 1, map[string][]string{
			"seccomp listener": isOK,
			"run directory":    isMissing,
		}, map[string][]string{
			"run directory": {"this user cannot reach", "permission denied", "chown 65534 " + runDir, "TAKEOVER_RUN_DIR"},
		})
		if !strings.Contains(d.text, "takeover cannot work here: 1 missing") {
			t.Errorf("the summary does not say what is missing:\n%s", d.text)
		}
	})
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestDoctorUnderTakeover: a doctor run as a takeover's command finds the
// seccomp listener taken (EBUSY), says why, and exits 1, which takeover
// passes on.
func TestDoctorUnderTakeover(t *testing.T) {
	bin := takeoverBin(t)
	cmd := exec.Command(bin, "-p", testutil.FreePort(t), "--", bin, "doctor")
	cmd.Env = doctorEnv(filepath.Join(t.TempDir(), "run"))
	d := runDoctorCmd(t, cmd)
	d.expect(t, 1, map[string][]string{
		"seccomp listener": isMissing,
		"pidfd_getfd":      isOK,
	}, map[string][]string{
		"seccomp listener": {"runs under takeover (TAKEOVER_PID=", "a takeover cannot run inside another takeover", "run takeover at the top", "--sockets systemd"},
	})
	if _, ok := d.status["SECCOMP_IOCTL_NOTIF_ADDFD"]; ok {
		t.Errorf("ADDFD reported though no listener could be had:\n%s", d.text)
	}
}

// TestDoctorJSON runs the doctor in this process (its probe is this test
// binary, in the probe mode TestMain gives it, as main does takeover's).
func TestDoctorJSON(t *testing.T) {
	t.Setenv("TAKEOVER_RUN_DIR", filepath.Join(t.TempDir(), "run"))
	var stdout, stderr bytes.Buffer
	code := run([]string{"doctor", "--json"}, &stdout, &stderr)
	var r doctor.Report
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout.String())
	}
	if (code == 0) != r.OK {
		t.Errorf("exit status %d with ok=%v", code, r.OK)
	}
	seen := map[string]bool{}
	for _, c := range r.Checks {
		seen[c.Check] = true
		switch c.Status {
		case doctor.StatusOK, doctor.StatusWarn, doctor.StatusMissing:
		default:
			t.Errorf("check %q has status %q", c.Check, c.Status)
		}
		if c.Status == doctor.StatusMissing && len(c.Do) == 0 {
			t.Errorf("check %q is missing and says nothing to do: %s", c.Check, c.Detail)
		}
	}
	for _, want := range []string{"kernel", "seccomp listener", "/proc/PID/mem", "pidfd_open", "pidfd_getfd", "/proc", "Yama ptrace_scope", "real-time rebind", "run directory", "ports"} {
		if !seen[want] {
			t.Errorf("no %q check in %s", want, stdout.String())
		}
	}
	if os.Geteuid() == 0 && (!r.OK || !r.Caps["CAP_SYS_PTRACE"] || r.UID != 0) {
		t.Errorf("as root: ok %v, capabilities %v, uid %d", r.OK, r.Caps, r.UID)
	}
}

func TestDoctorUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
	}{
		{[]string{"doctor", "now"}, exitUsage},
		{[]string{"doctor", "--yaml"}, exitUsage},
		{[]string{"doctor", "--help"}, 0},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tt.args, &stdout, &stderr); code != tt.code {
			t.Errorf("%v: exit status %d, want %d", tt.args, code, tt.code)
		}
		// --help: the usage on stdout; a mistake: what it is and where the usage is, on stderr.
		out, other, want := &stdout, &stderr, "usage: takeover doctor"
		if tt.code != 0 {
			out, other, want = &stderr, &stdout, "Run 'takeover doctor --help' for usage."
		}
		if !strings.Contains(out.String(), want) || other.Len() > 0 {
			t.Errorf("%v: stdout %q, stderr %q; want %q", tt.args, stdout.String(), stderr.String(), want)
		}
	}
}

func TestDoctorKernelChecks(t *testing.T) {
	type line struct{ Status, Detail string }
	for _, tt := range []struct {
		release string
		want    []line
	}{
		{"6.18.44-fc-v657", []line{{"ok", "Linux 6.18 has seccomp user notification (5.0), pidfd_open (5.3), pidfd_getfd and SECCOMP_IOCTL_NOTIF_ADDFD (5.9), SECCOMP_ADDFD_FLAG_SEND (5.14), SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19)"}}},
		{"5.15.0-91-generic", []line{
			{"ok", "Linux 5.15 has seccomp user notification (5.0), pidfd_open (5.3), pidfd_getfd and SECCOMP_IOCTL_NOTIF_ADDFD (5.9), SECCOMP_ADDFD_FLAG_SEND (5.14)"},
			{"warn", "Linux 5.15 predates SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19)"},
		}},
		{"5.4.0-150-generic", []line{
			{"ok", "Linux 5.4 has seccomp user notification (5.0), pidfd_open (5.3)"},
			{"missing", "Linux 5.4 predates pidfd_getfd and SECCOMP_IOCTL_NOTIF_ADDFD (5.9)"},
			{"ok", "Linux 5.4 predates SECCOMP_ADDFD_FLAG_SEND (5.14)"},
			{"warn", "Linux 5.4 predates SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19)"},
		}},
		{"4.19.0-26-amd64", []line{
			{"missing", "Linux 4.19 predates seccomp user notification (5.0)"},
			{"missing", "Linux 4.19 predates pidfd_open (5.3)"},
			{"missing", "Linux 4.19 predates pidfd_getfd and SECCOMP_IOCTL_NOTIF_ADDFD (5.9)"},
			{"ok", "Linux 4.19 predates SECCOMP_ADDFD_FLAG_SEND (5.14)"},
			{"warn", "Linux 4.19 predates SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19)"},
		}},
		{"6.1rc2", []line{{"ok", "Linux 6.1 has seccomp user notification (5.0), pidfd_open (5.3), pidfd_getfd and SECCOMP_IOCTL_NOTIF_ADDFD (5.9), SECCOMP_ADDFD_FLAG_SEND (5.14), SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (5.19)"}}},
		{"weird", []line{{"warn", `cannot read a version from the release "weird"; the checks below try each feature`}}},
	} {
		t.Run(tt.release, func(t *testing.T) {
			var got []line
			for _, c := range doctor.KernelChecks(tt.release) {
				got = append(got, line{c.Status, c.Detail})
				if strings.Contains(c.Detail, "predates") && len(c.Do) == 0 {
					t.Errorf("%q says nothing about what it means", c.Detail)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestDoctorYama(t *testing.T) {
	for _, tt := range []struct {
		name      string
		scope     int
		present   bool
		capPtrace bool
		status    string
		says      string
	}{
		{"absent", 0, false, false, "ok", "Yama is not active"},
		{"classic", 0, true, false, "ok", "0 (classic)"},
		{"restricted", 1, true, false, "warn", "NOT started under takeover falls back to rebind"},
		{"restricted with CAP_SYS_PTRACE", 1, true, true, "ok", "CAP_SYS_PTRACE"},
		{"admin-only", 2, true, false, "missing", "AmbientCapabilities=CAP_SYS_PTRACE"},
		{"admin-only with CAP_SYS_PTRACE", 2, true, true, "ok", "CAP_SYS_PTRACE"},
		{"no attach", 3, true, true, "missing", "until a reboot"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := doctor.YamaCheck(tt.scope, tt.present, tt.capPtrace)
			all := c.Detail + "\n" + strings.Join(c.Do, "\n")
			if c.Status != tt.status || !strings.Contains(all, tt.says) {
				t.Errorf("status %s, text:\n%s\nwant %s, saying %q", c.Status, all, tt.status, tt.says)
			}
		})
	}
}

func TestDoctorRunDir(t *testing.T) {
	base := t.TempDir()
	os.Chmod(base, 0o700)
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	file := filepath.Join(base, "file")
	os.WriteFile(file, nil, 0o600)
	for _, tt := range []struct {
		name, dir, status, says string
	}{
		{"exists", base, "ok", "mode 0700, lock files work"},
		{"to be created", filepath.Join(base, "a", "b"), "ok", "does not exist yet; takeover will create it"},
		{"writable by all", open, "missing", "takeover refuses it: run directory " + open + " has mode 0777, not 0700"},
		{"a file", file, "missing", "not a directory"},
		{"under a file", filepath.Join(file, "run"), "missing", "not a directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := doctor.RunDirCheck(tt.dir, false, os.Geteuid())
			if c.Status != tt.status || !strings.Contains(c.Detail, tt.says) {
				t.Errorf("%s: %s\nwant %s, saying %q", c.Status, c.Detail, tt.status, tt.says)
			}
		})
	}
	if entries, _ := os.ReadDir(base); len(entries) != 2 {
		t.Errorf("the checks left files behind: %v", entries)
	}
}

func FuzzKernelVersion(f *testing.F) {
	for _, s := range []string{"6.18.44-fc-v657", "5.4.0", "4.19", "6", "6.", ".1", "-1.2", "6.1rc2", "99999999999999999999.1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, release string) {
		major, minor, ok := doctor.KernelVersion(release)
		if ok && (major < 0 || minor < 0 || release[0] < '0' || release[0] > '9') {
			t.Errorf("%q read as %d.%d", release, major, minor)
		}
		doctor.KernelChecks(release)
	})
}

// BenchmarkDoctor measures a whole `takeover doctor`: in this process (the
// probe it starts is this test binary), and as the built binary, which is
// what a user waits for.
//
//	go test -run '^$' -bench Doctor -benchtime 50x
func BenchmarkDoctor(b *testing.B) {
	b.Setenv("TAKEOVER_RUN_DIR", filepath.Join(b.TempDir(), "run"))
	b.Run("in-process", func(b *testing.B) {
		for b.Loop() {
			if code := runDoctor(nil, io.Discard, io.Discard); code != 0 {
				b.Fatalf("doctor exited %d", code)
			}
		}
	})
	b.Run("binary", func(b *testing.B) {
		bin := takeoverBin(b)
		for b.Loop() {
			if out, err := exec.Command(bin, "doctor").CombinedOutput(); err != nil {
				b.Fatalf("%v\n%s", err, out)
			}
		}
	})
}
