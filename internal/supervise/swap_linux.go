package supervise

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// A swap: the takeover of one target from the generation before, and its
// completion once the new generation is ready (the old server stopped).

// swap completes a generation's swap once it is ready (and has outlived
// --kill-old-delay): it records the generation, tells systemd, logs the
// swap, stops the generation it replaced (only while the new one still
// runs), waits for that to exit and releases the port locks.
func (l *Launcher) swap(ctx context.Context, g *generation, locks []*os.File) {
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
		if err := l.updateRecord(ctx, key, rundir.GenRecord{Launcher: l.Self, LauncherStart: l.Born, Child: g.pid, StopSignal: int(l.Cfg.signal())}, len(locks) > 0); err != nil {
			l.Log.Warn("cannot record the generation", "lock", key, "err", err)
		}
	}
	l.writeStatus(g, swaps) // before the log line, which tells that it is written
	l.logSwap(g, swaps)

	stop, ok := g.holdings.Claim(l.Log)
	if !ok {
		stop = g.holdings.ClaimExited()
		g.holdings.Release()
	}
	if inherited != nil {
		stop = append(stop, inherited.stop...)
		l.Log.Info("completing the swap an earlier generation began: its old servers are stopped once they have finished", "generation", g.num, "old_pids", fmt.Sprint(pidfd.PidsOf(inherited.procs()...)))
	}
	if !ok && len(stop) == 0 {
		l.Log.Warn("the new generation exited before its swap completed; the old one was not stopped", "generation", g.num)
		return
	}
	drained := l.draining(stop) // from the fence (or the signal) to their exit
	defer drained(false)
	if !ok || l.raiseFences(ctx, g, stop) && g.hasExited() {
		// While the old server finished: it serves on, new connections
		// reach it again, and the next generation (a restart) completes
		// the swap once it is ready.
		l.Log.Warn("the new generation exited before its swap completed; the old server serves on until a restarted generation is ready", "generation", g.num)
		var prevs []*generation
		if g.prev != nil && !g.prev.hasExited() {
			prevs = append(prevs, g.prev) // a reload's: its copies stay
		}
		if inherited != nil {
			prevs = append(prevs, inherited.prevs...)
		}
		l.interrupt(ctx, g, &unfinished{stop: stop, prevs: prevs, locks: locks}, before)
		locks = nil
		return
	}
	doneFencing()
	l.keepInStore(g)
	l.notify(fmt.Sprintf("READY=1\nSTATUS=serving: generation %d, pid %d\nMAINPID=%d", g.num, g.pid, l.Self))
	if g.prev != nil {
		g.prev.holdings.CloseCopies() // takeover's own copies must not hold a port it rebinds
	}
	if inherited != nil {
		for _, p := range inherited.prevs {
			p.holdings.CloseCopies()
		}
	}
	// A unix path is guarded from the old servers' unlinks before they
	// are signalled.
	gctx, stopGuards := context.WithCancel(ctx)
	defer stopGuards()
	restored := make([]<-chan int, len(stop))
	for i, st := range stop {
		restored[i] = st.Path.Guard(gctx)
	}
	swap.SignalOnce(stop, l.Cfg.signal())
	// Hold the locks until the old generation is gone, so that the next
	// takeover finds one generation, not two.
	for _, st := range stop {
		wctx, cancel := context.WithTimeout(ctx, l.Cfg.killTimeout())
		for _, p := range st.Procs {
			if !p.Wait(wctx) {
				l.Log.Warn("the old server did not exit within --kill-timeout; killing it", "pid", p.PID)
				swap.KillStillHolding(st.Holders, st.Sw.Inodes)
			}
		}
		cancel()
		if f := st.Sw.Fence; f != nil {
			if held := g.holdings.HeldFor(st.Sw.Spec, st.Sw.Addr); held != nil && !f.Settle(ctx, held.CopyFD) {
				l.Log.Debug("the old socket still listens after its server exited; new connections stay steered to the new one", "port", st.Sw.Spec.String())
			}
		}
	}
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
	stopGuards()
	for i, st := range stop {
		if n := <-restored[i]; n > 0 {
			hint := ""
			if st.Sw.Via != "own-copy" && !st.Sw.Old[0].Launcher {
				hint = "; start the old server under takeover, which keeps the path"
			}
			l.Log.Warn("the old server removed its unix socket's path on its way out; takeover put it back (a connect in between may have failed"+hint+")", "path", st.Path.Path, "times", n)
		}
		st.Path.Finish()
		pidfd.CloseAll(st.Procs)
		pidfd.CloseAll(st.Holders)
	}
}

