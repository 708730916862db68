// Package ready tells whether a new generation is ready (Look): every
// target bound and listening, and, as --ready asks, READY=1 sent, an
// interval run, or some process of it waiting for connections on each
// socket: a thread blocked in accept, epoll, poll or select on it, read
// from /proc (accepting; the per-arch system call numbers beside), or
// holding a connection it accepted from it (accepted).
package ready

import (
	"errors"
	"io/fs"

	"github.com/takeover/takeover/internal/procfs"
	"golang.org/x/sys/unix"
)

// A server is ready when it would serve a connection given to it: when one
// of its processes waits for connections on the listening socket. Listening
// is not enough (Tomcat listens at init and accepts a second later), and
// some servers never call listen(2) on a socket that already listens
// (haproxy) or call it from another process (uvicorn's workers). How a
// process waits is visible from outside, without stopping it:
//
//   - an event loop (nginx, redis, haproxy, node, asyncio, Go, memcached)
//     has the socket in an epoll set: /proc/PID/fdinfo/EPFD lists each
//     target with its inode and event mask;
//   - a thread blocked in accept(2) (Tomcat's acceptor, a blocking accept
//     loop): /proc/PID/task/TID/syscall names the call and its fd;
//   - a thread in poll(2) or select(2) on it (python's socketserver, a JVM
//     parked on a blocking channel, gunicorn's sync workers): the syscall
//     file gives the array's address, read through /proc/PID/mem.

// acceptWay says how a process was seen waiting for connections.
type acceptWay string

const (
	byEpoll  acceptWay = "epoll"
	byAccept acceptWay = "accept"
	byPoll   acceptWay = "poll"
	bySelect acceptWay = "select"
	byRecv   acceptWay = "recv" // a thread blocked reading a UDP socket
	// byAccepted: a process holds a connection accepted from the socket
	// (accepted.go), where none was caught waiting on it.
	byAccepted acceptWay = "accepted"
)

// acceptSeen is what one look at a generation's processes found.
type acceptSeen struct {
	ways map[uint64]acceptWay // by socket inode
	// Blind lists processes holding a wanted socket that could not be
	// looked into (not dumpable, another user's): they may accept unseen.
	Blind []int
}

// accepting looks at pids for processes waiting for connections on the
// sockets in want (inodes).
func accepting(proc procfs.FS, pids []int, want map[uint64]bool) acceptSeen {
	seen := acceptSeen{ways: make(map[uint64]acceptWay)}
	for _, pid := range pids {
		if err := lookAtProcess(proc, pid, want, seen.ways); errors.Is(err, fs.ErrPermission) {
			seen.Blind = append(seen.Blind, pid)
		}
	}
	return seen
}

// lookAtProcess records in ways each wanted socket pid waits on.
func lookAtProcess(proc procfs.FS, pid int, want map[uint64]bool, ways map[uint64]acceptWay) error {
	fds, epolls, err := proc.SocketFDs(pid, want)
	if err != nil || len(fds) == 0 {
		return err
	}
	for _, ep := range epolls {
		targets, err := proc.EpollTargets(pid, ep)
		if err != nil {
			continue
		}
		for _, t := range targets {
			if want[t.Inode] && t.Events&unix.EPOLLIN != 0 {
				ways[t.Inode] = byEpoll
			}
		}
	}
	tasks, err := proc.Tasks(pid)
	if err != nil {
		return err
	}
	var lastErr error
	for _, tid := range tasks {
		sc, ok, err := proc.Syscall(pid, tid)
		if err != nil {
			lastErr = err
			continue
		}
		if !ok {
			continue // running, or not in a system call
		}
		for fd, way := range waitedFDs(proc, pid, sc) {
			if ino, ok := fds[fd]; ok {
				ways[ino] = way
			}
		}
	}
	return lastErr
}

// waitedFDs returns the fds a thread blocked in sc waits on for reading.
func waitedFDs(proc procfs.FS, pid int, sc procfs.Syscall) map[int]acceptWay {
	fds := make(map[int]acceptWay)
	switch sc.Nr {
	case sysAccept, sysAccept4:
		fds[int(int32(sc.Args[0]))] = byAccept
	case unix.SYS_RECVFROM, unix.SYS_RECVMSG, unix.SYS_RECVMMSG, unix.SYS_READ:
		fds[int(int32(sc.Args[0]))] = byRecv // a listener cannot be read: UDP only
	case sysPoll, sysPpoll:
		n := min(sc.Args[1], 4096)
		ps, err := proc.PollFDs(pid, sc.Args[0], int(n))
		if err != nil {
			return nil
		}
		for _, p := range ps {
			if p.Events&unix.POLLIN != 0 {
				fds[int(p.FD)] = byPoll
			}
		}
	case sysSelect, sysPselect6:
		n := min(sc.Args[0], 1024)
		if sc.Args[1] == 0 || n == 0 {
			return nil
		}
		set, err := proc.FDSet(pid, sc.Args[1], int(n))
		if err != nil {
			return nil
		}
		for _, fd := range set {
			fds[fd] = bySelect
		}
	}
	return fds
}
