package seccomp

// AuditArch is AUDIT_ARCH_AARCH64: the filter passes other architectures' calls.
const AuditArch = 0xc00000b7

// SysUnlink is -1: arm64 has only unlinkat(2).
const SysUnlink = -1
