package seccomp

import "golang.org/x/sys/unix"

// AuditArch is AUDIT_ARCH_AARCH64: the filter passes other architectures' calls.
const AuditArch = 0xc00000b7

// SysUnlink is -1: arm64 has only unlinkat(2).
const SysUnlink = -1

// x32Bit is 0: arm64 has no x32.
const x32Bit = 0

// compatArch is AUDIT_ARCH_ARM: a 32-bit program (AArch32), where the
// kernel runs them.
const compatArch = 0x40000028

// compatCalls are the arm numbers of the native calls the filter can
// trap; arm's unlink(2), which arm64 lacks, is trapped with unlinkat(2)
// and reported as one (compatUnlink). EABI has no socketcall.
var (
	compatCalls = map[uint32][]uint32{
		unix.SYS_BIND:     {282},
		unix.SYS_LISTEN:   {284},
		unix.SYS_UNLINKAT: {328, compatUnlink},
	}
	compatSocketcall    uint32
	compatSocketcallOps map[uint32]uint32
)

// compatUnlink is arm's unlink(2).
const compatUnlink = 10
