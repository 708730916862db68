package procfs

// A process's stat: its parent and its start time.

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// A Stat holds the fields of /proc/PID/stat that takeover reads.
type Stat struct {
	PPID  int
	Start uint64 // clock ticks after boot: with the pid, names a process for good
}

// Stat reads /proc/PID/stat.
func (fs FS) Stat(pid int) (Stat, error) {
	b, err := os.ReadFile(fs.path(pid, "stat"))
	if err != nil {
		return Stat{}, err
	}
	return parseStat(b)
}

// StartedAt reports whether pid is still the process that started at start
// (clock ticks after boot, as a record names it): false once that process
// is gone, its pid perhaps another's now, or /proc/PID/stat cannot be read.
func (fs FS) StartedAt(pid int, start uint64) bool {
	st, err := fs.Stat(pid)
	return err == nil && st.Start == start
}

// PPID reads the parent pid from /proc/PID/stat.
func (fs FS) PPID(pid int) (int, error) {
	st, err := fs.Stat(pid)
	return st.PPID, err
}

// parseStat reads fields 4 (ppid) and 22 (starttime) of /proc/PID/stat. The
// command name (field 2) may hold spaces and parentheses, so fields are
// counted from its last ')'. A missing starttime reads as 0.
func parseStat(b []byte) (Stat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return Stat{}, fmt.Errorf("stat: %w", errMalformed)
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3, the state
	if len(f) < 2 {
		return Stat{}, fmt.Errorf("stat: %w", errMalformed)
	}
	ppid, err := strconv.Atoi(string(f[1]))
	if err != nil || ppid < 0 {
		return Stat{}, fmt.Errorf("stat ppid %q: %w", f[1], errMalformed)
	}
	st := Stat{PPID: ppid}
	if len(f) > 19 {
		st.Start, err = strconv.ParseUint(string(f[19]), 10, 64)
		if err != nil {
			return Stat{}, fmt.Errorf("stat starttime %q: %w", f[19], errMalformed)
		}
	}
	return st, nil
}
