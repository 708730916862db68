package procfs

// A thread's status: its process, its user, its capabilities and what its
// new files get.

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// A Status holds the fields takeover needs from /proc/PID/status: the
// thread group (process) id, the real uid and the effective capabilities.
type Status struct {
	Tgid   int
	UID    int
	CapEff uint64
	// What the thread's new files get (FileOwner): its filesystem ids,
	// groups and umask, where the kernel says them.
	files              FileOwner
	hasFSIDs, hasUmask bool
}

// A FileOwner is what a process's new files get: its filesystem ids and
// groups, and the mode bits its umask takes away.
type FileOwner struct {
	UID, GID int
	Groups   []int
	Umask    uint32
}

// FileOwner returns what a file the thread made would get.
func (st Status) FileOwner() (FileOwner, error) {
	if !st.hasFSIDs || !st.hasUmask {
		return FileOwner{}, fmt.Errorf("status without the filesystem ids or the umask: %w", errMalformed)
	}
	return st.files, nil
}

// Status reads /proc/PID/status; PID may be a thread's id.
func (fs FS) Status(pid int) (Status, error) {
	b, err := os.ReadFile(fs.path(pid, "status"))
	if err != nil {
		return Status{}, err
	}
	return parseThreadStatus(string(b))
}

// parseThreadStatus reads Tgid, the real Uid and CapEff, which it needs,
// and the fourth (filesystem) ids of Uid and Gid, Groups and Umask, which
// only a unix target's bind needs.
func parseThreadStatus(s string) (Status, error) {
	st := Status{files: FileOwner{Groups: []int{}}}
	var seen int
	fsIDs := 0
	for _, line := range strings.Split(s, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		var err error
		switch key {
		case "Tgid":
			st.Tgid, err = strconv.Atoi(f[0])
			seen |= 1
		case "Uid":
			st.UID, err = strconv.Atoi(f[0])
			seen |= 2
			if err == nil && len(f) == 4 {
				st.files.UID, err = strconv.Atoi(f[3])
				fsIDs++
			}
		case "Gid":
			if len(f) == 4 {
				st.files.GID, err = strconv.Atoi(f[3])
				fsIDs++
			}
		case "Groups":
			for _, g := range f {
				var n int
				if n, err = strconv.Atoi(g); err != nil {
					break
				}
				st.files.Groups = append(st.files.Groups, n)
			}
		case "Umask":
			var m uint64
			m, err = strconv.ParseUint(f[0], 8, 32)
			st.files.Umask, st.hasUmask = uint32(m), true
		case "CapEff":
			st.CapEff, err = strconv.ParseUint(f[0], 16, 64)
			seen |= 4
		}
		if err != nil {
			return Status{}, fmt.Errorf("status %s: %w", key, errMalformed)
		}
	}
	if seen != 7 || st.Tgid <= 0 {
		return Status{}, fmt.Errorf("status: %w", errMalformed)
	}
	st.hasFSIDs = fsIDs == 2
	return st, nil
}
