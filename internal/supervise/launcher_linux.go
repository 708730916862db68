// Package supervise is the launcher of one command: its run loop and
// lifecycle (start, serve, reload, restart, stop, replaced), its
// generations and their readiness, the seccomp trap that answers the
// command's bind(2) and listen(2) (the shim that installs the filter, the
// answers), taking a target (swap.Taker: a free port, a handoff or a rebind,
// with internal/swap), completing a swap once the new generation is ready,
// socket passing (--sockets systemd and server-starter), --status-file,
// --detach-on-stop and the PID 1 stand-by.
package supervise

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/takeover/takeover/internal/intercept"
	"github.com/takeover/takeover/internal/metrics"
	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/ready"
	"github.com/takeover/takeover/internal/swap"

	"github.com/takeover/takeover/internal/fdpass"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/seccomp"
	"github.com/takeover/takeover/internal/systemd"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// A launcher supervises the generations of one command: it starts each
// through the shim, answers its binds, forwards signals, reaps, and exits
// with the command's status.
type launcher struct {
	cfg  Config
	log  *slog.Logger
	dir  *rundir.Dir
	self int
	born uint64 // this process's start time, for its generation records
	unit string // the systemd unit takeover runs in, or ""

	madeOnce sync.Once // the warning that sockets are made, not copied

	// Set by run for the lifecycle's supervisor methods.
	ctx     context.Context
	path    string
	locks   []*os.File // the port locks, until the first swap completes
	events  chan event
	byPID   map[int]*generation // the generations whose exit is awaited
	exits   chan childExit      // the generations' exits (waitChild), and orphans' (reapOrphans)
	lastNum int

	mu             sync.Mutex
	gens           []*generation // those that may hold sockets, for newer takeovers
	status         Status        // the status record (status.go)
	metrics        *metrics.Set  // what --metrics serves
	stopMetrics    func()        // stops serving and writing them (serveMetrics)
	metricsStopped atomic.Bool
	unfinished     *unfinished  // a swap whose new generation exited before it completed (complete_linux.go)
	fencing        sync.Mutex   // held by a swap until it completes or is left unfinished
	probation      probationCut // ends a probation early (probation_linux.go)

	starter *starterState // run as start_server: its status file, auto-restart and exit (startserver.go); nil otherwise

	// Under systemd: the sockets it passed at start, until the first
	// generation takes them, and the unit's file descriptor store (nil
	// when takeover does not run under systemd).
	inherited *generation
	store     *systemd.Store
	taker     *swap.Taker // gives the generations' binds their targets

	detachedUntil time.Time // --detach-on-stop: the front has gone (detach_linux.go); l.mu
}

// forwarded are the signals a launcher passes to its child; HUP is not
// forwarded but reloads.
var forwarded = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH, unix.SIGHUP}

// Launch runs cfg's command under a launcher until takeover exits, and
// returns takeover's exit status.
func Launch(cfg Config, stderr io.Writer) int {
	path, code, err := resolveCommand(cfg.commandName())
	if err != nil {
		fmt.Fprintf(stderr, "takeover: %v\n", err)
		return code
	}
	dir, err := rundir.Open(rundir.Default(), true)
	if err != nil {
		fmt.Fprintf(stderr, "takeover: %v\n", err)
		return ExitLauncher
	}
	dir.ClearDead()
	swap.MigrateMarkerIn(dir) // and net.ipv4.tcp_migrate_req, if one left it on
	st, _ := procfs.FS("/proc").Stat(os.Getpid())
	l := &launcher{cfg: cfg, log: newLogger(stderr), dir: dir, self: os.Getpid(), born: st.Start, unit: procfs.FS("/proc").SystemdUnit(os.Getpid())}
	l.starter = newStarterState(l)
	l.initStatus()
	defer l.dir.RemoveStatus(l.self)
	if err := l.serveMetrics(); err != nil {
		fmt.Fprintf(stderr, "takeover: %v\n", err)
		return ExitLauncher
	}
	defer l.stopMetrics()
	if cfg.PIDFile != "" {
		if err := rundir.WriteFileAtomic(cfg.PIDFile, []byte(strconv.Itoa(l.self)+"\n")); err != nil {
			fmt.Fprintf(stderr, "takeover: --pid-file: %v\n", err)
			return ExitLauncher
		}
		defer os.Remove(cfg.PIDFile)
	}
	return l.starter.exit(l.run(path))
}

// keys names the locks and records of the launcher's targets.
func (l *launcher) keys() []string {
	keys := make([]string, len(l.cfg.Ports))
	for i, p := range l.cfg.Ports {
		keys[i] = p.Key()
	}
	return keys
}

