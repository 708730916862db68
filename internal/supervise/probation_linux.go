package supervise

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/socktab"
	"github.com/takeover/takeover/internal/swap"
	"golang.org/x/sys/unix"
)

// Probation (--probation, issue 31): a fenced swap keeps the old server
// beside the new one, in one SO_REUSEPORT group whose program picks the
// socket of each new connection. Once the new generation is ready, the
// fence sends every new connection to it (or, with --canary, that share)
// and the old server finishes what it had accepted, as in any fenced swap;
// then, instead of being stopped, it stays, idle and not signalled, for
// --probation. If the new generation exits meanwhile, or --health fails
// --health-failures times in a row, the fence is lowered: every new
// connection goes to the old socket at once, the new generation is
// stopped (what it accepted drains; what waits in its accept queue moves
// to the old socket as its socket closes, net.ipv4.tcp_migrate_req), and
// the old server serves on. Otherwise the old one is stopped when the
// time is up, as without probation.
//
// Only a fenced swap has an idle old server to return to: a rebind has
// stopped it at the bind, and an unfenced handoff (a unix path, UDP,
// MPTCP, --fence off) shares one socket between the two servers, so that
// the old one cannot be told apart from the new one. Such a swap completes
// as without probation, and the log says why.

// A probationCut ends a probation early, as passed: a HUP (the newest
// release wins, and the one on probation is the old one to it) or a stop.
type probationCut struct {
	mu  sync.Mutex
	ch  chan struct{}
	why string
}

// cut ends the probation under way, if any, saying why.
func (c *probationCut) cut(why string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ch != nil {
		c.why = why
		close(c.ch)
		c.ch = nil
	}
}

// arm makes a channel that cut closes, for the probation that begins.
func (c *probationCut) arm() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ch = make(chan struct{})
	return c.ch
}

// reason says why the probation was cut short.
func (c *probationCut) reason() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.why
}

// cutProbation ends the probation under way, as passed (supervisor).
func (l *launcher) cutProbation(why string) { l.probation.cut(why) }

// probationFits reports whether g's swap, stop, can be put on probation,
// and says why not where --probation is asked for and it cannot.
func (l *launcher) probationFits(g *generation, stop swap.Stops) bool {
	if l.cfg.Probation <= 0 || len(stop) == 0 { // a first start replaces nothing
		return false
	}
	why := ""
	for _, st := range stop {
		switch {
		case st.Record.Fence == nil && st.Record.NotFenced != "":
			why = fmt.Sprintf("the swap of %s was not fenced (%s)", st.Record.Spec, st.Record.NotFenced)
		case st.Record.Fence == nil:
			why = fmt.Sprintf("the swap of %s was a %s, not a fenced handoff", st.Record.Spec, st.Record.Strategy)
		case st.Record.Fence.IsGone() || slices.ContainsFunc(st.Procs, func(p *pidfd.Process) bool { return pidfd.Exited(p.FD) }):
			why = "the old server has exited"
		}
		if why != "" {
			break
		}
	}
	if why != "" {
		l.log.Warn("no probation: there is no idle old server to roll back to; the swap completes as without --probation", "generation", g.num, "why", why)
		return false
	}
	return true
}

