package swap

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/takeover/takeover/internal/fdpass"
	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/systemd"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// Options are what a Taker is told once, by the launcher.
type Options struct {
	Strategy    string // auto, handoff or rebind
	Fence       bool   // a TCP handoff gives the new server a socket beside the old one's
	Force       bool   // replace a holder that is not an earlier instance
	Signal      unix.Signal
	BindTimeout time.Duration // from the command's bind to giving up a rebind
	KillTimeout time.Duration // from the stop signal to SIGKILL
	Dir         *rundir.Dir
	Self        int            // the launcher's pid
	Born        uint64         // its start time, for the generation records
	Store       *systemd.Store // the unit's file descriptor store; nil outside systemd
	Rebind      Rebinder       // the rebind strategy: retrybind.go's, plugged in by the command line
}

// A Taker gives a generation's binds their targets: at once if the port is
// free; by handoff (fenced where it can be) or rebind if an earlier instance
// holds it and the policy allows. It knows no launcher and no generation:
// what the generation before holds comes in as Holdings.
type Taker struct {
	Options
}

// NewTaker returns a Taker told o.
func NewTaker(o Options) *Taker { return &Taker{o} }

// Take gives the command the address it asked for: at once if the port
// is free; by handoff or rebind if an earlier instance holds it and policy
// allows. It returns the swap and the socket takeover keeps a copy of (the
// command's own, or after a handoff the old one); c.sock is consumed only
// when it succeeds.
func (t *Taker) Take(ctx context.Context, c Claim, prev *Holdings) (*Record, int, error) {
	began := time.Now()
	sw := &Record{Spec: c.Spec, Addr: c.Addr}
	if prev != nil {
		if old := prev.HeldFor(c.Spec, c.Addr); old != nil {
			sw.Lookup = time.Since(began)
			return t.replaceGeneration(ctx, prev, c, sw, old)
		}
		if old := prev.HeldForSpec(c.Spec); old != nil && prev.Inherited {
			return nil, -1, fmt.Errorf("the socket systemd passed for %s is bound to %s, and the command binds %s: make them the same (the socket unit's ListenStream=, or the command's address) (%w)",
				c.Spec, c.Spec.BoundAt(old.Addr), c.Spec.BoundAt(c.Addr), unix.EADDRINUSE)
		}
	}
	key, what := c.Spec.Key(), c.Spec.Describe()
	var hint []int
	rec, hasRec := rundir.ReadRecord(t.Dir, key)
	if hasRec && rec.Launcher != t.Self {
		hint = []int{rec.Launcher}
	}
	all, err := owner.Listeners("/proc", c.Spec.WholePort(), hint, len(hint) > 0)
	if err != nil {
		return nil, -1, fmt.Errorf("look up %s: %w", what, err)
	}
	// Only the sockets that keep this bind from succeeding are owners: an
	// IPv6-only [::] beside an IPv4 bind is not (nginx's second listener,
	// handed over at its own bind; or another service, left alone).
	want := target.InetBind{Addr: c.Addr, V6Only: v6Only(c.Sock)}
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
		if !t.ownedBySelf(o) {
			owners = append(owners, o)
		}
	}
	sw.Lookup = time.Since(began)
	if len(owners) == 0 {
		sw.Strategy = "fresh"
		freshInGroup(c, t.Fence)
		if err := c.Bind(c.Sock); err != nil {
			return nil, -1, err
		}
		if hasRec && rec.Launcher != t.Self {
			t.replacedBeside(sw, all, rec, c)
		}
		return sw, c.Sock, nil
	}

	launchers := rundir.LiveLaunchers(t.Dir)
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
	if err := t.checkOld(sw, c.Child, what); err != nil {
		sw.releaseOld()
		return nil, -1, fmt.Errorf("%w (%w)", err, unix.EADDRINUSE)
	}
	sw.OldCmd = owner.CommandLine(sw.Old[0].Holder.PID)

	if t.Strategy != "rebind" {
		old, why := t.copyOldSocket(owners, sw)
		if held, done, err := t.handoffOrFallBack(c, sw, old, why); done {
			return t.settled(sw, held, err)
		}
	}
	// Name this takeover as the target's launcher before the old one is
	// signalled: that is how it knows it was replaced, not stopped. (A unix
	// path's old server is signalled only once the swap completes.)
	if c.Spec.Net == target.NetUnix {
		return t.settled(sw, c.Sock, t.rebind(ctx, c, sw))
	}
	if err := rundir.WriteRecord(t.Dir, key, rundir.Record{Launcher: t.Self, LauncherStart: t.Born, StopSignal: int(t.Signal)}); err != nil {
		return t.settled(sw, -1, fmt.Errorf("record the generation of %s: %w", what, err))
	}
	if err := t.rebind(ctx, c, sw); err != nil {
		if hasRec {
			rundir.WriteRecord(t.Dir, key, rec)
		}
		return t.settled(sw, -1, err)
	}
	return sw, c.Sock, nil
}