func (l *launcher) run(path string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, forwarded...)
	front := frontPipe() // the front holds what it passes on until now
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
		return ExitLauncher
	}
	stopServing, err := fdpass.Serve(rundir.LauncherSockPath(l.dir, l.self), l.heldSocket)
	if err != nil {
		l.log.Warn("cannot serve this takeover's sockets to the next one; it will copy them with pidfd_getfd where allowed", "err", err)
		stopServing = func() {}
	}
	defer func() {
		stopServing()
		l.dropUnfinished()
		rundir.ReleaseLocks(locks)
		rundir.ReleaseLocks(l.locks) // a first swap that never completed still holds them
		l.cleanRunDir()
	}()
	l.ctx, l.path, l.locks = ctx, path, locks
	passed := systemd.Inherit(l.log, l.cfg.Ports, os.Getenv)
	if len(passed) > 0 {
		l.inherited = l.inheritedGeneration(passed)
		defer l.inherited.holdings.CloseCopies() // if no generation took them
	}
	l.store = systemd.NewStore(l.log, l.unit, passed)
	l.taker = swap.NewTaker(swap.Options{
		Strategy: l.cfg.Strategy, Fence: l.cfg.fence(), Force: l.cfg.Force, Signal: l.cfg.signal(),
		BindTimeout: l.cfg.EffectiveBindTimeout(), KillTimeout: l.cfg.killTimeout(),
		Dir: l.dir, Self: l.self, Born: l.born, Store: l.store, Rebind: l.cfg.Rebind,
	})
	l.events = make(chan event, 64)
	l.byPID = make(map[int]*generation)
	l.exits = make(chan childExit, 16)
	reapOrphans(l.exits)
	if front != nil {
		go l.watchFront(front)
	}
	m := newLifecycle(l, l.log, l.cfg.restartPolicy(), l.cfg.KillOldDelay)
	m.passesSockets = l.cfg.sockets() != SocketsIntercept
	if err := m.begin(); err != nil {
		if errors.Is(err, seccomp.ErrUnavailable) {
			l.log.Error("cannot start the command", "err", err,
				"hint", "a server that takes its listening sockets from its parent needs no seccomp: run it with --sockets systemd (LISTEN_FDS) or --sockets server-starter (SERVER_STARTER_PORT)")
		} else {
			l.log.Error("cannot start the command", "err", err)
		}
		return ExitLauncher
	}
	locks = nil // the first swap releases them
	exits := l.exits
	for {
		var ev event
		select {
		case sig := <-sigs:
			ev = l.signalEvent(sig.(syscall.Signal))
			if ev.kind == evReplaced {
				l.stopMetrics() // the newer takeover's count on from these
			}
		case e := <-exits:
			g := l.byPID[e.Pid]
			if g == nil {
				continue // a re-parented orphan, reaped
			}
			delete(l.byPID, e.Pid)
			g.markExited()
			l.prevExited(g)
			l.starter.exited(g)
			ev = event{kind: evExited, g: g, status: e.Status}
		case ev = <-l.events:
		}
		l.log.Debug("event", "event", ev.kind, "state", m.state)
		code, done := m.handle(ev)
		if !done {
			continue
		}
		if ev.kind == evExited && m.state != replaced && code != ExitRolledBack {
			if left := l.leftRunning(); len(left) > 0 {
				// Not killed: they may be someone's on purpose. But their
				// bind(2) and listen(2) fail once takeover is gone.
				l.log.Warn("the command exited and left processes running; takeover supervises a server that stays in the foreground, not one that daemonizes",
					"pids", fmt.Sprint(left))
			}
		}
		if code == ExitRolledBack {
			l.stopLeftBehind() // probation_linux.go
		}
		if m.state == replaced && l.self == 1 {
			return l.standBy(sigs, exits)
		}
		return code
	}
}

// signalEvent names what a signal to takeover means. The signal a newer
// takeover that has recorded itself for one of the ports sends (its
// --signal, in its record; any but HUP and WINCH where an older takeover
// recorded none) is its stop signal: takeover has been replaced. Another
// signal meanwhile (a USR1 for the server while the newer takeover waits
// for it to drain) is passed on as at any other time.
func (l *launcher) signalEvent(sig syscall.Signal) event {
	by := 0
	if sig != unix.SIGHUP && sig != unix.SIGWINCH {
		by = l.newerTakeover(sig)
	}
	switch {
	case sig == unix.SIGHUP:
		return event{kind: evHUP, sig: sig}
	case by != 0:
		return event{kind: evReplaced, sig: sig, by: by}
	case isStopSignal(sig):
		return event{kind: evStop, sig: l.starter.stopSignal(sig)}
	}
	return event{kind: evSignal, sig: sig}
}

