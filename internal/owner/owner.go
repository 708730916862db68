// Package owner says who holds a target (the listening sockets and the
// processes that hold them, through /proc and sock_diag), which process to
// signal to stop it (a takeover launcher above a server), and whether the
// policy lets it be replaced (same user, not another systemd service, never
// pid 1 nor takeover's own ancestors).
package owner

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/socktab"
	"github.com/takeover/takeover/internal/target"
)

// A Holder is a process that holds a listening socket, and the fd it holds
// it at. A prefork server has several: the master and each worker.
type Holder struct {
	PID  int
	FD   int
	PPID int
}

// A Listener is a listening socket and every process found holding it.
type Listener struct {
	socktab.Socket
	Holders []Holder
	// Hidden is set when some processes could not be read (another user's,
	// or /proc mounted with hidepid): holders may be missing from the list.
	Hidden bool
}

// TargetSockets returns the sockets spec names: TCP listeners, bound UDP
// sockets, or the unix listener whose file is at spec.Path now.
func TargetSockets(proc procfs.FS, spec target.Spec) ([]socktab.Socket, error) {
	var socks []socktab.Socket
	var err error
	switch spec.Net {
	case target.NetUnix:
		return socktab.UnixListenersAt(spec.Path)
	case target.NetUDP:
		socks, err = socktab.UDPBound(string(proc))
	default:
		socks, err = socktab.TCPListeners(string(proc))
	}
	if err != nil {
		return nil, err
	}
	var named []socktab.Socket
	for _, s := range socks {
		if spec.Matches(s.Addr) {
			named = append(named, s)
		}
	}
	return named, nil
} // listeners returns the listening sockets that spec names and the processes
// holding each. The processes in first (and their descendants) are looked at
// before the rest; with onlyFirst, the rest are not looked at when first
// already holds every socket. The kernel keeps no count of the processes that
// hold a socket, so only a walk of every process proves a list complete.
func Listeners(proc procfs.FS, spec target.Spec, first []int, onlyFirst bool) ([]Listener, error) {
	socks, err := TargetSockets(proc, spec)
	if err != nil {
		return nil, fmt.Errorf("list the sockets of %s: %w", spec, err)
	}
	var ls []Listener
	for _, s := range socks {
		ls = append(ls, Listener{Socket: s})
	}
	if len(ls) == 0 {
		return nil, nil
	}
	if err := findHolders(proc, ls, first, onlyFirst); err != nil {
		return nil, err
	}
	return ls, nil
}

// findHolders fills in the holders of each listener by reading the socket
// links in /proc/PID/fd.
func findHolders(proc procfs.FS, ls []Listener, first []int, onlyFirst bool) error {
	inodes := make([]uint64, len(ls))
	for i, l := range ls {
		inodes[i] = l.Inode
	}
	w, err := proc.FDWalker(inodes)
	if err != nil {
		return err
	}
	defer w.Close()

	seen := make(map[int]bool)
	for _, pid := range proc.WithDescendants(first) {
		if !seen[pid] {
			seen[pid] = true
			w.Walk(pid)
		}
	}
	if !(onlyFirst && w.FoundAll()) {
		pids, err := proc.PIDs()
		if err != nil {
			return err
		}
		rest := slices.DeleteFunc(pids, func(pid int) bool { return seen[pid] })
		w.WalkParallel(rest)
	}
	for i := range ls {
		for _, f := range w.Found(i) {
			ppid, _ := proc.PPID(f.PID)
			ls[i].Holders = append(ls[i].Holders, Holder{PID: f.PID, FD: f.FD, PPID: ppid})
		}
		ls[i].Hidden = w.Hidden()
		slices.SortFunc(ls[i].Holders, func(a, b Holder) int { return a.PID - b.PID })
	}
	return nil
}

