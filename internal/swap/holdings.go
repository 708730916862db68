package swap

import (
	"log/slog"
	"net/netip"
	"slices"
	"sync"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// A SockKey names a socket in the command: its process and fd.
type SockKey struct {
	Tgid, FD int
}

// A Held socket is takeover's copy of a socket a generation bound to a
// target, kept so that a restart or the next generation can be given it.
type Held struct {
	CopyFD int // takeover's own copy, kept for handoff to a later generation
	Inode  uint64
	Spec   target.Spec
	Addr   netip.AddrPort // TCP and UDP
	Via    string         // a socket systemd passed: how (systemd.InheritedSock's Via)
	Fence  *Fence         // a new socket beside the old server's (fence.go)
	Sw     *Record        // the swap that took it (intercepted binds), dropped with it
}

// Holdings are the sockets one generation of the command holds and the
// swaps that took them: the socket half of a generation, which the next
// generation takes over from (Taker.Take's prev). Its methods are safe for
// concurrent use.
type Holdings struct {
	PID       int             // the generation's command; 0 for the sockets systemd passed
	Inherited bool            // no command: the sockets systemd passed at start
	Exited    <-chan struct{} // closed once the command has exited

	mu    sync.Mutex
	socks map[SockKey]*Held
	swaps []*Record
	done  bool // the generation is being stopped: its copies are closed
}

// NewHoldings returns the empty holdings of a generation whose command is
// pid, and exits when exited is closed.
func NewHoldings(pid int, inherited bool, exited <-chan struct{}) *Holdings {
	return &Holdings{PID: pid, Inherited: inherited, Exited: exited, socks: make(map[SockKey]*Held)}
}

func (h *Holdings) hasExited() bool {
	select {
	case <-h.Exited:
		return true
	default:
		return false
	}
}

// Add files s at k, with the swap that took it (sw, or nil), and reports
// true; once the generation is being stopped it files nothing and reports
// false, and s and sw are the caller's to let go of. A copy filed at k
// before, of another socket, is closed.
func (h *Holdings) Add(k SockKey, s *Held, sw *Record) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return false
	}
	if old := h.socks[k]; old != nil && old.CopyFD != s.CopyFD {
		unix.Close(old.CopyFD) // a copy dropClosed could not tell the fate of
	}
	h.socks[k] = s
	if sw != nil {
		h.swaps = append(h.swaps, sw)
	}
	return true
}

// Get returns the socket filed at k, or nil.
func (h *Holdings) Get(k SockKey) *Held {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.socks[k]
}

// Each calls f with every socket held, under the lock: each CopyFD stays
// open until f returns. Once the copies are closed (CloseCopies) it calls
// nothing and reports false.
func (h *Holdings) Each(f func(k SockKey, s *Held)) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, s := range h.socks {
		f(k, s)
	}
	return !h.done
}

// Swaps returns the swaps that took the sockets.
func (h *Holdings) Swaps() []*Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Record(nil), h.swaps...)
}

// IsDone reports whether the copies are closed (CloseCopies).
func (h *Holdings) IsDone() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.done
}

// Rollbackable reports whether the generation has left every earlier
// server serving: none of its swaps has stopped one (a rebind stops the old
// server at the bind).
func (h *Holdings) Rollbackable() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sw := range h.swaps {
		if sw.Strategy == "rebind" {
			return false
		}
	}
	return true
}

// Refile files again, under the keys at gives their inodes, the sockets
// at gone that the command closed there (dropClosed): a socket the command
// holds at another fd now is filed there; one it holds nowhere is let go
// of, its copy closed and the swap that took it abandoned.
func (h *Holdings) Refile(gone []SockKey, at map[uint64]SockKey, log *slog.Logger) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.done {
		return
	}
	for _, k := range gone {
		s := h.socks[k]
		if s == nil {
			continue
		}
		delete(h.socks, k)
		if to, ok := at[s.Inode]; ok {
			if other := h.socks[to]; other != nil && other.Inode == s.Inode {
				unix.Close(s.CopyFD) // a second copy of the same socket
			} else {
				h.socks[to] = s
			}
			continue
		}
		log.Debug("the command closed a socket it had bound to a target; takeover lets go of its copy", "port", s.Spec.String(), "pid", k.Tgid, "fd", k.FD)
		unix.Close(s.CopyFD)
		if s.Sw != nil {
			h.swaps = slices.DeleteFunc(h.swaps, func(sw *Record) bool { return sw == s.Sw })
			s.Sw.Abandon()
		}
	}
}

