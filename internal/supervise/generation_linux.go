package supervise

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/intercept"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/ready"
	"github.com/takeover/takeover/internal/swap"
	"golang.org/x/sys/unix"
)

// A generation: one run of the command, and its small state (its signals,
// its exit, how it became ready).

// A generation is one run of the command under takeover, with the sockets
// it bound to --port targets and what it replaced to get them.
type generation struct {
	log      *slog.Logger
	want     ready.Want // what ready means for it: the targets, --ready, --interval
	num      int
	pid      int
	notifFD  int
	pidfd    int // the command's, until it is reaped; -1 after
	started  time.Time
	prev     *generation   // the generation a reload replaces, or whose sockets a restart takes
	ready    chan struct{} // closed once the command accepts on every --port
	timedOut chan struct{} // closed if it is not ready within --ready-timeout
	waiting  chan bool     // its bind began (true) and ended (false) waiting for the swap before it: --ready-timeout does not count that
	exited   chan struct{} // closed once the command has exited
	nudge    chan struct{} // a listen(2): look at readiness now

	holdings *swap.Holdings // the sockets it bound, and the swaps that took them

	mu         sync.Mutex
	readyBy    string // how readiness was seen: epoll, accept, poll, select, listen
	readyAt    time.Time
	missing    string                  // at the timeout: what it had not done
	rolledBack bool                    // stopped for not being ready in time
	sent       map[syscall.Signal]bool // the signals takeover sent the command
	notified   bool                    // the command sent READY=1 to its NOTIFY_SOCKET
	cleanups   []func()                // run once the command has exited

	checkWarned bool // the health check's port is unfenced, and the log says so (health_linux.go)

	// swapDone is closed once the swap that makes it serve has completed
	// (its old servers drained and stopped); nil until that swap begins.
	swapDone chan struct{}
}

// signal sends sig to the generation's command through its pidfd: once the
// command has exited and been reaped, to nothing, never to a process that
// reuses its pid.
func (g *generation) signal(sig syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pidfd < 0 {
		return
	}
	if g.sent == nil {
		g.sent = make(map[syscall.Signal]bool)
	}
	g.sent[sig] = true
	unix.PidfdSendSignal(g.pidfd, sig, nil, 0)
}

// wasSentSignal reports whether takeover sent sig to the command.
func (g *generation) wasSentSignal(sig syscall.Signal) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sent[sig]
}

// markExited records that the command has exited and been reaped.
func (g *generation) markExited() {
	g.mu.Lock()
	if g.pidfd >= 0 {
		unix.Close(g.pidfd)
		g.pidfd = -1
	}
	cleanups := g.cleanups
	g.cleanups = nil
	g.mu.Unlock()
	close(g.exited)
	for _, f := range cleanups {
		f()
	}
}

// onExit has f run once the command has exited.
func (g *generation) onExit(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cleanups = append(g.cleanups, f)
}

func (g *generation) hasExited() bool {
	select {
	case <-g.exited:
		return true
	default:
		return false
	}
}

// isDead reports whether the command has exited, reaped or not: its pidfd
// is readable from its exit on, before the reaper has told the lifecycle.
func (g *generation) isDead() bool {
	if g.hasExited() {
		return true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pidfd < 0 {
		return false // none to look at: a generation that passes sockets
	}
	return pidfd.Exited(g.pidfd)
}

// upFor is how long the command has run.
func (g *generation) upFor(now time.Time) time.Duration { return now.Sub(g.started) }

func (g *generation) markRolledBack() {
	g.mu.Lock()
	g.rolledBack = true
	g.mu.Unlock()
}

func (g *generation) setReadyBy(by string) {
	g.mu.Lock()
	g.readyBy, g.readyAt = by, time.Now()
	g.mu.Unlock()
}

func (g *generation) readiedBy() (string, time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.readyBy, g.readyAt
}

// missingNow says what the generation had not done at its --ready-timeout.
func (g *generation) missingNow() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.missing
}

func (g *generation) isRolledBack() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rolledBack
}

// prevHoldings returns the sockets of the generation g replaces, or nil.
func (g *generation) prevHoldings() *swap.Holdings {
	if g.prev == nil {
		return nil
	}
	return g.prev.holdings
}

// handedOverFromRunning reports whether g took a socket over from a server
// that still runs (swap.Holdings.HandedOverFromRunning).
func (g *generation) handedOverFromRunning() bool {
	return g.holdings.HandedOverFromRunning(g.prevHoldings())
}

// trap returns what the seccomp trap needs of g to answer its binds: g's
// own, and the launcher's Taker, unit and warning once.
func (l *launcher) trap(g *generation) intercept.Gen {
	tg := intercept.Gen{
		NotifFD: g.notifFD, Num: g.num, PID: g.pid, Targets: l.cfg.Ports,
		Held: g.holdings, Prev: g.prevHoldings(), Take: l.taker, Unit: l.unit,
		MadeOnce: &l.madeOnce, Log: l.log,
		Alive: func() bool {
			g.mu.Lock()
			defer g.mu.Unlock()
			return g.pidfd >= 0 && !pidfd.Exited(g.pidfd)
		},
		Listened: func() {
			select {
			case g.nudge <- struct{}{}:
			default:
			}
		},
	}
	if g.prev != nil {
		tg.PrevDead = g.prev.isDead
		tg.AwaitPrev = func(ctx context.Context, valid func() bool) bool { return g.awaitPrevSwap(ctx, valid) }
	}
	return tg
}

