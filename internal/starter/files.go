package starter

// The files start_server reads and writes: the status file, the pid file
// and the envdir.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// FormatStatus is start_server's status file for the live generations
// (generation -> pid): "GEN:PID" lines, sorted as Perl sorts the
// generations (as strings).
func FormatStatus(live map[int]int) []byte {
	gens := make([]string, 0, len(live))
	for gen := range live {
		gens = append(gens, strconv.Itoa(gen))
	}
	slices.Sort(gens)
	var b strings.Builder
	for _, gen := range gens {
		n, _ := strconv.Atoi(gen)
		fmt.Fprintf(&b, "%s:%d\n", gen, live[n])
	}
	return []byte(b.String())
}

// ReadStatus returns the generations a status file lists, sorted.
func ReadStatus(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var gens []int
	for line := range strings.Lines(string(b)) {
		gen, _, ok := strings.Cut(line, ":")
		if n, err := strconv.Atoi(gen); ok && err == nil && n >= 0 && !slices.Contains(gens, n) {
			gens = append(gens, n)
		}
	}
	slices.Sort(gens)
	return gens, nil
}

// LockPIDFile writes this process's pid to path and holds an exclusive
// lock on it for as long as the file is open: start_server --stop waits for
// the lock. A symlink at path is refused (O_NOFOLLOW): in a directory
// another user may write to, it could aim the truncation at any file.
func LockPIDFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o666)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := fmt.Fprintf(f, "%d\n", os.Getpid()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// ReadPIDFile reads the pid start_server wrote.
func ReadPIDFile(f *os.File) (int, error) {
	line, _ := bufio.NewReader(f).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s holds no pid (%q)", f.Name(), line)
	}
	return pid, nil
}

// ReadEnvDir reads an envdir as start_server does: each file not starting
// with a dot sets its name to its first line; an empty or unreadable file
// sets nothing.
func ReadEnvDir(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var env []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.ContainsAny(name, "=\x00") {
			continue
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		line, err := bufio.NewReader(f).ReadString('\n')
		f.Close()
		if line == "" && err != nil {
			continue
		}
		env = append(env, name+"="+strings.TrimSuffix(line, "\n"))
	}
	return env
}