// Replace files n wherever old was filed: the old generation's socket
// handed over in place of the one bound beside it (a fenced reload whose
// old generation died), whose swap then has no fence and its own copy.
func (h *Holdings) Replace(old, n *Held) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, v := range h.socks {
		if v == old {
			h.socks[k] = n
		}
	}
	for _, sw := range h.swaps {
		if sw.Fence == old.Fence {
			sw.Fence, sw.Via = nil, "own-copy"
		}
	}
}

// Release lets go of the old processes of swaps that will not be
// completed: the generation exited before it could stop them, or was
// rolled back.
func (h *Holdings) Release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sw := range h.swaps {
		sw.Abandon()
	}
}

// HandedOverFromRunning reports whether the generation took a socket over
// from a server that still runs: one a rebind has not stopped already (a
// handoff, or a rename over a unix path). A generation with no socket to
// take over (start_server with no --port) replaces prev, the one before
// it, if it runs.
func (h *Holdings) HandedOverFromRunning(prev *Holdings) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.swaps) == 0 {
		return prev != nil && !prev.Inherited && !prev.hasExited()
	}
	for _, sw := range h.swaps {
		if sw.Strategy != "rebind" && len(sw.OldProcs) > 0 { // a fresh bind's too: an old server beside it
			return true
		}
	}
	return false
}

// Claim completes the generation's swaps unless it has exited (ok is
// false): a unix path bound beside is renamed over (until now connects
// reached the old server), and the old processes to stop are taken out of
// the swaps, so that a release of the generation from now on leaves them
// alone. A swap whose rename fails leaves the old server serving, unstopped.
func (h *Holdings) Claim(log *slog.Logger) (stop Stops, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hasExited() {
		return nil, false
	}
	for _, sw := range h.swaps {
		sw.Nonblock.Drop() // from now on the new server's
		sw.Nonblock = nil
		if err := sw.Path.RenameOver(); err != nil {
			log.Error("cannot rename the new unix socket over its path; the old server keeps it, and is not stopped", "path", sw.Spec.Path, "err", err)
			sw.Abandon()
			continue
		}
		if len(sw.OldProcs) == 0 {
			sw.Path.Finish()
			sw.Path = nil
			continue
		}
		stop = append(stop, Stop{Record: sw, Path: sw.Path, Procs: sw.OldProcs, Holders: sw.Holders})
		sw.Path, sw.OldProcs, sw.Holders = nil, nil, nil
	}
	return stop, true
}

// ClaimExited takes out of the handoffs of a generation that exited before
// its swap completed the old processes still to stop: the restarted
// generation, on the same sockets, stops them. (A unix path's swap is
// rolled back instead, by Release.)
func (h *Holdings) ClaimExited() Stops {
	h.mu.Lock()
	defer h.mu.Unlock()
	var stop Stops
	for _, sw := range h.swaps {
		if sw.Spec.Net == target.NetUnix || sw.Strategy != "handoff" || len(sw.OldProcs) == 0 {
			continue
		}
		stop = append(stop, Stop{Record: sw, Procs: sw.OldProcs, Holders: sw.Holders})
		sw.OldProcs, sw.Holders = nil, nil
	}
	return stop
}

// TakeSwap moves the swap of spec, with the old processes it is to stop
// and its unix path, to a copy the caller owns; nil if there is none.
func (h *Holdings) TakeSwap(spec target.Spec) *Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sw := range h.swaps {
		if sw.Spec == spec {
			c := *sw
			sw.OldProcs, sw.Holders, sw.Path = nil, nil, nil
			return &c
		}
	}
	return nil
}

