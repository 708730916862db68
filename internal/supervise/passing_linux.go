package supervise

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/starter"
	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/systemd"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// Socket passing (--sockets systemd or server-starter): takeover takes
// every --port itself before it starts the command (from the takeover it
// replaces, over its unix socket as in a handoff; from a server not started
// under takeover, with pidfd_getfd or else a rebind; or by binding a free
// port) and passes the listening sockets the way the convention says: fds
// from 3 with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES, or
// SERVER_STARTER_PORT. There is no seccomp filter: it works on kernels and
// in sandboxes without user notification. Handoff between takeovers, HUP
// reload, restarts, readiness, status and the port lock are those of
// interception.

const (
	SocketsIntercept     = "intercept"
	SocketsSystemd       = "systemd"
	SocketsServerStarter = "server-starter"
)

// passShim is the shim's mode for socket passing: it sets LISTEN_PID to
// its own pid, which becomes the command's by exec, and execs.
const passShim = "pass"

// runPassShim never returns: it execs the command or exits.
func runPassShim(args []string) {
	env := make([]string, 0, len(os.Environ())+1)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, shimEnv+"=") {
			env = append(env, kv)
		}
	}
	if os.Getenv("LISTEN_FDS") != "" {
		env = append(env, "LISTEN_PID="+strconv.Itoa(os.Getpid()))
	}
	err := syscall.Exec(args[0], args[1:], env)
	code := exitNotExecutable
	if os.IsNotExist(err) {
		code = exitNotFound
	}
	shimFail(code, fmt.Sprintf("takeover: cannot run %s: %v", args[0], err))
}

// passedSockets returns the listening sockets, one per --port in order, for
// a generation that gets them passed, and the swap each was taken by.
func (l *launcher) passedSockets(ctx context.Context, path string, prev *generation) ([]*swap.Held, []*swap.Record, error) {
	var held []*swap.Held
	var swaps []*swap.Record
	fail := func(err error) ([]*swap.Held, []*swap.Record, error) {
		abandonAll(held, swaps)
		return nil, nil, err
	}
	for _, spec := range l.cfg.Ports {
		began := time.Now()
		var sw *swap.Record
		var sock int
		var err error
		if prev != nil && (!prev.holdings.Inherited || prev.holdings.HeldForSpec(spec) != nil) {
			sw, sock, err = inheritSocket(prev, spec)
			if err == nil {
				sock = l.fencePassed(sw, sock)
			}
		} else {
			sw, sock, err = l.acquire(ctx, spec, path)
		}
		if err != nil {
			return fail(err)
		}
		sw.Began = began
		held = append(held, &swap.Held{CopyFD: sock, Inode: target.InodeOf(sock), Spec: spec, Addr: sw.Addr})
		swaps = append(swaps, sw)
	}
	return held, swaps, nil
}

// inheritSocket gives a reload's or a restart's generation a copy of the
// socket prev holds for spec. A prev that died before it was ready (a
// failed start, retried) never completed its swap: the new generation
// takes that swap over, so that it stops the old server prev was to stop.
func inheritSocket(prev *generation, spec target.Spec) (*swap.Record, int, error) {
	old, fd, err := prev.holdings.DupForSpec(spec)
	var unfinished *swap.Record
	if by, _ := prev.readiedBy(); old != nil && err == nil && by == "" && prev.hasExited() {
		unfinished = prev.holdings.TakeSwap(spec)
	}
	if old == nil || err != nil {
		return nil, -1, fmt.Errorf("generation %d holds no socket for %s any more (%v)", prev.num, spec, err)
	}
	if unfinished != nil {
		return unfinished, fd, nil
	}
	sw := &swap.Record{Spec: spec, Addr: old.Addr, Strategy: "handoff"}
	prev.holdings.ReplacedIn(sw, old)
	if spec.Net == target.NetUnix && len(sw.OldProcs) > 0 {
		sw.Path = swap.KeepHandedOver(spec.Path) // no filter here sees the old server's unlink
	}
	return sw, fd, nil
}

