package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A launcher supervises the generations of one command: it starts each
// through the shim, answers its binds, forwards signals, reaps, and exits
// with the command's status.
type launcher struct {
	cfg   config
	log   *slog.Logger
	dir   string // runDir
	self  int
	start uint64 // this process's start time, for its generation records

	mu       sync.Mutex
	replaced bool // a newer takeover took the ports: exit 0 when the child is gone
}

// forwarded are the signals a launcher passes to its child.
var forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGHUP}

// runLauncher implements `takeover [flags] -- COMMAND [ARG...]`.
func runLauncher(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "takeover: %v\n", err)
		}
		return exitLauncher
	}
	if cfg.Command == nil {
		return 0 // --help
	}
	path, code, err := resolveCommand(cfg.Command[0])
	if err != nil {
		fmt.Fprintf(stderr, "takeover: %v\n", err)
		return code
	}
	st, _ := readStat("/proc", os.Getpid())
	l := &launcher{cfg: cfg, log: newLogger(stderr), dir: runDir(), self: os.Getpid(), start: st.Start}
	return l.run(path)
}

func (l *launcher) ports() []uint16 {
	ps := make([]uint16, len(l.cfg.Ports))
	for i, p := range l.cfg.Ports {
		ps[i] = p.Port
	}
	return ps
}

func (l *launcher) run(path string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	// Orphaned grandchildren (a daemonizing server's workers) are re-parented
	// to takeover, which reaps them, as PID 1 of a container would.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

	locks, err := l.lock(ctx, sigs)
	if err != nil {
		var code exitCode
		if errors.As(err, &code) {
			return int(code)
		}
		l.log.Error("cannot take the port lock", "err", err)
		return exitLauncher
	}
	g, err := l.startGeneration(ctx, path, 1)
	if err != nil {
		releaseLocks(locks)
		l.log.Error("cannot start the command", "err", err)
		return exitLauncher
	}
	exits := reap()
	ready := g.ready
	for {
		select {
		case sig := <-sigs:
			l.forward(g, sig.(syscall.Signal))
		case <-ready:
			ready = nil
			go l.completeSwap(ctx, g, locks)
		case e := <-exits:
			if e.pid != g.pid {
				continue // a re-parented orphan
			}
			g.closeCopies()
			if l.isReplaced() {
				l.log.Debug("replaced by a newer takeover; exiting", "child_status", exitStatus(e.status))
				return 0
			}
			code := exitStatus(e.status)
			select {
			case <-g.ready:
				l.log.Info("command exited", "pid", g.pid, "status", code)
			default:
				l.log.Warn("command exited before it listened on every --port; the old server, if any, was not stopped by a handoff", "pid", g.pid, "status", code)
			}
			return code
		}
	}
}

// exitCode is an error that carries the launcher's exit status.
type exitCode int

func (c exitCode) Error() string { return "exit status " + strconv.Itoa(int(c)) }

// lock takes the per-port locks; a stop signal while waiting ends takeover.
func (l *launcher) lock(ctx context.Context, sigs <-chan os.Signal) ([]*os.File, error) {
	type result struct {
		files []*os.File
		err   error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		files, err := lockPorts(ctx, l.dir, l.ports(), func(port uint16) {
			l.log.Info("waiting for another takeover of this port to finish", "port", port)
		})
		done <- result{files, err}
	}()
	for {
		select {
		case r := <-done:
			return r.files, r.err
		case sig := <-sigs:
			if sig == unix.SIGWINCH || sig == unix.SIGHUP {
				continue
			}
			cancel()
			<-done
			return nil, exitCode(128 + int(sig.(syscall.Signal)))
		}
	}
}

func releaseLocks(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// forward passes a signal to the generation's command. A stop signal that
// comes from a newer takeover (its record names it for one of our ports)
// first closes takeover's copies of the sockets, so the port can free, and
// arms the SIGKILL after --kill-timeout.
func (l *launcher) forward(g *generation, sig syscall.Signal) {
	if sig != unix.SIGWINCH && !l.isReplaced() && l.newerTakeover() {
		l.mu.Lock()
		l.replaced = true
		l.mu.Unlock()
		g.closeCopies()
		time.AfterFunc(l.cfg.killTimeout(), func() { syscall.Kill(g.pid, unix.SIGKILL) })
	}
	syscall.Kill(g.pid, sig)
}

func (l *launcher) isReplaced() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.replaced
}

