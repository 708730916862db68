package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"

	"golang.org/x/sys/unix"
)

// The walk over every /proc/PID/fd is the cost of an owner lookup (a few
// microseconds a process), so it uses the system calls directly: one openat
// relative to procRoot, getdents into a reused buffer, readlinkat per fd.

func newFDWalker(procRoot string, byInode map[uint64]int) (*fdWalker, error) {
	fd, err := unix.Open(procRoot, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &fdWalker{
		procFD:  fd,
		byInode: byInode,
		buf:     make([]byte, 8<<10),
		link:    make([]byte, 128),
		found:   make([][]holder, len(byInode)),
	}, nil
}

func (w *fdWalker) close() { unix.Close(w.procFD) }

// walk records each fd of pid that links to one of the sockets.
func (w *fdWalker) walk(pid int, buf, link []byte) {
	dir, err := unix.Openat(w.procFD, strconv.Itoa(pid)+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
			w.markHidden()
		}
		return // ENOENT: the process exited meanwhile
	}
	defer unix.Close(dir)
	for {
		n, err := unix.Getdents(dir, buf)
		if err != nil || n <= 0 {
			return
		}
		for off := 0; off+19 <= n; {
			// struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name
			reclen := int(binary.NativeEndian.Uint16(buf[off+16:]))
			if reclen == 0 || off+reclen > n {
				return
			}
			name := buf[off+19 : off+reclen]
			off += reclen
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			fdNum, err := strconv.Atoi(string(name))
			if err != nil {
				continue // "." and ".."
			}
			m, err := unix.Readlinkat(dir, string(name), link)
			if err != nil || m >= len(link) {
				continue
			}
			if ino, ok := socketInode(link[:m]); ok {
				if i, ok := w.byInode[ino]; ok {
					w.record(i, holder{PID: pid, FD: fdNum})
				}
			}
		}
	}
}