// isStopSignal reports whether sig asks takeover to stop, not to reload
// or to pass something on.
func isStopSignal(sig os.Signal) bool {
	return sig == unix.SIGTERM || sig == unix.SIGINT || sig == unix.SIGQUIT
}

// exitCode is an error that carries the launcher's exit status.
type exitCode int

func (c exitCode) Error() string { return "exit status " + strconv.Itoa(int(c)) }

// lock takes the per-port locks, waiting at most --lock-timeout for
// another takeover of the same ports; a stop signal while waiting ends
// takeover.
func (l *launcher) lock(ctx context.Context, sigs <-chan os.Signal) ([]*os.File, error) {
	type result struct {
		files []*os.File
		err   error
	}
	limit := l.cfg.EffectiveLockTimeout()
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last rundir.Owner
	done := make(chan result, 1)
	go func() {
		files, err := rundir.Lock(ctx, l.dir, l.keys(), rundir.Owner{PID: l.self, Start: l.born}, func(key string, holder rundir.Owner, waited time.Duration) {
			last = holder
			l.log.Info("waiting for another takeover of this port to finish its swap",
				"lock", key, "takeover_pid", holder.PID, "its_command", owner.CommandLine(holder.PID), "waited", waited, "lock_timeout", limit)
		})
		done <- result{files, err}
	}()
	for {
		select {
		case r := <-done:
			if errors.Is(r.err, context.DeadlineExceeded) {
				return nil, fmt.Errorf("takeover pid %d has held the port lock for longer than --lock-timeout %v; it may be stuck: read its log, or stop it (kill %d), then try again",
					last.PID, limit, last.PID)
			}
			return r.files, r.err
		case sig := <-sigs:
			switch {
			case sig == unix.SIGWINCH || sig == unix.SIGHUP:
				continue // a reload: the first generation, started once the lock is taken, is the one it asks for
			case !isStopSignal(sig):
				// USR1, USR2: for the command, and none runs yet (the one
				// serving is the other takeover's).
				l.log.Warn("no command of this takeover runs yet to pass the signal on to; ignored", "signal", sig)
				continue
			}
			cancel()
			<-done
			return nil, exitCode(128 + int(sig.(syscall.Signal)))
		}
	}
}

// notify tells systemd, when takeover runs under it, what it is doing.
func (l *launcher) notify(state string) {
	if _, err := systemd.Notify(state); err != nil {
		l.log.Warn("cannot notify systemd", "state", state, "err", err)
	}
}

// newerTakeover returns the pid of another live takeover that has recorded
// itself for one of our ports, when sig is the signal it stops what it
// replaces with; 0 when there is none.
func (l *launcher) newerTakeover(sig syscall.Signal) int {
	for _, key := range l.keys() {
		if r, ok := rundir.ReadRecord(l.dir, key); ok && r.Launcher != l.self && (r.StopSignal == 0 || r.StopSignal == int(sig)) {
			return r.Launcher
		}
	}
	return 0
}

