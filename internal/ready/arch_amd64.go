package ready

import "golang.org/x/sys/unix"

// The system calls a thread may wait for connections in.
const (
	sysAccept   = unix.SYS_ACCEPT
	sysAccept4  = unix.SYS_ACCEPT4
	sysPoll     = unix.SYS_POLL
	sysPpoll    = unix.SYS_PPOLL
	sysSelect   = unix.SYS_SELECT
	sysPselect6 = unix.SYS_PSELECT6
)
