package supervise

import (
	"github.com/takeover/takeover/internal/seccomp"
	"golang.org/x/sys/unix"
)

// trappedCalls are the system calls the command's filter sends to
// takeover: bind(2) and listen(2), and with unix targets unlink(2) and
// unlinkat(2) too.
func TrappedCalls(unlinks bool) []uint32 {
	calls := []uint32{unix.SYS_BIND, unix.SYS_LISTEN}
	if unlinks {
		calls = append(calls, unix.SYS_UNLINKAT)
		if nr := seccomp.SysUnlink; nr >= 0 {
			calls = append(calls, uint32(nr))
		}
	}
	return calls
}
