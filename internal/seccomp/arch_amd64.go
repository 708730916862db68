package seccomp

import "golang.org/x/sys/unix"

// AuditArch is AUDIT_ARCH_X86_64: the filter passes other architectures' calls.
const AuditArch = 0xc000003e

// SysUnlink is unlink(2), which arm64 does not have.
const SysUnlink = unix.SYS_UNLINK
