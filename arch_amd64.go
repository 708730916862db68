package main

import "golang.org/x/sys/unix"

// auditArch is AUDIT_ARCH_X86_64: the filter sends on only native system
// calls; 32-bit ones (int 0x80) pass untouched.
const auditArch = 0xc000003e

// The system calls a thread may wait for connections in.
const (
	sysAccept   = unix.SYS_ACCEPT
	sysAccept4  = unix.SYS_ACCEPT4
	sysPoll     = unix.SYS_POLL
	sysPpoll    = unix.SYS_PPOLL
	sysSelect   = unix.SYS_SELECT
	sysPselect6 = unix.SYS_PSELECT6
)

const sysUnlink = unix.SYS_UNLINK