// checkOld checks the old processes of sw, their pidfds open: each stop
// target may be replaced (mayReplace), as before; a holder that no longer
// holds one of the old sockets is let go of (it closed it, or its pid is
// another process's now), and so is a target that is not a holder still
// nor (a takeover launcher) an ancestor of one; and each is alive at the
// end, so that what /proc said of its pid was said of it.
func (t *Taker) checkOld(sw *Record, child owner.Child, what string) error {
	held, err := owner.StillHolding("/proc", sw.Inodes, pidfd.PIDsOf(sw.Holders))
	if err != nil {
		return fmt.Errorf("look up the holders of %s again: %w", what, err)
	}
	verified := make(map[int]bool)
	for _, st := range sw.Old {
		if err := owner.MayReplace("/proc", st, child, what, t.Force); err != nil {
			return err
		}
		verified[st.PID] = slices.Contains(held, st.PID) ||
			st.Launcher && slices.Contains(held, st.Holder.PID) && owner.IsAncestor("/proc", st.PID, st.Holder.PID)
	}
	alive := func(p *pidfd.Process) bool { return p.Signal(0) == nil }
	sw.OldProcs = keepOnly(sw.OldProcs, func(p *pidfd.Process) bool { return verified[p.PID] && alive(p) })
	sw.Holders = keepOnly(sw.Holders, func(p *pidfd.Process) bool { return slices.Contains(held, p.PID) && alive(p) })
	return nil
}

// replacedBeside names in sw, as the old server to stop once the new one is
// ready, the earlier takeover of the target (rec, its record)
// where it holds sockets of the port that the command's bind does not
// conflict with: it served 0.0.0.0:P, and the new server binds an
// IPv6-only [::]:P and nothing else. The new generation replaces it all
// the same, with no socket of it to take. Nothing else on the port is
// named: not another service's IPv6-only socket.
func (t *Taker) replacedBeside(sw *Record, all []owner.Listener, rec rundir.Record, c Claim) {
	launcher := rec.Launcher
	launchers := rundir.LiveLaunchers(t.Dir)
	if !slices.Contains(launchers, launcher) {
		return
	}
	// The pidfd first, then the checks: they read the process it signals.
	p, err := pidfd.OpenStarted(procfs.FS("/proc"), launcher, rec.LauncherStart)
	if err != nil {
		return
	}
	var holderPIDs []int
	var inodes []uint64
	var target *owner.StopTarget
	own := func(h owner.Holder) bool { return h.PID == t.Self || owner.IsAncestor("/proc", t.Self, h.PID) }
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
	if target == nil || pidfd.Exited(p.FD) {
		p.Close() // nothing of it here, or it exited meanwhile (its pid may be another's)
		return
	}
	sw.Old, sw.Inodes = []owner.StopTarget{*target}, inodes
	sw.Why = "the earlier takeover's sockets do not conflict with this bind: it is stopped once the new server is ready"
	sw.OldCmd = owner.CommandLine(target.Holder.PID)
	sw.OldProcs, sw.Holders = []*pidfd.Process{p}, pidfd.OpenAll(holderPIDs)
}

