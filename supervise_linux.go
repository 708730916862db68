package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/seccomp"
	"golang.org/x/sys/unix"
)

// A generation is one run of the command under takeover, with the sockets
// it bound to --port targets and what it replaced to get them.
type generation struct {
	l        *launcher
	num      int
	pid      int
	notifFD  int
	pidfd    int // the command's, until it is reaped; -1 after
	started  time.Time
	prev     *generation   // the generation a reload replaces, or whose sockets a restart takes
	ready    chan struct{} // closed once the command accepts on every --port
	timedOut chan struct{} // closed if it is not ready within --ready-timeout
	exited   chan struct{} // closed once the command has exited
	nudge    chan struct{} // a listen(2): look at readiness now

	mu         sync.Mutex
	socks      map[sockKey]*heldSock
	swaps      []*swap
	done       bool   // the generation is being stopped: its copies are closed
	readyBy    string // how readiness was seen: epoll, accept, poll, select, listen
	readyAt    time.Time
	missing    string                  // at the timeout: what it had not done
	rolledBack bool                    // stopped for not being ready in time
	sent       map[syscall.Signal]bool // the signals takeover sent the command
	notified   bool                    // the command sent READY=1 to its NOTIFY_SOCKET
	inherited  bool                    // no command: the sockets systemd passed at start (listenfds_linux.go)
	cleanups   []func()                // run once the command has exited
}

// releaseSwaps lets go of the old processes of swaps that will not be
// completed: the generation exited before it could stop them, or was
// rolled back.
func (g *generation) releaseSwaps() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, sw := range g.swaps {
		sw.abandon()
	}
}

// An oldStop is what a completed swap has left to do: stop the old
// processes, and guard the unix path meanwhile.
type oldStop struct {
	sw             *swap
	path           *pathSwap
	procs, holders []*oldProcess
}

// claimSwaps completes the generation's swaps unless it has exited (ok is
// false): a unix path bound beside is renamed over (until now connects
// reached the old server), and the old processes to stop are taken out of
// the swaps, so that a release of the generation from now on leaves them
// alone. A swap whose rename fails leaves the old server serving, unstopped.
func (g *generation) claimSwaps(log *slog.Logger) (stop []oldStop, ok bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.hasExited() {
		return nil, false
	}
	for _, sw := range g.swaps {
		if err := sw.path.renameOver(); err != nil {
			log.Error("cannot rename the new unix socket over its path; the old server keeps it, and is not stopped", "path", sw.Spec.Path, "err", err)
			sw.abandon()
			continue
		}
		if len(sw.oldProcs) == 0 {
			sw.path.finish()
			sw.path = nil
			continue
		}
		stop = append(stop, oldStop{sw, sw.path, sw.oldProcs, sw.holders})
		sw.path, sw.oldProcs, sw.holders = nil, nil, nil
	}
	return stop, true
}

// abandon lets go of a claimed swap that will not be completed after all
// (the new generation exited while the old server finished): as a swap's
// abandon does, for what claimSwaps took out of it.
func (st oldStop) abandon() {
	closeAll(st.procs)
	closeAll(st.holders)
	st.path.rollBack()
}

// abandon lets go of a swap that will not be completed: of its old
// processes' pidfds, and of the names beside a unix path (a path renamed
// over goes back to the old socket).
func (sw *swap) abandon() {
	sw.releaseOld()
	sw.path.rollBack()
	sw.path = nil
}

// releaseOld closes the swap's pidfds of the old processes.
func (sw *swap) releaseOld() {
	closeAll(sw.oldProcs)
	closeAll(sw.holders)
	sw.oldProcs, sw.holders = nil, nil
}

// sockKey names a socket in the command: its process and fd, and the inode
// so that a closed and reused fd number is not mistaken for the old socket.
type sockKey struct {
	Tgid, FD int
}

type heldSock struct {
	copyFD int // takeover's own copy, kept for handoff to a later generation
	inode  uint64
	spec   portSpec
	addr   netip.AddrPort // TCP and UDP
	via    string         // a socket systemd passed: how (inheritedSock.via)
	fence  *fence         // a new socket beside the old server's (fence_linux.go)
}

// A swap is one --port target taken over by a generation.
type swap struct {
	Spec        portSpec
	Addr        netip.AddrPort
	Strategy    string    // "fresh" (the port was free), "rebind", "handoff" or "rename" (unix)
	Via         string    // how a handoff got the old socket: unix-socket, pidfd_getfd, own-copy
	path        *pathSwap // a unix target's file, while the old server stops
	Why         string    // why auto chose it
	Old         []stopTarget
	OldCmd      string
	oldProcs    []*oldProcess // the stop targets
	holders     []*oldProcess // every old holder, for SIGKILL
	inodes      []uint64      // the old listening sockets
	Lookup      time.Duration
	rebindTimes           // how a rebind went (rebind only)
	fence       *fence    // a fenced handoff (fence_linux.go)
	notFenced   string    // why a handoff was not fenced
	Began       time.Time // the command's bind(2)
}

const capNetBindService = 10

