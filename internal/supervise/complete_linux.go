package supervise

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// Completing a generation's swaps once it is ready: the records, systemd,
// the log line, then the old servers fenced, drained and stopped
// (swap.Stops); and a swap its generation left unfinished.

// swap completes a generation's swap once it is ready (and has outlived
// --kill-old-delay): it records the generation, tells systemd, logs the
// swap, stops the generation it replaced (only while the new one still
// runs), waits for that to exit and releases the port locks.
func (l *launcher) swap(ctx context.Context, g *generation, locks []*os.File) {
	// The swap a generation before g left unfinished (it exited while the
	// old servers finished) is g's to complete: one swap at a time decides.
	l.fencing.Lock()
	fencing := true
	doneFencing := func() {
		if fencing {
			fencing = false
			l.fencing.Unlock()
		}
	}
	defer doneFencing()
	inherited := l.takeUnfinished()
	if inherited != nil {
		locks = append(locks, inherited.locks...)
	}
	defer func() { rundir.ReleaseLocks(locks) }()
	swaps := g.holdings.Swaps()

	before := l.othersRecords()
	for _, key := range l.keys() {
		if err := l.updateRecord(ctx, key, rundir.Record{Launcher: l.self, LauncherStart: l.born, Child: g.pid, StopSignal: int(l.cfg.signal())}, len(locks) > 0); err != nil {
			l.log.Warn("cannot record the generation", "lock", key, "err", err)
		}
	}
	l.writeStatus(g, swaps) // before the log line, which tells that it is written
	l.logSwap(g, swaps)

	stop, ok := g.holdings.Claim(l.log)
	if !ok {
		stop = g.holdings.ClaimExited()
		g.holdings.Release()
	}
	if inherited != nil {
		stop = append(stop, inherited.stop...)
		l.log.Info("completing the swap an earlier generation began: its old servers are stopped once they have finished", "generation", g.num, "old_pids", fmt.Sprint(pidfd.PIDsOf(inherited.procs()...)))
	}
	if !ok && len(stop) == 0 {
		l.log.Warn("the new generation exited before its swap completed; the old one was not stopped", "generation", g.num)
		return
	}
	drained := l.draining(stop) // from the fence (or the signal) to their exit
	defer drained(false)
	// While the old server finished: it serves on, new connections reach
	// it again, and the next generation (a restart) completes the swap
	// once it is ready.
	interrupted := func() {
		l.log.Warn("the new generation exited before its swap completed; the old server serves on until a restarted generation is ready", "generation", g.num)
		var prevs []*generation
		if g.prev != nil && !g.prev.hasExited() {
			prevs = append(prevs, g.prev) // a reload's: its copies stay
		}
		if inherited != nil {
			prevs = append(prevs, inherited.prevs...)
		}
		l.interrupt(ctx, g, &unfinished{stop: stop, prevs: prevs, locks: locks}, before)
		locks = nil
	}
	raise := func() bool {
		return stop.RaiseFences(ctx, g.holdings, l.cfg.drainTimeout(), g.num, l.log) && g.hasExited()
	}
	onProbation := ok && inherited == nil && l.probationFits(g, stop)
	if !onProbation && l.cfg.Probation > 0 {
		l.probationOver(g, "", nil) // writeStatus said "probation"
	}
	canary := onProbation && l.canary(g, stop)
	began := time.Now()
	if !ok || !canary && raise() {
		interrupted()
		return
	}
	if onProbation {
		if why := l.onProbation(ctx, g, stop, began); why != "" {
			l.rollBack(ctx, g, stop, before, len(locks) > 0, why, time.Since(began))
			return
		}
		if canary && raise() { // the rest of the traffic, and the old server's drain
			interrupted()
			return
		}
	}
	doneFencing()
	l.keepInStore(g)
	l.notify(fmt.Sprintf("READY=1\nSTATUS=serving: generation %d, pid %d\nMAINPID=%d", g.num, g.pid, l.self))
	if g.prev != nil {
		g.prev.holdings.CloseCopies() // takeover's own copies must not hold a port it rebinds
	}
	if inherited != nil {
		for _, p := range inherited.prevs {
			p.holdings.CloseCopies()
		}
	}
	// Hold the locks until the old generation is gone, so that the next
	// takeover finds one generation, not two.
	finish := stop.Stop(ctx, l.cfg.signal(), l.cfg.killTimeout(), g.holdings, l.log)
	defer finish()
	drained(true)
	if len(swaps) == 0 && g.prev != nil && !g.prev.hasExited() {
		// No socket to take over (start_server with no --port and no
		// --path): what g replaces is the generation before it, stopped
		// as a swap stops an old server.
		l.stop(g.prev, 0)
		select {
		case <-g.prev.exited:
		case <-ctx.Done():
		}
	}
}

