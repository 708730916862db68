package procfs

// A process's small files: its command line, name, executable and working
// directory.

import (
	"os"
	"strings"
)

// Cmdline returns a process's command line, its arguments joined by
// spaces, as ps shows it.
func (fs FS) Cmdline(pid int) (string, error) {
	b, err := os.ReadFile(fs.path(pid, "cmdline"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")), nil
}

// Comm returns a process's command name (its executable's base name, or
// the name it gave itself).
func (fs FS) Comm(pid int) (string, error) {
	b, err := os.ReadFile(fs.path(pid, "comm"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// Exe returns the executable a process runs; a binary replaced on disk
// since it started still counts as the same path.
func (fs FS) Exe(pid int) (string, error) {
	exe, err := os.Readlink(fs.path(pid, "exe"))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(exe, " (deleted)"), nil
}

// Cwd returns a process's working directory.
func (fs FS) Cwd(pid int) (string, error) {
	return os.Readlink(fs.path(pid, "cwd"))
}
