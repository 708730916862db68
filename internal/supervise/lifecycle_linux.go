package supervise

import (
	"fmt"
	"slices"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/socktab"
	"github.com/takeover/takeover/internal/swap"
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

func (l *launcher) release(g *generation) {
	g.holdings.CloseCopies()
	g.holdings.Release()
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
		if g.holdings.HeldByInode(s.Inode) != nil {
			n += int(s.Queued)
		}
	}
	return n
}

// keepInStore puts g's sockets in systemd's file descriptor store, under
// systemd, so that a restart of the service or a crash of takeover finds
// them there; one already stored is not sent again.
func (l *launcher) keepInStore(g *generation) {
	if l.store == nil {
		return
	}
	g.holdings.Each(func(_ swap.SockKey, s *swap.Held) {
		l.store.Keep(s.Spec.StoreName(), s.CopyFD, s.Inode)
	})
}

// prevExited is told that g has exited. A generation starting beside it in
// a fenced handoff (a reload) then has no old server to wait for: new
// connections go to its socket at once where it listens, and a socket not
// listening yet is given g's at its listen(2) (onListen), with what waits
// in it. (The lifecycle keeps g's copies meanwhile.)
func (l *launcher) prevExited(g *generation) {
	l.mu.Lock()
	gens := slices.Clone(l.gens)
	l.mu.Unlock()
	for _, h := range gens {
		if h.prev != g || h.hasExited() {
			continue
		}
		for _, s := range h.holdings.FencedSocks() {
			if sock := h.holdings.DupHeld(s.Spec, s.Addr); sock >= 0 {
				if err := s.Fence.OldGone(sock); err != nil {
					l.log.Warn("cannot steer new connections to the new server after the old one exited; they wait in the old socket", "port", s.Spec.String(), "err", err)
				}
				unix.Close(sock)
			}
		}
	}
}
