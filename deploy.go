package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// `takeover reload` and `takeover deploy` (issue 31): a reload or a deploy
// that waits for its outcome and says it in one line, with an exit status a
// script, a CI job, Ansible or systemd's ExecReload= can act on. Both read
// the outcome from the status record the launcher writes into the run
// directory at every change (internal/supervise/status.go): a new
// generation serving, or one more failed reload (its why), or the launcher
// gone.

const reloadUsage = `usage: takeover reload [--timeout D] [--json] PORTSPEC|PATH
       takeover reload [--timeout D] [--json] --pid PID

Sends HUP to the takeover that serves PORTSPEC or PATH (or to takeover pid
PID: systemd's ExecReload=takeover reload --pid $MAINPID), and waits until its
new generation has taken over (exit 0) or the reload has failed: the new
generation could not start, exited, or was rolled back because it was not
ready (its health check's last answer) (exit 1, saying why), or --timeout
has passed (exit 1). Exits 1 when no takeover serves the target, 2 on bad
usage.
`

const deployUsage = `usage: takeover deploy [--timeout D] [--log FILE] [--json] [LAUNCHER FLAGS] -- COMMAND [ARG...]

Starts 'takeover [LAUNCHER FLAGS] -- COMMAND...' detached (a new session,
stdin from /dev/null, its output and the command's appended to --log, or
discarded), and waits until it serves every --port and --path (exit 0): it
has taken them over from what served them, or started them fresh. If it
exits first, deploy says why and exits with its status (123: rolled back
during --probation; 124: rolled back, not ready; 125: takeover failed; 126:
not executable; 127: not found). With --probation, it waits until the
probation has passed. If
--timeout passes first, it is stopped (TERM) and deploy exits 1. The new
takeover keeps running after deploy returns.
`

// defaultWait is reload's and deploy's --timeout: a release that is not
// ready within --ready-timeout (60 s by default) is rolled back by then.
const defaultWait = 2 * time.Minute

// outcome is what reload and deploy print.
type outcome struct {
	OK          bool    `json:"ok"`
	TakeoverPID int     `json:"takeover_pid"`
	Generation  int     `json:"generation,omitempty"`
	ChildPID    int     `json:"child_pid,omitempty"`
	Strategy    string  `json:"strategy,omitempty"`
	Seconds     float64 `json:"seconds"`
	Why         string  `json:"why,omitempty"`
	ExitStatus  int     `json:"exit_status,omitempty"`
}

func (o outcome) print(w io.Writer, asJSON bool, verb string) {
	if asJSON {
		json.NewEncoder(w).Encode(o)
		return
	}
	took := time.Duration(o.Seconds * float64(time.Second)).Round(time.Millisecond)
	if o.OK {
		fmt.Fprintf(w, "%s: generation %d (pid %d) of takeover pid %d serves, by %s, in %v\n", verb, o.Generation, o.ChildPID, o.TakeoverPID, o.Strategy, took)
		return
	}
	fmt.Fprintf(w, "%s failed after %v: takeover pid %d: %s\n", verb, took, o.TakeoverPID, o.Why)
}

// readOwnStatus reads the status record of launcher pid.
func readOwnStatus(dir *rundir.Dir, pid int) (supervise.Status, bool) {
	var st supervise.Status
	b, ok := dir.ReadStatus(pid)
	if !ok || json.Unmarshal(b, &st) != nil || st.TakeoverPID != pid {
		return st, false
	}
	return st, true
}

// strategyOf names how the generation of st took its targets.
func strategyOf(st supervise.Status) string {
	var s []string
	for _, sw := range st.LastSwap {
		if !strings.Contains(strings.Join(s, " "), sw.Strategy) {
			s = append(s, sw.Strategy)
		}
	}
	if len(s) == 0 {
		return "fresh start"
	}
	return strings.Join(s, "+")
}

