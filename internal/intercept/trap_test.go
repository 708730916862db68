package intercept

import (
	"slices"
	"testing"

	"github.com/takeover/takeover/internal/seccomp"
	"golang.org/x/sys/unix"
)

// The filter traps bind and listen, and unlinks only with unix targets.
func TestTrappedCalls(t *testing.T) {
	for _, unlinks := range []bool{false, true} {
		calls := TrappedCalls(unlinks)
		for _, nr := range []uint32{unix.SYS_BIND, unix.SYS_LISTEN} {
			if !slices.Contains(calls, nr) {
				t.Errorf("unlinks=%v: system call %d not trapped", unlinks, nr)
			}
		}
		if got := slices.Contains(calls, unix.SYS_UNLINKAT); got != unlinks {
			t.Errorf("unlinks=%v: unlinkat trapped = %v", unlinks, got)
		}
		if nr := seccomp.SysUnlink; nr >= 0 && slices.Contains(calls, uint32(nr)) != unlinks {
			t.Errorf("unlinks=%v: unlink trapped = %v", unlinks, !unlinks)
		}
	}
}
