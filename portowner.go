package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/target"
)

// whoListener is one listening socket as `takeover who` reports it.
type whoListener struct {
	Address string      `json:"address"`
	Inode   uint64      `json:"inode"`
	Hidden  bool        `json:"hidden,omitempty"` // some holders may not be visible to this user
	Holders []whoHolder `json:"holders"`
	Stop    []whoStop   `json:"stop"`
	// V6Only: an IPv6 wildcard that takes no IPv4 connection (nginx's
	// `listen [::]:80`), beside which an IPv4 socket may listen on the port.
	V6Only bool `json:"ipv6_only,omitempty"`
}

type whoHolder struct {
	PID     int     `json:"pid"`
	PPID    int     `json:"ppid"`
	FD      int     `json:"fd"`
	User    string  `json:"user"`
	Uptime  float64 `json:"uptime_seconds"`
	Command string  `json:"command"`
}

type whoStop struct {
	PID      int    `json:"pid"`
	Launcher bool   `json:"managed_by_takeover"`
	ForPID   int    `json:"for_pid"`
	Refused  string `json:"refused,omitempty"` // why this process is never signalled
	// DetachedLeft: a launcher its supervisor stopped (--detach-on-stop)
	// serves this many more seconds, unless a newer takeover replaces it.
	DetachedLeft float64 `json:"detached_seconds_left,omitempty"`
}

// runWho implements `takeover who [--json] PORTSPEC...`. It returns the exit
// status: 0 when something listens, 1 when nothing does, 2 on bad usage.
func runWho(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("takeover who", "usage: takeover who [--json] PORTSPEC|PATH...\n\nPORTSPEC is 8100, 127.0.0.1:8100, [::1]:8100 or [::]:8100 (TCP), or udp:5353;\nPATH is a unix socket's path, with a / in it.\n")
	asJSON := fs.Bool("json", false, "print JSON")
	if ok, code := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "takeover who: name at least one port, like: takeover who 8100")
		return exitUsage
	}
	var specs target.List
	for _, a := range fs.Args() {
		if err := parseTarget(&specs, a); err != nil {
			fmt.Fprintf(stderr, "takeover who: %v\n", err)
			return exitUsage
		}
	}
	// Without a run directory this user may trust, no process is known as
	// a takeover launcher.
	dir, err := rundir.Open(rundir.Default(), false)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "takeover who: %v; its records are ignored\n", err)
	}
	var out []whoListener
	for _, spec := range specs {
		ls, err := whoListeners(spec)
		if err != nil {
			fmt.Fprintf(stderr, "takeover who: %v\n", err)
			return exitFailure
		}
		launchers := rundir.LiveLaunchers(dir)
		for _, l := range ls {
			out = append(out, describe("/proc", dir, spec, l, launchers))
		}
	}
	if *asJSON {
		if out == nil {
			out = []whoListener{}
		}
		printJSON(stdout, out)
	} else {
		printWho(stdout, specs, out)
	}
	if len(out) == 0 {
		return 1
	}
	return 0
}

// whoListeners returns the listeners spec names and, for one address, those
// on its port that a bind to it conflicts with (0.0.0.0 takes 127.0.0.1
// too, an IPv6-only [::] does not): what a takeover of spec would replace.
func whoListeners(spec target.Spec) ([]owner.Listener, error) {
	if spec.Net == target.NetUnix || !spec.Addr.IsValid() {
		return owner.Listeners("/proc", spec, nil, false)
	}
	all, err := owner.Listeners("/proc", spec.WholePort(), nil, false)
	want := target.InetBind{Addr: netip.AddrPortFrom(spec.Addr, spec.Port)} // an IPv6 wildcard dual-stack, as the kernel binds it by default
	return slices.DeleteFunc(all, func(o owner.Listener) bool {
		return !spec.Matches(o.Addr) && !target.Conflicts(want, target.InetBind{Addr: o.Addr, V6Only: o.V6Only})
	}), err
}

