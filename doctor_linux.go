package main

import (
	"fmt"
	"io"

	"github.com/takeover/takeover/internal/doctor"
	"golang.org/x/sys/unix"
)

// `takeover doctor` says whether takeover can work on this machine as this
// user, and what to change where it cannot. Rather than guess from versions
// and settings, it does to a child process of its own what a launcher does
// to its server: install the bind filter in it, answer its bind(2), read its
// memory and its /proc files, copy an fd out of it and install one in it.

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
	r := doctor.Diagnose(retryThreadCheck)
	if *asJSON {
		printJSON(stdout, r)
	} else {
		r.Print(stdout)
	}
	if !r.OK {
		return exitFailure
	}
	return 0
}

// retryThreadCheck prepares a thread exactly as a rebind does, and says how
// it was scheduled.
func retryThreadCheck(capNice bool) doctor.Check {
	t := lockRetryThread()
	class := t.Class
	t.release()
	var rl unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_RTPRIO, &rl)
	why := fmt.Sprintf("CAP_SYS_NICE %s, RLIMIT_RTPRIO %d (hard limit %d)", map[bool]string{true: "yes", false: "no"}[capNice], rl.Cur, rl.Max)
	c := doctor.Check{Check: "real-time rebind"}
	if class == "fifo" {
		c.Status, c.Detail = doctor.StatusOK, "the thread that retries a rebind may run as SCHED_FIFO ("+why+")"
		return c
	}
	instead := "as a normal thread"
	if class == "short-slice" {
		instead = "as a normal thread with a 100us time slice"
	}
	c.Status = doctor.StatusWarn
	c.Detail = fmt.Sprintf("the thread that retries a rebind may not run as SCHED_FIFO (%s); it runs %s instead", why, instead)
	if capNice || rl.Cur >= 1 {
		c.Do = append(c.Do, "the kernel refused SCHED_FIFO anyway: with CONFIG_RT_GROUP_SCHED, this cgroup needs a real-time budget (cpu.rt_runtime_us; docker run --cpu-rt-runtime=...)")
	}
	c.Do = append(c.Do,
		"on a busy machine a rebind's retries then oversleep, and clients may be refused for 2-4 ms instead of well under one; handoff is not affected",
		"systemd: LimitRTPRIO=1 (or AmbientCapabilities=CAP_SYS_NICE) in the [Service] section; a shell: ulimit -r 1, up to the hard limit (limits.conf: USER - rtprio 1); docker: --ulimit rtprio=1 or --cap-add SYS_NICE")
	return c
}
