package main

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/target"
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
	st, err := procfs.FS("/proc").Status(unix.Gettid())
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

// BenchmarkBindTimeWait measures what a rebind's retry costs on a port that
// has served short connections: bind(2) and listen(2) walk every socket
// bound to the port, TIME_WAIT ones included. closed=N is how many
// connections the server closed first; time-wait is how many TIME_WAIT
// sockets that left on the port, as ss counts them (fewer than N: a new
// connection from a source port that matches one recycles it). ns/op is one
// bind that finds the port held; bind+listen-us is the bind that succeeds
// once the listener has gone plus the listen after it:
//
//	go test -run '^$' -bench BindTimeWait -benchtime 200x
func BenchmarkBindTimeWait(b *testing.B) {
	for _, n := range []int{0, 10_000, 40_000} {
		b.Run(fmt.Sprintf("closed=%d", n), func(b *testing.B) {
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			leaveTimeWait(b, ln, n)
			port := ln.Addr().(*net.TCPAddr).Port
			out, err := exec.Command("ss", "-Htan", "state", "time-wait", fmt.Sprintf("( sport = :%d )", port)).Output()
			if err != nil {
				b.Fatalf("ss: %v", err)
			}
			timeWait := bytes.Count(out, []byte("\n"))
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			defer unix.Close(fd)
			unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			sa := target.SockaddrOf(ln.Addr().(*net.TCPAddr).AddrPort())
			for b.Loop() {
				if err := unix.Bind(fd, sa); err != unix.EADDRINUSE {
					b.Fatalf("bind while the port listens: %v, want EADDRINUSE", err)
				}
			}
			b.StopTimer()
			ln.Close()
			start := time.Now()
			if err := unix.Bind(fd, sa); err != nil {
				b.Fatalf("bind after the listener closed: %v", err)
			}
			if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(time.Since(start).Microseconds()), "bind+listen-us")
			b.ReportMetric(float64(timeWait), "time-wait") // after b.Loop, which clears metrics
		})
	}
}

// leaveTimeWait makes n connections to ln that ln's side closes first, so
// that they leave TIME_WAIT sockets on ln's port.
func leaveTimeWait(b *testing.B, ln net.Listener, n int) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	const workers = 8
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			one := make([]byte, 1)
			for range n / workers {
				c, err := net.Dial("tcp4", ln.Addr().String())
				if err != nil {
					continue
				}
				c.Read(one) // EOF once the server has closed
				c.Close()
			}
		}()
	}
	wg.Wait()
}
