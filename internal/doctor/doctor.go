// Package doctor is `takeover doctor`'s checks: the kernel's features, what
// this process may do (capabilities, Yama, seccomp filters above it, no_new_privs),
// a probe child that the bind trap is tried on end to end (the filter, an
// answered bind, its memory and /proc files, an fd copied out and one
// installed), the run directory, the ports this user may bind, io_uring.
// The command line adds the checks of what it plugs into the core.
package doctor

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/takeover/takeover/internal/intercept"
	"github.com/takeover/takeover/internal/rundir"
	"golang.org/x/sys/unix"
)

// doctorProbeEnv and doctorProbeArg0 together make takeover the child
// `takeover doctor` examines; both, so that a variable leaked into the
// environment of a deploy cannot turn its takeover into a probe.
const (
	doctorProbeEnv  = "_TAKEOVER_DOCTOR_PROBE"
	doctorProbeArg0 = "takeover-doctor-probe"
)

// MaybeRunProbe turns this process into the probe `takeover doctor`
// examines, if it was started as one; main calls it first of all.
func MaybeRunProbe() {
	if os.Getenv(doctorProbeEnv) != "" && len(os.Args) > 0 && os.Args[0] == doctorProbeArg0 {
		os.Exit(runDoctorProbe())
	}
}

// The statuses of a check. Anything missing makes `takeover doctor` exit 1.
const (
	StatusOK      = "ok"
	StatusWarn    = "warn"
	StatusMissing = "missing"
)

// Capability bits (include/uapi/linux/capability.h); capNetBindService is
// intercept.CapNetBindService.
const (
	capSysPtrace = 19
	capSysNice   = 23
)

// A Check is one line of the report: what was checked, what was
// found, and what to do about it (or what it means).
type Check struct {
	Status string   `json:"status"`
	Check  string   `json:"check"`
	Detail string   `json:"detail"`
	Do     []string `json:"do,omitempty"`
}

type Report struct {
	Kernel         string          `json:"kernel"`
	Machine        string          `json:"machine"`
	User           string          `json:"user"`
	UID            int             `json:"uid"`
	GID            int             `json:"gid"`
	CapEff         string          `json:"cap_eff"`
	Caps           map[string]bool `json:"capabilities"` // those takeover cares about
	NoNewPrivs     bool            `json:"no_new_privs"`
	SeccompFilters int             `json:"seccomp_filters"` // filters above this process
	Checks         []Check         `json:"checks"`
	OK             bool            `json:"ok"` // nothing is missing
}

// Diagnose runs every check; extra are the checks of what the caller
// plugs into the core (the rebind's retry thread), each told whether this
// process has CAP_SYS_NICE.
func Diagnose(extra ...func(capNice bool) Check) Report {
	var u unix.Utsname
	unix.Uname(&u)
	r := Report{
		Kernel:  unix.ByteSliceToString(u.Release[:]),
		Machine: unix.ByteSliceToString(u.Machine[:]),
		UID:     os.Geteuid(),
		GID:     os.Getegid(),
	}
	r.User = "uid " + strconv.Itoa(r.UID)
	if u, err := user.LookupId(strconv.Itoa(r.UID)); err == nil {
		r.User = u.Username
	}
	b, _ := os.ReadFile("/proc/self/status")
	status := StatusFields(string(b))
	capEff, _ := strconv.ParseUint(status["CapEff"], 16, 64)
	r.CapEff = status["CapEff"]
	has := func(bit int) bool { return capEff&(1<<bit) != 0 }
	r.Caps = map[string]bool{
		"CAP_SYS_PTRACE":       has(capSysPtrace),
		"CAP_SYS_NICE":         has(capSysNice),
		"CAP_NET_BIND_SERVICE": has(intercept.CapNetBindService),
	}
	r.NoNewPrivs = status["NoNewPrivs"] == "1"
	r.SeccompFilters, _ = strconv.Atoi(status["Seccomp_filters"])
	scope, yama := yamaScope()

	r.Checks = KernelChecks(r.Kernel)
	r.Checks = append(r.Checks, probeChecks(probeContext{
		seccompFilters: r.SeccompFilters,
		yama:           yama,
		scope:          scope,
		capPtrace:      has(capSysPtrace),
	})...)
	r.Checks = append(r.Checks, YamaCheck(scope, yama, has(capSysPtrace)))
	for _, check := range extra {
		r.Checks = append(r.Checks, check(has(capSysNice)))
	}
	r.Checks = append(r.Checks, RunDirCheck(rundir.Default(), os.Getenv("TAKEOVER_RUN_DIR") != "", r.UID))
	r.Checks = append(r.Checks, portsCheck(intercept.UnprivilegedPortStart(), has(intercept.CapNetBindService)))
	r.Checks = append(r.Checks, IoUringCheck(r.Kernel, ioUringDisabled()))
	r.OK = true
	for _, c := range r.Checks {
		r.OK = r.OK && c.Status != StatusMissing
	}
	return r
}

