package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

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
)

// acceptSeen is what one look at a generation's processes found.
type acceptSeen struct {
	Ways map[uint64]acceptWay // by socket inode
	// Blind lists processes holding a wanted socket that could not be
	// looked into (not dumpable, another user's): they may accept unseen.
	Blind []int
}

// accepting looks at pids for processes waiting for connections on the
// sockets in want (inodes).
func accepting(procRoot string, pids []int, want map[uint64]bool) acceptSeen {
	seen := acceptSeen{Ways: make(map[uint64]acceptWay)}
	for _, pid := range pids {
		if err := lookAtProcess(procRoot, pid, want, seen.Ways); errors.Is(err, fs.ErrPermission) {
			seen.Blind = append(seen.Blind, pid)
		}
	}
	return seen
}

// lookAtProcess records in ways each wanted socket pid waits on.
func lookAtProcess(procRoot string, pid int, want map[uint64]bool, ways map[uint64]acceptWay) error {
	dir := procRoot + "/" + strconv.Itoa(pid)
	fds, epolls, err := socketFDs(dir, want)
	if err != nil || len(fds) == 0 {
		return err
	}
	for _, ep := range epolls {
		b, err := os.ReadFile(dir + "/fdinfo/" + strconv.Itoa(ep))
		if err != nil {
			continue
		}
		for _, t := range parseEpollTargets(b) {
			if want[t.Inode] && t.Events&unix.EPOLLIN != 0 {
				ways[t.Inode] = byEpoll
			}
		}
	}
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		return err
	}
	var lastErr error
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/task/" + task.Name() + "/syscall")
		if err != nil {
			lastErr = err
			continue
		}
		sc, ok := parseSyscall(b)
		if !ok {
			continue // running, or not in a system call
		}
		for fd, way := range waitedFDs(dir, sc) {
			if ino, ok := fds[fd]; ok {
				ways[ino] = way
			}
		}
	}
	return lastErr
}

// socketFDs maps the fds of a process that are wanted sockets to their
// inodes, and lists its epoll fds.
func socketFDs(dir string, want map[uint64]bool) (map[int]uint64, []int, error) {
	ents, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return nil, nil, err
	}
	fds := make(map[int]uint64)
	var epolls []int
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(dir + "/fd/" + e.Name())
		if err != nil {
			continue
		}
		if link == "anon_inode:[eventpoll]" {
			epolls = append(epolls, fd)
		} else if ino, ok := socketInode([]byte(link)); ok && want[ino] {
			fds[fd] = ino
		}
	}
	return fds, epolls, nil
}

// waitedFDs returns the fds a thread blocked in sc waits on for reading.
func waitedFDs(dir string, sc syscallState) map[int]acceptWay {
	fds := make(map[int]acceptWay)
	switch sc.Nr {
	case sysAccept, sysAccept4:
		fds[int(int32(sc.Args[0]))] = byAccept
	case unix.SYS_RECVFROM, unix.SYS_RECVMSG, unix.SYS_RECVMMSG, unix.SYS_READ:
		fds[int(int32(sc.Args[0]))] = byRecv // a listener cannot be read: UDP only
	case sysPoll, sysPpoll:
		n := min(sc.Args[1], 4096)
		b, err := readMem(dir, sc.Args[0], int(n)*8)
		if err != nil {
			return nil
		}
		for _, p := range parsePollFDs(b) {
			if p.Events&unix.POLLIN != 0 {
				fds[int(p.FD)] = byPoll
			}
		}
	case sysSelect, sysPselect6:
		n := min(sc.Args[0], 1024)
		if sc.Args[1] == 0 || n == 0 {
			return nil
		}
		b, err := readMem(dir, sc.Args[1], int(n+63)/64*8)
		if err != nil {
			return nil
		}
		for _, fd := range parseFDSet(b, int(n)) {
			fds[fd] = bySelect
		}
	}
	return fds
}

