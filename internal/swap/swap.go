// Package swap holds the mechanisms of one swap, the takeover of one target
// from an old server: the record of how it went (Swap), the claim of the
// new server's socket, the fenced handoff (a new socket beside the old one
// in one SO_REUSEPORT group, steered by a BPF program), the handoff's
// checks, a unix path's swap (bound beside, renamed over, unlinks undone),
// the rebind request a Rebinder runs, and stopping the old processes. It
// knows no launcher and no seccomp: internal/supervise decides, swap does.
package swap

import (
	"context"
	"net/netip"
	"time"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// A Record is one --port target taken over by a generation.
type Record struct {
	Spec        target.Spec
	Addr        netip.AddrPort
	Strategy    string    // "fresh" (the port was free), "rebind", "handoff" or "rename" (unix)
	Via         string    // how a handoff got the old socket: unix-socket, pidfd_getfd, own-copy
	Path        *PathSwap // a unix target's file, while the old server stops
	Why         string    // why auto chose it
	Old         []owner.StopTarget
	OldCmd      string
	OldProcs    []*pidfd.Process // the stop targets
	Holders     []*pidfd.Process // every old holder, for SIGKILL
	Inodes      []uint64         // the old listening sockets
	Lookup      time.Duration
	RebindTimes           // how a rebind went (rebind only)
	Fence       *Fence    // a fenced handoff (fence.go)
	NotFenced   string    // why a handoff was not fenced
	Began       time.Time // the command's bind(2)

	// The O_NONBLOCK a handoff set on the old socket (injectSocket), taken
	// back if the swap is abandoned.
	Nonblock *nonblockUndo
}

// Abandon lets go of a swap that will not be completed: of its old
// processes' pidfds, and of the names beside a unix path (a path renamed
// over goes back to the old socket).
func (sw *Record) Abandon() {
	sw.Nonblock.restore() // the old server's socket, as it had it
	sw.Nonblock = nil
	sw.releaseOld()
	sw.Path.rollBack()
	sw.Path = nil
}

// releaseOld closes the swap's pidfds of the old processes.
func (sw *Record) releaseOld() {
	pidfd.CloseAll(sw.OldProcs)
	pidfd.CloseAll(sw.Holders)
	sw.OldProcs, sw.Holders = nil, nil
}

// A Rebind is the fallback way to take a port over: stop the old holders,
// then bind the new server's socket as soon as the port frees. Clients see
// refused connections between the old listener's close and the new listen,
// and lose what waited in the old accept queue.
type Rebind struct {
	Sock        int // takeover's copy of the new server's socket
	Addr        netip.AddrPort
	Old         []*pidfd.Process // the stop targets, signalled once
	Holders     []*pidfd.Process // every process holding the port: SIGKILLed after KillTimeout if it still does
	Inodes      []uint64         // the old listening sockets
	Signal      unix.Signal
	KillTimeout time.Duration
}

// A Rebinder runs a rebind: retryBind (retrybind.go), plugged in by the
// command line.
type Rebinder func(ctx context.Context, r Rebind) (RebindTimes, error)

// RebindTimes says how a rebind went, for the swap's log line.
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

// A Claim is a bind of the command to a --port target, as Taker.Take sees it:
// an intercepted bind(2), or a socket takeover acquires to pass on.
type Claim struct {
	Child  owner.Child
	Status procfs.Status // the binding thread's (none when takeover binds for itself)
	Sock   int           // takeover's copy of the command's socket (or a new one like it)
	Addr   netip.AddrPort
	Spec   target.Spec
	// Install puts a handed-over socket where the command will use it, in
	// place of sock; nil when takeover passes the sockets on itself.
	Install func(old int) error
	// PathMode is the mode of a unix socket file takeover binds for itself
	// to pass on (start_server's 0777); 0 leaves it to takeover's umask.
	PathMode uint32
}

// keepOnly keeps the processes keep accepts, and closes the others' pidfds.
func keepOnly(ps []*pidfd.Process, keep func(*pidfd.Process) bool) []*pidfd.Process {
	var kept []*pidfd.Process
	for _, p := range ps {
		if keep(p) {
			kept = append(kept, p)
		} else {
			p.Close()
		}
	}
	return kept
}

// v6Only reports whether sock is an IPv6 socket with IPV6_V6ONLY set. A
// command sets it before its bind, so takeover's copy of its socket tells.
func v6Only(sock int) bool {
	v, err := unix.GetsockoptInt(sock, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY)
	return err == nil && v != 0
}
