package supervise

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/takeover/takeover/internal/fdpass"
	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// takePort gives the command the address it asked for: at once if the port
// is free; by handoff or rebind if an earlier instance holds it and policy
// allows. It returns the swap and the socket takeover keeps a copy of (the
// command's own, or after a handoff the old one); c.sock is consumed only
// when it succeeds.
func (l *Launcher) takePort(ctx context.Context, g *generation, c swap.Claim) (*swap.Swap, int, error) {
	began := time.Now()
	sw := &swap.Swap{Spec: c.Spec, Addr: c.Addr}
	if g.prev != nil {
		if old := g.prev.heldFor(c.Spec, c.Addr); old != nil {
			sw.Lookup = time.Since(began)
			return l.replaceGeneration(ctx, g, c, sw, old)
		}
		if old := g.prev.heldForSpec(c.Spec); old != nil && g.prev.inherited {
			return nil, -1, fmt.Errorf("the socket systemd passed for %s is bound to %s, and the command binds %s: make them the same (the socket unit's ListenStream=, or the command's address) (%w)",
				c.Spec, c.Spec.BoundAt(old.addr), c.Spec.BoundAt(c.Addr), unix.EADDRINUSE)
		}
	}
	key, what := c.Spec.Key(), c.Spec.Describe()
	var hint []int
	prev, hasPrev := rundir.ReadRecord(l.Dir, key)
	if hasPrev && prev.Launcher != l.Self {
		hint = []int{prev.Launcher}
	}
	all, err := owner.Listeners("/proc", c.Spec.WholePort(), hint, len(hint) > 0)
	if err != nil {
		return nil, -1, fmt.Errorf("look up %s: %w", what, err)
	}
	// Only the sockets that keep this bind from succeeding are owners: an
	// IPv6-only [::] beside an IPv4 bind is not (nginx's second listener,
	// handed over at its own bind; or another service, left alone).
	want := target.InetBind{Addr: c.Addr, V6Only: swap.V6Only(c.Sock)}
	var owners []owner.Listener
	for _, o := range all {
		if c.Spec.Net != target.NetUnix && !target.Conflicts(want, target.InetBind{Addr: o.Addr, V6Only: o.V6Only}) {
			continue
		}
		kept := len(o.Holders) > 0
		o.Holders = slices.DeleteFunc(o.Holders, isServiceManager)
		if kept && len(o.Holders) == 0 {
			return nil, -1, fmt.Errorf("%s is held by systemd alone (a socket unit, or a unit's file descriptor store): run this takeover in that unit, which gets the socket passed, and deploy with systemctl reload (%w)", what, unix.EADDRINUSE)
		}
		if !l.ownedBySelf(o) {
			owners = append(owners, o)
		}
	}
	sw.Lookup = time.Since(began)
	if len(owners) == 0 {
		sw.Strategy = "fresh"
		swap.FreshInGroup(c, l.Cfg.fence())
		if err := c.Bind(c.Sock); err != nil {
			return nil, -1, err
		}
		if hasPrev && prev.Launcher != l.Self {
			l.replacedBeside(sw, all, prev.Launcher, c)
		}
		return sw, c.Sock, nil
	}

	launchers := rundir.LiveLaunchers(l.Dir)
	var holderPIDs, targetPIDs []int
	for _, o := range owners {
		if len(o.Holders) == 0 {
			return nil, -1, fmt.Errorf("%s is held by a process this user cannot see: %w", what, unix.EADDRINUSE)
		}
		for _, t := range owner.StopTargets("/proc", o, launchers) {
			sw.Old = append(sw.Old, t)
			targetPIDs = append(targetPIDs, t.PID)
		}
		for _, h := range o.Holders {
			holderPIDs = append(holderPIDs, h.PID)
		}
		sw.Inodes = append(sw.Inodes, o.Inode)
	}
	// The pidfds first, then the checks: a process looked up may have
	// exited and its pid been reused since; checked after its pidfd is
	// open, the process the checks read is the one the pidfd signals.
	sw.OldProcs, sw.Holders = pidfd.OpenAll(targetPIDs), pidfd.OpenAll(holderPIDs)
	if err := l.CheckOld(sw, c.Child, what); err != nil {
		sw.ReleaseOld()
		return nil, -1, fmt.Errorf("%w (%w)", err, unix.EADDRINUSE)
	}
	sw.OldCmd = owner.CommandLine(sw.Old[0].Holder.PID)

	if l.Cfg.Strategy != "rebind" {
		old, why := l.copyOldSocket(owners, sw)
		if held, done, err := l.handoffOrFallBack(g, c, sw, old, why); done {
			return l.settled(sw, held, err)
		}
	}
	// Name this takeover as the target's launcher before the old one is
	// signalled: that is how it knows it was replaced, not stopped. (A unix
	// path's old server is signalled only once the swap completes.)
	if c.Spec.Net == target.NetUnix {
		return l.settled(sw, c.Sock, l.rebind(ctx, c, sw))
	}
	if err := rundir.WriteRecord(l.Dir, key, rundir.GenRecord{Launcher: l.Self, LauncherStart: l.Born, StopSignal: int(l.Cfg.signal())}); err != nil {
		return l.settled(sw, -1, fmt.Errorf("record the generation of %s: %w", what, err))
	}
	if err := l.rebind(ctx, c, sw); err != nil {
		if hasPrev {
			rundir.WriteRecord(l.Dir, key, prev)
		}
		return l.settled(sw, -1, err)
	}
	return sw, c.Sock, nil
}

