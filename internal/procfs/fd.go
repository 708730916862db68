package procfs

// A process's fds: what each links to, and the socket inodes among them.

import (
	"bytes"
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// FDLink returns what /proc/PID/fd/FD links to: a path, or
// "socket:[INODE]", "pipe:[INODE]", "anon_inode:[eventpoll]".
func (fs FS) FDLink(pid, fd int) (string, error) {
	return os.Readlink(fs.path(pid, "fd/"+strconv.Itoa(fd)))
}

// SocketInode returns the inode of the socket at fd in process pid, from its
// /proc link (which needs no more than the right to read /proc/PID/fd).
func (fs FS) SocketInode(pid, fd int) (uint64, error) {
	link, err := fs.FDLink(pid, fd)
	if err != nil {
		return 0, err
	}
	ino, ok := socketInode([]byte(link))
	if !ok {
		return 0, fmt.Errorf("fd %d of pid %d is not a socket", fd, pid)
	}
	return ino, nil
}

// SocketProtocol returns the protocol name of the socket at fd in process
// pid ("TCP", "UDPv6", "UNIX-STREAM"), from the system.sockprotoname
// attribute of its /proc link, which needs no ptrace rights.
func (fs FS) SocketProtocol(pid, fd int) (string, error) {
	buf := make([]byte, 32)
	n, err := unix.Getxattr(fs.path(pid, "fd/"+strconv.Itoa(fd)), "system.sockprotoname", buf)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimRight(buf[:n], "\x00")), nil
}

// SocketFDs maps the fds of a process that are wanted sockets to their
// inodes, and lists its epoll fds.
func (fs FS) SocketFDs(pid int, want map[uint64]bool) (map[int]uint64, []int, error) {
	fds := make(map[int]uint64)
	var epolls []int
	err := fs.eachFDLink(pid, func(fd int, link string) {
		if link == "anon_inode:[eventpoll]" {
			epolls = append(epolls, fd)
		} else if ino, ok := socketInode([]byte(link)); ok && want[ino] {
			fds[fd] = ino
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return fds, epolls, nil
}

// Sockets adds to held the inode of every socket process pid holds.
func (fs FS) Sockets(pid int, held map[uint64]bool) error {
	return fs.eachFDLink(pid, func(_ int, link string) {
		if ino, ok := socketInode([]byte(link)); ok {
			held[ino] = true
		}
	})
}

// eachFDLink calls f with each fd of pid and what it links to; an fd
// closed meanwhile is left out.
func (fs FS) eachFDLink(pid int, f func(fd int, link string)) error {
	dir := string(fs) + "/" + strconv.Itoa(pid)
	ents, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return err
	}
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		link, err := os.Readlink(dir + "/fd/" + e.Name())
		if err != nil {
			continue
		}
		f(fd, link)
	}
	return nil
}

// socketInode parses a /proc/PID/fd link of the form "socket:[12345]".
func socketInode(link []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(link, []byte("socket:["))
	if !ok || len(rest) < 2 || rest[len(rest)-1] != ']' {
		return 0, false
	}
	ino, err := strconv.ParseUint(string(rest[:len(rest)-1]), 10, 64)
	return ino, err == nil
}