// ReplacedIn names, in sw, the generation as the old server whose socket
// old a newer generation of the same launcher takes: a reload, a restart.
// Sockets systemd passed had no server: only where they came from is said.
func (h *Holdings) ReplacedIn(sw *Record, old *Held) {
	sw.Inodes = []uint64{old.Inode}
	if h.Inherited {
		sw.Via = old.Via
		return
	}
	sw.Old = []owner.StopTarget{{PID: h.PID, Holder: owner.Holder{PID: h.PID}}}
	if !h.hasExited() {
		// (A restart's prev has died and been reaped: its pid may be
		// another process's by now, never to be opened.)
		sw.OldCmd = owner.CommandLine(h.PID)
		sw.OldProcs, sw.Holders = pidfd.OpenAll([]int{h.PID}), pidfd.OpenAll([]int{h.PID})
	}
	sw.Via = "own-copy"
}

// HeldFor returns the socket for the target (at addr, for TCP and UDP), if
// the generation still holds one.
func (h *Holdings) HeldFor(spec target.Spec, addr netip.AddrPort) *Held {
	return h.heldWhere(func(s *Held) bool { return s.fits(spec, addr) })
}

func (s *Held) fits(spec target.Spec, addr netip.AddrPort) bool {
	return s.Spec.Net == spec.Net && (spec.Net == target.NetUnix && s.Spec == spec || spec.Net != target.NetUnix && s.Addr == addr)
}

// DupHeld returns a copy of the socket for the target, or -1 if the
// generation holds none: a socket to set options on that CloseCopies
// cannot close (and its number be reused) meanwhile.
func (h *Holdings) DupHeld(spec target.Spec, addr netip.AddrPort) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.socks {
		if s.fits(spec, addr) {
			if fd, err := unix.FcntlInt(uintptr(s.CopyFD), unix.F_DUPFD_CLOEXEC, 0); err == nil {
				return fd
			}
		}
	}
	return -1
}

// DupForSpec returns the socket held for spec, at whatever address, and a
// copy of it (close-on-exec, the caller's to close); nil if there is none.
func (h *Holdings) DupForSpec(spec target.Spec) (*Held, int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var old *Held
	for _, s := range h.socks {
		if s.Spec == spec {
			old = s
		}
	}
	if old == nil {
		return nil, -1, nil
	}
	fd, err := unix.FcntlInt(uintptr(old.CopyFD), unix.F_DUPFD_CLOEXEC, 0)
	return old, fd, err
}

// FencedSocks returns the sockets bound beside an old server's in a fenced
// handoff.
func (h *Holdings) FencedSocks() []*Held {
	h.mu.Lock()
	defer h.mu.Unlock()
	var fs []*Held
	for _, s := range h.socks {
		if s.Fence != nil {
			fs = append(fs, s)
		}
	}
	return fs
}

// HeldForSpec returns the socket for the target, at whatever address.
func (h *Holdings) HeldForSpec(spec target.Spec) *Held {
	return h.heldWhere(func(s *Held) bool { return s.Spec == spec })
}

// HoldsSockets reports whether takeover holds copies of any of the
// generation's sockets.
func (h *Holdings) HoldsSockets() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.socks) > 0 && !h.done
}

// HeldByInode returns the socket with inode ino, or nil.
func (h *Holdings) HeldByInode(ino uint64) *Held {
	return h.heldWhere(func(s *Held) bool { return s.Inode == ino })
}

// DupByInode returns a new fd (close-on-exec), the caller's to close, for
// the socket with inode ino. It is taken under the lock that CloseCopies
// holds, so it is never a copy already closed, nor an fd number some other
// file has taken since.
func (h *Holdings) DupByInode(ino uint64) (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.socks {
		if s.Inode == ino {
			fd, err := unix.FcntlInt(uintptr(s.CopyFD), unix.F_DUPFD_CLOEXEC, 0)
			return fd, err == nil
		}
	}
	return -1, false
}

// heldWhere returns a socket held that match accepts.
func (h *Holdings) heldWhere(match func(*Held) bool) *Held {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.socks {
		if match(s) {
			return s
		}
	}
	return nil
}

// CloseCopies closes takeover's copies of the sockets, so that they keep
// no port from freeing once the generation is on its way out.
func (h *Holdings) CloseCopies() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done = true
	for k, s := range h.socks {
		unix.Close(s.CopyFD)
		delete(h.socks, k)
	}
}