// runReload implements `takeover reload`.
func runReload(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("takeover reload", reloadUsage)
	timeout := fs.Duration("timeout", defaultWait, "give up waiting after this long")
	asJSON := fs.Bool("json", false, "print the outcome as JSON")
	pid := fs.Int("pid", 0, "the takeover to reload, by its `PID`, instead of a target")
	if ok, code := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	var specs target.List
	if (fs.NArg() == 1) == (*pid != 0) {
		badUsage(stderr, "takeover reload", "name one PORTSPEC or PATH, or --pid")
		return exitUsage
	}
	if *pid < 0 {
		badUsage(stderr, "takeover reload", "--pid must be a process id")
		return exitUsage
	}
	if *pid == 0 {
		if err := parseTarget(&specs, fs.Arg(0)); err != nil {
			badUsage(stderr, "takeover reload", err.Error())
			return exitUsage
		}
	}
	if *timeout <= 0 {
		badUsage(stderr, "takeover reload", "--timeout must be positive")
		return exitUsage
	}
	dir, err := rundir.Open(rundir.Default(), false)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "takeover reload: %v\n", err)
		return exitFailure
	}
	var serving *takeoverStatus
	if dir != nil {
		defer dir.Close()
		for _, t := range readStatuses(dir, specs) {
			if *pid == 0 && len(t.Serving) > 0 || *pid != 0 && t.TakeoverPID == *pid {
				serving = &t
			}
		}
	}
	switch {
	case serving == nil && *pid != 0:
		fmt.Fprintf(stderr, "takeover reload: no takeover of this user runs as pid %d\n", *pid)
		return exitFailure
	case serving == nil:
		fmt.Fprintf(stderr, "takeover reload: no takeover serves %s\n", specs.String())
		return exitFailure
	}
	before := serving.Status
	// The pidfd, opened and then checked to be the launcher the record
	// names (its start time), is what the HUP goes through: never a later
	// process that reused the pid.
	p, err := pidfd.OpenStarted(procfs.FS("/proc"), before.TakeoverPID, before.TakeoverStart)
	if err != nil {
		fmt.Fprintf(stderr, "takeover reload: takeover pid %d: %v\n", before.TakeoverPID, err)
		return exitFailure
	}
	defer p.Close()
	began := time.Now()
	if err := p.Signal(unix.SIGHUP); err != nil {
		fmt.Fprintf(stderr, "takeover reload: cannot signal takeover pid %d: %v\n", p.PID, err)
		return exitFailure
	}
	o := outcome{TakeoverPID: p.PID}
	for deadline := began.Add(*timeout); ; time.Sleep(20 * time.Millisecond) {
		st, ok := readOwnStatus(dir, p.PID)
		switch {
		case ok && st.FailedReloads > before.FailedReloads:
			o.Why = "the new generation did not serve"
			if f := st.LastFailedReload; f != nil {
				o.Why = fmt.Sprintf("generation %d: %s", f.Generation, f.Why)
			}
			o.Why += fmt.Sprintf("; generation %d (pid %d) serves on", st.Generation, st.ChildPID)
		case ok && st.State == "serving" && st.Generation > before.Generation:
			o.OK, o.Generation, o.ChildPID, o.Strategy = true, st.Generation, st.ChildPID, strategyOf(st)
		case pidfd.Exited(p.FD):
			o.Why = "takeover exited during the reload; see its log"
		case time.Now().After(deadline):
			o.Why = fmt.Sprintf("no outcome within --timeout %v; the reload may still finish: see takeover status", *timeout)
		default:
			continue
		}
		break
	}
	o.Seconds = time.Since(began).Seconds()
	o.print(stdout, *asJSON, "reload")
	if !o.OK {
		return exitFailure
	}
	return 0
}

// deployExits says what the launcher's own exit statuses mean.
var deployExits = map[int]string{
	supervise.ExitNotReady:   "the new generation was not ready within --ready-timeout and was rolled back; what served serves on",
	supervise.ExitRolledBack: "the new generation failed its --probation and was rolled back; what served serves on",
	supervise.ExitLauncher:   "takeover failed (its flags, or it could not start the command)",
	126:                      "the command is not executable",
	127:                      "the command was not found",
}

// splitDeployArgs takes deploy's own flags (--timeout, --log, --json,
// before the --) out of args; the rest are the launcher's.
func splitDeployArgs(args []string) (own, launcher []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return own, append(launcher, args[i:]...)
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") || (name != "timeout" && name != "log" && name != "json") {
			launcher = append(launcher, a)
			continue
		}
		own = append(own, a)
		if name != "json" && !hasValue && i+1 < len(args) {
			i++
			own = append(own, args[i])
		}
	}
	return own, launcher
}

