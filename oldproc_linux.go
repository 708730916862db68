package main

import (
	"context"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// An oldProcess is a process of an earlier generation, held by a pidfd so
// that signals reach it and not a later process that reuses its pid.
type oldProcess struct {
	PID   int
	pidfd int
}

func openOld(pid int) (*oldProcess, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	return &oldProcess{PID: pid, pidfd: fd}, nil
}

func (p *oldProcess) signal(sig unix.Signal) error {
	return unix.PidfdSendSignal(p.pidfd, sig, nil, 0)
}

// wait waits for the process to exit, until ctx ends; it reports whether
// the process exited.
func (p *oldProcess) wait(ctx context.Context) bool {
	for {
		fds := []unix.PollFd{{Fd: int32(p.pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 10)
		if err == nil && n > 0 {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if err != nil && err != unix.EINTR {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (p *oldProcess) close() { unix.Close(p.pidfd) }

// signalOnce sends sig to the old processes of the swaps, each once: a
// server that held several of the sockets (nginx's `listen 80; listen
// [::]:80;`, or two --port targets) is in the stop list of each swap, and to
// some servers a second stop signal means "stop now, drain no more" (an
// interactive ^C twice; uvicorn on INT). A rebind signalled its own at the
// bind already.
func signalOnce(stop []oldStop, sig unix.Signal) {
	sent := make(map[int]bool)
	for _, st := range stop {
		if st.sw.Strategy == "rebind" {
			for _, p := range st.procs {
				sent[p.PID] = true
			}
		}
	}
	for _, st := range stop {
		for _, p := range st.procs {
			if !sent[p.PID] {
				sent[p.PID] = true
				p.signal(sig)
			}
		}
	}
}

// openAll opens every pid it can; those already gone are left out.
func openAll(pids []int) []*oldProcess {
	var ps []*oldProcess
	for _, pid := range pids {
		if p, err := openOld(pid); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// pidsOf returns the pids of the processes in each list, in order.
func pidsOf(lists ...[]*oldProcess) []int {
	var pids []int
	for _, ps := range lists {
		for _, p := range ps {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

func closeAll(ps []*oldProcess) {
	for _, p := range ps {
		p.close()
	}
}

// killStillHolding SIGKILLs the old processes that still hold one of the
// old sockets: after --kill-timeout, what keeps a port or serves on as an
// old generation. An old takeover launcher let go of its copies when it was
// replaced and waits for its server: killing it would orphan the server,
// which would then serve on with nobody to stop it.
func killStillHolding(holders []*oldProcess, inodes []uint64) {
	held, err := stillHolding("/proc", inodes, pidsOf(holders))
	for _, p := range holders {
		if err != nil || slices.Contains(held, p.PID) {
			p.signal(unix.SIGKILL)
		}
	}
}