// newerTakeover reports whether another live takeover has recorded itself
// for one of our ports.
func (l *launcher) newerTakeover() bool {
	for _, port := range l.ports() {
		if r, ok := readRecord(l.dir, port); ok && r.Launcher != l.self {
			return true
		}
	}
	return false
}

// startGeneration starts the command through the shim and serves its
// notifications.
func (l *launcher) startGeneration(ctx context.Context, path string, num int) (*generation, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parentEnd, childEnd := pair[0], os.NewFile(uintptr(pair[1]), "shim")
	defer unix.Close(parentEnd)
	env := []string{shimEnv + "=1", launcherEnv + "=" + strconv.Itoa(l.self), "TAKEOVER_GENERATION=" + strconv.Itoa(num)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, launcherEnv+"=") && !strings.HasPrefix(kv, "TAKEOVER_GENERATION=") {
			env = append(env, kv)
		}
	}
	argv := append([]string{"takeover-shim", path}, l.cfg.Command...)
	p, err := os.StartProcess("/proc/self/exe", argv, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, childEnd},
	})
	childEnd.Close()
	if err != nil {
		return nil, err
	}
	notifFD, err := recvShimResult(parentEnd)
	if err != nil {
		var ws syscall.WaitStatus
		syscall.Wait4(p.Pid, &ws, 0, nil)
		return nil, err
	}
	g := &generation{
		l: l, num: num, pid: p.Pid, notifFD: notifFD,
		ready:    make(chan struct{}),
		socks:    make(map[sockKey]*heldSock),
		listened: make(map[portSpec]bool),
	}
	go func() {
		g.serve(ctx)
		unix.Close(notifFD)
	}()
	l.log.Debug("started", "generation", num, "pid", p.Pid, "command", strings.Join(l.cfg.Command, " "))
	return g, nil
}

type childExit struct {
	pid    int
	status syscall.WaitStatus
}

// reap waits for every child of takeover: the command, and any orphan
// re-parented to it.
func reap() <-chan childExit {
	ch := make(chan childExit, 16)
	go func() {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, 0, nil)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				return // ECHILD: nothing left to wait for
			}
			ch <- childExit{pid, ws}
		}
	}()
	return ch
}

