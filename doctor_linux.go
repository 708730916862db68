package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// `takeover doctor` says whether takeover can work on this machine as this
// user, and what to change where it cannot. Rather than guess from versions
// and settings, it does to a child process of its own what a launcher does
// to its server: install the bind filter in it, answer its bind(2), read its
// memory and its /proc files, copy an fd out of it and install one in it.

// doctorProbeEnv and doctorProbeArg0 together make takeover the child
// `takeover doctor` examines; both, so that a variable leaked into the
// environment of a deploy cannot turn its takeover into a probe.
const (
	doctorProbeEnv  = "_TAKEOVER_DOCTOR_PROBE"
	doctorProbeArg0 = "takeover-doctor-probe"
)

func init() {
	if os.Getenv(doctorProbeEnv) != "" && len(os.Args) > 0 && os.Args[0] == doctorProbeArg0 {
		os.Exit(runDoctorProbe())
	}
}

// The statuses of a check. Anything missing makes `takeover doctor` exit 1.
const (
	statusOK      = "ok"
	statusWarn    = "warn"
	statusMissing = "missing"
)

// Capability bits (include/uapi/linux/capability.h); capNetBindService is
// in bind_linux.go.
const (
	capSysPtrace = 19
	capSysNice   = 23
)

// A doctorCheck is one line of the report: what was checked, what was
// found, and what to do about it (or what it means).
type doctorCheck struct {
	Status string   `json:"status"`
	Check  string   `json:"check"`
	Detail string   `json:"detail"`
	Do     []string `json:"do,omitempty"`
}

type doctorReport struct {
	Kernel         string          `json:"kernel"`
	Machine        string          `json:"machine"`
	User           string          `json:"user"`
	UID            int             `json:"uid"`
	GID            int             `json:"gid"`
	CapEff         string          `json:"cap_eff"`
	Caps           map[string]bool `json:"capabilities"` // those takeover cares about
	NoNewPrivs     bool            `json:"no_new_privs"`
	SeccompFilters int             `json:"seccomp_filters"` // filters above this process
	Checks         []doctorCheck   `json:"checks"`
	OK             bool            `json:"ok"` // nothing is missing
}

// runDoctor implements `takeover doctor [--json]`: 0 when everything
// takeover needs works, 1 when something is missing, 2 on bad usage.
func runDoctor(args []string, stdout, stderr io.Writer) int {
	flags := newFlagSet("takeover doctor", "usage: takeover doctor [--json]\n\nChecks what takeover needs on this machine, as this user, and says what to change.\nExits 0 when everything needed works, 1 when something is missing.\n")
	asJSON := flags.Bool("json", false, "print JSON")
	if ok, code := parseArgs(flags, args, stdout, stderr); !ok {
		return code
	}
	if flags.NArg() > 0 {
		badUsage(stderr, flags.Name(), fmt.Sprintf("unexpected argument %q", flags.Arg(0)))
		return exitUsage
	}
	r := diagnose()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		r.print(stdout)
	}
	if !r.OK {
		return exitFailure
	}
	return 0
}

