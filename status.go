package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/target"
)

// `takeover status`: every takeover of this user on this host, from the
// status records its launchers write into the run directory at every
// change, each checked against the live process (pid and start time).

// A takeoverStatus is one launcher as `takeover status` reports it: its
// status record, and which of its targets it serves now (the run
// directory's records name it) or which newer takeover replaced it.
type takeoverStatus struct {
	supervise.Status
	Serving    []string `json:"serving"`               // its targets whose record names it
	ReplacedBy int      `json:"replaced_by,omitempty"` // the newer takeover that serves them now
}

const statusUsage = `usage: takeover status [--json] [PORTSPEC|PATH...]

Every takeover of this user on this host (or those with the targets named):
its pid, targets, the generation serving, the old ones still draining, the
last swap, restarts and failed reloads. Exits 0 when something serves each
target named (or, naming none, when some takeover runs), 1 when not.
`

// runStatus implements `takeover status`.
func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("takeover status", statusUsage)
	asJSON := fs.Bool("json", false, "print JSON")
	if ok, code := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	var specs target.List
	for _, a := range fs.Args() {
		if err := parseTarget(&specs, a); err != nil {
			badUsage(stderr, "takeover status", err.Error())
			return exitUsage
		}
	}
	dir, err := rundir.Open(rundir.Default(), false)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "takeover status: %v\n", err)
		return exitFailure
	}
	var out []takeoverStatus
	if dir != nil {
		out = readStatuses(dir, specs)
		dir.Close()
	}
	if *asJSON {
		if out == nil {
			out = []takeoverStatus{}
		}
		printJSON(stdout, out)
	} else {
		printStatus(stdout, specs, out, time.Now())
	}
	if len(specs) == 0 {
		if len(out) == 0 {
			return exitFailure
		}
		return 0
	}
	for _, spec := range specs {
		if !slices.ContainsFunc(out, func(t takeoverStatus) bool {
			return slices.ContainsFunc(t.Serving, func(p string) bool { return sameTarget(spec, p) })
		}) {
			return exitFailure
		}
	}
	return 0
}

// printJSON prints v indented, as who, status and doctor print with --json.
func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// parseTarget adds a PORTSPEC or a PATH (it has a /) to specs.
func parseTarget(specs *target.List, a string) error {
	if strings.Contains(a, "/") {
		return target.PathFlag{List: specs}.Set(a)
	}
	return specs.Set(a)
}

// readStatuses returns the status records of the run directory whose
// launcher still runs, those with one of specs' targets if any are named,
// in pid order.
func readStatuses(dir *rundir.Dir, specs target.List) []takeoverStatus {
	var out []takeoverStatus
	for pid, b := range dir.Statuses() {
		var t takeoverStatus
		if json.Unmarshal(b, &t.Status) != nil || t.TakeoverPID != pid {
			continue
		}
		if !procfs.FS("/proc").StartedAt(pid, t.TakeoverStart) {
			continue // gone, its pid perhaps reused
		}
		if len(specs) > 0 && !slices.ContainsFunc(t.Ports, func(p string) bool {
			return slices.ContainsFunc(specs, func(s target.Spec) bool { return sameTarget(s, p) })
		}) {
			continue
		}
		t.Serving = []string{}
		for _, p := range t.Ports {
			var one target.List
			if parseTarget(&one, p) != nil {
				continue
			}
			switch r, ok := rundir.ReadRecord(dir, one[0].Key()); {
			case ok && r.Launcher == pid:
				t.Serving = append(t.Serving, p)
			case ok:
				t.ReplacedBy = r.Launcher
			}
		}
		if t.ReplacedBy != 0 && len(t.Serving) == 0 {
			t.State = "replaced" // its server drains, or it waits for it to exit
		}
		out = append(out, t)
	}
	slices.SortFunc(out, func(a, b takeoverStatus) int { return a.TakeoverPID - b.TakeoverPID })
	return out
}