// takePort gives sock the address addr: at once if nothing holds the port,
// else by replacing the holders, if policy allows.
func (l *launcher) takePort(ctx context.Context, g *generation, child newChild, sock int, addr netip.AddrPort, spec portSpec) (*swap, error) {
	began := time.Now()
	port := addr.Port()
	var hint []int
	prev, hasPrev := readRecord(l.dir, port)
	if hasPrev && prev.Launcher != l.self {
		hint = []int{prev.Launcher}
	}
	all, err := listeners("/proc", portSpec{Port: port}, hint, len(hint) > 0)
	if err != nil {
		return nil, fmt.Errorf("look up port %d: %w", port, err)
	}
	var owners []listener
	for _, o := range all {
		if conflicts(addr, o.Addr) && !l.ownedBySelf(o) {
			owners = append(owners, o)
		}
	}
	sw := &swap{Spec: spec, Addr: addr, Lookup: time.Since(began)}
	if len(owners) == 0 {
		sw.Strategy = "fresh"
		if err := unix.Bind(sock, sockaddrOf(addr)); err != nil {
			return nil, err
		}
		return sw, nil
	}
	var targets []stopTarget
	var holderPIDs []int
	for _, o := range owners {
		if len(o.Holders) == 0 {
			return nil, fmt.Errorf("port %d (%s) is held by a process this user cannot see: %w", port, o.Addr, unix.EADDRINUSE)
		}
		for _, t := range stopTargets("/proc", o) {
			if err := mayReplace("/proc", t, child, port, l.cfg.Force); err != nil {
				return nil, fmt.Errorf("%w (%w)", err, unix.EADDRINUSE)
			}
			targets = append(targets, t)
		}
		for _, h := range o.Holders {
			holderPIDs = append(holderPIDs, h.PID)
		}
	}
	sw.Old = targets
	sw.OldCmd = commandLine(targets[0].Holder.PID)
	pids := make([]int, len(targets))
	for i, t := range targets {
		pids[i] = t.PID
	}
	sw.oldProcs, sw.holders = openAll(pids), openAll(holderPIDs)

	// Name this takeover as the port's launcher before the old one is
	// signalled: that is how it knows it was replaced, not stopped.
	if err := writeRecord(l.dir, port, genRecord{Launcher: l.self, LauncherStart: l.start}); err != nil {
		return nil, fmt.Errorf("record the generation of port %d: %w", port, err)
	}
	restore := func() {
		if hasPrev {
			writeRecord(l.dir, port, prev)
		}
	}
	sw.Strategy = "rebind"
	bctx, cancel := context.WithTimeout(ctx, l.cfg.bindTimeout())
	defer cancel()
	times, err := rebind{
		Sock: sock, Addr: addr, Old: sw.oldProcs, Holders: sw.holders,
		Signal: l.cfg.signal(), KillTimeout: l.cfg.killTimeout(),
	}.run(bctx)
	sw.Free, sw.Killed = times.Free, times.Killed
	if err != nil {
		restore()
		return nil, err
	}
	// The socket listens now. Clients were refused at most from the last
	// attempt that found the port held (or, if the first attempt found it
	// free, from the signal) until now.
	if times.LastBusy.IsZero() {
		times.LastBusy = began.Add(sw.Lookup)
	}
	sw.Window = time.Since(times.LastBusy)
	return sw, nil
}

// ownedBySelf reports whether a listener is this takeover's own: held only
// by takeover itself and its descendants (a prefork child binding a second
// SO_REUSEPORT socket).
func (l *launcher) ownedBySelf(o listener) bool {
	if len(o.Holders) == 0 {
		return false
	}
	for _, h := range o.Holders {
		if h.PID != l.self && !isAncestor("/proc", l.self, h.PID) {
			return false
		}
	}
	return true
}

func commandLine(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// completeSwap runs once the new generation listens on every target: it
// stops what a handoff left running, logs the swap, records the generation,
// waits for the old processes to exit and releases the port locks.
func (l *launcher) completeSwap(ctx context.Context, g *generation, locks []*os.File) {
	defer releaseLocks(locks)
	g.mu.Lock()
	swaps := append([]*swap(nil), g.swaps...)
	g.mu.Unlock()

	attrs := []any{"generation", g.num, "new_pid", g.pid}
	for _, sw := range swaps {
		a := []any{"strategy", sw.Strategy}
		if len(sw.Old) > 0 {
			a = append(a, "old_pid", sw.Old[0].Holder.PID, "old_cmd", sw.OldCmd, "lookup", sw.Lookup)
			if sw.Old[0].Launcher {
				a = append(a, "old_launcher", sw.Old[0].PID)
			}
		}
		if sw.Strategy == "rebind" {
			a = append(a, "signal_to_free", sw.Free, "refused_window", sw.Window, "sigkill", sw.Killed)
		}
		a = append(a, "total", sw.Listened.Sub(sw.Began))
		attrs = append(attrs, slog.Group(sw.Spec.String(), a...))
	}
	l.log.Info("took over", attrs...)

	for _, port := range l.ports() {
		if err := writeRecord(l.dir, port, genRecord{Launcher: l.self, LauncherStart: l.start, Child: g.pid}); err != nil {
			l.log.Warn("cannot record the generation", "port", port, "err", err)
		}
	}
	// Hold the locks until the old generation is gone, so that the next
	// takeover finds one generation, not two.
	for _, sw := range swaps {
		wctx, cancel := context.WithTimeout(ctx, l.cfg.killTimeout())
		for _, p := range sw.oldProcs {
			if !p.wait(wctx) {
				for _, h := range sw.holders {
					h.signal(unix.SIGKILL)
				}
			}
		}
		cancel()
		closeAll(sw.oldProcs)
		closeAll(sw.holders)
	}
}
