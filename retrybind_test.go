package main

import (
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// TestRetryThread: the retry thread runs as SCHED_FIFO where takeover may
// (CAP_SYS_NICE or RLIMIT_RTPRIO), else with a short slice, with a timer slack of 1us or less, and is given back to the Go runtime
// exactly as it was: a normal thread left real-time would run every
// goroutine later scheduled on it ahead of the whole machine.
func TestRetryThread(t *testing.T) {
	runtime.LockOSThread() // stay on this thread across release's unlock
	defer runtime.UnlockOSThread()
	before, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	slackBefore, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		t.Fatal(err)
	}

	th := lockRetryThread()
	during, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	slackDuring, _ := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	st, err := readStatus("/proc", unix.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	const capSysNice = 23
	var rtprio unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_RTPRIO, &rtprio)
	switch {
	case st.CapEff&(1<<capSysNice) != 0 || rtprio.Cur >= 1:
		if th.Class != "fifo" || during.Policy != unix.SCHED_FIFO || during.Priority != 1 {
			t.Errorf("with CAP_SYS_NICE or RLIMIT_RTPRIO: class %q, policy %d priority %d; want fifo, SCHED_FIFO (%d) priority 1",
				th.Class, during.Policy, during.Priority, unix.SCHED_FIFO)
		}
	default: // Linux 6.12 and later take a slice of a normal thread
		if th.Class != "short-slice" || during.Policy != unix.SCHED_NORMAL || during.Runtime != 100_000 {
			t.Errorf("without CAP_SYS_NICE: class %q, policy %d runtime %dns; want short-slice, SCHED_NORMAL, 100000ns",
				th.Class, during.Policy, during.Runtime)
		}
	}
	if slackDuring > 1000 { // 0 for a real-time thread on Linux 6.7 and later
		t.Errorf("timer slack while retrying = %dns, want at most 1000", slackDuring)
	}
	th.sleep(0)
	th.sleep(50_000)
	th.release()

	after, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("scheduling after release (-before +after):\n%s", diff)
	}
	if slackAfter, _ := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); slackAfter != slackBefore {
		t.Errorf("timer slack after release = %d, want %d", slackAfter, slackBefore)
	}
}