// sameTarget reports whether spec names the target p (as a status record
// spells it): the same key, or the same port where either names every
// address.
func sameTarget(spec target.Spec, p string) bool {
	var one target.List
	if parseTarget(&one, p) != nil {
		return false
	}
	o := one[0]
	if o.Key() == spec.Key() {
		return true
	}
	return o.Net == spec.Net && o.Net != target.NetUnix && o.Port == spec.Port && (!o.Addr.IsValid() || !spec.Addr.IsValid())
}

// printStatus prints out for people.
func printStatus(w io.Writer, specs target.List, out []takeoverStatus, now time.Time) {
	if len(out) == 0 {
		if len(specs) > 0 {
			fmt.Fprintf(w, "no takeover serves %s\n", specs.String())
		} else {
			fmt.Fprintln(w, "no takeover runs as this user")
		}
		return
	}
	ago := func(t time.Time) string { return now.Sub(t).Round(time.Second).String() }
	ms := func(v float64) string {
		return time.Duration(v * float64(time.Millisecond)).Round(10 * time.Microsecond).String()
	}
	for _, t := range out {
		state := t.State
		if t.ReplacedBy != 0 {
			state = fmt.Sprintf("replaced by takeover pid %d", t.ReplacedBy)
		}
		fmt.Fprintf(w, "takeover pid %d  %s  %s\n", t.TakeoverPID, strings.Join(t.Ports, " "), state)
		if t.ChildPID != 0 {
			fmt.Fprintf(w, "  generation %d  pid %d  up %s (since %s)  ready by %s  %s\n", t.Generation, t.ChildPID,
				ago(t.ServingSince), t.ServingSince.Local().Format("2006-01-02 15:04:05"), t.ReadyBy, strings.Join(t.Command, " "))
		}
		for _, d := range t.Draining {
			under := ""
			if d.TakeoverPID != 0 && d.TakeoverPID != t.TakeoverPID {
				under = fmt.Sprintf(" (under takeover pid %d)", d.TakeoverPID)
			}
			fmt.Fprintf(w, "  draining: pid %d%s  %s  for %s (since %s)\n", d.PID, under, d.Target, ago(d.Since), d.Since.Local().Format("15:04:05"))
		}
		if p := t.Probation; p != nil {
			canary := ""
			if p.Canary > 0 {
				canary = fmt.Sprintf(", canary %d %%", p.Canary)
			}
			fmt.Fprintf(w, "  probation: old pids %v idle beside it%s, %s left (until %s)\n", p.OldPIDs, canary,
				p.Until.Sub(now).Round(time.Second), p.Until.Local().Format("15:04:05"))
		}
		if r := t.LastRollback; r != nil {
			fmt.Fprintf(w, "  last rollback %s ago: generation %d (pid %d) %s\n", ago(r.At), r.Generation, r.PID, r.Why)
		}
		for _, s := range t.LastSwap {
			line := fmt.Sprintf("  last swap: %s %s", s.Address, s.Strategy)
			if s.Via != "" {
				line += " via " + s.Via
			}
			if s.Fenced {
				line += ", fenced"
			}
			if s.OldPID != 0 {
				line += fmt.Sprintf(", old pid %d", s.OldPID)
			}
			if s.Strategy != "fresh" {
				line += ", refused " + ms(s.RefusedWindowMS)
			}
			line += fmt.Sprintf(", ready wait %s, total %s", ms(s.ReadyWaitMS), ms(s.TotalMS))
			fmt.Fprintln(w, line)
		}
		var swaps uint64
		for _, c := range t.Counters.Swaps {
			swaps += c.N
		}
		fmt.Fprintf(w, "  swaps %d  restarts %d  failed reloads %d  rollbacks %d", swaps, t.Counters.Restarts, t.Counters.FailedReloads, t.Counters.Rollbacks)
		if r := t.LastRestart; r != nil {
			fmt.Fprintf(w, "  (last restart %s ago: pid %d exited with status %d)", ago(r.At), r.DeadPID, r.DeadStatus)
		}
		if f := t.LastFailedReload; f != nil {
			fmt.Fprintf(w, "  (last failed reload %s ago: %s)", ago(f.At), f.Why)
		}
		fmt.Fprintln(w)
	}
}
