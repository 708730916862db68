package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's seccomp user-notification structs (include/uapi/linux/seccomp.h);
// golang.org/x/sys/unix has the ioctl numbers but not these.
type seccompNotif struct {
	ID    uint64
	PID   uint32 // the notifying thread's id, in takeover's pid namespace
	Flags uint32
	Nr    int32
	Arch  uint32
	IP    uint64
	Args  [6]uint64
}

type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

type seccompNotifAddfd struct {
	ID         uint64
	Flags      uint32
	SrcFD      uint32
	NewFD      uint32
	NewFDFlags uint32
}

// Classic BPF opcodes and the offsets of struct seccomp_data.
const (
	bpfLdW     = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfJeqK    = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfRetK    = unix.BPF_RET | unix.BPF_K
	dataNrOff  = 0
	dataArchOf = 4
)

// bindFilter sends bind(2) and listen(2) of the native architecture to the
// supervisor, with unlink(2) and unlinkat(2) too when there are unix
// targets, and allows every other system call untouched.
func bindFilter(unlinks bool) []unix.SockFilter {
	trapped := []uint32{unix.SYS_BIND, unix.SYS_LISTEN}
	if unlinks {
		trapped = append(trapped, unix.SYS_UNLINKAT)
		if nr := sysUnlink; nr >= 0 {
			trapped = append(trapped, uint32(nr))
		}
	}
	f := []unix.SockFilter{
		{Code: bpfLdW, K: dataArchOf},
		{Code: bpfJeqK, Jt: 1, Jf: 0, K: auditArch},
		{Code: bpfRetK, K: unix.SECCOMP_RET_ALLOW},
		{Code: bpfLdW, K: dataNrOff},
	}
	for i, nr := range trapped {
		// a match jumps over the remaining tests and the ALLOW
		f = append(f, unix.SockFilter{Code: bpfJeqK, Jt: uint8(len(trapped) - i), Jf: 0, K: nr})
	}
	return append(f,
		unix.SockFilter{Code: bpfRetK, K: unix.SECCOMP_RET_ALLOW},
		unix.SockFilter{Code: bpfRetK, K: unix.SECCOMP_RET_USER_NOTIF})
}

// errNoSeccomp wraps every reason the filter cannot be had here.
var errNoSeccomp = errors.New("seccomp user notification is not available")

// installFilter installs bindFilter on the calling thread, which must be
// locked to its goroutine and must be the one that execs the command, and
// returns the notification fd.
func installFilter(unlinks bool) (int, error) {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("%w: prctl(PR_SET_NO_NEW_PRIVS): %v", errNoSeccomp, err)
	}
	insns := bindFilter(unlinks)
	prog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV)
	for {
		fd, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&prog)))
		runtime.KeepAlive(insns)
		switch {
		case errno == 0:
			return int(fd), nil
		case errno == unix.EINVAL && flags&unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV != 0:
			// Before Linux 5.19: without it, a signal to the child restarts
			// its bind as a new notification, which the handlers tolerate.
			flags &^= unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
			continue
		case errno == unix.EBUSY:
			return -1, fmt.Errorf("%w: another seccomp listener is already installed above this process (a takeover inside a takeover, or a container runtime that uses one)", errNoSeccomp)
		case errno == unix.ENOSYS || errno == unix.EINVAL:
			return -1, fmt.Errorf("%w: the kernel lacks SECCOMP_FILTER_FLAG_NEW_LISTENER (needs Linux 5.0 or later with CONFIG_SECCOMP_FILTER): %v", errNoSeccomp, errno)
		default:
			return -1, fmt.Errorf("%w: seccomp(SECCOMP_SET_MODE_FILTER) was refused, perhaps by a container's own seccomp profile: %v", errNoSeccomp, errno)
		}
	}
}

func notifRecv(fd int, n *seccompNotif) error {
	*n = seccompNotif{} // the kernel wants it zeroed (EINVAL otherwise)
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
}

func notifSend(fd int, r *seccompNotifResp) error {
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(r))
}

// notifValid reports whether the notification is still pending: the thread
// that made it has not died (its TID perhaps reused) meanwhile.
func notifValid(fd int, id uint64) bool {
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)) == nil
}

// notifAddFD installs src in the notifying process at newFD, replacing what
// was there (SECCOMP_ADDFD_FLAG_SETFD, as dup2 does).
func notifAddFD(fd int, id uint64, src, newFD int, cloexec bool) error {
	a := seccompNotifAddfd{ID: id, Flags: unix.SECCOMP_ADDFD_FLAG_SETFD, SrcFD: uint32(src), NewFD: uint32(newFD)}
	if cloexec {
		a.NewFDFlags = unix.O_CLOEXEC
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_ADDFD, uintptr(unsafe.Pointer(&a)))
		if errno != unix.EINTR {
			if errno != 0 {
				return errno
			}
			return nil
		}
	}
}

