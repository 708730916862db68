// Package seccomp is the kernel's seccomp user notification, as takeover
// uses it: a filter that sends chosen system calls of the calling thread
// (and of what it execs) to a supervisor, which reads each notification,
// looks into the notifying thread's memory, installs fds in its process,
// and answers. Linux 5.0 for the listener, 5.9 for AddFD.
package seccomp

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A Notif is one trapped system call (struct seccomp_notif): golang.org/x/sys
// has the ioctl numbers but not the structs.
type Notif struct {
	ID    uint64
	PID   uint32 // the notifying thread's id, in the supervisor's pid namespace
	Flags uint32
	Nr    int32
	Arch  uint32
	IP    uint64
	Args  [6]uint64
}

// A Resp answers a Notif (struct seccomp_notif_resp): Val and -Error are
// what the call returns, unless Flags has SECCOMP_USER_NOTIF_FLAG_CONTINUE.
type Resp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

// Continue lets the system call run as if never trapped.
var Continue = Resp{Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}

type addfd struct {
	ID         uint64
	Flags      uint32
	SrcFD      uint32
	NewFD      uint32
	NewFDFlags uint32
}

// Classic BPF opcodes and the offsets of struct seccomp_data.
const (
	ldW       = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	jeqK      = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	retK      = unix.BPF_RET | unix.BPF_K
	dataNr    = 0
	dataArch  = 4
	archMatch = 1 // the jump over the ALLOW for another architecture
)

// Filter returns a program that returns action for the system calls calls
// of the native architecture, and allows every other system call.
func Filter(calls []uint32, action uint32) []unix.SockFilter {
	f := []unix.SockFilter{
		{Code: ldW, K: dataArch},
		{Code: jeqK, Jt: archMatch, Jf: 0, K: AuditArch},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
		{Code: ldW, K: dataNr},
	}
	for i, nr := range calls {
		// a match jumps over the remaining tests and the ALLOW
		f = append(f, unix.SockFilter{Code: jeqK, Jt: uint8(len(calls) - i), Jf: 0, K: nr})
	}
	return append(f,
		unix.SockFilter{Code: retK, K: unix.SECCOMP_RET_ALLOW},
		unix.SockFilter{Code: retK, K: action})
}

// ErrUnavailable wraps every reason a listener cannot be had here.
var ErrUnavailable = errors.New("seccomp user notification is not available")

// Install installs a filter that sends calls to a supervisor on the
// calling thread, which must be locked to its goroutine and must be the
// one that execs the supervised command, and returns the notification fd.
func Install(calls []uint32) (int, error) {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("%w: prctl(PR_SET_NO_NEW_PRIVS): %v", ErrUnavailable, err)
	}
	insns := Filter(calls, unix.SECCOMP_RET_USER_NOTIF)
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
			// its call as a new notification, which handlers must tolerate.
			flags &^= unix.SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
			continue
		case errno == unix.EBUSY:
			return -1, fmt.Errorf("%w: another seccomp listener is already installed above this process (a takeover inside a takeover, or a container runtime that uses one)", ErrUnavailable)
		case errno == unix.ENOSYS || errno == unix.EINVAL:
			return -1, fmt.Errorf("%w: the kernel lacks SECCOMP_FILTER_FLAG_NEW_LISTENER (needs Linux 5.0 or later with CONFIG_SECCOMP_FILTER): %v", ErrUnavailable, errno)
		default:
			return -1, fmt.Errorf("%w: seccomp(SECCOMP_SET_MODE_FILTER) was refused, perhaps by a container's own seccomp profile: %v", ErrUnavailable, errno)
		}
	}
}

// Recv waits for the next notification on fd.
func Recv(fd int, n *Notif) error {
	*n = Notif{} // the kernel wants it zeroed (EINVAL otherwise)
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
}

// Send answers a notification.
func Send(fd int, r *Resp) error {
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(r))
}

// Valid reports whether the notification is still pending: the thread
// that made it has not died (its TID perhaps reused) meanwhile.
func Valid(fd int, id uint64) bool {
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id)) == nil
}

// AddFD installs src in the notifying process at newFD, replacing what was
// there (SECCOMP_ADDFD_FLAG_SETFD, as dup2 does).
func AddFD(fd int, id uint64, src, newFD int, cloexec bool) error {
	a := addfd{ID: id, Flags: unix.SECCOMP_ADDFD_FLAG_SETFD, SrcFD: uint32(src), NewFD: uint32(newFD)}
	if cloexec {
		a.NewFDFlags = unix.O_CLOEXEC
	}
	return ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
}

// CheckAddFD reports whether the kernel has SECCOMP_IOCTL_NOTIF_ADDFD
// (Linux 5.9): asked to install a real fd for a notification that does not
// exist, it answers ENOENT; a kernel without it does not know the ioctl.
func CheckAddFD(fd int) error {
	a := addfd{ID: ^uint64(0), SrcFD: uint32(fd)}
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_ADDFD, uintptr(unsafe.Pointer(&a)))
	if errno == unix.EINVAL || errno == unix.ENOTTY {
		return fmt.Errorf("%w: this kernel has seccomp user notification but not SECCOMP_IOCTL_NOTIF_ADDFD, which takeover needs to give a server its socket (Linux 5.9 or later)", ErrUnavailable)
	}
	return nil
}

// Linux 6.6's SECCOMP_IOCTL_NOTIF_SET_FLAGS and its one flag.
const (
	ioctlNotifSetFlags    = 0x40082104 // SECCOMP_IOW(4, __u64)
	userNotifFDSyncWakeUp = 1
)

// SyncWakeUp asks the kernel to wake the supervisor for a notification on
// the notifying thread's CPU, and the thread for the answer on the
// supervisor's: a trapped unlink costs 9 µs instead of 13 (takeover's
// BenchmarkUnlink). Kernels before 6.6 lack it: no harm.
func SyncWakeUp(fd int) {
	unix.Syscall(unix.SYS_IOCTL, uintptr(fd), ioctlNotifSetFlags, userNotifFDSyncWakeUp)
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
