// Package pidfd holds a process by its pidfd, so that signals reach it and
// never a later process that reuses its pid, and copies a socket out of a
// process with pidfd_getfd.
package pidfd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// A Process is a process of an earlier generation, held by a pidfd so
// that signals reach it and not a later process that reuses its pid.
type Process struct {
	PID int
	FD  int
}

func Open(pid int) (*Process, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	return &Process{PID: pid, FD: fd}, nil
}

// Starts tells whether pid is still the process that started at start;
// procfs.FS does, from /proc/PID/stat.
type Starts interface {
	StartedAt(pid int, start uint64) bool
}

// ErrGone says that a pid is no longer the process a record names.
var ErrGone = errors.New("it has exited")

// OpenStarted opens a pidfd for pid, the process that started at start (as
// a record names it), and only then checks with proc that pid is still that
// process: checked after the pidfd is open, the process checked is the one
// the pidfd signals, never a later one that reused the pid. It returns
// ErrGone when pid is another process's or nobody's now.
func OpenStarted(proc Starts, pid int, start uint64) (*Process, error) {
	p, err := Open(pid)
	if err != nil {
		return nil, err
	}
	if !proc.StartedAt(pid, start) {
		p.Close()
		return nil, ErrGone
	}
	return p, nil
}

func (p *Process) Signal(sig unix.Signal) error {
	return unix.PidfdSendSignal(p.FD, sig, nil, 0)
}

// Wait waits for the process to exit, until ctx ends; it reports whether
// the process exited.
func (p *Process) Wait(ctx context.Context) bool {
	for {
		fds := []unix.PollFd{{Fd: int32(p.FD), Events: unix.POLLIN}}
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

func (p *Process) Close() { unix.Close(p.FD) }

// OpenAll opens every pid it can; those already gone are left out.
func OpenAll(pids []int) []*Process {
	var ps []*Process
	for _, pid := range pids {
		if p, err := Open(pid); err == nil {
			ps = append(ps, p)
		}
	}
	return ps
}

// PIDsOf returns the pids of the processes in each list, in order.
func PIDsOf(lists ...[]*Process) []int {
	var pids []int
	for _, ps := range lists {
		for _, p := range ps {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

func CloseAll(ps []*Process) {
	for _, p := range ps {
		p.Close()
	}
}

// CopySocket takes a copy of fd in process tgid, and its inode.
func CopySocket(tgid, fd int) (int, uint64, error) {
	pidfd, err := unix.PidfdOpen(tgid, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("pidfd_open(%d): %w", tgid, err)
	}
	defer unix.Close(pidfd)
	return CopySocketFrom(pidfd, tgid, fd)
}

// CopySocketFrom takes a copy of fd in process tgid through pidfd, its
// pidfd, and its inode.
func CopySocketFrom(pidfd, tgid, fd int) (int, uint64, error) {
	sock, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("pidfd_getfd(%d, %d): %w", tgid, fd, err)
	}
	unix.CloseOnExec(sock)
	var st unix.Stat_t
	if err := unix.Fstat(sock, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(sock)
		return -1, 0, fmt.Errorf("fd %d of pid %d is not a socket", fd, tgid)
	}
	return sock, st.Ino, nil
}

// PtraceAdvice says how to let takeover copy sockets exactly.
const PtraceAdvice = "docker run --cap-add SYS_PTRACE (Kubernetes: securityContext.capabilities.add: [SYS_PTRACE]) lets takeover copy sockets exactly"

// Exited reports whether the process of pidfd fd has exited (a zombie too):
// a pidfd reads ready from its process's exit on.
func Exited(fd int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}
