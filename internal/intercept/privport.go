package intercept

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// A port below net.ipv4.ip_unprivileged_port_start needs
// CAP_NET_BIND_SERVICE, and takeover binds on the command's behalf: it
// asks what the kernel would (ns_capable(net->user_ns, ...)), not only
// whether the bit is in CapEff. A capability counts in the user namespace
// the process is in and in those below it; one held in a user namespace
// of the process's own making (unshare -U -r gives a full CapEff) does not
// count for a network namespace that namespace does not own.

// mayBindPrivileged reports whether process pid could bind a privileged
// port itself: CAP_NET_BIND_SERVICE in its effective set (capEff), and its
// user namespace the one that owns its network namespace or an ancestor of
// that one. Whatever cannot be read counts as no (the bind is refused).
// (The kernel would also grant it to the owner of a user namespace made
// below the process's: not seen here, and refused.)
func mayBindPrivileged(proc string, pid int, capEff uint64) bool {
	if capEff&(1<<CapNetBindService) == 0 {
		return false
	}
	ok, err := userNSOwnsNetNS(proc, pid)
	return ok && err == nil
}

// userNSOwnsNetNS reports whether process pid's user namespace owns its
// network namespace, or is an ancestor of the user namespace that does.
func userNSOwnsNetNS(proc string, pid int) (bool, error) {
	var mine unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("%s/%d/ns/user", proc, pid), &mine); err != nil {
		return false, err
	}
	netns, err := unix.Open(fmt.Sprintf("%s/%d/ns/net", proc, pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(netns)
	ns, err := unix.IoctlRetInt(netns, unix.NS_GET_USERNS)
	if err != nil {
		return false, fmt.Errorf("the owner of pid %d's network namespace: %w", pid, err)
	}
	// Up from the owner: NS_GET_PARENT fails (EPERM) above takeover's own
	// user namespace, which is as far as a namespace can be seen from here.
	for depth := 0; depth < 64; depth++ {
		var st unix.Stat_t
		err := unix.Fstat(ns, &st)
		if err == nil && st.Dev == mine.Dev && st.Ino == mine.Ino {
			unix.Close(ns)
			return true, nil
		}
		parent, perr := unix.IoctlRetInt(ns, unix.NS_GET_PARENT)
		unix.Close(ns)
		if err != nil || perr != nil {
			return false, nil
		}
		ns = parent
	}
	unix.Close(ns)
	return false, nil
}

// privilegedBelow is net.ipv4.ip_unprivileged_port_start of process pid's
// network namespace: takeover can read only its own namespace's, so for a
// process in another (one that unshare -n or ip netns exec put it in) it
// takes the kernel's default, 1024, or its own if higher: a namespace that
// lowered it is the process's own to bind in (mayBindPrivileged), one that
// did not would otherwise have takeover bind a port there the process
// could not.
func privilegedBelow(proc string, pid int) int {
	own := UnprivilegedPortStart()
	var mine, its unix.Stat_t
	if unix.Stat(proc+"/self/ns/net", &mine) == nil && unix.Stat(fmt.Sprintf("%s/%d/ns/net", proc, pid), &its) == nil &&
		mine.Dev == its.Dev && mine.Ino == its.Ino {
		return own
	}
	return max(own, 1024)
}