// replaceGeneration takes a port over from the launcher's own previous
// generation, in a reload: from takeover's own copy of its socket.
func (t *Taker) replaceGeneration(ctx context.Context, prev *Holdings, c Claim, sw *Record, old *Held) (*Record, int, error) {
	prev.ReplacedIn(sw, old)
	if prev.Inherited {
		held, err := t.handInherited(c, sw, old)
		return t.settled(sw, held, err)
	}
	if t.Strategy != "rebind" {
		dup, why := -1, ""
		if fd, err := unix.FcntlInt(uintptr(old.CopyFD), unix.F_DUPFD_CLOEXEC, 0); err != nil {
			why = fmt.Sprintf("cannot copy the old socket: %v", err)
		} else {
			dup = fd
		}
		if held, done, err := t.handoffOrFallBack(c, sw, dup, why); done {
			return t.settled(sw, held, err)
		}
	}
	if c.Spec.Net != target.NetUnix { // a rename leaves the old generation serving: it may yet be rolled back to
		prev.CloseCopies()
	}
	if err := t.rebind(ctx, c, sw); err != nil {
		return t.settled(sw, -1, err)
	}
	return sw, c.Sock, nil
}

// handInherited gives the command a socket systemd passed. There is no
// rebind to fall back on: systemd keeps its copy, so the port never frees.
func (t *Taker) handInherited(c Claim, sw *Record, old *Held) (int, error) {
	dup, err := unix.FcntlInt(uintptr(old.CopyFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("copy the socket systemd passed for %s: %w", c.Spec, err)
	}
	if why := HandoffMismatch(dup, c.Sock, c.Spec, c.Addr); why != "" {
		unix.Close(dup)
		return -1, fmt.Errorf("the socket systemd passed for %s does not fit the command's bind: %s (%w)", c.Spec, strings.Replace(why, "old socket", "passed socket", 1), unix.EADDRINUSE)
	}
	return t.handoff(c, sw, dup)
}

// handoffOrFallBack hands old (which it takes over; -1 when there is none,
// and why says so) to the command if it can stand in for the command's own
// socket. When it cannot, --strategy handoff refuses the bind, and auto
// records why in sw and leaves the rebind to the caller: done is false.
func (t *Taker) handoffOrFallBack(c Claim, sw *Record, old int, why string) (held int, done bool, err error) {
	if why == "" {
		why = HandoffMismatch(old, c.Sock, c.Spec, c.Addr)
	}
	if why == "" {
		if held, ok := t.fenced(c, sw, old); ok {
			return held, true, nil
		}
		held, err := t.handoff(c, sw, old)
		return held, true, err
	}
	if old >= 0 {
		unix.Close(old)
	}
	if t.Strategy == "handoff" {
		return -1, true, fmt.Errorf("--strategy handoff: cannot hand %s over: %s (%w)", c.Spec.Describe(), why, unix.EADDRINUSE)
	}
	sw.Why = why
	return -1, false, nil
}

// fenced binds the command's own socket beside old in a fenced handoff
// (fence.go), where one fits: a TCP target (the command's socket, or
// one takeover makes to pass on), an old server that runs, fencing not
// turned off. It then closes old and returns the new socket; otherwise it
// records why not in sw.
func (t *Taker) fenced(c Claim, sw *Record, old int) (int, bool) {
	switch {
	case !t.Fence || c.Spec.Net != "":
		return -1, false
	case len(sw.OldProcs) == 0:
		return -1, false // a restart: no old server to fence
	}
	f, why := FenceBeside(c, old)
	if f == nil {
		sw.NotFenced = why
		return -1, false
	}
	unix.Close(old)
	sw.Strategy, sw.Fence = "handoff", f
	return c.Sock, true
}

// settled ends Take: on failure it lets go of the old processes the swap
// had opened, so that no pidfd outlives a refused bind.
func (t *Taker) settled(sw *Record, held int, err error) (*Record, int, error) {
	if err != nil {
		sw.Abandon()
		return nil, -1, err
	}
	return sw, held, nil
}

// handoff installs old in the command at its fd and answers its bind; it
// returns old, now the socket takeover keeps a copy of.
func (t *Taker) handoff(c Claim, sw *Record, old int) (int, error) {
	if c.Install != nil {
		undo := watchBlocking(old)
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
		sw.Path = KeepHandedOver(c.Spec.Path)
	}
	return old, nil
}

// rebind stops the old holders and binds the command's socket once the port
// frees.
// A unix socket's path is replaced instead: the old server keeps serving
// until the new one is ready, as in a handoff.
func (t *Taker) rebind(ctx context.Context, c Claim, sw *Record) error {
	if c.Spec.Net == target.NetUnix {
		return t.bindBeside(c, sw)
	}
	sw.Strategy = "rebind"
	t.Store.Remove(c.Spec.StoreName()) // systemd's copy would keep the port from freeing
	bctx, cancel := context.WithTimeout(ctx, t.BindTimeout)
	defer cancel()
	var err error
	sw.RebindTimes, err = t.Rebind(bctx, Rebind{
		Sock: c.Sock, Addr: c.Addr, Old: sw.OldProcs, Holders: sw.Holders, Inodes: sw.Inodes,
		Signal: t.Signal, KillTimeout: t.KillTimeout,
	})
	return err
}

// copyOldSocket takes a copy of the one listening socket that can be handed
// over: from the takeover launcher that holds it, over its unix socket
// (SCM_RIGHTS needs no ptrace rights), or else with pidfd_getfd from the
// stop target or another holder. It returns -1 and why when there is none,
// and records in sw how it got the socket.
func (t *Taker) copyOldSocket(owners []owner.Listener, sw *Record) (int, string) {
	if len(owners) != 1 {
		return -1, fmt.Sprintf("the port is held by %d sockets, not one", len(owners))
	}
	o, target := owners[0], sw.Old[0]
	var errs []string
	if target.Launcher {
		sock, err := fdpass.Fetch(rundir.LauncherSockPath(t.Dir, target.PID), target.PID, o.Inode, fdpass.FetchTimeout)
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
		why += "; " + pidfd.PtraceAdvice
	}
	return -1, why
}

// isServiceManager reports whether a holder of a socket is systemd (pid 1,
// or a user's manager), which keeps socket units' sockets and services'
// stored ones but never accepts on them: not a server to replace or stop.
// Not by its name, which any process may take (serviceManager).
func isServiceManager(h owner.Holder) bool {
	return owner.IsServiceManager("/proc", h.PID)
}

// ownedBySelf reports whether a listener is this takeover's own: held only
// by takeover itself and its descendants (a prefork child binding a second
// SO_REUSEPORT socket).
func (t *Taker) ownedBySelf(o owner.Listener) bool {
	if len(o.Holders) == 0 {
		return false
	}
	for _, h := range o.Holders {
		if h.PID != t.Self && !owner.IsAncestor("/proc", t.Self, h.PID) {
			return false
		}
	}
	return true
}

// bindBeside binds the claim's socket at a temporary name beside the path,
// for a rename over it once the command is ready: the replacement of the
// path when the old listener cannot be handed over.
func (t *Taker) bindBeside(c Claim, sw *Record) error {
	sw.Strategy = "rename"
	ps := &PathSwap{Path: c.Spec.Path, Pending: sideName(c.Spec.Path, "new")}
	if len(ps.Pending) >= len(unix.RawSockaddrUnix{}.Path) {
		return fmt.Errorf("cannot replace %s by a rename: the name beside it, %s, is longer than a unix socket's path may be; shorten the path, or let the old socket be handed over", c.Spec.Path, ps.Pending)
	}
	if err := c.BindPath(c.Sock, ps.Pending); err != nil {
		return fmt.Errorf("bind beside %s: %w", c.Spec.Path, err)
	}
	sw.Path = ps
	return nil
}