// Readiness: a generation is ready once every --port target is a socket
// takeover holds, listening, and (with --ready accept, the default) some
// process of the generation is seen waiting for connections on it
// (ready.Look). Only then is the old server stopped. A generation
// that is not ready within --ready-timeout is rolled back or, where there is
// nothing left to roll back to, completed with a warning: no swap waits
// without end.

const (
	readyPollFirst = 2 * time.Millisecond
	readyPollMax   = 20 * time.Millisecond
	// Every readyAcceptedEvery looks, a look also takes a connection the
	// generation accepted for its accepting (ready.Want.Accepted: its
	// sock_diag dump costs up to tens of milliseconds on a loaded host).
	// Under load, a server on a socket it shares with the old one is
	// rarely caught waiting on it (python's ThreadingHTTPServer: 3 to 4 s
	// of looks every 20 ms); every few looks, a connection it holds is
	// found within a few tenths of a second of its first accept.
	readyAcceptedEvery = 3
)

// watchReady closes g.ready when the generation is ready, or g.timedOut
// when --ready-timeout passes first (not counting the time its bind waited
// for the swap before it: awaitPrevSwap). It looks every few milliseconds, and
// at once after a listen(2).
func (g *generation) watchReady(ctx context.Context, timeout time.Duration) {
	end := time.Now().Add(timeout)
	deadline := time.NewTimer(timeout)
	var paused time.Time
	defer deadline.Stop()
	interval := readyPollFirst
	tick := time.NewTimer(interval)
	looks := 0
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.exited:
			return
		case <-deadline.C:
			r := g.readiness(true)
			g.mu.Lock()
			g.missing = r.Missing
			g.mu.Unlock()
			close(g.timedOut)
			return
		case w := <-g.waiting:
			if w {
				deadline.Stop()
				paused = time.Now()
			} else {
				end = end.Add(time.Since(paused))
				deadline.Reset(time.Until(end))
			}
			continue
		case <-g.nudge:
		case <-tick.C:
			interval = min(interval*3/2, readyPollMax)
			tick.Reset(interval)
		}
		looks++
		if r := g.readiness(looks%readyAcceptedEvery == 0); r.Ready {
			if !g.passCheck(ctx, end) { // --ready http://... or --ready-exec (health_linux.go)
				return
			}
			g.setReadyBy(r.By)
			if len(r.Blind) > 0 {
				g.log.Warn("cannot see whether these processes accept connections (not dumpable, or another user's); took the listening socket for ready",
					"generation", g.num, "pids", fmt.Sprint(r.Blind))
			}
			close(g.ready)
			return
		}
	}
}

// readiness looks at the generation's sockets and processes, and if
// accepted at the connections it holds (ready.Want.Accepted).
func (g *generation) readiness(accepted bool) ready.Result {
	var socks []ready.Socket
	if !g.holdings.Each(func(_ swap.SockKey, s *swap.Held) {
		socks = append(socks, ready.Socket{Target: s.Spec, FD: s.CopyFD, Inode: s.Inode})
	}) {
		return ready.Result{Missing: "is being stopped"}
	}
	g.mu.Lock()
	notified := g.notified
	g.mu.Unlock()
	w := g.want
	w.Notified, w.PID, w.Up, w.Accepted = notified, g.pid, time.Since(g.started), accepted
	return ready.Look("/proc", socks, w)
}

// rollbackable reports whether the generation has left every earlier
// server serving: none of its swaps has stopped one (a rebind stops the old
// server at the bind).
func (g *generation) rollbackable() bool {
	return g.holdings.Rollbackable()
}

// awaitPrevSwap waits, if the swap that made g.prev serve is under way (its
// old server draining), until it has completed: a reload started during a
// drain (a HUP does not wait for it) binds only once the old server is
// gone, so that one old generation drains at a time. It returns false if
// ctx ends or valid (the bind's notification) no longer holds first.
func (g *generation) awaitPrevSwap(ctx context.Context, valid func() bool) bool {
	g.prev.mu.Lock()
	done := g.prev.swapDone
	g.prev.mu.Unlock()
	if done == nil || g.prev.isDead() {
		return true // no swap, or a restart's: the sockets are held for it
	}
	select {
	case <-done:
		return true
	default:
	}
	began := time.Now()
	g.pauseReady(true)
	g.log.Info("the new generation's bind waits for the swap before it to complete: its old server is draining",
		"generation", g.num, "serving", g.prev.num)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			g.log.Info("the swap before it completed: the new generation's bind goes on", "generation", g.num, "waited", time.Since(began).Round(time.Millisecond))
			g.pauseReady(false)
			return true
		case <-ctx.Done():
			return false
		case <-tick.C:
			if !valid() {
				return false // its command died: its exit ends watchReady too
			}
		}
	}
}

// pauseReady tells watchReady that the generation's bind began (true) or
// ended (false) waiting for the swap before it. (Sent at most once each,
// into room for both.)
func (g *generation) pauseReady(paused bool) {
	if g.waiting != nil {
		g.waiting <- paused
	}
}