// serve answers the generation's notifications until every process under
// the filter has exited.
func (g *generation) serve(ctx context.Context) {
	var n seccomp.Notif
	for {
		fds := []unix.PollFd{{Fd: int32(g.notifFD), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			return // POLLHUP: no process uses the filter any more
		}
		if err := seccomp.Recv(g.notifFD, &n); err != nil {
			if err == unix.ENOENT || err == unix.EINTR {
				continue // the notifying thread died meanwhile
			}
			return
		}
		resp := g.answer(ctx, &n)
		resp.ID = n.ID
		seccomp.Send(g.notifFD, &resp) // ENOENT: the thread died while we worked
	}
}

func respErrno(err error) seccomp.Resp {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		errno = unix.EADDRINUSE
	}
	return seccomp.Resp{Error: -int32(errno)}
}

func (g *generation) answer(ctx context.Context, n *seccomp.Notif) seccomp.Resp {
	switch n.Nr {
	case unix.SYS_BIND:
		return g.onBind(ctx, n)
	case unix.SYS_LISTEN:
		return g.onListen(n)
	case seccomp.SysUnlink, unix.SYS_UNLINKAT:
		return g.onUnlink(n)
	}
	return seccomp.Continue
}

// onBind lets every bind through that is not to a target; a target it
// takes over.
func (g *generation) onBind(ctx context.Context, n *seccomp.Notif) seccomp.Resp {
	began := time.Now()
	raw, err := seccomp.ReadSockaddr(g.notifFD, n)
	if err != nil {
		return seccomp.Continue
	}
	st, err := procfs.FS("/proc").Status(int(n.PID))
	if err != nil {
		return seccomp.Continue
	}
	specs, addr, ok := g.bindTargets(raw, st.Tgid)
	if !ok {
		return seccomp.Continue // other ports, port 0, netlink, other paths
	}
	fd := int(n.Args[0])
	key := sockKey{st.Tgid, fd}
	childIno, err := procfs.FS("/proc").SocketInode(st.Tgid, fd)
	if err != nil {
		return seccomp.Continue
	}
	g.mu.Lock()
	prev := g.socks[key]
	g.mu.Unlock()
	if prev != nil && prev.inode == childIno {
		return seccomp.Resp{} // the same bind, notified again after a signal
	}
	// takeover binds on the command's behalf: never a port it could not
	// bind itself.
	if specs[0].Net != netUnix && int(addr.Port()) < unprivilegedPortStart() && st.CapEff&(1<<capNetBindService) == 0 {
		return respErrno(unix.EACCES)
	}
	var spec portSpec
	var sock int
	var made bool
	for _, spec = range specs {
		if sock, made, err = g.l.claimSocket(st.Tgid, fd, spec.sockType()); !errors.Is(err, errNotTarget) {
			break
		}
	}
	if errors.Is(err, errNotTarget) {
		return seccomp.Continue // UDP on a TCP target's port, say: no business of ours
	}
	if err != nil {
		g.l.log.Warn("cannot copy nor make the command's socket; letting its bind through, and it will not be seen ready", "pid", st.Tgid, "fd", fd, "err", err)
		return seccomp.Continue
	}
	exe, _ := procfs.FS("/proc").Exe(st.Tgid)
	child := newChild{PID: st.Tgid, UID: st.UID, Exe: exe, Unit: g.l.unit}
	install := func(old int) error { return injectSocket(g.notifFD, n.ID, st.Tgid, fd, sock, old) }
	sw, held, err := g.l.takePort(ctx, g, claim{child: child, status: st, sock: sock, addr: addr, spec: spec, install: install})
	if err != nil {
		unix.Close(sock)
		g.l.log.Error("bind refused", "port", spec.String(), "pid", st.Tgid, "err", err)
		return respErrno(err)
	}
	if made && held == sock {
		// The command's own socket could not be copied: it gets the one
		// takeover made and bound in its place.
		if err := injectSocket(g.notifFD, n.ID, st.Tgid, fd, sock, sock); err != nil {
			unix.Close(sock)
			sw.abandon()
			g.l.log.Error("cannot install the socket in the command", "pid", st.Tgid, "fd", fd, "err", err)
			return respErrno(unix.EADDRINUSE)
		}
	}
	sw.Began = began
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		unix.Close(held)
		sw.abandon()
		return seccomp.Resp{}
	}
	g.socks[key] = &heldSock{copyFD: held, inode: inodeOf(held), spec: spec, addr: addr, fence: sw.fence}
	g.swaps = append(g.swaps, sw)
	return seccomp.Resp{}
}

// bindTargets returns the targets a bind to raw (a struct sockaddr) by
// process tgid can be: for an IP address, the TCP and the UDP target of
// its port, as the socket's type decides between them.
func (g *generation) bindTargets(raw []byte, tgid int) ([]portSpec, netip.AddrPort, bool) {
	addr, family, ok := parseSockaddr(raw)
	if family == unix.AF_UNIX {
		path, ok := unixBindPath(raw, tgid)
		if !ok {
			return nil, addr, false
		}
		for _, spec := range g.l.cfg.Ports {
			if spec.Net == netUnix && samePathName(spec.Path, path) {
				return []portSpec{spec}, addr, true
			}
		}
		return nil, addr, false
	}
	if !ok {
		return nil, addr, false
	}
	var specs []portSpec
	for _, netw := range []string{"", netUDP} {
		if spec, ok := g.l.cfg.Ports.match(netw, addr); ok {
			specs = append(specs, spec)
		}
	}
	return specs, addr, len(specs) > 0
}