// checkAddFD reports whether the kernel has SECCOMP_IOCTL_NOTIF_ADDFD
// (Linux 5.9), which every handoff needs: asked to install a real fd for a
// notification that does not exist, it answers ENOENT; a kernel without it
// does not know the ioctl (EINVAL).
func checkAddFD(notifFD int) error {
	a := seccompNotifAddfd{ID: ^uint64(0), SrcFD: uint32(notifFD)}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(notifFD), unix.SECCOMP_IOCTL_NOTIF_ADDFD, uintptr(unsafe.Pointer(&a)))
	if errno == unix.EINVAL || errno == unix.ENOTTY {
		return fmt.Errorf("%w: this kernel has seccomp user notification but not SECCOMP_IOCTL_NOTIF_ADDFD, which takeover needs to give a server its socket (Linux 5.9 or later)", errNoSeccomp)
	}
	return nil
}

// Linux 6.6's SECCOMP_IOCTL_NOTIF_SET_FLAGS and its one flag.
const (
	seccompIoctlNotifSetFlags    = 0x40082104 // SECCOMP_IOW(4, __u64)
	seccompUserNotifFDSyncWakeUp = 1
)

// syncWakeUp asks the kernel to wake takeover for a notification on the
// notifying thread's CPU, and the thread for the answer on takeover's: a
// trapped unlink costs 9 µs instead of 13 (BenchmarkUnlink). Kernels
// before 6.6 lack it: no harm.
func syncWakeUp(notifFD int) {
	unix.Syscall(unix.SYS_IOCTL, uintptr(notifFD), seccompIoctlNotifSetFlags, seccompUserNotifFDSyncWakeUp)
}

func ioctlPtr(fd int, req uint, p unsafe.Pointer) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(p))
		if errno != unix.EINTR {
			if errno != 0 {
				return errno
			}
			return nil
		}
	}
}

// readSockaddr reads the address a notifying thread passed to bind(2) from
// its memory, and checks afterwards that the notification still stands, so
// that the bytes are known to be that thread's.
func readSockaddr(notifFD int, n *seccompNotif) ([]byte, error) {
	size := n.Args[2]
	if size > 128 { // sizeof(struct sockaddr_storage)
		size = 128
	}
	mem, err := os.Open("/proc/" + strconv.Itoa(int(n.PID)) + "/mem")
	if err != nil {
		return nil, err
	}
	defer mem.Close()
	if !notifValid(notifFD, n.ID) {
		return nil, errors.New("the notifying thread is gone")
	}
	b := make([]byte, size)
	if _, err := mem.ReadAt(b, int64(n.Args[1])); err != nil {
		return nil, err
	}
	if !notifValid(notifFD, n.ID) {
		return nil, errors.New("the notifying thread is gone")
	}
	return b, nil
}

// parseSockaddr reads a struct sockaddr_in or sockaddr_in6. ok is false for
// every other family, and for a length bind(2) itself would refuse.
func parseSockaddr(b []byte) (ap netip.AddrPort, family int, ok bool) {
	if len(b) < 2 {
		return netip.AddrPort{}, 0, false
	}
	family = int(binary.NativeEndian.Uint16(b))
	switch {
	case family == unix.AF_INET && len(b) >= unix.SizeofSockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:])), family, true
	case family == unix.AF_INET6 && len(b) >= 24: // SIN6_LEN_RFC2133: without the scope id
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), binary.BigEndian.Uint16(b[2:])), family, true
	}
	return netip.AddrPort{}, family, false
}

// threadStatus holds the fields takeover needs from /proc/PID/status: the
// thread group (process) id, the real uid and the effective capabilities.
type threadStatus struct {
	Tgid   int
	UID    int
	CapEff uint64
}

// readStatus reads procRoot/PID/status; PID may be a thread's id.
func readStatus(procRoot string, pid int) (threadStatus, error) {
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return threadStatus{}, err
	}
	return parseThreadStatus(string(b))
}

func parseThreadStatus(s string) (threadStatus, error) {
	var st threadStatus
	var seen int
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
		case "CapEff":
			st.CapEff, err = strconv.ParseUint(f[0], 16, 64)
			seen |= 4
		}
		if err != nil {
			return threadStatus{}, fmt.Errorf("status %s: %w", key, errMalformed)
		}
	}
	if seen != 7 || st.Tgid <= 0 {
		return threadStatus{}, fmt.Errorf("status: %w", errMalformed)
	}
	return st, nil
}