// checkOld checks the old processes of sw, their pidfds open: each stop
// target may be replaced (mayReplace), as before; a holder that no longer
// holds one of the old sockets is let go of (it closed it, or its pid is
// another process's now), and so is a target that is not a holder still
// nor (a takeover launcher) an ancestor of one; and each is alive at the
// end, so that what /proc said of its pid was said of it.
func (l *Launcher) CheckOld(sw *swap.Swap, child owner.NewChild, what string) error {
	held, err := owner.StillHolding("/proc", sw.Inodes, pidfd.PidsOf(sw.Holders))
	if err != nil {
		return fmt.Errorf("look up the holders of %s again: %w", what, err)
	}
	verified := make(map[int]bool)
	for _, t := range sw.Old {
		if err := owner.MayReplace("/proc", t, child, what, l.Cfg.Force); err != nil {
			return err
		}
		verified[t.PID] = slices.Contains(held, t.PID) ||
			t.Launcher && slices.Contains(held, t.Holder.PID) && owner.IsAncestor("/proc", t.PID, t.Holder.PID)
	}
	alive := func(p *pidfd.OldProcess) bool { return p.Signal(0) == nil }
	sw.OldProcs = swap.KeepOnly(sw.OldProcs, func(p *pidfd.OldProcess) bool { return verified[p.PID] && alive(p) })
	sw.Holders = swap.KeepOnly(sw.Holders, func(p *pidfd.OldProcess) bool { return slices.Contains(held, p.PID) && alive(p) })
	return nil
}