// acquire takes spec's listening socket for the first generation, as a
// bind of the command would be taken over.
func (l *launcher) acquire(ctx context.Context, spec target.Spec, exe string) (*swap.Record, int, error) {
	if spec.Net == target.NetUnix {
		// As systemd does before it binds a socket unit's path: a file
		// left by a server that is gone would fail the bind.
		swap.RemoveStaleSocket(spec.Path, l.self)
	}
	addr := bindAddrFor(spec)
	sock, err := newTargetSocket(spec, addr)
	if err != nil {
		return nil, -1, fmt.Errorf("make a socket for %s: %w", spec, err)
	}
	child := owner.Child{PID: os.Getpid(), UID: os.Geteuid(), Exe: exe, NoForce: l.cfg.StartServer != nil, Unit: l.unit}
	sw, held, err := l.taker.Take(ctx, swap.Claim{Child: child, Sock: sock, Addr: addr, Spec: spec, PathMode: l.cfg.socketFileMode()}, nil)
	if err != nil {
		unix.Close(sock)
		return nil, -1, fmt.Errorf("take %s: %w", spec, err)
	}
	fail := func(err error) (*swap.Record, int, error) {
		unix.Close(held)
		sw.Abandon()
		return nil, -1, err
	}
	if spec.Net == target.NetUDP {
		return sw, held, nil
	}
	if v, _ := unix.GetsockoptInt(held, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); v == 0 {
		if err := unix.Listen(held, l.cfg.backlog()); err != nil {
			return fail(fmt.Errorf("listen on %s: %w", spec, err))
		}
	}
	if sw.Fence != nil { // a new socket beside the old server's (the Taker's fenced)
		if err := sw.Fence.Joined(held); err != nil {
			return fail(fmt.Errorf("steer %s to the old server while the new one starts: %w", spec, err))
		}
	}
	return sw, held, nil
}

// fencePassed fences a reload's or a restart's swap of a passed TCP
// socket, as a bind would be (swap.FenceBeside): where the old generation
// still runs, it makes a new socket like old, binds it beside old in one
// SO_REUSEPORT group steered to old, listens, and returns it to be passed
// in old's place (old closed: the old generation holds its own). Otherwise,
// or when it cannot, it returns old, handed over unfenced as before, with
// why not in sw.
func (l *launcher) fencePassed(sw *swap.Record, old int) int {
	if !l.cfg.fence() || sw.Spec.Net != "" || len(sw.OldProcs) == 0 || sw.Fence != nil {
		return old
	}
	sock, err := newTargetSocket(sw.Spec, sw.Addr)
	if err != nil {
		sw.NotFenced = fmt.Sprintf("cannot make a socket: %v", err)
		return old
	}
	f, why := swap.FenceBeside(swap.Claim{Sock: sock, Addr: sw.Addr, Spec: sw.Spec}, old)
	if f == nil {
		unix.Close(sock)
		sw.NotFenced = why
		return old
	}
	if err := unix.Listen(sock, l.cfg.backlog()); err != nil {
		unix.Close(sock)
		sw.NotFenced = fmt.Sprintf("cannot listen beside the old socket: %v", err)
		return old
	}
	if err := f.Joined(sock); err != nil {
		unix.Close(sock)
		sw.NotFenced = fmt.Sprintf("cannot steer to the old socket: %v", err)
		return old
	}
	unix.Close(old)
	sw.Fence = f
	return sock
}

// bindAddrFor is the address takeover binds for an IP spec: the one a
// server already uses where one does (a handoff needs the same family),
// else the spec's, and for every address the IPv6 wildcard, dual-stack.
func bindAddrFor(spec target.Spec) netip.AddrPort {
	if spec.Net == target.NetUnix {
		return netip.AddrPort{}
	}
	if socks, err := owner.TargetSockets("/proc", spec); err == nil && len(socks) > 0 {
		return socks[0].Addr
	}
	if spec.Addr.IsValid() {
		return netip.AddrPortFrom(spec.Addr, spec.Port)
	}
	if hasIPv6Stack() {
		return netip.AddrPortFrom(netip.IPv6Unspecified(), spec.Port)
	}
	return netip.AddrPortFrom(netip.IPv4Unspecified(), spec.Port)
}

