package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/socktab"
	"golang.org/x/sys/unix"
)

// The launcher is the lifecycle's supervisor: it carries out what the
// lifecycle decides, and completes each swap.

func (l *launcher) start(prev *generation) (*generation, error) {
	path := l.path
	if prev == nil && l.inherited != nil {
		// The first generation: the sockets systemd passed are its own.
		prev, l.inherited = l.inherited, nil
	} else if prev != nil {
		p, code, err := resolveCommand(l.cfg.commandName()) // a new binary on disk is picked up
		if err != nil {
			return nil, fmt.Errorf("%w (exit status %d)", err, code)
		}
		path = p
	}
	l.lastNum++
	g, err := l.startGeneration(l.ctx, path, l.lastNum, prev)
	if err != nil {
		return nil, err
	}
	l.byPID[g.pid] = g
	go func() {
		select {
		case <-g.ready:
			l.starter.started(g)
			l.events <- event{kind: evReady, g: g}
		case <-g.timedOut:
			l.events <- event{kind: evTimedOut, g: g}
		case <-g.exited:
		}
	}()
	return g, nil
}

func (l *launcher) signal(g *generation, sig syscall.Signal) { g.signal(sig) }

func (l *launcher) stop(g *generation, sig syscall.Signal) {
	if sig == 0 {
		sig = l.cfg.signal()
	}
	g.signal(sig)
	time.AfterFunc(l.cfg.killTimeout(), func() {
		if !g.hasExited() {
			l.log.Warn("the command did not exit within --kill-timeout of the stop signal; killing it", "pid", g.pid, "signal", unix.SignalName(sig), "kill_timeout", l.cfg.killTimeout())
			g.signal(unix.SIGKILL)
		}
	})
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

func (l *launcher) release(g *generation) {
	g.closeCopies()
	g.releaseSwaps()
}

func (l *launcher) after(d time.Duration, ev event) {
	time.AfterFunc(d, func() { l.events <- ev })
}

// queued returns the length of the accept queues of g's sockets, as
// sock_diag reports it.
func (l *launcher) queued(g *generation) int {
	socks, err := socktab.DiagTCPListeners()
	if err != nil {
		return -1
	}
	n := 0
	for _, s := range socks {
		if g.heldByInode(s.Inode) != nil {
			n += int(s.Queued)
		}
	}
	return n
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
	for _, st := range stop {
		if st.sw.Strategy != "rebind" { // a rebind signalled them already
			for _, p := range st.procs {
				p.signal(l.cfg.signal())
			}
		}
	}
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

// keepInStore puts g's sockets in systemd's file descriptor store, under
// systemd, so that a restart of the service or a crash of takeover finds
// them there; one already stored is not sent again.
func (l *launcher) keepInStore(g *generation) {
	if l.store == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.socks {
		l.store.keep(s.spec.storeName(), s.copyFD, s.inode)
	}
}

// logSwap writes the one line that says how a generation took its ports.
func (l *launcher) logSwap(g *generation, swaps []*swap) {
	by, readyAt := g.readiedBy()
	attrs := []any{"generation", g.num, "new_pid", g.pid, "ready_by", by}
	for _, sw := range swaps {
		a := []any{"strategy", sw.Strategy}
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
