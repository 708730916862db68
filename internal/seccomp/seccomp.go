// Package seccomp is the kernel's seccomp user notification, as takeover
// uses it: a filter that sends chosen system calls of the calling thread
// (and of what it execs) to a supervisor, which reads each notification,
// looks into the notifying thread's memory, installs fds in its process,
// and answers. Linux 5.0 for the listener, 5.9 for AddFD.
package seccomp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
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
	ldW      = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	jeqK     = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	retK     = unix.BPF_RET | unix.BPF_K
	dataNr   = 0
	dataArch = 4
	dataArg0 = 16 // the low half of args[0], on a little-endian machine
)

// Filter returns a program that returns action for the system calls calls
// and allows every other system call. The calls are trapped in every ABI a
// process of this machine can make them in: the native one, x32 on x86_64
// (the same numbers with x32Bit set), and the 32-bit one (i386's int 0x80
// and socketcall(2), arm's on arm64), which Recv reports as native calls.
func Filter(calls []uint32, action uint32) []unix.SockFilter {
	native := slices.Clone(calls)
	var compat []uint32
	var ops []uint32 // socketcall(2)'s calls
	for _, nr := range calls {
		if x32Bit != 0 {
			native = append(native, nr|x32Bit)
		}
		compat = append(compat, compatCalls[nr]...)
		if op, ok := compatSocketcallOps[nr]; ok && compatSocketcall != 0 {
			ops = append(ops, op)
		}
	}
	// The program, with jumps to labels: allow and act are the two
	// returns at the end, next is the following instruction.
	const (
		next = -1 - iota
		allow
		act
	)
	type insn struct {
		code   uint16
		k      uint32
		jt, jf int // labels, or the index of the instruction
	}
	var p []insn
	match := func(nrs []uint32, otherwise int) {
		for i, nr := range nrs {
			jf := next
			if i == len(nrs)-1 {
				jf = otherwise
			}
			p = append(p, insn{jeqK, nr, act, jf})
		}
	}
	p = append(p, insn{code: ldW, k: dataArch})
	notNative := len(p) + 1 + 1 + len(native) // past the native block: ld arch check, ld nr, the matches
	p = append(p, insn{jeqK, AuditArch, next, notNative})
	p = append(p, insn{code: ldW, k: dataNr})
	match(native, allow)
	p = append(p, insn{jeqK, compatArch, next, allow})
	p = append(p, insn{code: ldW, k: dataNr})
	if len(ops) == 0 {
		match(compat, allow)
	} else {
		match(compat, next)
		p = append(p, insn{jeqK, compatSocketcall, next, allow})
		p = append(p, insn{code: ldW, k: dataArg0})
		match(ops, allow)
	}
	end := len(p)
	f := make([]unix.SockFilter, 0, end+2)
	to := func(i, label int) uint8 {
		target := label
		switch label {
		case next:
			target = i + 1
		case allow:
			target = end
		case act:
			target = end + 1
		}
		return uint8(target - i - 1)
	}
	for i, in := range p {
		sf := unix.SockFilter{Code: in.code, K: in.k}
		if in.code == jeqK {
			sf.Jt, sf.Jf = to(i, in.jt), to(i, in.jf)
		}
		f = append(f, sf)
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

// Recv waits for the next notification on fd. A call made in another ABI
// (x32, or 32-bit: see Filter) is reported as the native call it stands
// for, its number and arguments as the native call would have them; Arch
// still says which ABI it came in.
func Recv(fd int, n *Notif) error {
	*n = Notif{} // the kernel wants it zeroed (EINVAL otherwise)
	if err := ioctlPtr(fd, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n)); err != nil {
		return err
	}
	native(fd, n)
	return nil
}

// native rewrites an x32 or 32-bit call as the native one. A socketcall(2)
// has its arguments read from the caller's memory; one that cannot be read
// is left as it is, a call no handler knows.
func native(fd int, n *Notif) {
	switch n.Arch {
	case AuditArch:
		n.Nr &^= x32Bit
	case compatArch:
		for i := range n.Args {
			n.Args[i] &= 0xffffffff // a 32-bit call's arguments are 32 bits wide
		}
		nr := uint32(n.Nr)
		switch {
		case compatSocketcall != 0 && nr == compatSocketcall:
			for call, op := range compatSocketcallOps {
				var b [12]byte // three of the caller's unsigned longs
				if uint32(n.Args[0]) != op {
					continue
				}
				if k, err := read(fd, n, n.Args[1], b[:]); err == nil && k == len(b) {
					n.Nr = int32(call)
					n.Args = [6]uint64{uint64(binary.LittleEndian.Uint32(b[0:])), uint64(binary.LittleEndian.Uint32(b[4:])), uint64(binary.LittleEndian.Uint32(b[8:]))}
				}
				return
			}
		case compatUnlink != 0 && nr == compatUnlink:
			atFDCWD := int32(unix.AT_FDCWD)
			n.Nr, n.Args = unix.SYS_UNLINKAT, [6]uint64{uint64(uint32(atFDCWD)), n.Args[0], 0}
		default:
			for call, nrs := range compatCalls {
				if slices.Contains(nrs, nr) {
					n.Nr = int32(call)
					return
				}
			}
		}
	}
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