// onProbation keeps the old servers of stop, idle, beside g for
// --probation (began: when the new generation took the traffic), and
// returns "" once g has passed, or why it is to be rolled back.
func (l *launcher) onProbation(ctx context.Context, g *generation, stop swap.Stops, began time.Time) string {
	cut := l.probation.arm()
	defer l.probation.cut("")
	end := began.Add(l.cfg.Probation)
	old := pidfd.PIDsOf(stopProcs(stop))
	l.setProbation(g, &ProbationStatus{Since: began.UTC(), Until: end.UTC(), OldPIDs: old, Canary: l.cfg.Canary})
	l.events <- event{kind: evProbation, g: g}
	attrs := []any{"generation", g.num, "pid", g.pid, "old_pids", fmt.Sprint(old), "until", end.Format(time.RFC3339)}
	if l.cfg.Canary > 0 {
		attrs = append(attrs, "canary_percent", l.cfg.Canary)
	}
	l.log.Info("on probation: the old server stays, idle, to roll back to", attrs...)
	failures, nextCheck := 0, time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-cut:
			l.log.Info("probation cut short: the new generation is kept", "generation", g.num, "why", l.probation.reason())
			return ""
		default:
		}
		switch {
		case g.isDead():
			return fmt.Sprintf("the new generation (pid %d) exited", g.pid)
		case slices.ContainsFunc(stopProcs(stop), func(p *pidfd.Process) bool { return pidfd.Exited(p.FD) }):
			l.log.Warn("the old server exited during probation: probation ends, and the new generation is kept", "generation", g.num, "old_pids", fmt.Sprint(old))
			return ""
		case !time.Now().Before(end):
			l.log.Info("the new generation passed its probation", "generation", g.num, "pid", g.pid, "probation", l.cfg.Probation)
			return ""
		case ctx.Err() != nil:
			return ""
		}
		if h := l.cfg.Probe; h != nil && !time.Now().Before(nextCheck) {
			ok, answer := g.checkHTTP(ctx, *h, httpCheckTimeout)
			nextCheck = time.Now().Add(l.cfg.HealthInterval)
			switch {
			case ok:
				failures = 0
			case g.isDead():
				continue // said above, as the reason
			default:
				failures++
				l.log.Warn("the new generation failed its --health check during probation", "generation", g.num, "pid", g.pid, "answer", answer, "failures", failures, "of", l.cfg.HealthFailures)
				if failures >= l.cfg.HealthFailures {
					return fmt.Sprintf("--health %s failed %d times in a row: %s", h.URL, failures, answer)
				}
			}
		}
		select {
		case <-cut:
		case <-g.exited:
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

// stopProcs returns the old processes of stop.
func stopProcs(stop swap.Stops) []*pidfd.Process {
	var ps []*pidfd.Process
	for _, st := range stop {
		ps = append(ps, st.Procs...)
	}
	return ps
}

// rollBack returns the traffic of g's swap to the old servers of stop,
// which g failed its probation against (why, after took): new connections
// go to the old sockets again, the records name what served before
// (before: another takeover's; or this launcher with its old generation),
// and the lifecycle stops g (evRolledBack).
func (l *launcher) rollBack(ctx context.Context, g *generation, stop swap.Stops, before map[string]rundir.Record, held bool, why string, took time.Duration) {
	var fences []*swap.Fence
	var inodes []uint64
	for _, st := range stop {
		f := st.Record.Fence
		// The new socket's queue moves to the old socket when it closes,
		// rather than being reset.
		f.HoldMigrate()
		fences = append(fences, f)
		if h := g.holdings.HeldFor(st.Record.Spec, st.Record.Addr); h != nil {
			inodes = append(inodes, h.Inode)
		}
		if sock := g.holdings.DupHeld(st.Record.Spec, st.Record.Addr); sock >= 0 {
			if err := f.Lower(sock); err != nil {
				l.log.Error("cannot steer new connections back to the old server", "port", st.Record.Spec.String(), "err", err)
			}
			unix.Close(sock)
		}
	}
	msg := fmt.Sprintf("rolled back after %v: %s", took.Round(time.Millisecond), why)
	old := pidfd.PIDsOf(stopProcs(stop))
	l.log.Error(msg+"; new connections go to the old server again, which serves on, and the new generation is stopped",
		"generation", g.num, "pid", g.pid, "old_pids", fmt.Sprint(old))
	records := before
	if p := g.prev; p != nil && !p.hasExited() && len(before) == 0 {
		records = make(map[string]rundir.Record)
		for _, key := range l.keys() {
			records[key] = rundir.Record{Launcher: l.self, LauncherStart: l.born, Child: p.pid, StopSignal: int(l.cfg.signal())}
		}
	}
	for key, r := range records {
		if err := l.updateRecord(ctx, key, r, held); err != nil {
			l.log.Warn("cannot put back the record of what serves on", "lock", key, "err", err)
		}
	}
	stop.Abandon()
	l.events <- event{kind: evRolledBack, g: g, why: msg}
	// Once the new socket has left its group (its server gone, takeover's
	// copies closed), nothing is left for tcp_migrate_req to move.
	reload := g.prev != nil && !g.prev.hasExited() // takeover serves on with it
	go func() {
		select {
		case <-g.exited:
		case <-time.After(l.cfg.killTimeout() + time.Second):
		}
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && socketsListen(inodes); {
			time.Sleep(10 * time.Millisecond)
		}
		if reload && socketsListen(inodes) {
			// (Where takeover exits, stopLeftBehind does it.)
			l.stopHolders(inodes)
		}
		for _, f := range fences {
			f.ReleaseMigrate()
		}
	}()
}

// stopHolders stops the processes under takeover that still hold the
// listening sockets inodes of a rolled-back release, its server gone: what
// it left running (stopLeftBehind), here beside the old generation, which
// holds sockets of its own.
func (l *launcher) stopHolders(inodes []uint64) {
	under := procfs.FS("/proc").WithDescendants([]int{l.self})[1:]
	found, err := procfs.FS("/proc").Holders(inodes, under)
	if err != nil {
		return
	}
	var pids []int
	for _, hs := range found {
		for _, h := range hs {
			if !slices.Contains(pids, h.PID) {
				pids = append(pids, h.PID)
			}
		}
	}
	l.stopLeft(pids)
}

// stopLeftBehind stops what a rolled-back release left running as its
// server exited (nginx's workers, once their master has crashed): orphaned
// to takeover, they hold the release's listening sockets, and would outlive
// takeover unsupervised and keep the port from the next deploy. Called as
// takeover exits with ExitRolledBack, when its descendants are the
// release's alone (the old server is another takeover's): the stop signal,
// then SIGKILL after --kill-timeout.
func (l *launcher) stopLeftBehind() {
	l.stopLeft(l.leftRunning())
}

// stopLeft stops the processes left, which a rolled-back release left
// running under takeover: the stop signal, then SIGKILL after
// --kill-timeout.
func (l *launcher) stopLeft(left []int) {
	if len(left) == 0 {
		return
	}
	var ps []*pidfd.Process
	opened := pidfd.OpenAll(left)
	// Checked after the pidfds are open: still descendants, so each pidfd
	// is that process, not a later one that reused its pid.
	under := procfs.FS("/proc").WithDescendants([]int{l.self})
	for _, p := range opened {
		if slices.Contains(under, p.PID) {
			ps = append(ps, p)
		} else {
			p.Close()
		}
	}
	defer pidfd.CloseAll(ps)
	sig := l.cfg.signal()
	l.log.Warn("the rolled-back release left processes running; stopping them", "pids", fmt.Sprint(pidfd.PIDsOf(ps)), "signal", unix.SignalName(sig))
	for _, p := range ps {
		p.Signal(sig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.killTimeout())
	defer cancel()
	for _, p := range ps {
		if !p.Wait(ctx) {
			l.log.Warn("killing what the rolled-back release left: it did not exit within --kill-timeout of the stop signal", "pid", p.PID)
			p.Signal(unix.SIGKILL)
		}
	}
	killed, cancelKilled := context.WithTimeout(context.Background(), time.Second)
	defer cancelKilled()
	for _, p := range ps {
		p.Wait(killed)
	}
}

// socketsListen reports whether one of the listening sockets inodes still
// listens.
func socketsListen(inodes []uint64) bool {
	ls, err := socktab.DiagTCPListeners()
	return err == nil && slices.ContainsFunc(ls, func(s socktab.Socket) bool { return slices.Contains(inodes, s.Inode) })
}

// canary sends --canary percent of new connections to g and the rest to
// the old servers of stop, for the probation, and reports whether it did;
// without --canary (or where it cannot) the fences go up as in any swap.
func (l *launcher) canary(g *generation, stop swap.Stops) bool {
	if l.cfg.Canary == 0 {
		return false
	}
	for _, st := range stop {
		h := g.holdings.HeldFor(st.Record.Spec, st.Record.Addr)
		if h == nil {
			return false
		}
		if err := st.Record.Fence.Canary(h.CopyFD, l.cfg.Canary); err != nil {
			l.log.Warn("cannot split new connections for --canary; the new server takes all of them", "port", st.Record.Spec.String(), "err", err)
			return false
		}
	}
	return true
}
