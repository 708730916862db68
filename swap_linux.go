package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"
)

// A swap: the takeover of one target from the generation before, and its
// completion once the new generation is ready (the old server stopped).

// A swap is one --port target taken over by a generation.
type swap struct {
	Spec        portSpec
	Addr        netip.AddrPort
	Strategy    string    // "fresh" (the port was free), "rebind", "handoff" or "rename" (unix)
	Via         string    // how a handoff got the old socket: unix-socket, pidfd_getfd, own-copy
	path        *pathSwap // a unix target's file, while the old server stops
	Why         string    // why auto chose it
	Old         []stopTarget
	OldCmd      string
	oldProcs    []*oldProcess // the stop targets
	holders     []*oldProcess // every old holder, for SIGKILL
	inodes      []uint64      // the old listening sockets
	Lookup      time.Duration
	rebindTimes           // how a rebind went (rebind only)
	fence       *fence    // a fenced handoff (fence_linux.go)
	notFenced   string    // why a handoff was not fenced
	Began       time.Time // the command's bind(2)
}

// swap completes a generation's swap once it is ready (and has outlived
// --kill-old-delay): it records the generation, tells systemd, logs the
// swap, stops the generation it replaced (only while the new one still
// runs), waits for that to exit and releases the port locks.
func (l *launcher) swap(ctx context.Context, g *generation, locks []*os.File) {
	defer releaseLocks(locks)
	g.mu.Lock()
	swaps := append([]*swap(nil), g.swaps...)
	g.mu.Unlock()

	for _, key := range l.keys() {
		if err := writeRecord(l.dir, key, genRecord{Launcher: l.self, LauncherStart: l.born, Child: g.pid}); err != nil {
			l.log.Warn("cannot record the generation", "lock", key, "err", err)
		}
	}
	l.writeStatus(g, swaps) // before the log line, which tells that it is written
	l.logSwap(g, swaps)

	stop, ok := g.claimSwaps(l.log)
	if !ok {
		l.log.Warn("the new generation exited before its swap completed; the old one was not stopped", "generation", g.num)
		g.releaseSwaps()
		return
	}
	if l.raiseFences(ctx, g, stop) && g.hasExited() {
		// While the old server finished: it serves on, new connections
		// reach it again (the group has lost the new socket).
		l.log.Warn("the new generation exited before its swap completed; the old one was not stopped", "generation", g.num)
		for _, st := range stop {
			st.abandon()
		}
		return
	}
	l.keepInStore(g)
	l.notify(fmt.Sprintf("READY=1\nSTATUS=serving: generation %d, pid %d\nMAINPID=%d", g.num, g.pid, l.self))
	if g.prev != nil {
		g.prev.closeCopies() // takeover's own copies must not hold a port it rebinds
	}
	// A unix path is guarded from the old servers' unlinks before they
	// are signalled.
	gctx, stopGuards := context.WithCancel(ctx)
	defer stopGuards()
	restored := make([]<-chan int, len(stop))
	for i, st := range stop {
		restored[i] = st.path.guard(gctx)
	}
	signalOnce(stop, l.cfg.signal())
	// Hold the locks until the old generation is gone, so that the next
	// takeover finds one generation, not two.
	for _, st := range stop {
		wctx, cancel := context.WithTimeout(ctx, l.cfg.killTimeout())
		for _, p := range st.procs {
			if !p.wait(wctx) {
				l.log.Warn("the old server did not exit within --kill-timeout; killing it", "pid", p.PID)
				killStillHolding(st.holders, st.sw.inodes)
			}
		}
		cancel()
		if f := st.sw.fence; f != nil {
			if held := g.heldFor(st.sw.Spec, st.sw.Addr); held != nil && !f.settle(ctx, held.copyFD) {
				l.log.Debug("the old socket still listens after its server exited; new connections stay steered to the new one", "port", st.sw.Spec.String())
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
			l.log.Warn("the old server removed its unix socket's path on its way out; takeover put it back (a connect in between may have failed"+hint+")", "path", st.path.path, "times", n)
		}
		st.path.finish()
		closeAll(st.procs)
		closeAll(st.holders)
	}
}

func (l *launcher) completeSwap(g *generation, unlock bool) {
	var locks []*os.File
	if unlock {
		locks, l.locks = l.locks, nil
	}
	go func() {
		l.swap(l.ctx, g, locks)
		l.events <- event{kind: evSwapped, g: g}
	}()
}

// logSwap writes the one line that says how a generation took its ports.
func (l *launcher) logSwap(g *generation, swaps []*swap) {
	by, readyAt := g.readiedBy()
	attrs := []any{"generation", g.num, "new_pid", g.pid, "ready_by", by}
	for _, sw := range swaps {
		a := []any{"strategy", sw.Strategy}
		if sw.Spec.Net != netUnix && !sw.Spec.Addr.IsValid() {
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
	l.log.Info("took over", attrs...)
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
		if err := sw.path.renameOver(); err != nil {
			log.Error("cannot rename the new unix socket over its path; the old server keeps it, and is not stopped", "path", sw.Spec.Path, "err", err)
			sw.abandon()
			continue
		}
		if len(sw.oldProcs) == 0 {
			sw.path.finish()
			sw.path = nil
			continue
		}
		stop = append(stop, oldStop{sw, sw.path, sw.oldProcs, sw.holders})
		sw.path, sw.oldProcs, sw.holders = nil, nil, nil
	}
	return stop, true
}

// An oldStop is what a completed swap has left to do: stop the old
// processes, and guard the unix path meanwhile.
type oldStop struct {
	sw             *swap
	path           *pathSwap
	procs, holders []*oldProcess
}

// abandon lets go of a claimed swap that will not be completed after all
// (the new generation exited while the old server finished): as a swap's
// abandon does, for what claimSwaps took out of it.
func (st oldStop) abandon() {
	closeAll(st.procs)
	closeAll(st.holders)
	st.path.rollBack()
}

// abandon lets go of a swap that will not be completed: of its old
// processes' pidfds, and of the names beside a unix path (a path renamed
// over goes back to the old socket).
func (sw *swap) abandon() {
	sw.releaseOld()
	sw.path.rollBack()
	sw.path = nil
}

// releaseOld closes the swap's pidfds of the old processes.
func (sw *swap) releaseOld() {
	closeAll(sw.oldProcs)
	closeAll(sw.holders)
	sw.oldProcs, sw.holders = nil, nil
}
