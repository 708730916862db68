package seccomp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// errGone means the notifying thread died while its memory was read: what
// was read may be another process's, which took over its id.
var errGone = errors.New("the notifying thread is gone")

// read reads up to len(b) bytes at addr in the notifying thread's memory:
// with process_vm_readv, or through /proc/TID/mem where that is refused (a
// container's default profile). The notification still pending afterwards
// proves the bytes that thread's.
func read(fd int, n *Notif, addr uint64, b []byte) (int, error) {
	local := []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	k, _ := unix.ProcessVMReadv(int(n.PID), local, remote, 0)
	if k <= 0 {
		mem, err := os.Open("/proc/" + strconv.Itoa(int(n.PID)) + "/mem")
		if err != nil {
			return 0, err
		}
		defer mem.Close()
		if k, err = mem.ReadAt(b, int64(addr)); k == 0 {
			return 0, err
		}
	}
	if !Valid(fd, n.ID) {
		return 0, errGone
	}
	return k, nil
}

// ReadSockaddr reads the address a notifying bind(2) or connect(2) passed
// (its second and third arguments), at most a struct sockaddr_storage.
func ReadSockaddr(fd int, n *Notif) ([]byte, error) {
	b := make([]byte, min(n.Args[2], 128))
	if len(b) == 0 {
		return b, nil
	}
	k, err := read(fd, n, n.Args[1], b)
	if err != nil {
		return nil, err
	}
	if k < len(b) {
		return nil, io.ErrUnexpectedEOF
	}
	return b, nil
}

// ReadString reads a NUL-terminated string at addr in the notifying
// thread's memory (at most PATH_MAX bytes): a path argument.
func ReadString(fd int, n *Notif, addr uint64) (string, error) {
	b := make([]byte, unix.PathMax)
	k, err := read(fd, n, addr, b)
	if err != nil {
		return "", err
	}
	i := bytes.IndexByte(b[:k], 0)
	if i < 0 {
		return "", fmt.Errorf("no NUL within %d bytes", k)
	}
	return string(b[:i]), nil
}