func (l *Launcher) completeSwap(g *generation, unlock bool) {
	var locks []*os.File
	if unlock {
		locks, l.locks = l.locks, nil
	}
	go func() {
		l.swap(l.Ctx, g, locks)
		l.events <- event{kind: evSwapped, g: g}
	}()
}

// logSwap writes the one line that says how a generation took its ports.
func (l *Launcher) logSwap(g *generation, swaps []*swap.Swap) {
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
	l.Log.Info("took over", attrs...)
}

// An unfinished swap is what a swap had left to do when its new generation
// exited while the old servers finished: stop them. Meanwhile the fences are
// down (the old servers take new connections again), the records name the
// takeovers they named before, and the port locks stay held, so that the
// next takeover finds one generation, not two. The next generation of this
// launcher to be ready (a restart, on the same sockets) completes it; if
// none is, the old servers serve on (dropUnfinished).
type unfinished struct {
	stop  []swap.OldStop
	prevs []*generation // this launcher's generations among the old servers (a reload's): their copies go once they are stopped
	locks []*os.File
}

// procs returns the processes the unfinished swap is to stop.
func (u *unfinished) procs() [][]*pidfd.OldProcess {
	var ps [][]*pidfd.OldProcess
	for _, st := range u.stop {
		ps = append(ps, st.Procs)
	}
	return ps
}

// interrupt keeps u, the rest of g's swap, for the next generation: it
// steers new connections back to the old sockets, puts back the records of
// the takeovers being replaced (before), and holds the port locks.
func (l *Launcher) interrupt(ctx context.Context, g *generation, u *unfinished, before map[string]rundir.GenRecord) {
	for _, st := range u.stop {
		f := st.Sw.Fence
		if f == nil {
			continue
		}
		// Any socket of the group sets its program; none is left if the
		// lifecycle let go of g's, and then the group has the old one alone.
		if sock := g.holdings.DupHeld(st.Sw.Spec, st.Sw.Addr); sock >= 0 {
			if err := f.Lower(sock); err != nil {
				l.Log.Warn("cannot steer new connections back to the old server; they wait for the restarted one", "port", st.Sw.Spec.String(), "err", err)
			}
			unix.Close(sock)
		}
	}
	if len(u.locks) == 0 {
		// A reload's swap: the locks are free unless a newer takeover is
		// at work, which is then the one to stop the old servers.
		now, cancel := context.WithCancel(ctx)
		cancel()
		u.locks, _ = rundir.LockTargets(now, l.Dir, l.keys(), rundir.LockOwner{PID: l.Self, Start: l.Born}, func(string, rundir.LockOwner, time.Duration) {})
	}
	for key, r := range before {
		if err := l.updateRecord(ctx, key, r, len(u.locks) > 0); err != nil {
			l.Log.Warn("cannot put back the record of the takeover that serves on", "lock", key, "err", err)
		}
	}
	l.mu.Lock()
	l.unfinished = u
	l.mu.Unlock()
}

// takeUnfinished returns the swap an earlier generation left unfinished,
// for the caller to complete, or nil.
func (l *Launcher) takeUnfinished() *unfinished {
	l.mu.Lock()
	defer l.mu.Unlock()
	u := l.unfinished
	l.unfinished = nil
	return u
}

// fallBack gives up the unfinished swap of a reload, whose old generation
// serves on, and returns that generation; nil if there is none.
func (l *Launcher) fallBack() *generation {
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
	for _, st := range u.stop {
		st.Abandon()
	}
	rundir.ReleaseLocks(u.locks)
	return old
}

// dropUnfinished lets go of a swap no generation will complete (takeover
// exits): the old servers serve on, and a newer takeover replaces them as
// the records name them.
func (l *Launcher) dropUnfinished() {
	u := l.takeUnfinished()
	if u == nil {
		return
	}
	l.Log.Warn("the swap an exited generation began was not completed: the old servers serve on", "old_pids", fmt.Sprint(pidfd.PidsOf(u.procs()...)))
	for _, st := range u.stop {
		st.Abandon()
	}
	rundir.ReleaseLocks(u.locks)
}

