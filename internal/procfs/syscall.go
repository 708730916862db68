package procfs

// A thread's system call: the one it is blocked in, and its arguments.

import (
	"os"
	"strconv"
	"strings"
)

// A Syscall is /proc/PID/task/TID/syscall of a thread blocked in a
// system call: its number and six arguments.
type Syscall struct {
	Nr   int
	Args [6]uint64
}

// Syscall reads the system call thread tid of process pid is blocked in.
// (sc, true, nil): blocked in sc; (_, false, nil): running, outside a
// system call, or a file that does not read as the kernel writes it;
// (_, false, err): the file could not be read.
func (fs FS) Syscall(pid, tid int) (Syscall, bool, error) {
	b, err := os.ReadFile(fs.path(pid, "task/"+strconv.Itoa(tid)+"/syscall"))
	if err != nil {
		return Syscall{}, false, err
	}
	sc, ok := parseSyscall(b)
	return sc, ok, nil
}

// parseSyscall reads "NR ARG0 ... ARG5 SP PC" (hex arguments). A running
// thread reads "running", one outside a system call "-1 SP PC": ok is false.
func parseSyscall(b []byte) (Syscall, bool) {
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return Syscall{}, false
	}
	nr, err := strconv.Atoi(f[0])
	if err != nil || nr < 0 {
		return Syscall{}, false
	}
	sc := Syscall{Nr: nr}
	for i := range sc.Args {
		v, err := strconv.ParseUint(strings.TrimPrefix(f[1+i], "0x"), 16, 64)
		if err != nil {
			return Syscall{}, false
		}
		sc.Args[i] = v
	}
	return sc, true
}