// readMem reads n bytes at addr in the process's memory.
func readMem(dir string, addr uint64, n int) ([]byte, error) {
	f, err := os.Open(dir + "/mem")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		return nil, err
	}
	return b, nil
}

// syscallState is /proc/PID/task/TID/syscall of a thread blocked in a
// system call: its number and six arguments.
type syscallState struct {
	Nr   int
	Args [6]uint64
}

// parseSyscall reads "NR ARG0 ... ARG5 SP PC" (hex arguments). A running
// thread reads "running", one outside a system call "-1 SP PC": ok is false.
func parseSyscall(b []byte) (syscallState, bool) {
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return syscallState{}, false
	}
	nr, err := strconv.Atoi(f[0])
	if err != nil || nr < 0 {
		return syscallState{}, false
	}
	sc := syscallState{Nr: nr}
	for i := range sc.Args {
		v, err := strconv.ParseUint(strings.TrimPrefix(f[1+i], "0x"), 16, 64)
		if err != nil {
			return syscallState{}, false
		}
		sc.Args[i] = v
	}
	return sc, true
}

// An epollTarget is one "tfd:" line of an epoll fd's fdinfo.
type epollTarget struct {
	FD     int
	Events uint32
	Inode  uint64
}

// parseEpollTargets reads the tfd lines of /proc/PID/fdinfo/EPFD:
//
//	tfd:        5 events:       19 data:                5  pos:0 ino:2f5a sdev:8
//
// (events and ino in hex). Malformed lines are skipped.
func parseEpollTargets(b []byte) []epollTarget {
	var ts []epollTarget
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(line, []byte("tfd:"))
		if !ok {
			continue
		}
		t, err := parseEpollTarget(strings.Fields(string(rest)))
		if err == nil {
			ts = append(ts, t)
		}
	}
	return ts
}

func parseEpollTarget(f []string) (epollTarget, error) {
	if len(f) < 1 {
		return epollTarget{}, errMalformed
	}
	fd, err := strconv.Atoi(f[0])
	if err != nil {
		return epollTarget{}, errMalformed
	}
	t := epollTarget{FD: fd}
	seen := 0
	for i := 1; i < len(f); i++ {
		key, val := f[i], ""
		if k, v, ok := strings.Cut(key, ":"); ok && v != "" {
			key, val = k+":", v // "ino:2f5a"
		} else if i+1 < len(f) {
			val = f[i+1] // "events: 19"
			i++
		}
		switch key {
		case "events:":
			e, err := strconv.ParseUint(val, 16, 32)
			if err != nil {
				return epollTarget{}, fmt.Errorf("events %q: %w", val, errMalformed)
			}
			t.Events = uint32(e)
			seen |= 1
		case "ino:":
			ino, err := strconv.ParseUint(val, 16, 64)
			if err != nil {
				return epollTarget{}, fmt.Errorf("ino %q: %w", val, errMalformed)
			}
			t.Inode = ino
			seen |= 2
		}
	}
	if seen != 3 {
		return epollTarget{}, errMalformed
	}
	return t, nil
}

// A pollFD is a struct pollfd.
type pollFD struct {
	FD     int32
	Events int16
}

func parsePollFDs(b []byte) []pollFD {
	ps := make([]pollFD, 0, len(b)/8)
	for ; len(b) >= 8; b = b[8:] {
		ps = append(ps, pollFD{
			FD:     int32(binary.NativeEndian.Uint32(b)),
			Events: int16(binary.NativeEndian.Uint16(b[4:])),
		})
	}
	return ps
}

// parseFDSet returns the fds below n set in an fd_set (an array of longs;
// a partial last long is ignored).
func parseFDSet(b []byte, n int) []int {
	var fds []int
	for fd := 0; fd < n && fd/64*8+8 <= len(b); fd++ {
		word := binary.NativeEndian.Uint64(b[fd/64*8:])
		if word&(1<<(fd%64)) != 0 {
			fds = append(fds, fd)
		}
	}
	return fds
}
