package supervise

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// A swap: the takeover of one target from the generation before, and its
// completion once the new generation is ready (the old server stopped).

// A swap is one --port target taken over by a generation.
type Swap struct {
	Spec        target.PortSpec
	Addr        netip.AddrPort
	Strategy    string    // "fresh" (the port was free), "rebind", "handoff" or "rename" (unix)
	Via         string    // how a handoff got the old socket: unix-socket, pidfd_getfd, own-copy
	path        *pathSwap // a unix target's file, while the old server stops
	Why         string    // why auto chose it
	Old         []owner.StopTarget
	OldCmd      string
	OldProcs    []*pidfd.OldProcess // the stop targets
	Holders     []*pidfd.OldProcess // every old holder, for SIGKILL
	Inodes      []uint64            // the old listening sockets
	Lookup      time.Duration
	RebindTimes           // how a rebind went (rebind only)
	fence       *fence    // a fenced handoff (fence_linux.go)
	notFenced   string    // why a handoff was not fenced
	Began       time.Time // the command's bind(2)

	// The O_NONBLOCK a handoff set on the old socket (injectSocket), taken
	// back if the swap is abandoned.
	nonblock *nonblockUndo
}

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
	g.mu.Lock()
	swaps := append([]*Swap(nil), g.swaps...)
	g.mu.Unlock()

	before := l.othersRecords()
	for _, key := range l.keys() {
		if err := l.updateRecord(ctx, key, rundir.GenRecord{Launcher: l.Self, LauncherStart: l.Born, Child: g.pid, StopSignal: int(l.Cfg.signal())}, len(locks) > 0); err != nil {
			l.Log.Warn("cannot record the generation", "lock", key, "err", err)
		}
	}
	l.writeStatus(g, swaps) // before the log line, which tells that it is written
	l.logSwap(g, swaps)

	stop, ok := g.claimSwaps(l.Log)
	if !ok {
		stop = g.claimExited()
		g.releaseSwaps()
	}
	if inherited != nil {
		stop = append(stop, inherited.stop...)
		l.Log.Info("completing the swap an earlier generation began: its old servers are stopped once they have finished", "generation", g.num, "old_pids", fmt.Sprint(pidfd.PidsOf(inherited.procs()...)))
	}
	if !ok && len(stop) == 0 {
		l.Log.Warn("the new generation exited before its swap completed; the old one was not stopped", "generation", g.num)
		return
	}
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
		g.prev.closeCopies() // takeover's own copies must not hold a port it rebinds
	}
	if inherited != nil {
		for _, p := range inherited.prevs {
			p.closeCopies()
		}
	}
	// A unix path is guarded from the old servers' unlinks before they
	// are signalled.
	gctx, stopGuards := context.WithCancel(ctx)
	defer stopGuards()
	restored := make([]<-chan int, len(stop))
	for i, st := range stop {
		restored[i] = st.path.guard(gctx)
	}
	signalOnce(stop, l.Cfg.signal())
	// Hold the locks until the old generation is gone, so that the next
	// takeover finds one generation, not two.
	for _, st := range stop {
		wctx, cancel := context.WithTimeout(ctx, l.Cfg.killTimeout())
		for _, p := range st.procs {
			if !p.Wait(wctx) {
				l.Log.Warn("the old server did not exit within --kill-timeout; killing it", "pid", p.PID)
				KillStillHolding(st.holders, st.sw.Inodes)
			}
		}
		cancel()
		if f := st.sw.fence; f != nil {
			if held := g.heldFor(st.sw.Spec, st.sw.Addr); held != nil && !f.Settle(ctx, held.copyFD) {
				l.Log.Debug("the old socket still listens after its server exited; new connections stay steered to the new one", "port", st.sw.Spec.String())
			}
		}
	}
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
			if st.sw.Via != "own-copy" && !st.sw.Old[0].Launcher {
				hint = "; start the old server under takeover, which keeps the path"
			}
			l.Log.Warn("the old server removed its unix socket's path on its way out; takeover put it back (a connect in between may have failed"+hint+")", "path", st.path.path, "times", n)
		}
		st.path.finish()
		pidfd.CloseAll(st.procs)
		pidfd.CloseAll(st.holders)
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
func (l *Launcher) logSwap(g *generation, swaps []*Swap) {
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
		a = append(a, sw.fenceAttrs()...)
		if sw.Strategy == "rebind" {
			a = append(a, "signal_to_free", sw.Free, "refused_window", sw.Window, "sigkill", sw.Killed, "retry_sched", sw.Sched)
		}
		a = append(a, "total", readyAt.Sub(sw.Began))
		attrs = append(attrs, slog.Group(sw.Spec.String(), a...))
	}
	l.Log.Info("took over", attrs...)
}