// startGeneration starts the command through the shim and serves its
// notifications. prev is the generation it is to replace in a reload.
func (l *launcher) startGeneration(ctx context.Context, path string, num int, prev *generation) (*generation, error) {
	if l.cfg.sockets() != SocketsIntercept {
		return l.startPassing(ctx, path, num, prev)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	parentEnd, childEnd := pair[0], os.NewFile(uintptr(pair[1]), "shim")
	defer unix.Close(parentEnd)
	notify, notifyEnv := l.notifySocket(num)
	shimMode := "1"
	if slices.ContainsFunc(l.cfg.Ports, func(p target.Spec) bool { return p.Net == target.NetUnix }) {
		shimMode = shimUnlinks
	}
	env := append(l.commandEnv(num, nil), shimEnv+"="+shimMode)
	env = append(env, notifyEnv...)
	argv := append([]string{"takeover-shim", path}, l.cfg.Command...)
	// The pidfd comes with the clone: the child is never known by its pid
	// alone, which the reaper could free for reuse.
	pidfd := -1
	p, err := os.StartProcess("/proc/self/exe", argv, &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr, childEnd},
		Sys:   &syscall.SysProcAttr{PidFD: &pidfd},
	})
	childEnd.Close()
	if err != nil {
		closeNotify(notify)
		return nil, err
	}
	// waitChild collects the child, not os.Process.Wait: let go of the
	// os package's copy of the pidfd.
	pid := p.Pid
	p.Release()
	notifFD, err := intercept.RecvShimResult(parentEnd, time.Now().Add(l.cfg.readyTimeout()))
	if err == nil {
		if err = seccomp.CheckAddFD(notifFD); err != nil {
			unix.Close(notifFD)
		}
	}
	if err != nil {
		// The shim may have exec'd the command already (its answer lost),
		// or hang: kill whatever it is now, then collect it (the orphan
		// reaper leaves alone a child takeover holds a pidfd of).
		unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
		var ws syscall.WaitStatus
		for {
			if _, werr := syscall.Wait4(pid, &ws, 0, nil); werr != syscall.EINTR {
				break
			}
		}
		unix.Close(pidfd)
		closeNotify(notify)
		if errors.Is(err, intercept.ErrShimSilent) {
			err = fmt.Errorf("%w within --ready-timeout %v (the shim, or the command it became, was killed)", err, l.cfg.readyTimeout())
		}
		if ws.Signaled() && ws.Signal() == unix.SIGSYS {
			err = fmt.Errorf("%w: the shim was killed by SIGSYS: a seccomp filter around takeover forbids a system call it needs (under systemd, SystemCallFilter= must allow seccomp: add `SystemCallFilter=seccomp pidfd_getfd`)", err)
		}
		return nil, err
	}
	seccomp.SyncWakeUp(notifFD)
	g := l.newGeneration(ctx, num, pid, pidfd, notifFD, prev)
	g.attachNotify(notify)
	go func() {
		intercept.Serve(ctx, l.trap(g))
		unix.Close(notifFD)
	}()
	l.log.Debug("started", "generation", num, "pid", pid, "command", strings.Join(l.cfg.Command, " "))
	return g, nil
}

// systemdVars are what systemd tells its service's main process, takeover:
// the sockets it passed (takeover's now) and its store's size.
var systemdVars = []string{"LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", "FDSTORE="}

// commandEnv is the command's environment: takeover's own, less what is
// takeover's to use (NOTIFY_SOCKET: systemd would ignore messages from a pid
// that is not the main one; systemdVars) and less drop, plus TAKEOVER_PID
// and TAKEOVER_GENERATION.
func (l *launcher) commandEnv(num int, drop []string) []string {
	env := []string{rundir.LauncherEnv + "=" + strconv.Itoa(l.self), "TAKEOVER_GENERATION=" + strconv.Itoa(num)}
	drop = append(drop, rundir.LauncherEnv+"=", "TAKEOVER_GENERATION=", "NOTIFY_SOCKET=", shimEnv+"=")
	drop = append(drop, systemdVars...)
	for _, kv := range os.Environ() {
		if !slices.ContainsFunc(drop, func(p string) bool { return strings.HasPrefix(kv, p) }) {
			env = append(env, kv)
		}
	}
	return l.cfg.withEnvDir(env)
}

// newGeneration records a started command as a generation (pidfd its
// pidfd from the clone, which the generation keeps), waits for its exit and
// begins to watch it for readiness.
func (l *launcher) newGeneration(ctx context.Context, num, pid, pidfd, notifFD int, prev *generation) *generation {
	go waitChild(pid, pidfd, l.exits)
	g := &generation{
		log: l.log, want: l.readyWant(), num: num, pid: pid, notifFD: notifFD, prev: prev, pidfd: pidfd, started: time.Now(),
		ready:    make(chan struct{}),
		timedOut: make(chan struct{}), waiting: make(chan bool, 2),
		exited: make(chan struct{}),
		nudge:  make(chan struct{}, 1),
	}
	g.holdings = swap.NewHoldings(pid, false, g.exited)
	go g.watchReady(ctx, l.cfg.readyTimeout())
	l.mu.Lock()
	l.gens = append(slices.DeleteFunc(l.gens, func(o *generation) bool { return o.holdings.IsDone() }), g)
	l.mu.Unlock()
	return g
}

type childExit struct {
	Pid    int
	Status syscall.WaitStatus
}

// waitChild waits for the child pid (pidfd its pidfd, which the caller
// keeps open until it has read the exit from ch), reaps it and sends its
// exit to ch.
func waitChild(pid, pidfd int, ch chan<- childExit) {
	var info unix.Siginfo
	for {
		// WNOWAIT: the pid stays the child's until it is reaped below.
		err := unix.Waitid(unix.P_PIDFD, pidfd, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			break
		}
	}
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	ch <- childExit{pid, ws}
}