func diagnose() doctorReport {
	var u unix.Utsname
	unix.Uname(&u)
	r := doctorReport{
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
	status := statusFields(string(b))
	capEff, _ := strconv.ParseUint(status["CapEff"], 16, 64)
	r.CapEff = status["CapEff"]
	has := func(bit int) bool { return capEff&(1<<bit) != 0 }
	r.Caps = map[string]bool{
		"CAP_SYS_PTRACE":       has(capSysPtrace),
		"CAP_SYS_NICE":         has(capSysNice),
		"CAP_NET_BIND_SERVICE": has(capNetBindService),
	}
	r.NoNewPrivs = status["NoNewPrivs"] == "1"
	r.SeccompFilters, _ = strconv.Atoi(status["Seccomp_filters"])
	scope, yama := yamaScope()

	r.Checks = kernelChecks(r.Kernel)
	r.Checks = append(r.Checks, probeChecks(probeContext{
		seccompFilters: r.SeccompFilters,
		yama:           yama,
		scope:          scope,
		capPtrace:      has(capSysPtrace),
	})...)
	r.Checks = append(r.Checks, yamaCheck(scope, yama, has(capSysPtrace)))
	r.Checks = append(r.Checks, retryThreadCheck(has(capSysNice)))
	r.Checks = append(r.Checks, runDirCheck(runDir(), os.Getenv("TAKEOVER_RUN_DIR") != "", r.UID))
	r.Checks = append(r.Checks, portsCheck(unprivilegedPortStart(), has(capNetBindService)))
	r.Checks = append(r.Checks, ioUringCheck(r.Kernel, ioUringDisabled()))
	r.OK = true
	for _, c := range r.Checks {
		r.OK = r.OK && c.Status != statusMissing
	}
	return r
}

func (r doctorReport) print(w io.Writer) {
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
		case statusMissing:
			missing++
		case statusWarn:
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

// statusFields reads the "Key:\tvalue" lines of /proc/PID/status.
func statusFields(s string) map[string]string {
	m := make(map[string]string)
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// kernelVersion reads major and minor from a release such as
// "6.18.44-fc-v657".
func kernelVersion(release string) (major, minor int, ok bool) {
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
	{5, 0, "seccomp user notification", statusMissing,
		"takeover cannot see its server's bind(2): it cannot work on this kernel; upgrade to Linux 5.9 or later"},
	{5, 3, "pidfd_open", statusMissing,
		"takeover cannot hold on to the processes it stops; upgrade to Linux 5.9 or later"},
	{5, 9, "pidfd_getfd and SECCOMP_IOCTL_NOTIF_ADDFD", statusMissing,
		"takeover can neither copy its server's socket nor install one in it; upgrade to Linux 5.9 or later"},
	{5, 14, "SECCOMP_ADDFD_FLAG_SEND", statusOK,
		"not used by this version of takeover"},
	{5, 19, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV", statusWarn,
		"a signal that reaches the server during its bind(2) makes the kernel send that bind again; takeover answers it again, which is harmless"},
}

func kernelChecks(release string) []doctorCheck {
	major, minor, ok := kernelVersion(release)
	if !ok {
		return []doctorCheck{{Status: statusWarn, Check: "kernel",
			Detail: fmt.Sprintf("cannot read a version from the release %q; the checks below try each feature", release)}}
	}
	var have []string
	var lack []doctorCheck
	for _, f := range kernelFeatures {
		if major > f.major || major == f.major && minor >= f.minor {
			have = append(have, fmt.Sprintf("%s (%d.%d)", f.what, f.major, f.minor))
			continue
		}
		lack = append(lack, doctorCheck{Status: f.status, Check: "kernel",
			Detail: fmt.Sprintf("Linux %d.%d predates %s (%d.%d)", major, minor, f.what, f.major, f.minor),
			Do:     []string{f.without}})
	}
	if len(have) == 0 {
		return lack
	}
	return append([]doctorCheck{{Status: statusOK, Check: "kernel",
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

func yamaCheck(scope int, present, capPtrace bool) doctorCheck {
	c := doctorCheck{Check: "Yama ptrace_scope"}
	switch {
	case !present:
		c.Status, c.Detail = statusOK, "Yama is not active here: copying a socket from another process of this user needs no extra right"
	case scope == 0:
		c.Status, c.Detail = statusOK, "0 (classic): takeover may copy sockets from any process of this user"
	case scope < 3 && capPtrace:
		c.Status, c.Detail = statusOK, fmt.Sprintf("%d, but this user has CAP_SYS_PTRACE, which Yama lets through", scope)
	case scope == 1:
		c.Status, c.Detail = statusWarn, "1 (restricted): a process may copy sockets only from its own descendants"
		c.Do = []string{
			"takeover copies its own server's socket, and takeovers pass sockets among themselves: replacing a server started under takeover works as usual",
			"replacing a server NOT started under takeover falls back to rebind (a gap of about a millisecond) unless takeover has CAP_SYS_PTRACE (systemd: AmbientCapabilities=CAP_SYS_PTRACE), or unless the machine allows it: sudo sysctl kernel.yama.ptrace_scope=0",
		}
	case scope == 2:
		c.Status, c.Detail = statusMissing, "2 (admin-only): without CAP_SYS_PTRACE no process may read another's memory, not even its child's; takeover reads the address its server binds from the server's memory"
		c.Do = []string{
			"give takeover CAP_SYS_PTRACE: run it as root, or under systemd with AmbientCapabilities=CAP_SYS_PTRACE",
			"or lower the setting: sudo sysctl kernel.yama.ptrace_scope=1 (and in /etc/sysctl.d/ to keep it)",
		}
	default:
		c.Status, c.Detail = statusMissing, fmt.Sprintf("%d (no attach): no process may read another's memory, not even root; takeover cannot see what its server binds", scope)
		c.Do = []string{"this setting cannot be lowered until a reboot: set kernel.yama.ptrace_scope=1 in /etc/sysctl.d/ and reboot"}
	}
	return c
}

// retryThreadCheck prepares a thread exactly as a rebind does, and says how
// it was scheduled.
func retryThreadCheck(capNice bool) doctorCheck {
	t := lockRetryThread()
	class := t.Class
	t.release()
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_RTPRIO, &rl)
	why := fmt.Sprintf("CAP_SYS_NICE %s, RLIMIT_RTPRIO %d (hard limit %d)", map[bool]string{true: "yes", false: "no"}[capNice], rl.Cur, rl.Max)
	c := doctorCheck{Check: "real-time rebind"}
	if class == "fifo" {
		c.Status, c.Detail = statusOK, "the thread that retries a rebind may run as SCHED_FIFO ("+why+")"
		return c
	}
	instead := "as a normal thread"
	if class == "short-slice" {
		instead = "as a normal thread with a 100us time slice"
	}
	c.Status = statusWarn
	c.Detail = fmt.Sprintf("the thread that retries a rebind may not run as SCHED_FIFO (%s); it runs %s instead", why, instead)
	if capNice || rl.Cur >= 1 {
		c.Do = append(c.Do, "the kernel refused SCHED_FIFO anyway: with CONFIG_RT_GROUP_SCHED, this cgroup needs a real-time budget (cpu.rt_runtime_us; docker run --cpu-rt-runtime=...)")
	}
	c.Do = append(c.Do,
		"on a busy machine a rebind's retries then oversleep, and clients may be refused for 2-4 ms instead of well under one; handoff is not affected",
		"systemd: LimitRTPRIO=1 (or AmbientCapabilities=CAP_SYS_NICE) in the [Service] section; a shell: ulimit -r 1, up to the hard limit (limits.conf: USER - rtprio 1); docker: --ulimit rtprio=1 or --cap-add SYS_NICE")
	return c
}

// runDirCheck checks the directory of takeover's port locks and generation
// records: it must exist or be creatable, be writable, and be this user's
// alone (takeover refuses it otherwise, openRunDir).
func runDirCheck(dir string, fromEnv bool, uid int) doctorCheck {
	c := doctorCheck{Check: "run directory"}
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
			c.Status, c.Detail, c.Do = statusMissing, fmt.Sprintf("%s does not exist, and this user cannot create it: %s: %v", name, parent, err), []string{fix}
			return c
		}
		c.Status, c.Detail = statusOK, fmt.Sprintf("%s does not exist yet; takeover will create it (mode 0700)", name)
		return c
	}
	switch {
	case errors.Is(err, fs.ErrPermission):
		c.Status, c.Detail, c.Do = statusMissing, fmt.Sprintf("this user cannot reach %s: %v", name, err), []string{fix}
		return c
	case err != nil:
		c.Status, c.Detail, c.Do = statusMissing, fmt.Sprintf("%s: %v", name, err), []string{fix}
		return c
	}
	if err := checkRunDir(dir, fi); err != nil {
		c.Status, c.Detail, c.Do = statusMissing, fmt.Sprintf("takeover refuses it: %v", err), []string{fix}
		return c
	}
	// What takeover does there: create a lock file and lock it.
	f, err := os.CreateTemp(dir, ".doctor-*.lock")
	if err != nil {
		c.Status, c.Detail, c.Do = statusMissing, fmt.Sprintf("cannot create a lock file in %s: %v", name, err), []string{fix}
		return c
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	f.Close()
	os.Remove(f.Name())
	if err != nil {
		c.Status, c.Detail, c.Do = statusMissing, fmt.Sprintf("cannot lock a file in %s (flock): %v", name, err), []string{"set TAKEOVER_RUN_DIR to a directory on a local file system"}
		return c
	}
	perm := fi.Mode().Perm()
	c.Status, c.Detail = statusOK, fmt.Sprintf("%s: this user's, mode %04o, lock files work", name, perm)
	return c
}

func portsCheck(start int, capBind bool) doctorCheck {
	c := doctorCheck{Status: statusOK, Check: "ports"}
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