// unixBindPath reads the path of a struct sockaddr_un, made absolute
// against the process's working directory; ok is false for an abstract or
// unnamed address.
func unixBindPath(raw []byte, tgid int) (string, bool) {
	if len(raw) < 3 || raw[2] == 0 {
		return "", false
	}
	name := raw[2:]
	if i := bytes.IndexByte(name, 0); i >= 0 {
		name = name[:i]
	}
	path := string(name)
	if !filepath.IsAbs(path) {
		cwd, err := procfs.FS("/proc").Cwd(tgid)
		if err != nil {
			return "", false
		}
		path = filepath.Join(cwd, path)
	}
	return filepath.Clean(path), true
}

// samePathName reports whether two absolute paths name the same entry:
// the same name in the same directory, symbolic links followed.
func samePathName(a, b string) bool {
	if a == b {
		return true
	}
	if filepath.Base(a) != filepath.Base(b) {
		return false
	}
	da, err1 := filepath.EvalSymlinks(filepath.Dir(a))
	db, err2 := filepath.EvalSymlinks(filepath.Dir(b))
	return err1 == nil && err2 == nil && da == db
}

// heldFor returns the generation's socket for the target (at addr, for
// TCP and UDP), if it still holds one.
func (g *generation) heldFor(spec portSpec, addr netip.AddrPort) *heldSock {
	return g.heldWhere(func(s *heldSock) bool {
		return s.spec.Net == spec.Net && (spec.Net == netUnix && s.spec == spec || spec.Net != netUnix && s.addr == addr)
	})
}

// heldForSpec returns the generation's socket for the target, at
// whatever address.
func (g *generation) heldForSpec(spec portSpec) *heldSock {
	return g.heldWhere(func(s *heldSock) bool { return s.spec == spec })
}

func inodeOf(fd int) uint64 {
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	return st.Ino
}

// onListen performs the command's listen(2) on takeover's copy of a target
// socket, whichever process of the generation calls it (uvicorn's workers
// listen on the socket their supervisor bound), and has readiness looked at.
func (g *generation) onListen(n *seccomp.Notif) seccomp.Resp {
	st, err := procfs.FS("/proc").Status(int(n.PID))
	if err != nil {
		return seccomp.Continue
	}
	ino, err := procfs.FS("/proc").SocketInode(st.Tgid, int(n.Args[0]))
	if err != nil || !seccomp.Valid(g.notifFD, n.ID) {
		return seccomp.Continue
	}
	held := g.heldByInode(ino)
	if held == nil {
		return seccomp.Continue
	}
	if err := unix.Listen(held.copyFD, int(int32(n.Args[1]))); err != nil {
		return respErrno(err)
	}
	if held.fence != nil {
		if err := held.fence.joined(held.copyFD); err != nil {
			g.l.log.Warn("cannot steer new connections to the old server while the new one starts; a rollback would reset those that reach the new one", "port", held.spec.String(), "err", err)
		}
	}
	select {
	case g.nudge <- struct{}{}:
	default:
	}
	return seccomp.Resp{}
}

// holdsSockets reports whether takeover holds copies of any of the
// generation's sockets.
func (g *generation) holdsSockets() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.socks) > 0 && !g.done
}

func (g *generation) heldByInode(ino uint64) *heldSock {
	return g.heldWhere(func(s *heldSock) bool { return s.inode == ino })
}

// heldWhere returns a socket the generation holds that match accepts.
func (g *generation) heldWhere(match func(*heldSock) bool) *heldSock {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, s := range g.socks {
		if match(s) {
			return s
		}
	}
	return nil
}

// closeCopies closes takeover's copies of the generation's sockets, so that
// they keep no port from freeing once the generation is on its way out.
func (g *generation) closeCopies() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = true
	for k, s := range g.socks {
		unix.Close(s.copyFD)
		delete(g.socks, k)
	}
}

// copySocket takes a copy of fd in process tgid, and its inode.
func copySocket(tgid, fd int) (int, uint64, error) {
	pidfd, err := unix.PidfdOpen(tgid, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("pidfd_open(%d): %w", tgid, err)
	}
	defer unix.Close(pidfd)
	sock, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return -1, 0, fmt.Errorf("pidfd_getfd(%d, %d): %w", tgid, fd, err)
	}
	unix.CloseOnExec(sock)
	var st unix.Stat_t
	if err := unix.Fstat(sock, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		unix.Close(sock)
		return -1, 0, fmt.Errorf("fd %d of pid %d is not a socket", fd, tgid)
	}
	return sock, st.Ino, nil
}

// unprivilegedPortStart is net.ipv4.ip_unprivileged_port_start (1024 when
// it cannot be read).
func unprivilegedPortStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start")
	if err != nil {
		return 1024
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 1024
	}
	return n
}