func describe(proc procfs.FS, dir *rundir.Dir, spec target.Spec, l owner.Listener, launchers []int) whoListener {
	w := whoListener{Address: spec.BoundAt(l.Addr), Inode: l.Inode, Hidden: l.Hidden, Holders: []whoHolder{}, Stop: []whoStop{}}
	w.V6Only = l.V6Only && l.Addr.Addr().Is6() && l.Addr.Addr().IsUnspecified()
	for _, h := range l.Holders {
		w.Holders = append(w.Holders, describeHolder(proc, h))
	}
	for _, t := range owner.StopTargets(proc, l, launchers) {
		s := whoStop{PID: t.PID, Launcher: t.Launcher, ForPID: t.Holder.PID}
		if err := t.Forbidden(proc); err != nil {
			s.Refused = err.Error()
		}
		if r, ok := rundir.ReadRecord(dir, spec.Key()); ok && t.Launcher && r.Launcher == t.PID && r.DetachedUntil != nil {
			s.DetachedLeft = max(time.Until(*r.DetachedUntil).Round(time.Second).Seconds(), 0)
		}
		w.Stop = append(w.Stop, s)
	}
	return w
}

// describeHolder says who h is: its user, command line and age, read from
// proc. (Not through gopsutil: its cpu package reads /proc/stat twice at
// every start of the program, and its process package forks a child to
// check pidfds and reads seven files to find out whether this is a
// container: a takeover who ran 1.4 times as long as ss -ltnp.)
func describeHolder(proc procfs.FS, h owner.Holder) whoHolder {
	w := whoHolder{PID: h.PID, PPID: h.PPID, FD: h.FD}
	if st, err := proc.Status(h.PID); err == nil {
		w.User, _ = procfs.UserName(procfs.Passwd, st.UID)
	}
	w.Command, _ = proc.Cmdline(h.PID)
	if st, err := proc.Stat(h.PID); err == nil {
		if up, err := proc.Uptime(); err == nil {
			w.Uptime = st.Age(up).Round(time.Second).Seconds()
		}
	}
	return w
}

func printWho(w io.Writer, specs target.List, out []whoListener) {
	if len(out) == 0 {
		fmt.Fprintf(w, "nothing listens on %s\n", specs.String())
		return
	}
	for _, l := range out {
		only := ""
		if l.V6Only {
			only = ", IPv6 only"
		}
		fmt.Fprintf(w, "%s (socket inode %d%s)\n", l.Address, l.Inode, only)
		if len(l.Holders) == 0 && l.Hidden {
			fmt.Fprintln(w, "  held by a process this user cannot see (run as its owner or as root)")
		}
		for _, h := range l.Holders {
			fmt.Fprintf(w, "  pid %-7d user %-10s up %-9s fd %-3d %s\n",
				h.PID, h.User, time.Duration(h.Uptime)*time.Second, h.FD, h.Command)
		}
		if len(l.Holders) > 0 && l.Hidden {
			fmt.Fprintln(w, "  (some processes could not be read: there may be more holders)")
		}
		for _, s := range l.Stop {
			switch {
			case s.Refused != "":
				fmt.Fprintf(w, "  takeover would not signal pid %d: %s\n", s.PID, s.Refused)
			case s.Launcher && s.DetachedLeft > 0:
				fmt.Fprintf(w, "  takeover would signal pid %d, the takeover launcher managing pid %d, detached by its supervisor: it stops its server in %v unless a newer takeover replaces it\n",
					s.PID, s.ForPID, time.Duration(s.DetachedLeft)*time.Second)
			case s.Launcher && s.PID != s.ForPID:
				fmt.Fprintf(w, "  takeover would signal pid %d, the takeover launcher managing pid %d\n", s.PID, s.ForPID)
			case s.Launcher:
				fmt.Fprintf(w, "  takeover would signal pid %d, a takeover launcher\n", s.PID)
			default:
				fmt.Fprintf(w, "  takeover would signal pid %d (not managed by a takeover)\n", s.PID)
			}
		}
	}
}