// reapOrphans reaps, for takeover's whole life, the processes re-parented
// to it (it is a subreaper: a daemonizing server's workers) and sends their
// exits to ch. A child this process holds a pidfd of is another's to
// reap: a generation (waitChild), the shim of one that failed to start,
// or a command run by os/exec, whose Wait would otherwise fail with ECHILD.
func reapOrphans(ch chan<- childExit) {
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, unix.SIGCHLD)
	go func() {
		for {
			var info unix.Siginfo
			err := unix.Waitid(unix.P_ALL, 0, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil)
			pid := siginfoPID(&info)
			switch {
			case err == unix.EINTR:
				continue
			case err != nil || pid == 0:
				<-sigchld // ECHILD, or none has exited yet
				continue
			case !pidfdHeld(pid):
				var ws syscall.WaitStatus
				if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil && got == pid {
					ch <- childExit{pid, ws}
				}
				continue
			}
			// The first exited child is another's, and may hide orphans
			// behind it: reap those by pid, then look again at the next
			// SIGCHLD, or soon (once its owner has reaped it).
			for _, child := range childrenOf(os.Getpid()) {
				if child == pid || pidfdHeld(child) {
					continue
				}
				var ws syscall.WaitStatus
				if got, err := syscall.Wait4(child, &ws, syscall.WNOHANG, nil); err == nil && got == child {
					ch <- childExit{child, ws}
				}
			}
			select {
			case <-sigchld:
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
}

// siginfoPID is the si_pid of a waitid(2) result (0: no child had exited).
func siginfoPID(info *unix.Siginfo) int {
	// si_signo, si_errno, si_code, then the union, 8-aligned on 64-bit
	// Linux (x86-64, arm64), whose first field is si_pid.
	b := (*[20]byte)(unsafe.Pointer(info))
	return int(int32(binary.NativeEndian.Uint32(b[16:20])))
}

// pidfdHeld reports whether this process holds a pidfd of pid.
func pidfdHeld(pid int) bool {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return true // cannot tell: leave it
	}
	want := []byte("\nPid:\t" + strconv.Itoa(pid) + "\n")
	for _, e := range ents {
		link, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || !strings.Contains(link, "pidfd") {
			continue
		}
		if b, err := os.ReadFile("/proc/self/fdinfo/" + e.Name()); err == nil && bytes.Contains(b, want) {
			return true
		}
	}
	return false
}

// childrenOf lists the children of process pid, from each of its threads'
// /proc children file.
func childrenOf(pid int) []int {
	all := procfs.FS("/proc").WithDescendants([]int{pid})
	var kids []int
	for _, c := range all[1:] {
		if ppid, err := procfs.FS("/proc").PPID(c); err == nil && ppid == pid {
			kids = append(kids, c)
		}
	}
	return kids
}

// leftRunning returns the processes the command left behind, once those
// that are on their way out (a resource tracker, workers told to stop)
// have had a second to go.
func (l *launcher) leftRunning() []int {
	deadline := time.Now().Add(time.Second)
	for {
		left := procfs.FS("/proc").WithDescendants([]int{l.self})[1:]
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanRunDir removes this takeover's files from the run directory, when
// no other takeover uses them.
func (l *launcher) cleanRunDir() {
	for _, spec := range l.cfg.Ports {
		if rundir.RemoveFiles(l.dir, spec.Key(), l.self) && spec.Net == target.NetUnix {
			// The last takeover of a path removes what the server's own
			// unlink on its way out missed: a server that got its socket
			// by a rename knows it by the name beside the path, and a
			// passed socket's file is takeover's.
			swap.RemoveStaleSocket(spec.Path, l.self)
		}
	}
	l.dir.RemoveStatus(l.self)
	l.dir.ClearDead() // and what takeovers that were killed left
}

// heldSocket returns takeover's copy of a socket one of its generations
// holds, for a newer takeover.
func (l *launcher) heldSocket(inode uint64) (int, bool) {
	l.mu.Lock()
	gens := slices.Clone(l.gens)
	l.mu.Unlock()
	for _, g := range gens {
		// A dup, not the copy itself: the generation may close its copies
		// (closeCopies) while the fd is on its way.
		if fd, ok := g.holdings.DupByInode(inode); ok {
			return fd, true
		}
	}
	return -1, false
}

// readyWant says what ready means for the launcher's generations.
func (l *launcher) readyWant() ready.Want {
	return ready.Want{Targets: l.cfg.Ports, Mode: l.cfg.ready(), Interval: l.cfg.interval(), Health: l.cfg.Health, Exec: l.cfg.ReadyExec}
}
