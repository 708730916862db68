package ready

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// The ways a generation may be ready (--ready).
const (
	Accept   = "accept"   // a process of it waits for connections on every target (or it sent READY=1)
	Listen   = "listen"   // it listens on every target
	Notify   = "notify"   // it sent READY=1 to its NOTIFY_SOCKET
	Interval = "interval" // it has run for --interval
)

// A Socket is one a generation holds for a target: takeover's copy of it,
// and its inode.
type Socket struct {
	Target target.Spec
	FD     int
	Inode  uint64
}

// Want is what ready means for one generation.
type Want struct {
	Targets  target.List   // every one must be bound
	Mode     string        // Accept, Listen, Notify or Interval
	Notified bool          // the command sent READY=1
	PID      int           // the command: it and its descendants are looked at
	Up       time.Duration // how long the command has run
	Interval time.Duration // --interval, for Interval
	Health   *Health       // --ready http://...: then that URL must answer 2xx (health.go)
	Exec     string        // --ready-exec: then this must exit 0
	// Accepted: for Accept, a socket no process was seen waiting on counts
	// as accepted on if a process holds a connection that came from it
	// (accepted.go). That costs a sock_diag dump whenever the generation
	// holds sockets besides its listeners, so callers ask every few looks.
	Accepted bool
}

// A Result is one look at a generation.
type Result struct {
	Ready   bool
	By      string // how each target was seen: "epoll", "accept", "listen", ...
	Missing string // what the generation has yet to do
	Blind   []int  // processes that could not be looked into
}

// Look tells whether a generation holding socks is ready as w says: every
// target bound, each TCP socket listening, and then as the mode asks (for
// Accept, some process of the command seen waiting for connections on each,
// read from proc, or, if w.Accepted, holding a connection it accepted from
// it: accepted.go).
func Look(proc procfs.FS, socks []Socket, w Want) Result {
	for _, spec := range w.Targets {
		if !slices.ContainsFunc(socks, func(s Socket) bool { return s.Target == spec }) {
			return Result{Missing: fmt.Sprintf("has not bound %s", spec)}
		}
	}
	want := make(map[uint64]bool)
	for _, s := range socks {
		if s.Target.Net == target.NetUDP {
			want[s.Inode] = true // a datagram socket is bound, and read
			continue
		}
		if v, err := unix.GetsockoptInt(s.FD, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v == 0 {
			return Result{Missing: fmt.Sprintf("has bound %s but does not listen on it", s.Target)}
		}
		want[s.Inode] = true
	}
	switch mode := w.Mode; {
	case w.Notified && mode != Listen && mode != Interval:
		return Result{Ready: true, By: "notify"}
	case mode == Listen:
		return Result{Ready: true, By: "listen"}
	case mode == Interval && w.Up >= w.Interval:
		return Result{Ready: true, By: "interval"}
	case mode == Interval:
		return Result{Missing: fmt.Sprintf("has not run for --interval %v yet", w.Interval)}
	case mode == Notify:
		return Result{Missing: "has not sent READY=1"}
	}
	pids := proc.WithDescendants([]int{w.PID})
	seen := accepting(proc, pids, want)
	if w.Accepted && len(seen.Blind) == 0 {
		if unseen := unseenTCP(socks, seen); len(unseen) > 0 {
			for ino := range accepted(proc, pids, socks, unseen) {
				seen.ways[ino] = byAccepted
			}
		}
	}
	var by []string
	for _, s := range socks {
		way, ok := seen.ways[s.Inode]
		switch {
		case ok:
			by = append(by, string(way))
		case len(seen.Blind) > 0:
			by = append(by, "listen")
		default:
			if s.Target.Net == target.NetUDP {
				return Result{Missing: fmt.Sprintf("has bound %s but no process of it was seen reading from it", s.Target)}
			}
			return Result{Missing: fmt.Sprintf("listens on %s but no process of it was seen accepting connections", s.Target)}
		}
	}
	slices.Sort(by)
	return Result{Ready: true, By: strings.Join(slices.Compact(by), ","), Blind: seen.Blind}
}

// unseenTCP returns the inodes of the TCP sockets no process was seen
// waiting on.
func unseenTCP(socks []Socket, seen acceptSeen) map[uint64]bool {
	unseen := make(map[uint64]bool)
	for _, s := range socks {
		if _, ok := seen.ways[s.Inode]; !ok && s.Target.Net != target.NetUDP && s.Target.Net != target.NetUnix {
			unseen[s.Inode] = true
		}
	}
	return unseen
}