// runDeploy implements `takeover deploy`.
func runDeploy(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("takeover deploy", deployUsage)
	timeout := fs.Duration("timeout", defaultWait, "stop the new takeover and fail if it does not serve within this long")
	logFile := fs.String("log", "", "append the new takeover's output (and its command's) to this `FILE` (default: discarded)")
	asJSON := fs.Bool("json", false, "print the outcome as JSON")
	own, rest := splitDeployArgs(args)
	if ok, code := parseArgs(fs, own, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() > 0 {
		badUsage(stderr, "takeover deploy", "unexpected "+fs.Arg(0))
		return exitUsage
	}
	var why strings.Builder
	cfg, err := parseFlags(rest, io.Discard, &why)
	switch {
	case err != nil:
		what := err.Error()
		if errors.Is(err, errUsage) { // parseArgs said what is wrong, in its first line
			what, _, _ = strings.Cut(why.String(), "\n")
			what = strings.TrimPrefix(what, "takeover: ")
		}
		badUsage(stderr, "takeover deploy", what)
		return exitUsage
	case cfg.Command == nil:
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	case *timeout <= 0:
		badUsage(stderr, "takeover deploy", "--timeout must be positive")
		return exitUsage
	}
	dir, err := rundir.Open(rundir.Default(), true)
	if err != nil {
		fmt.Fprintf(stderr, "takeover deploy: %v\n", err)
		return exitFailure
	}
	defer dir.Close()
	out, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if *logFile != "" {
		out, err = os.OpenFile(*logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	}
	if err != nil {
		fmt.Fprintf(stderr, "takeover deploy: --log: %v\n", err)
		return exitFailure
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		out.Close()
		fmt.Fprintf(stderr, "takeover deploy: %v\n", err)
		return exitFailure
	}
	// Detached as start_server --daemonize is (startserver_daemon.go): the
	// same binary again, in a session of its own, so that the caller's
	// terminal, its process group's signals and its exit do not reach it.
	began := time.Now()
	proc, err := os.StartProcess("/proc/self/exe", append([]string{os.Args[0]}, rest...), &os.ProcAttr{
		Files: []*os.File{null, out, out},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	null.Close()
	out.Close()
	if err != nil {
		fmt.Fprintf(stderr, "takeover deploy: cannot start takeover: %v\n", err)
		return exitFailure
	}
	exited := make(chan int, 1)
	go func() {
		st, err := proc.Wait()
		if err != nil {
			exited <- -1
			return
		}
		exited <- st.ExitCode()
	}()
	o := outcome{TakeoverPID: proc.Pid}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(*timeout)
wait:
	for {
		select {
		case code := <-exited:
			o.ExitStatus = code
			o.Why = fmt.Sprintf("takeover exited with status %d", code)
			if m, ok := deployExits[code]; ok {
				o.Why += ": " + m
			}
			if *logFile != "" {
				o.Why += "; its log, " + *logFile
				if e := lastError(*logFile); e != "" {
					o.Why += ": " + e
				}
			}
			break wait
		case <-deadline:
			proc.Signal(unix.SIGTERM) // our child, not reaped: the pid is still its own
			o.Why = fmt.Sprintf("it did not serve within --timeout %v; stopped it", *timeout)
			break wait
		case <-tick.C:
			st, ok := readOwnStatus(dir, proc.Pid)
			if !ok || st.State != "serving" || !recordsName(dir, cfg.Ports, proc.Pid) {
				continue
			}
			o.OK, o.Generation, o.ChildPID, o.Strategy = true, st.Generation, st.ChildPID, strategyOf(st)
			break wait
		}
	}
	o.Seconds = time.Since(began).Seconds()
	o.print(stdout, *asJSON, "deploy")
	switch {
	case o.OK:
		return 0
	case o.ExitStatus > 0:
		return o.ExitStatus
	}
	return exitFailure
}

// recordsName reports whether the run directory's record of every target
// names launcher pid: it serves them all.
func recordsName(dir *rundir.Dir, specs target.List, pid int) bool {
	for _, s := range specs {
		if r, ok := rundir.ReadRecord(dir, s.Key()); !ok || r.Launcher != pid {
			return false
		}
	}
	return true
}

// lastError returns the last error takeover logged in the log file at path
// (its last 64 KiB), "" if none.
func lastError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		f.Seek(-64<<10, io.SeekEnd)
	}
	b, _ := io.ReadAll(io.LimitReader(f, 64<<10))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], "level=ERROR") || strings.Contains(lines[i], `"level":"ERROR"`) {
			return lines[i]
		}
	}
	return ""
}
