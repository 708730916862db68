package supervise

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/takeover/takeover/internal/ready"
	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"

	"github.com/takeover/takeover/internal/procfs"
	"golang.org/x/sys/unix"
)

// Readiness: a generation is ready once every --port target is a socket
// takeover holds, listening, and (with --ready accept, the default) some
// process of the generation is seen waiting for connections on it
// (accepting_linux.go). Only then is the old server stopped. A generation
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
			g.setReadyBy(r.By)
			if len(r.Blind) > 0 {
				g.l.Log.Warn("cannot see whether these processes accept connections (not dumpable, or another user's); took the listening socket for ready",
					"generation", g.num, "pids", fmt.Sprint(r.Blind))
			}
			close(g.ready)
			return
		}
	}
}

// A readiness is one look at a generation.
type readiness struct {
	Ready   bool
	By      string // how each target was seen: "epoll", "accept", "listen", ...
	Missing string // what the generation has yet to do
	Blind   []int  // processes that could not be looked into
}

// readiness looks at the generation's sockets and processes.
func (g *generation) readiness() readiness {
	type heldTarget struct {
		spec  target.PortSpec
		fd    int
		inode uint64
	}
	var held []heldTarget
	if !g.holdings.Each(func(_ swap.SockKey, s *swap.Held) {
		held = append(held, heldTarget{s.Spec, s.CopyFD, s.Inode})
	}) {
		return readiness{Missing: "is being stopped"}
	}

	want := make(map[uint64]bool)
	for _, spec := range g.l.Cfg.Ports {
		if !slices.ContainsFunc(held, func(t heldTarget) bool { return t.spec == spec }) {
			return readiness{Missing: fmt.Sprintf("has not bound %s", spec)}
		}
	}
	for _, t := range held {
		if t.spec.Net == target.NetUDP {
			want[t.inode] = true // a datagram socket is bound, and read
			continue
		}
		if v, err := unix.GetsockoptInt(t.fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 0 {
			return readiness{Missing: fmt.Sprintf("has bound %s but does not listen on it", t.spec)}
		}
		want[t.inode] = true
	}
	g.mu.Lock()
	notified := g.notified
	g.mu.Unlock()
	switch mode := g.l.Cfg.ready(); {
	case notified && mode != ReadyListen && mode != ReadyInterval:
		return readiness{Ready: true, By: "notify"}
	case mode == ReadyListen:
		return readiness{Ready: true, By: "listen"}
	case mode == ReadyInterval && time.Since(g.started) >= g.l.Cfg.interval():
		return readiness{Ready: true, By: "interval"}
	case mode == ReadyInterval:
		return readiness{Missing: fmt.Sprintf("has not run for --interval %v yet", g.l.Cfg.interval())}
	case mode == ReadyNotify:
		return readiness{Missing: "has not sent READY=1"}
	}
	seen := ready.Accepting("/proc", procfs.FS("/proc").WithDescendants([]int{g.pid}), want)
	var by []string
	for _, t := range held {
		way, ok := seen.Ways[t.inode]
		switch {
		case ok:
			by = append(by, string(way))
		case len(seen.Blind) > 0:
			by = append(by, "listen")
		default:
			if t.spec.Net == target.NetUDP {
				return readiness{Missing: fmt.Sprintf("has bound %s but no process of it was seen reading from it", t.spec)}
			}
			return readiness{Missing: fmt.Sprintf("listens on %s but no process of it was seen accepting connections", t.spec)}
		}
	}
	slices.Sort(by)
	return readiness{Ready: true, By: strings.Join(slices.Compact(by), ","), Blind: seen.Blind}
}

// rollbackable reports whether the generation has left every earlier
// server serving: none of its swaps has stopped one (a rebind stops the old
// server at the bind).
func (g *generation) rollbackable() bool {
	return g.holdings.Rollbackable()
}
