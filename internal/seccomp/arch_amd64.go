package seccomp

import "golang.org/x/sys/unix"

// AuditArch is AUDIT_ARCH_X86_64: the filter passes other architectures' calls.
const AuditArch = 0xc000003e

// SysUnlink is unlink(2), which arm64 does not have.
const SysUnlink = unix.SYS_UNLINK

// x32Bit marks an x32 system call (__X32_SYSCALL_BIT): the x32 ABI's
// calls come as x86_64 ones with this bit set in their number.
const x32Bit = 0x40000000

// compatArch is AUDIT_ARCH_I386: int 0x80, or a 32-bit program.
const compatArch = 0x40000003

// compatCalls are the i386 numbers of the native calls the filter can
// trap, and compatSocketcall the i386 socketcall(2), with the call numbers
// of its first argument (SYS_BIND, SYS_LISTEN of linux/net.h).
var (
	compatCalls = map[uint32][]uint32{
		unix.SYS_BIND:     {361},
		unix.SYS_LISTEN:   {363},
		unix.SYS_UNLINK:   {10},
		unix.SYS_UNLINKAT: {301},
	}
	compatSocketcall    uint32 = 102
	compatSocketcallOps        = map[uint32]uint32{unix.SYS_BIND: 2, unix.SYS_LISTEN: 4}
)

// compatUnlink is 0: i386's unlink(2) is x86_64's, under another number.
const compatUnlink = 0
