package procfs

// A process's small files: its command line, name, executable and working
// directory.

import (
	"os"
	"strings"
)

// ReadCmdline returns a process's command line, its arguments joined by
// spaces, as ps shows it.
func ReadCmdline(root string, pid int) (string, error) {
	b, err := os.ReadFile(pidPath(root, pid, "cmdline"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")), nil
}

// ReadComm returns a process's command name (its executable's base name,
// or the name it gave itself).
func ReadComm(root string, pid int) (string, error) {
	b, err := os.ReadFile(pidPath(root, pid, "comm"))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// ReadExe returns the executable a process runs; a binary replaced on disk
// since it started still counts as the same path.
func ReadExe(root string, pid int) (string, error) {
	exe, err := os.Readlink(pidPath(root, pid, "exe"))
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(exe, " (deleted)"), nil
}

// ReadCwd returns a process's working directory.
func ReadCwd(root string, pid int) (string, error) {
	return os.Readlink(pidPath(root, pid, "cwd"))
}
