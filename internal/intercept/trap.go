// Package intercept is the trap that answers a generation's bind(2),
// listen(2) and unlink(2) calls, which the command's seccomp filter sends
// to takeover as notifications: which calls are trapped, the command's
// socket copied (or made like it), a bind to a target given its socket by
// the swap core (swap.Taker), the socket installed in the command (ADDFD),
// a listen on a held socket, the unlink of a unix target's path. It knows
// no launcher: what it needs of the generation comes in a Gen.
package intercept

import (
	"context"
	"log/slog"
	"sync"

	"github.com/takeover/takeover/internal/seccomp"
	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// TrappedCalls are the system calls the command's filter sends to
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

// A Gen is what the trap needs of one generation of the command.
type Gen struct {
	NotifFD  int            // the seccomp listener of the generation's filter
	Num      int            // the generation's number, for the log
	PID      int            // its command
	Alive    func() bool    // whether its command's first process still runs (a daemonizing server's does not)
	Targets  target.List    // the launcher's --port and --path targets
	Held     *swap.Holdings // the sockets the generation holds
	Prev     *swap.Holdings // those of the generation it replaces, or nil
	PrevDead func() bool    // whether that generation's command has exited, reaped or not; nil with no Prev
	// AwaitPrev, if not nil, waits before a target's bind is taken until
	// the swap that made Prev serve has completed; false: give up the bind
	// (ctx ended, or valid, the notification's, no longer holds).
	AwaitPrev func(ctx context.Context, valid func() bool) bool
	Take      *swap.Taker // gives a bind its target
	Unit      string      // the systemd unit takeover runs in, or ""
	MadeOnce  *sync.Once  // the warning that sockets are made, not copied: once per launcher
	Listened  func()      // told of a listen(2) on a held socket: readiness may look again
	Log       *slog.Logger
}

// A trap answers one generation's notifications.
type trap struct {
	Gen
}
