package swap

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/takeover/takeover/internal/drain"
	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// What a completed swap has left to do: put up the fences and wait for the
// old servers to finish (RaiseFences), then stop them (Stop).

// A Stop is what a completed swap has left to do: stop the old
// processes, and guard the unix path meanwhile.
type Stop struct {
	Record         *Record
	Path           *PathSwap
	Procs, Holders []*pidfd.Process
}

// Stops are the Stop of each of a generation's swaps.
type Stops []Stop

// Abandon lets go of a claimed swap that will not be completed after all
// (the new generation exited while the old server finished): as a swap's
// abandon does, for what Holdings.Claim took out of it.
func (st Stop) Abandon() {
	pidfd.CloseAll(st.Procs)
	pidfd.CloseAll(st.Holders)
	st.Path.rollBack()
}

// Abandon lets go of every Stop of s (Stop.Abandon).
func (s Stops) Abandon() {
	for _, st := range s {
		st.Abandon()
	}
}

// RaiseFences puts up the fences of a ready generation's swaps and waits,
// up to --drain-timeout, until each fenced old server has finished what it
// had accepted: the same state twice in a row, so that a handshake that
// completed into the old queue just as the fence went up is seen. It
// reports whether it put up any.
func (s Stops) RaiseFences(ctx context.Context, held *Holdings, drainTimeout time.Duration, gen int, log *slog.Logger) bool {
	type fenced struct {
		f    *Fence
		spec target.Spec
		pids []int
	}
	var fs []fenced
	for _, st := range s {
		f := st.Record.Fence
		if f == nil {
			continue
		}
		held := held.HeldFor(st.Record.Spec, st.Record.Addr)
		if held == nil {
			continue
		}
		if err := f.Raise(held.CopyFD); err != nil {
			log.Warn("cannot steer new connections to the new server; the old one keeps accepting until it is stopped", "port", st.Record.Spec.String(), "err", err)
			continue
		}
		pids := pidfd.PIDsOf(st.Procs, st.Holders)
		slices.Sort(pids)
		fs = append(fs, fenced{f, st.Record.Spec, procfs.FS("/proc").WithDescendants(slices.Compact(pids))})
	}
	if len(fs) == 0 {
		return false
	}
	for _, x := range fs {
		if set, err := x.f.HoldMigrate(); set {
			log.Info("net.ipv4.tcp_migrate_req=1 in this network namespace until the old socket has closed: a listening socket that closes hands its queued connections to another socket of its SO_REUSEPORT group instead of resetting them")
		} else if err != nil {
			log.Debug("cannot set net.ipv4.tcp_migrate_req; the drain alone keeps the old socket's queue", "err", err)
		}
	}
	release := func() {
		for _, x := range fs {
			x.f.ReleaseMigrate()
		}
	}
	// take takes the old servers' connections (relay.go) and waits, up to
	// drain.LoopPatience, until they have answered what they read on them.
	take := func() (took int, released bool) {
		for _, x := range fs {
			n, err := x.f.TakeConns(x.pids, drainTimeout, log)
			if err != nil {
				log.Debug("cannot take the old server's connections", "port", x.spec.String(), "err", err)
			}
			took += n
		}
		released = true
		end := time.Now().Add(drain.LoopPatience)
		for _, x := range fs {
			released = x.f.AwaitReleased(ctx, time.Until(end)) && released
		}
		return took, released
	}
	began := time.Now()
	wait := drainTimeout
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for clean := 0; ; {
		busy, conn := "", ""
		for _, x := range fs {
			if ok, err := x.f.Finished(x.pids); !ok || err != nil {
				busy, conn = x.spec.String(), x.f.Busy
				break
			}
		}
		if busy == "" {
			clean++
		} else {
			clean = 0
		}
		switch {
		case clean == 2:
			loops := 0
			for _, x := range fs {
				loops += x.f.Looping
			}
			if loops > 0 {
				// Their connections will never all be idle: take them
				// (relay.go), and stop the server once it has answered
				// what it had read on them.
				took, released := take()
				log.Info("fenced: the old server accepts nothing new; its clients send request after request on its keep-alive connections: takeover took them, and sends what each client sends next to the new server once the old server has answered what it read",
					"generation", gen, "waited", time.Since(began).Round(time.Microsecond), "keepalive_loops", loops, "taken", took, "released", released)
				return true
			}
			log.Info("fenced: the old server accepts nothing new and has finished what it accepted", "generation", gen, "waited", time.Since(began).Round(time.Microsecond))
			return true
		case time.Since(began) >= wait:
			// Its HTTP/1.x keep-alive connections need not be lost with it
			// (a stream's are, as they would be).
			took, released := take()
			log.Warn("the fenced old server has not finished its connections within --drain-timeout; stopping it all the same", "port", busy, "drain_timeout", wait, "conn", conn, "taken", took, "released", released)
			return true
		case held.hasExited():
			release() // the old server serves on
			return true
		}
		select {
		case <-ctx.Done():
			release()
			return true
		case <-tick.C:
		}
	}
}