func hasIPv6Stack() bool {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// newTargetSocket makes a blocking socket for the target, as start_server
// and systemd pass them: for TCP and UDP at addr, with SO_REUSEADDR, and
// dual-stack for the IPv6 wildcard.
func newTargetSocket(spec target.Spec, addr netip.AddrPort) (int, error) {
	if spec.Net == target.NetUnix {
		return unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	family := unix.AF_INET6
	if addr.Addr().Is4() {
		family = unix.AF_INET
	}
	sock, err := unix.Socket(family, spec.SockType()|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(sock)
		return -1, err
	}
	if family == unix.AF_INET6 && addr.Addr().IsUnspecified() {
		unix.SetsockoptInt(sock, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	}
	return sock, nil
}

// passingEnv returns the variables that tell the command where its
// sockets are: at fds (3, 4, ... in --port order unless start_server's
// --port=PORT=FD says otherwise), with names in SERVER_STARTER_PORT.
func passingEnv(mode string, held []*swap.Held, names []string, fds []int, num int) []string {
	switch mode {
	case SocketsSystemd:
		fdNames := make([]string, len(held))
		for i, h := range held {
			fdNames[i] = h.Spec.FdName()
		}
		return []string{"LISTEN_FDS=" + strconv.Itoa(len(held)), "LISTEN_FDNAMES=" + strings.Join(fdNames, ":")}
	case SocketsServerStarter:
		return []string{"SERVER_STARTER_PORT=" + starter.FormatEnv(names, fds), "SERVER_STARTER_GENERATION=" + strconv.Itoa(num)}
	}
	return nil
}

// passedVars are the variables of a parent's socket passing, which the
// command must not inherit from takeover's own environment (systemd's
// are never passed on: systemdVars).
var passedVars = []string{"SERVER_STARTER_PORT=", "SERVER_STARTER_GENERATION="}

// abandonAll closes the sockets taken for a generation that will not run,
// and abandons the swaps that took them.
func abandonAll(held []*swap.Held, swaps []*swap.Record) {
	for _, h := range held {
		unix.Close(h.CopyFD)
	}
	for _, sw := range swaps {
		sw.Abandon()
	}
}

// startPassing starts a generation that gets its sockets passed.
func (l *launcher) startPassing(ctx context.Context, path string, num int, prev *generation) (*generation, error) {
	held, swaps, err := l.passedSockets(ctx, path, prev)
	if err != nil {
		return nil, err
	}
	l.starter.bound()
	files := []*os.File{os.Stdin, os.Stdout, os.Stderr}
	names, fds := l.cfg.passedAs()
	var passed []*os.File
	for i, h := range held {
		// Close-on-exec here: StartProcess dup2s it to its place in the
		// command, which keeps only that one.
		fd, err := unix.FcntlInt(uintptr(h.CopyFD), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, f := range passed {
				f.Close()
			}
			abandonAll(held, swaps)
			return nil, err
		}
		f := os.NewFile(uintptr(fd), h.Spec.String())
		passed = append(passed, f)
		for len(files) <= fds[i] {
			files = append(files, nil) // closed in the command
		}
		files[fds[i]] = f
	}
	notify, notifyEnv := l.notifySocket(num)
	env := l.commandEnv(num, passedVars)
	env = append(env, shimEnv+"="+passShim)
	env = append(env, passingEnv(l.cfg.sockets(), held, names, fds, num)...)
	env = append(env, notifyEnv...)
	argv := append([]string{"takeover-shim", path}, l.cfg.Command...)
	pidfd := -1 // from the clone, as in startGeneration
	p, err := os.StartProcess("/proc/self/exe", argv, &os.ProcAttr{Dir: l.cfg.dir(), Env: env, Files: files, Sys: &syscall.SysProcAttr{PidFD: &pidfd}})
	for _, f := range passed {
		f.Close()
	}
	if err != nil {
		closeNotify(notify)
		abandonAll(held, swaps)
		return nil, err
	}
	pid := p.Pid
	p.Release() // waitChild collects it, as in startGeneration
	g := l.newGeneration(ctx, num, pid, pidfd, -1, prev)
	for i, h := range held {
		g.holdings.Add(swap.SockKey{Tgid: pid, FD: fds[i]}, h, swaps[i])
	}
	g.attachNotify(notify)
	l.log.Debug("started", "generation", num, "pid", pid, "command", strings.Join(l.cfg.Command, " "), "sockets", l.cfg.sockets())
	return g, nil
}

// inheritedGeneration stands for what held the sockets systemd passed: a
// generation that has exited, holding them, as a crashed one would. The
// first generation takes them from it.
func (l *launcher) inheritedGeneration(socks []systemd.Passed) *generation {
	g := &generation{log: l.log, want: l.readyWant(), pid: 0, pidfd: -1, exited: make(chan struct{})}
	close(g.exited)
	g.holdings = swap.NewHoldings(0, true, g.exited)
	for _, s := range socks {
		g.holdings.Add(swap.SockKey{Tgid: 0, FD: s.FD}, &swap.Held{CopyFD: s.FD, Inode: s.Inode, Spec: s.Spec, Addr: s.Addr, Via: s.Via}, nil)
	}
	return g
}
