package procfs

// The walk of every process's fds for the holders of a set of sockets.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// A Holder is a process holding one of the walked sockets, and the fd it
// holds it at.
type Holder struct {
	PID int
	FD  int
}

// An FDWalker looks through /proc/PID/fd for links to a set of socket inodes.
type FDWalker struct {
	procFD  int
	byInode map[uint64]int
	buf     []byte // getdents buffer for the sequential walk
	link    []byte // readlink buffer for the sequential walk

	mu     sync.Mutex
	found  [][]Holder
	hidden bool
}

// The walk over every /proc/PID/fd is the cost of an owner lookup (a few
// microseconds a process), so it uses the system calls directly: one openat
// relative to fs, getdents into a reused buffer, readlinkat per fd.

// FDWalker returns a walker for the sockets of the given inodes; Found(i)
// reports the holders of inodes[i].
func (fs FS) FDWalker(inodes []uint64) (*FDWalker, error) {
	byInode := make(map[uint64]int, len(inodes))
	for i, ino := range inodes {
		byInode[ino] = i
	}
	fd, err := unix.Open(string(fs), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &FDWalker{
		procFD:  fd,
		byInode: byInode,
		buf:     make([]byte, 8<<10),
		link:    make([]byte, 128),
		found:   make([][]Holder, len(inodes)),
	}, nil
}

// Close releases the walker's fd of the procfs.
func (w *FDWalker) Close() { unix.Close(w.procFD) }

// Walk records each fd of pid that links to one of the sockets.
func (w *FDWalker) Walk(pid int) { w.walk(pid, w.buf, w.link) }

// WalkParallel walks pids on two goroutines: the walk is system calls, and
// the kernel serves them on both cores.
func (w *FDWalker) WalkParallel(pids []int) {
	const workers = 2
	var wg sync.WaitGroup
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf, link := make([]byte, 8<<10), make([]byte, 128)
			for i := k; i < len(pids); i += workers {
				w.walk(pids[i], buf, link)
			}
		}()
	}
	wg.Wait()
}

// Holders walks the fds of pids and returns, for each of the sockets
// inodes names, the holders found among them.
func (fs FS) Holders(inodes []uint64, pids []int) ([][]Holder, error) {
	w, err := fs.FDWalker(inodes)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	for _, pid := range pids {
		w.Walk(pid)
	}
	return w.found, nil
}

// FoundAll reports whether every socket has been found held.
func (w *FDWalker) FoundAll() bool {
	for _, f := range w.found {
		if len(f) == 0 {
			return false
		}
	}
	return true
}

// Found returns the holders found of the socket at index i, in the order
// the walks found them.
func (w *FDWalker) Found(i int) []Holder { return w.found[i] }

// Hidden reports whether some process's fds could not be read (another
// user's, or /proc mounted with hidepid): holders may be missing.
func (w *FDWalker) Hidden() bool { return w.hidden }

func (w *FDWalker) record(i int, h Holder) {
	w.mu.Lock()
	w.found[i] = append(w.found[i], h)
	w.mu.Unlock()
}

func (w *FDWalker) markHidden() {
	w.mu.Lock()
	w.hidden = true
	w.mu.Unlock()
}

// walk records each fd of pid that links to one of the sockets.
func (w *FDWalker) walk(pid int, buf, link []byte) {
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
					w.record(i, Holder{PID: pid, FD: fdNum})
				}
			}
		}
	}
}