// claimSwaps completes the generation's swaps unless it has exited (ok is
// false): a unix path bound beside is renamed over (until now connects
// reached the old server), and the old processes to stop are taken out of
// the swaps, so that a release of the generation from now on leaves them
// alone. A swap whose rename fails leaves the old server serving, unstopped.
func (g *generation) claimSwaps(log *slog.Logger) (stop []oldStop, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hasExited() {
		return nil, false
	}
	for _, sw := range g.swaps {
		sw.nonblock.drop() // from now on the new server's
		sw.nonblock = nil
		if err := sw.path.renameOver(); err != nil {
			log.Error("cannot rename the new unix socket over its path; the old server keeps it, and is not stopped", "path", sw.Spec.Path, "err", err)
			sw.abandon()
			continue
		}
		if len(sw.OldProcs) == 0 {
			sw.path.finish()
			sw.path = nil
			continue
		}
		stop = append(stop, oldStop{sw, sw.path, sw.OldProcs, sw.Holders})
		sw.path, sw.OldProcs, sw.Holders = nil, nil, nil
	}
	return stop, true
}

// claimExited takes out of the handoffs of g, which exited before its
// swap completed, the old processes still to stop: the restarted
// generation, on the same sockets, stops them. (A unix path's swap is
// rolled back instead, by releaseSwaps.)
func (g *generation) claimExited() []oldStop {
	g.mu.Lock()
	defer g.mu.Unlock()
	var stop []oldStop
	for _, sw := range g.swaps {
		if sw.Spec.Net == target.NetUnix || sw.Strategy != "handoff" || len(sw.OldProcs) == 0 {
			continue
		}
		stop = append(stop, oldStop{sw, nil, sw.OldProcs, sw.Holders})
		sw.OldProcs, sw.Holders = nil, nil
	}
	return stop
}

// An unfinished swap is what a swap had left to do when its new generation
// exited while the old servers finished: stop them. Meanwhile the fences are
// down (the old servers take new connections again), the records name the
// takeovers they named before, and the port locks stay held, so that the
// next takeover finds one generation, not two. The next generation of this
// launcher to be ready (a restart, on the same sockets) completes it; if
// none is, the old servers serve on (dropUnfinished).
type unfinished struct {
	stop  []oldStop
	prevs []*generation // this launcher's generations among the old servers (a reload's): their copies go once they are stopped
	locks []*os.File
}

// procs returns the processes the unfinished swap is to stop.
func (u *unfinished) procs() [][]*pidfd.OldProcess {
	var ps [][]*pidfd.OldProcess
	for _, st := range u.stop {
		ps = append(ps, st.procs)
	}
	return ps
}

