package owner

import (
	"errors"
	"fmt"
	"strings"

	"github.com/takeover/takeover/internal/procfs"
)

// errNotReplaceable is wrapped by every refusal to replace a port's holder.
var errNotReplaceable = errors.New("not replaceable")

// Child describes the process asking for a port: what a holder must have
// in common with it to be replaced.
type Child struct {
	PID     int
	UID     int
	Exe     string
	NoForce bool   // asked for by start_server, which has no --force
	Unit    string // the systemd unit the new takeover runs in, or ""
}

// forceHint says how to replace a holder anyway.
func (c Child) forceHint() string {
	if c.NoForce {
		return "stop it first (start_server has no --force)"
	}
	return "pass --force to replace it anyway"
}

// MayReplace says why target must not be stopped to give what to child, or
// nil. A process may be replaced when it is of the child's user and either a
// takeover manages it or it runs the child's executable. force lifts that
// rule, never the rule against pid 1 and takeover's own ancestors.
func MayReplace(proc procfs.FS, t StopTarget, child Child, what string, force bool) error {
	if err := t.Forbidden(proc); err != nil {
		return fmt.Errorf("%s is held by pid %d (%s); %w", what, t.Holder.PID, ProcName(proc, t.Holder.PID), err)
	}
	if force {
		return nil
	}
	st, err := proc.Status(t.Holder.PID)
	if err != nil {
		return fmt.Errorf("%s is held by pid %d, which this user cannot inspect (%v): %w; %s", what, t.Holder.PID, err, errNotReplaceable, child.forceHint())
	}
	if st.UID != child.UID {
		return fmt.Errorf("%s is held by pid %d (%s) of uid %d, not of the new server's uid %d: %w; %s",
			what, t.Holder.PID, ProcName(proc, t.Holder.PID), st.UID, child.UID, errNotReplaceable, child.forceHint())
	}
	if t.Launcher {
		return otherService(proc, t, child, what)
	}
	if exe, _ := proc.Exe(t.Holder.PID); exe == "" || exe != child.Exe {
		return fmt.Errorf("%s is held by pid %d (%s), which is not an earlier instance of this program (%s is not %s) nor managed by a takeover: %w; %s",
			what, t.Holder.PID, ProcName(proc, t.Holder.PID), exe, child.Exe, errNotReplaceable, child.forceHint())
	}
	return nil
}

// otherService refuses to replace a takeover that a systemd service runs
// from outside that service: systemd would take the service's end for a
// stop or a crash, and restart it to take the port back.
func otherService(proc procfs.FS, t StopTarget, child Child, what string) error {
	unit := proc.SystemdUnit(t.PID)
	if !strings.HasSuffix(unit, ".service") || unit == child.Unit {
		return nil
	}
	here := "outside any systemd unit"
	if child.Unit != "" {
		here = "in " + child.Unit
	}
	return fmt.Errorf("%s is served by takeover pid %d of %s, and this takeover runs %s: one port, one service: %w; deploy with `systemctl reload %s`, or stop it first",
		what, t.PID, unit, here, errNotReplaceable, unit)
}

// ProcName is a process's name for a message: "?" when unreadable.
func ProcName(proc procfs.FS, pid int) string {
	name, err := proc.Comm(pid)
	if err != nil {
		return "?"
	}
	return name
}
