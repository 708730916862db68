// Package procfs reads what takeover needs of /proc: a process's stat,
// status, command line, executable, working directory and cgroup, its fds
// (the links, their fdinfo, and a walk of every process's fds for a set of
// sockets), its threads' system calls, and the poll array or fd_set a
// thread waits on, through /proc/PID/mem. Every reader takes the /proc
// root, "/proc" in production and a fixture tree under testdata in tests,
// and returns what the files say; what to make of it (whom to stop,
// whether a server accepts) is the caller's. The kernel's socket tables
// (/proc/net) are internal/socktab's.
package procfs

import (
	"errors"
	"strconv"
)

// errMalformed is a /proc file that does not read as the kernel writes it.
var errMalformed = errors.New("malformed line")

// pidPath is root/PID/name.
func pidPath(root string, pid int, name string) string {
	return root + "/" + strconv.Itoa(pid) + "/" + name
}
