package ready

import "golang.org/x/sys/unix"

// The system calls a thread may wait for connections in; arm64 has no
// poll(2) nor select(2), only ppoll and pselect6 (-1 matches nothing).
const (
	sysAccept   = unix.SYS_ACCEPT
	sysAccept4  = unix.SYS_ACCEPT4
	sysPoll     = -1
	sysPpoll    = unix.SYS_PPOLL
	sysSelect   = -2
	sysPselect6 = unix.SYS_PSELECT6
)
