package procfs

// The file locks held on the system: who holds a pid file's lock.

import (
	"os"
	"strconv"
	"strings"
)

// A Lock is one lock /proc/locks lists as held (not one waited for).
type Lock struct {
	Kind  string // FLOCK, POSIX, OFDLCK, LEASE, ...
	Write bool   // an exclusive lock (WRITE), not a shared one
	PID   int    // the process that took it, in the reader's pid namespace; -1 for OFD locks
	Major uint32 // the device of the locked file
	Minor uint32
	Inode uint64
}

// Locks reads /proc/locks.
func (fs FS) Locks() ([]Lock, error) {
	b, err := os.ReadFile(string(fs) + "/locks")
	if err != nil {
		return nil, err
	}
	return parseLocks(string(b))
}

// parseLocks reads the lines of /proc/locks:
//
//	1: FLOCK  ADVISORY  WRITE 1234 fe:00:9982684 0 EOF
//	1: -> FLOCK  ADVISORY  WRITE 1240 fe:00:9982684 0 EOF
//
// A waiter's line ("->") is left out; a line that does not read so is an
// error.
func parseLocks(text string) ([]Lock, error) {
	var locks []Lock
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if len(f) > 1 && f[1] == "->" {
			continue
		}
		if len(f) < 6 || !strings.HasSuffix(f[0], ":") {
			return nil, errMalformed
		}
		pid, err := strconv.Atoi(f[4])
		if err != nil {
			return nil, errMalformed
		}
		dev := strings.Split(f[5], ":")
		if len(dev) != 3 {
			return nil, errMalformed
		}
		major, err1 := strconv.ParseUint(dev[0], 16, 32)
		minor, err2 := strconv.ParseUint(dev[1], 16, 32)
		ino, err3 := strconv.ParseUint(dev[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, errMalformed
		}
		locks = append(locks, Lock{Kind: f[1], Write: f[3] == "WRITE", PID: pid, Major: uint32(major), Minor: uint32(minor), Inode: ino})
	}
	return locks, nil
}