// replacedBeside names in sw, as the old server to stop once the new one is
// ready, the earlier takeover of the target (launcher, from its record)
// where it holds sockets of the port that the command's bind does not
// conflict with: it served 0.0.0.0:P, and the new server binds an
// IPv6-only [::]:P and nothing else. The new generation replaces it all
// the same, with no socket of it to take. Nothing else on the port is
// named: not another service's IPv6-only socket.
func (l *Launcher) replacedBeside(sw *swap.Swap, all []owner.Listener, launcher int, c swap.Claim) {
	launchers := rundir.LiveLaunchers(l.Dir)
	if !slices.Contains(launchers, launcher) {
		return
	}
	// The pidfd first, then the checks: they read the process it signals.
	p, err := pidfd.OpenOld(launcher)
	if err != nil {
		return
	}
	var holderPIDs []int
	var inodes []uint64
	var target *owner.StopTarget
	own := func(h owner.Holder) bool { return h.PID == l.Self || owner.IsAncestor("/proc", l.Self, h.PID) }
	for _, o := range all {
		if slices.ContainsFunc(o.Holders, own) {
			continue // this takeover's, or handed over to it at an earlier bind
		}
		for _, t := range owner.StopTargets("/proc", o, launchers) {
			if !t.Launcher || t.PID != launcher || owner.MayReplace("/proc", t, c.Child, c.Spec.Describe(), false) != nil {
				continue
			}
			if target == nil {
				target = &t
			}
			for _, h := range o.Holders {
				holderPIDs = append(holderPIDs, h.PID)
			}
			inodes = append(inodes, o.Inode)
		}
	}
	exited := func() bool { // a pidfd reads ready once its process has exited
		fds := []unix.PollFd{{Fd: int32(p.Pidfd), Events: unix.POLLIN}}
		n, _ := unix.Poll(fds, 0)
		return n > 0
	}
	if target == nil || exited() {
		p.Close() // nothing of it here, or it exited meanwhile (its pid may be another's)
		return
	}
	sw.Old, sw.Inodes = []owner.StopTarget{*target}, inodes
	sw.Why = "the earlier takeover's sockets do not conflict with this bind: it is stopped once the new server is ready"
	sw.OldCmd = owner.CommandLine(target.Holder.PID)
	sw.OldProcs, sw.Holders = []*pidfd.OldProcess{p}, pidfd.OpenAll(holderPIDs)
}

// replaceGeneration takes a port over from the launcher's own previous
// generation, in a reload: from takeover's own copy of its socket.
func (l *Launcher) replaceGeneration(ctx context.Context, g *generation, c swap.Claim, sw *swap.Swap, old *heldSock) (*swap.Swap, int, error) {
	prev := g.prev
	prev.replacedIn(sw, old)
	if prev.inherited {
		held, err := l.handInherited(g, c, sw, old)
		return l.settled(sw, held, err)
	}
	if l.Cfg.Strategy != "rebind" {
		dup, why := -1, ""
		if fd, err := unix.FcntlInt(uintptr(old.copyFD), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			why = fmt.Sprintf("cannot copy the old socket: %v", err)
		} else {
			dup = fd
		}
		if held, done, err := l.handoffOrFallBack(g, c, sw, dup, why); done {
			return l.settled(sw, held, err)
		}
	}
	if c.Spec.Net != target.NetUnix { // a rename leaves the old generation serving: it may yet be rolled back to
		prev.closeCopies()
	}
	if err := l.rebind(ctx, c, sw); err != nil {
		return l.settled(sw, -1, err)
	}
	return sw, c.Sock, nil
}