// Stop signals the old processes of s, each once, with sig, waits up to
// kill for each to exit (SIGKILLing those that still hold an old socket
// then), and lets each fenced socket group settle; a unix path is guarded
// from the old servers' unlinks meanwhile. held are the new generation's
// sockets. It returns finish, which ends the guards, logs the paths put
// back, and lets go of the old processes: the caller calls it once, when
// whatever else it stops with s has stopped.
func (s Stops) Stop(ctx context.Context, sig unix.Signal, kill time.Duration, held *Holdings, log *slog.Logger) (finish func()) {
	gctx, stopGuards := context.WithCancel(ctx)
	restored := make([]<-chan int, len(s))
	for i, st := range s {
		restored[i] = st.Path.Guard(gctx)
	}
	s.signalOnce(sig)
	for _, st := range s {
		wctx, cancel := context.WithTimeout(ctx, kill)
		for _, p := range st.Procs {
			if !p.Wait(wctx) {
				log.Warn("the old server did not exit within --kill-timeout; killing it", "pid", p.PID)
				KillStillHolding(st.Holders, st.Record.Inodes)
			}
		}
		cancel()
		if f := st.Record.Fence; f != nil {
			if h := held.HeldFor(st.Record.Spec, st.Record.Addr); h != nil && !f.Settle(ctx, h.CopyFD) {
				log.Debug("the old socket still listens after its server exited; new connections stay steered to the new one", "port", st.Record.Spec.String())
			}
		}
	}
	return func() {
		stopGuards()
		for i, st := range s {
			if n := <-restored[i]; n > 0 {
				hint := ""
				if st.Record.Via != "own-copy" && !st.Record.Old[0].Launcher {
					hint = "; start the old server under takeover, which keeps the path"
				}
				log.Warn("the old server removed its unix socket's path on its way out; takeover put it back (a connect in between may have failed"+hint+")", "path", st.Path.Path, "times", n)
			}
			st.Path.Finish()
			pidfd.CloseAll(st.Procs)
			pidfd.CloseAll(st.Holders)
		}
	}
}

// signalOnce sends sig to the old processes of the swaps, each once: a
// server that held several of the sockets (nginx's `listen 80; listen
// [::]:80;`, or two --port targets) is in the stop list of each swap, and to
// some servers a second stop signal means "stop now, drain no more" (an
// interactive ^C twice; uvicorn on INT). A rebind signalled its own at the
// bind already.
func (s Stops) signalOnce(sig unix.Signal) {
	sent := make(map[int]bool)
	for _, st := range s {
		if st.Record.Strategy == "rebind" {
			for _, p := range st.Procs {
				sent[p.PID] = true
			}
		}
	}
	for _, st := range s {
		for _, p := range st.Procs {
			if !sent[p.PID] {
				sent[p.PID] = true
				p.Signal(sig)
			}
		}
	}
}

// KillStillHolding SIGKILLs the old processes that still hold one of the
// old sockets: after --kill-timeout, what keeps a port or serves on as an
// old generation. An old takeover launcher let go of its copies when it was
// replaced and waits for its server: killing it would orphan the server,
// which would then serve on with nobody to stop it.
func KillStillHolding(holders []*pidfd.Process, inodes []uint64) {
	held, err := owner.StillHolding("/proc", inodes, pidfd.PIDsOf(holders))
	for _, p := range holders {
		if err != nil || slices.Contains(held, p.PID) {
			p.Signal(unix.SIGKILL)
		}
	}
}