func (l *launcher) completeSwap(g *generation, unlock bool) {
	var locks []*os.File
	if unlock {
		locks, l.locks = l.locks, nil
	}
	done := make(chan struct{})
	g.mu.Lock()
	g.swapDone = done
	g.mu.Unlock()
	go func() {
		l.swap(l.ctx, g, locks)
		close(done)
		l.events <- event{kind: evSwapped, g: g}
	}()
}

// logSwap writes the one line that says how a generation took its ports.
func (l *launcher) logSwap(g *generation, swaps []*swap.Record) {
	by, readyAt := g.readiedBy()
	attrs := []any{"generation", g.num, "new_pid", g.pid, "ready_by", by}
	for _, sw := range swaps {
		a := []any{"strategy", sw.Strategy}
		if sw.Spec.Net != target.NetUnix && !sw.Spec.Addr.IsValid() {
			a = append(a, "addr", sw.Addr.String()) // a bare port's swaps, one per socket: which is which
		}
		if sw.Why != "" {
			a = append(a, "why", sw.Why)
		}
		if len(sw.Old) > 0 {
			a = append(a, "old_pid", sw.Old[0].Holder.PID, "old_cmd", sw.OldCmd, "lookup", sw.Lookup)
			if sw.Old[0].Launcher {
				a = append(a, "old_launcher", sw.Old[0].PID)
			}
		}
		if sw.Strategy == "handoff" || sw.Via != "" {
			a = append(a, "via", sw.Via)
		}
		a = append(a, sw.FenceAttrs()...)
		if sw.Strategy == "rebind" {
			a = append(a, "signal_to_free", sw.Free, "refused_window", sw.Window, "sigkill", sw.Killed, "retry_sched", sw.Sched)
		}
		a = append(a, "total", readyAt.Sub(sw.Began))
		attrs = append(attrs, slog.Group(sw.Spec.String(), a...))
	}
	l.log.Info("took over", attrs...)
}

// An unfinished swap is what a swap had left to do when its new generation
// exited while the old servers finished: stop them. Meanwhile the fences are
// down (the old servers take new connections again), the records name the
// takeovers they named before, and the port locks stay held, so that the
// next takeover finds one generation, not two. The next generation of this
// launcher to be ready (a restart, on the same sockets) completes it; if
// none is, the old servers serve on (dropUnfinished).
type unfinished struct {
	stop  swap.Stops
	prevs []*generation // this launcher's generations among the old servers (a reload's): their copies go once they are stopped
	locks []*os.File
}

// procs returns the processes the unfinished swap is to stop.
func (u *unfinished) procs() [][]*pidfd.Process {
	var ps [][]*pidfd.Process
	for _, st := range u.stop {
		ps = append(ps, st.Procs)
	}
	return ps
}

