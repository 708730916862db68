package supervise

import (
	"context"
	"fmt"
	"time"

	"github.com/takeover/takeover/internal/ready"
	"github.com/takeover/takeover/internal/swap"
)

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
)

// watchReady closes g.ready when the generation is ready, or g.timedOut
// when --ready-timeout passes first. It looks every few milliseconds, and
// at once after a listen(2).
func (g *generation) watchReady(ctx context.Context, timeout time.Duration) {
	end := time.Now().Add(timeout)
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	interval := readyPollFirst
	tick := time.NewTimer(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.exited:
			return
		case <-deadline.C:
			r := g.readiness()
			g.mu.Lock()
			g.missing = r.Missing
			g.mu.Unlock()
			close(g.timedOut)
			return
		case <-g.nudge:
		case <-tick.C:
			interval = min(interval*3/2, readyPollMax)
			tick.Reset(interval)
		}
		if r := g.readiness(); r.Ready {
			if !g.passCheck(ctx, end) { // --ready http://... or --ready-exec (health_linux.go)
				return
			}
			g.setReadyBy(r.By)
			if len(r.Blind) > 0 {
				g.l.log.Warn("cannot see whether these processes accept connections (not dumpable, or another user's); took the listening socket for ready",
					"generation", g.num, "pids", fmt.Sprint(r.Blind))
			}
			close(g.ready)
			return
		}
	}
}

// readiness looks at the generation's sockets and processes.
func (g *generation) readiness() ready.Result {
	var socks []ready.Socket
	if !g.holdings.Each(func(_ swap.SockKey, s *swap.Held) {
		socks = append(socks, ready.Socket{Target: s.Spec, FD: s.CopyFD, Inode: s.Inode})
	}) {
		return ready.Result{Missing: "is being stopped"}
	}
	g.mu.Lock()
	notified := g.notified
	g.mu.Unlock()
	return ready.Look("/proc", socks, ready.Want{
		Targets: g.l.cfg.Ports, Mode: g.l.cfg.ready(), Notified: notified,
		PID: g.pid, Up: time.Since(g.started), Interval: g.l.cfg.interval(),
	})
}

// rollbackable reports whether the generation has left every earlier
// server serving: none of its swaps has stopped one (a rebind stops the old
// server at the bind).
func (g *generation) rollbackable() bool {
	return g.holdings.Rollbackable()
}
