package procfs

// What a blocked thread waits on, read from its process's memory: a poll
// array, an fd_set.

import (
	"encoding/binary"
	"os"
)

// A PollFD is a struct pollfd.
type PollFD struct {
	FD     int32
	Events int16
}

// PollFDs reads the n struct pollfd at addr in process pid's memory.
func (fs FS) PollFDs(pid int, addr uint64, n int) ([]PollFD, error) {
	b, err := fs.readMem(pid, addr, n*8)
	if err != nil {
		return nil, err
	}
	return parsePollFDs(b), nil
}

// FDSet returns the fds below n set in the fd_set at addr in process
// pid's memory.
func (fs FS) FDSet(pid int, addr uint64, n int) ([]int, error) {
	b, err := fs.readMem(pid, addr, (n+63)/64*8)
	if err != nil {
		return nil, err
	}
	return parseFDSet(b, n), nil
}

// readMem reads n bytes at addr in the process's memory.
func (fs FS) readMem(pid int, addr uint64, n int) ([]byte, error) {
	f, err := os.Open(fs.path(pid, "mem"))
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

func parsePollFDs(b []byte) []PollFD {
	ps := make([]PollFD, 0, len(b)/8)
	for ; len(b) >= 8; b = b[8:] {
		ps = append(ps, PollFD{
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