// handInherited gives the command a socket systemd passed. There is no
// rebind to fall back on: systemd keeps its copy, so the port never frees.
func (l *Launcher) handInherited(g *generation, c swap.Claim, sw *swap.Swap, old *heldSock) (int, error) {
	dup, err := unix.FcntlInt(uintptr(old.copyFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("copy the socket systemd passed for %s: %w", c.Spec, err)
	}
	if why := swap.HandoffMismatch(dup, c.Sock, c.Spec, c.Addr); why != "" {
		unix.Close(dup)
		return -1, fmt.Errorf("the socket systemd passed for %s does not fit the command's bind: %s (%w)", c.Spec, strings.Replace(why, "old socket", "passed socket", 1), unix.EADDRINUSE)
	}
	return l.handoff(g, c, sw, dup)
}

// replacedIn names, in sw, the generation as the old server whose socket
// old a newer generation of the same launcher takes: a reload, a restart.
// Sockets systemd passed had no server: only where they came from is said.
func (prev *generation) replacedIn(sw *swap.Swap, old *heldSock) {
	sw.Inodes = []uint64{old.inode}
	if prev.inherited {
		sw.Via = old.via
		return
	}
	sw.Old = []owner.StopTarget{{PID: prev.pid, Holder: owner.Holder{PID: prev.pid}}}
	if !prev.hasExited() {
		// (A restart's prev has died and been reaped: its pid may be
		// another process's by now, never to be opened.)
		sw.OldCmd = owner.CommandLine(prev.pid)
		sw.OldProcs, sw.Holders = pidfd.OpenAll([]int{prev.pid}), pidfd.OpenAll([]int{prev.pid})
	}
	sw.Via = "own-copy"
}

// handoffOrFallBack hands old (which it takes over; -1 when there is none,
// and why says so) to the command if it can stand in for the command's own
// socket. When it cannot, --strategy handoff refuses the bind, and auto
// records why in sw and leaves the rebind to the caller: done is false.
func (l *Launcher) handoffOrFallBack(g *generation, c swap.Claim, sw *swap.Swap, old int, why string) (held int, done bool, err error) {
	if why == "" {
		why = swap.HandoffMismatch(old, c.Sock, c.Spec, c.Addr)
	}
	if why == "" {
		if held, ok := l.fenced(c, sw, old); ok {
			return held, true, nil
		}
		held, err := l.handoff(g, c, sw, old)
		return held, true, err
	}
	if old >= 0 {
		unix.Close(old)
	}
	if l.Cfg.Strategy == "handoff" {
		return -1, true, fmt.Errorf("--strategy handoff: cannot hand %s over: %s (%w)", c.Spec.Describe(), why, unix.EADDRINUSE)
	}
	sw.Why = why
	return -1, false, nil
}

// fenced binds the command's own socket beside old in a fenced handoff
// (fence_linux.go), where one fits: a TCP target (the command's socket, or
// one takeover makes to pass on), an old server that runs, fencing not
// turned off. It then closes old and returns the new socket; otherwise it
// records why not in sw.
func (l *Launcher) fenced(c swap.Claim, sw *swap.Swap, old int) (int, bool) {
	switch {
	case !l.Cfg.fence() || c.Spec.Net != "":
		return -1, false
	case len(sw.OldProcs) == 0:
		return -1, false // a restart: no old server to fence
	}
	f, why := swap.FenceBeside(c, old)
	if f == nil {
		sw.NotFenced = why
		return -1, false
	}
	unix.Close(old)
	sw.Strategy, sw.Fence = "handoff", f
	return c.Sock, true
}

// settled ends takePort: on failure it lets go of the old processes the swap
// had opened, so that no pidfd outlives a refused bind.
func (l *Launcher) settled(sw *swap.Swap, held int, err error) (*swap.Swap, int, error) {
	if err != nil {
		sw.Abandon()
		return nil, -1, err
	}
	return sw, held, nil
}

// handoff installs old in the command at its fd and answers its bind; it
// returns old, now the socket takeover keeps a copy of.
func (l *Launcher) handoff(g *generation, c swap.Claim, sw *swap.Swap, old int) (int, error) {
	if c.Install != nil {
		undo := swap.WatchBlocking(old)
		if err := c.Install(old); err != nil {
			undo.Drop()
			unix.Close(old)
			return -1, fmt.Errorf("hand the old socket over: %w", err)
		}
		sw.Nonblock = undo.IfSet()
	}
	unix.Close(c.Sock) // the command's own socket, now closed in the command too
	sw.Strategy = "handoff"
	if c.Spec.Net == target.NetUnix && len(sw.OldProcs) > 0 {
		sw.Path = swap.KeepHandedOver(c.Spec.Path)
	}
	return old, nil
}

// rebind stops the old holders and binds the command's socket once the port
// frees.
// A unix socket's path is replaced instead: the old server keeps serving
// until the new one is ready, as in a handoff.
func (l *Launcher) rebind(ctx context.Context, c swap.Claim, sw *swap.Swap) error {
	if c.Spec.Net == target.NetUnix {
		return l.bindBeside(c, sw)
	}
	sw.Strategy = "rebind"
	l.store.Remove(c.Spec.StoreName()) // systemd's copy would keep the port from freeing
	bctx, cancel := context.WithTimeout(ctx, l.Cfg.EffectiveBindTimeout())
	defer cancel()
	var err error
	sw.RebindTimes, err = l.Cfg.Rebind(bctx, swap.Rebind{
		Sock: c.Sock, Addr: c.Addr, Old: sw.OldProcs, Holders: sw.Holders, Inodes: sw.Inodes,
		Signal: l.Cfg.signal(), KillTimeout: l.Cfg.killTimeout(),
	})
	return err
}

// copyOldSocket takes a copy of the one listening socket that can be handed
// over: from the takeover launcher that holds it, over its unix socket
// (SCM_RIGHTS needs no ptrace rights), or else with pidfd_getfd from the
// stop target or another holder. It returns -1 and why when there is none,
// and records in sw how it got the socket.
func (l *Launcher) copyOldSocket(owners []owner.Listener, sw *swap.Swap) (int, string) {
	if len(owners) != 1 {
		return -1, fmt.Sprintf("the port is held by %d sockets, not one", len(owners))
	}
	o, target := owners[0], sw.Old[0]
	var errs []string
	if target.Launcher {
		sock, err := fdpass.FetchSocket(rundir.LauncherSockPath(l.Dir, target.PID), target.PID, o.Inode, fdpass.FetchTimeout)
		if err == nil {
			sw.Via = "unix-socket"
			return sock, ""
		}
		errs = append(errs, err.Error())
	}
	var from []owner.Holder
	for _, h := range o.Holders {
		if h.PID == target.PID {
			from = append([]owner.Holder{h}, from...)
		} else {
			from = append(from, h)
		}
	}
	for _, h := range from {
		sock, ino, err := pidfd.CopySocket(h.PID, h.FD)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if ino == o.Inode {
			sw.Via = "pidfd_getfd"
			return sock, ""
		}
		unix.Close(sock)
	}
	why := "cannot copy the old socket: " + strings.Join(slices.Compact(errs), "; ")
	if slices.ContainsFunc(errs, func(e string) bool { return strings.Contains(e, "operation not permitted") }) {
		why += "; " + ptraceAdvice
	}
	return -1, why
}

// heldSocket returns takeover's copy of a socket one of its generations
// holds, for a newer takeover.
func (l *Launcher) heldSocket(inode uint64) (int, bool) {
	l.mu.Lock()
	gens := slices.Clone(l.gens)
	l.mu.Unlock()
	for _, g := range gens {
		// A dup, not the copy itself: the generation may close its copies
		// (closeCopies) while the fd is on its way.
		if fd, ok := g.dupByInode(inode); ok {
			return fd, true
		}
	}
	return -1, false
}

// isServiceManager reports whether a holder of a socket is systemd (pid 1,
// or a user's manager), which keeps socket units' sockets and services'
// stored ones but never accepts on them: not a server to replace or stop.
// Not by its name, which any process may take (serviceManager).
func isServiceManager(h owner.Holder) bool {
	return owner.ServiceManager("/proc", h.PID)
}

// ownedBySelf reports whether a listener is this takeover's own: held only
// by takeover itself and its descendants (a prefork child binding a second
// SO_REUSEPORT socket).
func (l *Launcher) ownedBySelf(o owner.Listener) bool {
	if len(o.Holders) == 0 {
		return false
	}
	for _, h := range o.Holders {
		if h.PID != l.Self && !owner.IsAncestor("/proc", l.Self, h.PID) {
			return false
		}
	}
	return true
}

// bindBeside binds the claim's socket at a temporary name beside the path,
// for a rename over it once the command is ready: the replacement of the
// path when the old listener cannot be handed over.
func (l *Launcher) bindBeside(c swap.Claim, sw *swap.Swap) error {
	sw.Strategy = "rename"
	ps := &swap.PathSwap{Path: c.Spec.Path, Pending: swap.SideName(c.Spec.Path, "new")}
	if len(ps.Pending) >= len(unix.RawSockaddrUnix{}.Path) {
		return fmt.Errorf("cannot replace %s by a rename: the name beside it, %s, is longer than a unix socket's path may be; shorten the path, or let the old socket be handed over", c.Spec.Path, ps.Pending)
	}
	if err := c.BindPath(c.Sock, ps.Pending); err != nil {
		return fmt.Errorf("bind beside %s: %w", c.Spec.Path, err)
	}
	sw.Path = ps
	return nil
}
