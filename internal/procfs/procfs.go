// Package procfs reads what takeover needs of /proc: the system's uptime, a
// process's stat, status, command line, executable, working directory and cgroup, its fds
// (the links, their fdinfo, and a walk of every process's fds for a set of
// sockets), its threads' system calls, and the poll array or fd_set a
// thread waits on, through /proc/PID/mem. Every reader is a method of an
// FS, the /proc to read: "/proc" in production, a fixture tree under
// testdata in tests. It returns what the files say; what to make of it
// (whom to stop, whether a server accepts) is the caller's. The kernel's
// socket tables (/proc/net) are internal/socktab's.
package procfs

import (
	"errors"
	"strconv"
)

// An FS is a procfs, named by the directory it is mounted at, as an
// http.Dir names a tree of files: FS("/proc").
type FS string

// errMalformed is a /proc file that does not read as the kernel writes it.
var errMalformed = errors.New("malformed line")

// path is fs/PID/name.
func (fs FS) path(pid int, name string) string {
	return string(fs) + "/" + strconv.Itoa(pid) + "/" + name
}