// StillHolding returns those of pids that hold one of the sockets.
func StillHolding(proc procfs.FS, inodes []uint64, pids []int) ([]int, error) {
	found, err := proc.Holders(inodes, pids)
	if err != nil {
		return nil, err
	}
	var held []int
	for _, hs := range found {
		for _, f := range hs {
			held = append(held, f.PID)
		}
	}
	slices.Sort(held)
	return slices.Compact(held), nil
}

// A StopTarget is the process to signal so that the holders of a listener
// let go of it: the topmost holder (a prefork master, not its workers) or,
// when a takeover manages it, that takeover launcher, which forwards the stop
// to its child and exits.
type StopTarget struct {
	PID      int
	Launcher bool   // PID is a takeover launcher
	Holder   Holder // the topmost holder the target stands for
}

// maxDepth bounds the walk up from a holder to its launcher: a shell wrapper
// or two may stand between them.
const maxDepth = 8

// StopTargets returns the processes to signal for l, one per tree of
// holders. launchers are the live takeover launchers the run directory
// records: a holder under one of them (or the launcher itself, which keeps
// its own copy of its generation's sockets) is stopped through it.
func StopTargets(proc procfs.FS, l Listener, launchers []int) []StopTarget {
	holds := make(map[int]bool, len(l.Holders))
	for _, h := range l.Holders {
		holds[h.PID] = true
	}
	var targets []StopTarget
	add := func(t StopTarget) {
		if !slices.ContainsFunc(targets, func(o StopTarget) bool { return o.PID == t.PID }) {
			targets = append(targets, t)
		}
	}
	for _, h := range l.Holders {
		if slices.Contains(launchers, h.PID) || (holds[h.PPID] && !slices.Contains(launchers, h.PPID)) {
			continue // a launcher's own copy (below), or a worker whose master holds the socket too
		}
		if lp := launcherAbove(proc, h.PID, launchers); lp != 0 {
			add(StopTarget{PID: lp, Launcher: true, Holder: h})
		} else {
			add(StopTarget{PID: h.PID, Holder: h})
		}
	}
	// A launcher that holds the socket alone (its command gone) is a target too.
	for _, h := range l.Holders {
		if slices.Contains(launchers, h.PID) {
			add(StopTarget{PID: h.PID, Launcher: true, Holder: h})
		}
	}
	return targets
}

// launcherAbove returns the launcher among launchers that pid runs under,
// within maxDepth, or 0.
func launcherAbove(proc procfs.FS, pid int, launchers []int) int {
	for range maxDepth {
		ppid, err := proc.PPID(pid)
		if err != nil || ppid == 0 {
			return 0
		}
		if slices.Contains(launchers, ppid) {
			return ppid // PID 1 too, when it is a takeover: a container's entrypoint
		}
		if ppid == 1 {
			return 0
		}
		pid = ppid
	}
	return 0
}

// IsAncestor reports whether a is a proper ancestor of pid, within maxDepth.
func IsAncestor(proc procfs.FS, a, pid int) bool {
	for range maxDepth {
		ppid, err := proc.PPID(pid)
		if err != nil || ppid == 0 {
			return false
		}
		if ppid == a {
			return true
		}
		pid = ppid
	}
	return false
}

var errNeverSignal = errors.New("never signalled")

// Forbidden says why t must never be signalled, or nil: pid 1, and this
// process's own ancestors (a takeover run from the service's own shell).
func (t StopTarget) Forbidden(proc procfs.FS) error {
	if t.PID == 1 && !t.Launcher {
		// A takeover that is PID 1 (a container's entrypoint) is replaced
		// as any takeover is; it stays, as PID 1 must (supervise's pid1_linux.go).
		return fmt.Errorf("pid 1 is the init process: %w", errNeverSignal)
	}
	if t.PID == os.Getpid() || IsAncestor(proc, t.PID, os.Getpid()) {
		return fmt.Errorf("pid %d is an ancestor of this takeover: %w", t.PID, errNeverSignal)
	}
	return nil
}
