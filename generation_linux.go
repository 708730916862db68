package main

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A generation's small state: its signals, its exit, how it became ready.

// handedOverFromRunning reports whether g took a socket over from a server
// that still runs: one a rebind has not stopped already (a handoff, or a
// rename over a unix path). A generation with no socket to take over
// (start_server with no --port) replaces the one before it, if it runs.
func (g *generation) handedOverFromRunning() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.swaps) == 0 {
		return g.prev != nil && !g.prev.inherited && !g.prev.hasExited()
	}
	for _, sw := range g.swaps {
		if (sw.Strategy == "handoff" || sw.Strategy == "rename") && len(sw.oldProcs) > 0 {
			return true
		}
	}
	return false
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

func (g *generation) isDone() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.done
}

func (g *generation) isRolledBack() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.rolledBack
}
