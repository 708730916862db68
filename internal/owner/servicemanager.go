package owner

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/takeover/takeover/internal/procfs"
	"golang.org/x/sys/unix"
)

// IsServiceManager reports whether process pid (under the /proc at proc) is
// systemd, by what another process cannot fake: the file it runs
// (/proc/PID/exe, which a rename does not change) is named systemd, owned
// by root and writable by root alone, and it runs in takeover's own user
// namespace, where no unprivileged process can point its exe at another
// file (PR_SET_MM_MAP needs CAP_CHECKPOINT_RESTORE there). Its name (comm)
// is anyone's to set: it is believed only of pid 1 of takeover's pid
// namespace, which no other user can be, when its exe cannot be read (a
// takeover that is not root).
func IsServiceManager(proc string, pid int) bool {
	dir := filepath.Join(proc, strconv.Itoa(pid))
	exe, err := os.Readlink(filepath.Join(dir, "exe"))
	if err != nil {
		return pid == 1 && ProcName(procfs.FS(proc), pid) == "systemd"
	}
	var st, mine, its unix.Stat_t
	switch {
	case filepath.Base(strings.TrimSuffix(exe, " (deleted)")) != "systemd",
		unix.Stat(filepath.Join(dir, "exe"), &st) != nil || st.Uid != 0 || st.Mode&0o022 != 0,
		unix.Stat("/proc/self/ns/user", &mine) != nil || unix.Stat(filepath.Join(dir, "ns/user"), &its) != nil,
		mine.Dev != its.Dev || mine.Ino != its.Ino:
		return false
	}
	return true
}