func (r Report) Print(w io.Writer) {
	fmt.Fprintf(w, "takeover doctor: Linux %s on %s, as %s (uid %d, gid %d)\n", r.Kernel, r.Machine, r.User, r.UID, r.GID)
	yes := map[bool]string{true: "yes", false: "no"}
	fmt.Fprintf(w, "capabilities: CAP_SYS_PTRACE %s, CAP_SYS_NICE %s, CAP_NET_BIND_SERVICE %s (CapEff %s); ",
		yes[r.Caps["CAP_SYS_PTRACE"]], yes[r.Caps["CAP_SYS_NICE"]], yes[r.Caps["CAP_NET_BIND_SERVICE"]], r.CapEff)
	switch r.SeccompFilters {
	case 0:
		fmt.Fprintln(w, "no seccomp filter above this process")
	default:
		fmt.Fprintf(w, "%d seccomp filter(s) above this process (a container's profile, a sandbox or a takeover)\n", r.SeccompFilters)
	}
	fmt.Fprintln(w)
	var missing, warn int
	for _, c := range r.Checks {
		fmt.Fprintf(w, "%-8s %s: %s\n", c.Status, c.Check, c.Detail)
		for _, d := range c.Do {
			fmt.Fprintf(w, "%9s- %s\n", "", d)
		}
		switch c.Status {
		case StatusMissing:
			missing++
		case StatusWarn:
			warn++
		}
	}
	fmt.Fprintln(w)
	switch {
	case missing > 0:
		fmt.Fprintf(w, "takeover cannot work here: %d missing, %d warning(s) above.\n", missing, warn)
	case warn > 0:
		fmt.Fprintf(w, "takeover can work here, with %d warning(s) above.\n", warn)
	default:
		fmt.Fprintln(w, "takeover can work here.")
	}
}