// interrupt keeps u, the rest of g's swap, for the next generation: it
// steers new connections back to the old sockets, puts back the records of
// the takeovers being replaced (before), and holds the port locks.
func (l *launcher) interrupt(ctx context.Context, g *generation, u *unfinished, before map[string]rundir.Record) {
	for _, st := range u.stop {
		f := st.Record.Fence
		if f == nil {
			continue
		}
		// Any socket of the group sets its program; none is left if the
		// lifecycle let go of g's, and then the group has the old one alone.
		if sock := g.holdings.DupHeld(st.Record.Spec, st.Record.Addr); sock >= 0 {
			if err := f.Lower(sock); err != nil {
				l.log.Warn("cannot steer new connections back to the old server; they wait for the restarted one", "port", st.Record.Spec.String(), "err", err)
			}
			unix.Close(sock)
		}
	}
	if len(u.locks) == 0 {
		// A reload's swap: the locks are free unless a newer takeover is
		// at work, which is then the one to stop the old servers.
		now, cancel := context.WithCancel(ctx)
		cancel()
		u.locks, _ = rundir.Lock(now, l.dir, l.keys(), rundir.Owner{PID: l.self, Start: l.born}, func(string, rundir.Owner, time.Duration) {})
	}
	for key, r := range before {
		if err := l.updateRecord(ctx, key, r, len(u.locks) > 0); err != nil {
			l.log.Warn("cannot put back the record of the takeover that serves on", "lock", key, "err", err)
		}
	}
	l.mu.Lock()
	l.unfinished = u
	l.mu.Unlock()
}

// takeUnfinished returns the swap an earlier generation left unfinished,
// for the caller to complete, or nil.
func (l *launcher) takeUnfinished() *unfinished {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.unfinished
	l.unfinished = nil
	return u
}

// fallBack gives up the unfinished swap of a reload, whose old generation
// serves on, and returns that generation; nil if there is none.
func (l *launcher) fallBack() *generation {
	l.mu.Lock()
	u := l.unfinished
	var old *generation
	if u != nil {
		for _, p := range u.prevs {
			if !p.hasExited() {
				old = p
				break
			}
		}
	}
	if old == nil {
		l.mu.Unlock()
		return nil
	}
	l.unfinished = nil
	l.mu.Unlock()
	u.stop.Abandon()
	rundir.ReleaseLocks(u.locks)
	return old
}

// dropUnfinished lets go of a swap no generation will complete (takeover
// exits): the old servers serve on, and a newer takeover replaces them as
// the records name them.
func (l *launcher) dropUnfinished() {
	u := l.takeUnfinished()
	if u == nil {
		return
	}
	l.log.Warn("the swap an exited generation began was not completed: the old servers serve on", "old_pids", fmt.Sprint(pidfd.PIDsOf(u.procs()...)))
	u.stop.Abandon()
	rundir.ReleaseLocks(u.locks)
}

// othersRecords returns the records of the launcher's targets that name
// another live takeover: those a first swap replaces.
func (l *launcher) othersRecords() map[string]rundir.Record {
	rs := make(map[string]rundir.Record)
	for _, key := range l.keys() {
		if r, ok := rundir.ReadRecord(l.dir, key); ok && r.Launcher != l.self {
			rs[key] = r
		}
	}
	return rs
}

// updateRecord writes r as key's record under the port's lock. held says
// this launcher holds it already (its first swap, which replaces the
// takeover the record names). Otherwise it takes the lock without waiting:
// another takeover holding it is a newer one at work on the port, whose
// record (written in the swap that replaces this launcher) is the one to
// keep; and it writes only where the record names this launcher or none
// alive.
func (l *launcher) updateRecord(ctx context.Context, key string, r rundir.Record, held bool) error {
	if !held {
		now, cancel := context.WithCancel(ctx)
		cancel()
		var busy rundir.Owner
		locks, err := rundir.Lock(now, l.dir, []string{key}, rundir.Owner{PID: l.self, Start: l.born}, func(_ string, owner rundir.Owner, _ time.Duration) { busy = owner })
		switch {
		case busy.PID == l.self: // held by this launcher's first swap
		case busy.PID != 0:
			return fmt.Errorf("not written: takeover pid %d holds the port lock, a newer takeover at work on the port", busy.PID)
		case err != nil:
			return fmt.Errorf("take the port lock to write the record: %w", err)
		default:
			defer rundir.ReleaseLocks(locks)
		}
		if cur, ok := rundir.ReadRecord(l.dir, key); ok && cur.Launcher != l.self {
			return fmt.Errorf("not written: the record names takeover pid %d, which has replaced this one", cur.Launcher)
		}
	}
	return rundir.WriteRecord(l.dir, key, r)
}