// othersRecords returns the records of the launcher's targets that name
// another live takeover: those a first swap replaces.
func (l *Launcher) othersRecords() map[string]rundir.GenRecord {
	rs := make(map[string]rundir.GenRecord)
	for _, key := range l.keys() {
		if r, ok := rundir.ReadRecord(l.Dir, key); ok && r.Launcher != l.Self {
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
func (l *Launcher) updateRecord(ctx context.Context, key string, r rundir.GenRecord, held bool) error {
	if !held {
		now, cancel := context.WithCancel(ctx)
		cancel()
		var busy rundir.LockOwner
		locks, err := rundir.LockTargets(now, l.Dir, []string{key}, rundir.LockOwner{PID: l.Self, Start: l.Born}, func(_ string, owner rundir.LockOwner, _ time.Duration) { busy = owner })
		switch {
		case busy.PID == l.Self: // held by this launcher's first swap
		case busy.PID != 0:
			return fmt.Errorf("not written: takeover pid %d holds the port lock, a newer takeover at work on the port", busy.PID)
		case err != nil:
			return fmt.Errorf("take the port lock to write the record: %w", err)
		default:
			defer rundir.ReleaseLocks(locks)
		}
		if cur, ok := rundir.ReadRecord(l.Dir, key); ok && cur.Launcher != l.Self {
			return fmt.Errorf("not written: the record names takeover pid %d, which has replaced this one", cur.Launcher)
		}
	}
	return rundir.WriteRecord(l.Dir, key, r)
}

// raiseFences puts up the fences of a ready generation's swaps and waits,
// up to --drain-timeout, until each fenced old server has finished what it
// had accepted: the same state twice in a row, so that a handshake that
// completed into the old queue just as the fence went up is seen. It
// reports whether it put up any.
func (l *Launcher) raiseFences(ctx context.Context, g *generation, stop []swap.OldStop) bool {
	type fenced struct {
		f    *swap.Fence
		spec target.PortSpec
		pids []int
	}
	var fs []fenced
	for _, st := range stop {
		f := st.Sw.Fence
		if f == nil {
			continue
		}
		held := g.holdings.HeldFor(st.Sw.Spec, st.Sw.Addr)
		if held == nil {
			continue
		}
		if err := f.Raise(held.CopyFD); err != nil {
			l.Log.Warn("cannot steer new connections to the new server; the old one keeps accepting until it is stopped", "port", st.Sw.Spec.String(), "err", err)
			continue
		}
		pids := pidfd.PidsOf(st.Procs, st.Holders)
		slices.Sort(pids)
		fs = append(fs, fenced{f, st.Sw.Spec, procfs.FS("/proc").WithDescendants(slices.Compact(pids))})
	}
	if len(fs) == 0 {
		return false
	}
	for _, x := range fs {
		if set, err := x.f.HoldMigrate(); set {
			l.Log.Info("net.ipv4.tcp_migrate_req=1 in this network namespace until the old socket has closed: a listening socket that closes hands its queued connections to another socket of its SO_REUSEPORT group instead of resetting them")
		} else if err != nil {
			l.Log.Debug("cannot set net.ipv4.tcp_migrate_req; the drain alone keeps the old socket's queue", "err", err)
		}
	}
	release := func() {
		for _, x := range fs {
			x.f.ReleaseMigrate()
		}
	}
	began := time.Now()
	wait := l.Cfg.drainTimeout()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for clean := 0; ; {
		busy := ""
		for _, x := range fs {
			if ok, err := x.f.Finished(x.pids); !ok || err != nil {
				busy = x.spec.String()
				break
			}
		}
		if busy == "" {
			clean++
		} else {
			clean = 0
		}
		switch {
		case clean == 2:
			l.Log.Info("fenced: the old server accepts nothing new and has finished what it accepted", "generation", g.num, "waited", time.Since(began).Round(time.Microsecond))
			return true
		case time.Since(began) >= wait:
			l.Log.Warn("the fenced old server has not finished its connections within --drain-timeout; stopping it all the same", "port", busy, "drain_timeout", wait)
			return true
		case g.hasExited():
			release() // the old server serves on
			return true
		}
		select {
		case <-ctx.Done():
			release()
			return true
		case <-tick.C:
		}
	}
}