// StatusFields reads the "Key:\tvalue" lines of /proc/PID/status.
func StatusFields(s string) map[string]string {
	m := make(map[string]string)
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// KernelVersion reads major and minor from a release such as
// "6.18.44-fc-v657".
func KernelVersion(release string) (major, minor int, ok bool) {
	maj, rest, ok1 := strings.Cut(release, ".")
	end := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		rest = rest[:end]
	}
	digits := func(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" }
	major, err1 := strconv.Atoi(maj)
	minor, err2 := strconv.Atoi(rest)
	if !ok1 || !digits(maj) || !digits(rest) || err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return major, minor, true
}

// kernelFeatures are the kernel features takeover uses, and what their
// absence means. The probe tries the ones that matter; a kernel with
// backports may have more than its version says.
var kernelFeatures = []struct {
	major, minor int
	what         string
	status       string // when absent
	without      string
}{
	{5, 0, "seccomp user notification", StatusMissing,
		"takeover cannot see its server's bind(2): it cannot work on this kernel; upgrade to Linux 5.9 or later"},
	{5, 3, "pidfd_open", StatusMissing,
		"takeover cannot hold on to the processes it stops; upgrade to Linux 5.9 or later"},
	{5, 9, "pidfd_getfd and SECCOMP_IOCTL_NOTIF_ADDFD", StatusMissing,
		"takeover can neither copy its server's socket nor install one in it; upgrade to Linux 5.9 or later"},
	{5, 14, "SECCOMP_ADDFD_FLAG_SEND", StatusOK,
		"not used by this version of takeover"},
	{5, 19, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", StatusWarn,
		"a signal that reaches the server during its bind(2) makes the kernel send that bind again; takeover answers it again, which is harmless"},
}

func KernelChecks(release string) []Check {
	major, minor, ok := KernelVersion(release)
	if !ok {
		return []Check{{Status: StatusWarn, Check: "kernel",
			Detail: fmt.Sprintf("cannot read a version from the release %q; the checks below try each feature", release)}}
	}
	var have []string
	var lack []Check
	for _, f := range kernelFeatures {
		if major > f.major || major == f.major && minor >= f.minor {
			have = append(have, fmt.Sprintf("%s (%d.%d)", f.what, f.major, f.minor))
			continue
		}
		lack = append(lack, Check{Status: f.status, Check: "kernel",
			Detail: fmt.Sprintf("Linux %d.%d predates %s (%d.%d)", major, minor, f.what, f.major, f.minor),
			Do:     []string{f.without}})
	}
	if len(have) == 0 {
		return lack
	}
	return append([]Check{{Status: StatusOK, Check: "kernel",
		Detail: fmt.Sprintf("Linux %d.%d has %s", major, minor, strings.Join(have, ", "))}}, lack...)
}

// yamaScope reads kernel.yama.ptrace_scope; present is false without Yama.
func yamaScope() (scope int, present bool) {
	b, err := os.ReadFile("/proc/sys/kernel/yama/ptrace_scope")
	if err != nil {
		return 0, false
	}
	scope, err = strconv.Atoi(strings.TrimSpace(string(b)))
	return scope, err == nil
}

func YamaCheck(scope int, present, capPtrace bool) Check {
	c := Check{Check: "Yama ptrace_scope"}
	switch {
	case !present:
		c.Status, c.Detail = StatusOK, "Yama is not active here: copying a socket from another process of this user needs no extra right"
	case scope == 0:
		c.Status, c.Detail = StatusOK, "0 (classic): takeover may copy sockets from any process of this user"
	case scope < 3 && capPtrace:
		c.Status, c.Detail = StatusOK, fmt.Sprintf("%d, but this user has CAP_SYS_PTRACE, which Yama lets through", scope)
	case scope == 1:
		c.Status, c.Detail = StatusWarn, "1 (restricted): a process may copy sockets only from its own descendants"
		c.Do = []string{
			"takeover copies its own server's socket, and takeovers pass sockets among themselves: replacing a server started under takeover works as usual",
			"replacing a server NOT started under takeover falls back to rebind (a gap of about a millisecond) unless takeover has CAP_SYS_PTRACE (systemd: AmbientCapabilities=CAP_SYS_PTRACE), or unless the machine allows it: sudo sysctl kernel.yama.ptrace_scope=0",
		}
	case scope == 2:
		c.Status, c.Detail = StatusMissing, "2 (admin-only): without CAP_SYS_PTRACE no process may read another's memory, not even its child's; takeover reads the address its server binds from the server's memory"
		c.Do = []string{
			"give takeover CAP_SYS_PTRACE: run it as root, or under systemd with AmbientCapabilities=CAP_SYS_PTRACE",
			"or lower the setting: sudo sysctl kernel.yama.ptrace_scope=1 (and in /etc/sysctl.d/ to keep it)",
		}
	default:
		c.Status, c.Detail = StatusMissing, fmt.Sprintf("%d (no attach): no process may read another's memory, not even root; takeover cannot see what its server binds", scope)
		c.Do = []string{"this setting cannot be lowered until a reboot: set kernel.yama.ptrace_scope=1 in /etc/sysctl.d/ and reboot"}
	}
	return c
}

// RunDirCheck checks the directory of takeover's port locks and generation
// records: it must exist or be creatable, be writable, and be this user's
// alone (takeover refuses it otherwise, openRunDir).
func RunDirCheck(dir string, fromEnv bool, uid int) Check {
	c := Check{Check: "run directory"}
	name := dir
	if fromEnv {
		name += " (TAKEOVER_RUN_DIR)"
	}
	fix := fmt.Sprintf("create it for this user: mkdir -p %s && chown %d %s && chmod 700 %s; or set TAKEOVER_RUN_DIR to a directory this user owns (the same for every takeover of this user)", dir, uid, dir, dir)
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(dir)
		for parent != "/" {
			if _, err := os.Stat(parent); err == nil {
				break
			}
			parent = filepath.Dir(parent)
		}
		if err := unix.Faccessat(unix.AT_FDCWD, parent, unix.W_OK|unix.X_OK, unix.AT_EACCESS); err != nil {
			c.Status, c.Detail, c.Do = StatusMissing, fmt.Sprintf("%s does not exist, and this user cannot create it: %s: %v", name, parent, err), []string{fix}
			return c
		}
		c.Status, c.Detail = StatusOK, fmt.Sprintf("%s does not exist yet; takeover will create it (mode 0700)", name)
		return c
	}
	switch {
	case errors.Is(err, fs.ErrPermission):
		c.Status, c.Detail, c.Do = StatusMissing, fmt.Sprintf("this user cannot reach %s: %v", name, err), []string{fix}
		return c
	case err != nil:
		c.Status, c.Detail, c.Do = StatusMissing, fmt.Sprintf("%s: %v", name, err), []string{fix}
		return c
	}
	if err := rundir.Check(dir, fi); err != nil {
		c.Status, c.Detail, c.Do = StatusMissing, fmt.Sprintf("takeover refuses it: %v", err), []string{fix}
		return c
	}
	// What takeover does there: create a lock file and lock it.
	f, err := os.CreateTemp(dir, ".doctor-*.lock")
	if err != nil {
		c.Status, c.Detail, c.Do = StatusMissing, fmt.Sprintf("cannot create a lock file in %s: %v", name, err), []string{fix}
		return c
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	f.Close()
	os.Remove(f.Name())
	if err != nil {
		c.Status, c.Detail, c.Do = StatusMissing, fmt.Sprintf("cannot lock a file in %s (flock): %v", name, err), []string{"set TAKEOVER_RUN_DIR to a directory on a local file system"}
		return c
	}
	perm := fi.Mode().Perm()
	c.Status, c.Detail = StatusOK, fmt.Sprintf("%s: this user's, mode %04o, lock files work", name, perm)
	return c
}

func portsCheck(start int, capBind bool) Check {
	c := Check{Status: StatusOK, Check: "ports"}
	switch {
	case start <= 0:
		c.Detail = "every user may bind every port (net.ipv4.ip_unprivileged_port_start=0)"
	case capBind:
		c.Detail = fmt.Sprintf("this user may bind every port (CAP_NET_BIND_SERVICE); without it, ports from %d up (net.ipv4.ip_unprivileged_port_start)", start)
	default:
		c.Detail = fmt.Sprintf("this user may bind ports %d and up (net.ipv4.ip_unprivileged_port_start=%d; no CAP_NET_BIND_SERVICE)", start, start)
		c.Do = []string{
			fmt.Sprintf("takeover binds for its server only what the server could bind itself: for a port below %d both need CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE); file capabilities (setcap) on the server do not work under takeover, which runs it with no_new_privs", start),
		}
	}
	return c
}
