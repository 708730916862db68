package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/takeover/takeover/internal/swap"

	"github.com/cenkalti/backoff/v4"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// retryPolicy starts at 50us and stays at or below 250us, so the port is
// taken within a quarter of a millisecond of freeing, at a cost of about
// four thousand cheap bind(2) calls a second while the old server drains.
func retryPolicy() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Microsecond
	b.Multiplier = 1.5
	b.RandomizationFactor = 0.1
	b.MaxInterval = 250 * time.Microsecond
	b.MaxElapsedTime = 0 // ctx bounds it: --bind-timeout
	b.Reset()
	return b
}

// retryBind is the rebind strategy the core runs (config.Rebind): it
// signals the old processes, then retries the bind until it succeeds,
// ctx ends (--bind-timeout) or bind fails for a reason other than the port
// being in use. On success the socket is already listening, with the widest
// backlog, so that clients queue from the first microsecond rather than wait
// for the new server's own listen(2), which re-sets the backlog.
func retryBind(ctx context.Context, r swap.Rebind) (swap.RebindTimes, error) {
	var t swap.RebindTimes
	// Without SO_REUSEADDR, connections of the old socket in TIME_WAIT keep
	// the port from being bound for a minute.
	if err := unix.SetsockoptInt(r.Sock, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return t, fmt.Errorf("set SO_REUSEADDR: %w", err)
	}
	thread := lockRetryThread()
	defer thread.release()
	t.Sched = thread.Class
	start := time.Now()
	for _, p := range r.Old {
		if err := p.Signal(r.Signal); err != nil && !errors.Is(err, unix.ESRCH) {
			return t, fmt.Errorf("signal pid %d: %w", p.PID, err)
		}
	}
	killAt := start.Add(r.KillTimeout)
	lastBusy := start
	policy := backoff.WithContext(retryPolicy(), ctx)
	for {
		err := unix.Bind(r.Sock, target.SockaddrOf(r.Addr))
		if err == nil {
			break
		}
		t.Free = time.Since(start)
		if !errors.Is(err, unix.EADDRINUSE) {
			return t, err
		}
		lastBusy = time.Now()
		if !t.Killed && lastBusy.After(killAt) {
			t.Killed = true
			swap.KillStillHolding(r.Holders, r.Inodes)
		}
		next := policy.NextBackOff()
		if next == backoff.Stop {
			return t, fmt.Errorf("port %s still in use after %v: %w", r.Addr, t.Free.Round(time.Millisecond), unix.EADDRINUSE)
		}
		thread.sleep(next)
	}
	t.Free = time.Since(start)
	if err := unix.Listen(r.Sock, unix.SOMAXCONN); err != nil {
		return t, fmt.Errorf("listen: %w", err)
	}
	t.Window = time.Since(lastBusy)
	return t, nil
}

// A retryThread is the OS thread a bind is retried on, made fit for waits
// of a fraction of a millisecond. Measured on a 2-core machine saturated by
// clients and two servers, each step below closing part of the gap:
//
//   - Go's timers cannot wait less than a millisecond: with nothing else
//     to run, the runtime waits for its next timer in epoll_wait, which
//     counts whole milliseconds, so a 50us time.Sleep lasts ~1.1 ms. The
//     thread sleeps in nanosleep(2) instead, with its timer slack cut from
//     50us to 1us: a 50us sleep then lasts ~56us.
//   - A woken thread of the normal class still waits for a CPU, and the
//     old server, woken by the stop signal, may preempt it: 250us sleeps
//     overslept to 2-4 ms. So the thread runs as SCHED_FIFO priority 1,
//     ahead of every normal task, where it may (CAP_SYS_NICE, or a
//     RLIMIT_RTPRIO of 1 or more); otherwise it asks for a 100us slice,
//     which lets it preempt sooner on Linux 6.12 and later. It sleeps
//     between attempts of a few microseconds each (0.55-0.65 ms on a port
//     with ~13,500 TIME_WAIT sockets: BenchmarkBindTimeWait), and the
//     kernel's real-time throttling bounds it in any case.
type retryThread struct {
	Class string // "fifo", "short-slice" or "normal": how it was scheduled
	sched *unix.SchedAttr
	slack int // -1 when unchanged
}

// lockRetryThread locks the calling goroutine to its thread and prepares
// the thread; release gives it back as it was.
func lockRetryThread() *retryThread {
	runtime.LockOSThread()
	t := &retryThread{Class: "normal", slack: -1}
	if slack, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); err == nil {
		if unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(time.Microsecond), 0, 0, 0) == nil {
			t.slack = slack
		}
	}
	was, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		return t
	}
	fifo := unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: 1}
	short := *was
	short.Runtime = uint64(100 * time.Microsecond)
	switch {
	case unix.SchedSetAttr(0, &fifo, 0) == nil:
		t.Class = "fifo"
	case unix.SchedSetAttr(0, &short, 0) == nil:
		t.Class = "short-slice"
	default:
		return t
	}
	t.sched = was
	return t
}

// sleep waits d on the thread.
func (t *retryThread) sleep(d time.Duration) {
	ts := unix.NsecToTimespec(d.Nanoseconds())
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}

// release restores the thread's scheduling and unlocks it: the Go runtime
// will run other goroutines on it. (Going back to the normal class and a
// larger slack is always permitted.)
func (t *retryThread) release() {
	if t.sched != nil {
		unix.SchedSetAttr(0, t.sched, 0)
	}
	if t.slack >= 0 {
		unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(t.slack), 0, 0, 0)
	}
	runtime.UnlockOSThread()
}
