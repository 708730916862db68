package procfs

// A process's cgroup: the systemd unit it runs in.

import (
	"os"
	"strings"
)

// SystemdUnit returns the systemd unit process pid runs in ("app.service",
// "run-u7.service"), from its cgroup, or "".
func (fs FS) SystemdUnit(pid int) string {
	b, err := os.ReadFile(fs.path(pid, "cgroup"))
	if err != nil {
		return ""
	}
	return unitOfCgroup(string(b))
}

// unitOfCgroup finds the unit in /proc/PID/cgroup: the last component of
// the systemd hierarchy's path (cgroup2's "0::" line, or v1's
// "name=systemd") that names a service, socket or scope.
func unitOfCgroup(text string) string {
	for _, line := range strings.Split(text, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 || (parts[1] != "" && parts[1] != "name=systemd") {
			continue
		}
		comps := strings.Split(parts[2], "/")
		for i := len(comps) - 1; i >= 0; i-- {
			if c := comps[i]; strings.HasSuffix(c, ".service") || strings.HasSuffix(c, ".scope") {
				return c
			}
		}
	}
	return ""
}
