package procfs

// The processes: every pid, a process's threads, and its descendants.

import (
	"bytes"
	"os"
	"slices"
	"strconv"
)

// PIDs returns the numeric entries of fs: every process's pid.
func (fs FS) PIDs() ([]int, error) {
	f, err := os.Open(string(fs))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	pids := make([]int, 0, len(names))
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Tasks returns the ids of a process's threads, from /proc/PID/task.
func (fs FS) Tasks(pid int) ([]int, error) {
	ents, err := os.ReadDir(fs.path(pid, "task"))
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(ents))
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// WithDescendants returns pids followed by their descendants, as listed in
// /proc/PID/task/*/children: a child is listed under the thread that forked
// it, which in a Go or Java program is any thread.
func (fs FS) WithDescendants(pids []int) []int {
	out := slices.Clone(pids)
	for i := 0; i < len(out) && len(out) < 4096; i++ {
		pid := strconv.Itoa(out[i])
		tasks, err := os.ReadDir(string(fs) + "/" + pid + "/task")
		if err != nil {
			continue
		}
		for _, task := range tasks {
			b, err := os.ReadFile(string(fs) + "/" + pid + "/task/" + task.Name() + "/children")
			if err != nil {
				continue
			}
			for _, f := range bytes.Fields(b) {
				if child, err := strconv.Atoi(string(f)); err == nil {
					out = append(out, child)
				}
			}
		}
	}
	return out
}
