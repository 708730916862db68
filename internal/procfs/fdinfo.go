package procfs

// An fd's fdinfo: its open flags, and an epoll fd's targets.

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func (fs FS) fdinfo(pid, fd int) ([]byte, error) {
	return os.ReadFile(fs.path(pid, "fdinfo/"+strconv.Itoa(fd)))
}

// FDFlags reads the open flags of a process's fd, from the flags line of
// /proc/PID/fdinfo/FD.
func (fs FS) FDFlags(pid, fd int) (int, error) {
	b, err := fs.fdinfo(pid, fd)
	if err != nil {
		return 0, err
	}
	return parseFdinfoFlags(string(b))
}

// Cloexec reads whether a process's fd has FD_CLOEXEC, from the flags line
// of /proc/PID/fdinfo/FD (octal open flags, O_CLOEXEC among them).
func (fs FS) Cloexec(pid, fd int) (bool, error) {
	b, err := fs.fdinfo(pid, fd)
	if err != nil {
		return false, err
	}
	return parseFdinfoCloexec(string(b))
}

func parseFdinfoCloexec(s string) (bool, error) {
	flags, err := parseFdinfoFlags(s)
	return flags&unix.O_CLOEXEC != 0, err
}

// parseFdinfoFlags reads the flags line of an fdinfo file (octal open flags).
func parseFdinfoFlags(s string) (int, error) {
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, "flags:"); ok {
			flags, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32) // open flags are an int
			if err != nil {
				return 0, fmt.Errorf("fdinfo flags %q: %w", v, errMalformed)
			}
			return int(flags), nil
		}
	}
	return 0, fmt.Errorf("fdinfo: no flags line: %w", errMalformed)
}

// An EpollTarget is one "tfd:" line of an epoll fd's fdinfo.
type EpollTarget struct {
	FD     int
	Events uint32
	Inode  uint64
}

// EpollTargets reads what the epoll fd epfd of a process watches, from
// its fdinfo. Malformed lines are skipped.
func (fs FS) EpollTargets(pid, epfd int) ([]EpollTarget, error) {
	b, err := fs.fdinfo(pid, epfd)
	if err != nil {
		return nil, err
	}
	return parseEpollTargets(b), nil
}

// parseEpollTargets reads the tfd lines of /proc/PID/fdinfo/EPFD:
//
//	tfd:        5 events:       19 data:                5  pos:0 ino:2f5a sdev:8
//
// (events and ino in hex). Malformed lines are skipped.
func parseEpollTargets(b []byte) []EpollTarget {
	var ts []EpollTarget
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

func parseEpollTarget(f []string) (EpollTarget, error) {
	if len(f) < 1 {
		return EpollTarget{}, errMalformed
	}
	fd, err := strconv.Atoi(f[0])
	if err != nil {
		return EpollTarget{}, errMalformed
	}
	t := EpollTarget{FD: fd}
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
				return EpollTarget{}, fmt.Errorf("events %q: %w", val, errMalformed)
			}
			t.Events = uint32(e)
			seen |= 1
		case "ino:":
			ino, err := strconv.ParseUint(val, 16, 64)
			if err != nil {
				return EpollTarget{}, fmt.Errorf("ino %q: %w", val, errMalformed)
			}
			t.Inode = ino
			seen |= 2
		}
	}
	if seen != 3 {
		return EpollTarget{}, errMalformed
	}
	return t, nil
}