// interrupt keeps u, the rest of g's swap, for the next generation: it
// steers new connections back to the old sockets, puts back the records of
// the takeovers being replaced (before), and holds the port locks.
func (l *Launcher) interrupt(ctx context.Context, g *generation, u *unfinished, before map[string]rundir.GenRecord) {
	for _, st := range u.stop {
		f := st.sw.fence
		if f == nil {
			continue
		}
		// Any socket of the group sets its program; none is left if the
		// lifecycle let go of g's, and then the group has the old one alone.
		if sock := g.dupHeld(st.sw.Spec, st.sw.Addr); sock >= 0 {
			if err := f.lower(sock); err != nil {
				l.Log.Warn("cannot steer new connections back to the old server; they wait for the restarted one", "port", st.sw.Spec.String(), "err", err)
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
		st.abandon()
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
		st.abandon()
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

// An oldStop is what a completed swap has left to do: stop the old
// processes, and guard the unix path meanwhile.
type oldStop struct {
	sw             *Swap
	path           *pathSwap
	procs, holders []*pidfd.OldProcess
}

// abandon lets go of a claimed swap that will not be completed after all
// (the new generation exited while the old server finished): as a swap's
// abandon does, for what claimSwaps took out of it.
func (st oldStop) abandon() {
	pidfd.CloseAll(st.procs)
	pidfd.CloseAll(st.holders)
	st.path.rollBack()
}

// abandon lets go of a swap that will not be completed: of its old
// processes' pidfds, and of the names beside a unix path (a path renamed
// over goes back to the old socket).
func (sw *Swap) abandon() {
	sw.nonblock.restore() // the old server's socket, as it had it
	sw.nonblock = nil
	sw.ReleaseOld()
	sw.path.rollBack()
	sw.path = nil
}

// releaseOld closes the swap's pidfds of the old processes.
func (sw *Swap) ReleaseOld() {
	pidfd.CloseAll(sw.OldProcs)
	pidfd.CloseAll(sw.Holders)
	sw.OldProcs, sw.Holders = nil, nil
}

// signalOnce sends sig to the old processes of the swaps, each once: a
// server that held several of the sockets (nginx's `listen 80; listen
// [::]:80;`, or two --port targets) is in the stop list of each swap, and to
// some servers a second stop signal means "stop now, drain no more" (an
// interactive ^C twice; uvicorn on INT). A rebind signalled its own at the
// bind already.
func signalOnce(stop []oldStop, sig unix.Signal) {
	sent := make(map[int]bool)
	for _, st := range stop {
		if st.sw.Strategy == "rebind" {
			for _, p := range st.procs {
				sent[p.PID] = true
			}
		}
	}
	for _, st := range stop {
		for _, p := range st.procs {
			if !sent[p.PID] {
				sent[p.PID] = true
				p.Signal(sig)
			}
		}
	}
}

// killStillHolding SIGKILLs the old processes that still hold one of the
// old sockets: after --kill-timeout, what keeps a port or serves on as an
// old generation. An old takeover launcher let go of its copies when it was
// replaced and waits for its server: killing it would orphan the server,
// which would then serve on with nobody to stop it.
func KillStillHolding(holders []*pidfd.OldProcess, inodes []uint64) {
	held, err := owner.StillHolding("/proc", inodes, pidfd.PidsOf(holders))
	for _, p := range holders {
		if err != nil || slices.Contains(held, p.PID) {
			p.Signal(unix.SIGKILL)
		}
	}
}

// A rebind is the fallback way to take a port over: stop the old holders,
// then bind the new server's socket as soon as the port frees. Clients see
// refused connections between the old listener's close and the new listen,
// and lose what waited in the old accept queue.
type Rebind struct {
	Sock        int // takeover's copy of the new server's socket
	Addr        netip.AddrPort
	Old         []*pidfd.OldProcess // the stop targets, signalled once
	Holders     []*pidfd.OldProcess // every process holding the port: SIGKILLed after KillTimeout if it still does
	Inodes      []uint64            // the old listening sockets
	Signal      unix.Signal
	KillTimeout time.Duration
}

// A rebinder runs a rebind: retryBind (retrybind.go), plugged in by the
// command line.
type rebinder func(ctx context.Context, r Rebind) (RebindTimes, error)

// rebindTimes says how a rebind went, for the swap's log line.
type RebindTimes struct {
	Free time.Duration // from the stop signal until the bind succeeded
	// Window is from the last attempt that found the port held (or from
	// the signal, if none did) until the socket listened: the refused
	// window as takeover saw it. Clients can be refused a little earlier,
	// while the old listener is torn down but its port not yet free.
	Window time.Duration
	Killed bool   // the old holders were SIGKILLed
	Sched  string // how the retrying thread was scheduled
}
