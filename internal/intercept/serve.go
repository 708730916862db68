package intercept

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/seccomp"
	"github.com/takeover/takeover/internal/socktab"
	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

const CapNetBindService = 10

// Serve answers the notifications of g's filter until every process under
// it has exited.
func Serve(ctx context.Context, g Gen) {
	(&trap{g}).serve(ctx)
}

func (g *trap) serve(ctx context.Context) {
	var n seccomp.Notif
	for {
		fds := []unix.PollFd{{Fd: int32(g.NotifFD), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		if fds[0].Revents&unix.POLLIN == 0 {
			return // POLLHUP: no process uses the filter any more
		}
		if err := seccomp.Recv(g.NotifFD, &n); err != nil {
			if err == unix.ENOENT || err == unix.EINTR {
				continue // the notifying thread died meanwhile
			}
			return
		}
		resp := g.answer(ctx, &n)
		resp.ID = n.ID
		seccomp.Send(g.NotifFD, &resp) // ENOENT: the thread died while we worked
	}
}

func respErrno(err error) seccomp.Resp {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		errno = unix.EADDRINUSE
	}
	return seccomp.Resp{Error: -int32(errno)}
}

func (g *trap) answer(ctx context.Context, n *seccomp.Notif) seccomp.Resp {
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
func (g *trap) onBind(ctx context.Context, n *seccomp.Notif) seccomp.Resp {
	began := time.Now()
	raw, err := seccomp.ReadSockaddr(g.NotifFD, n)
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
	// The process is held by a pidfd, which pidfd_getfd goes through,
	// before the notification is checked to be still pending: then its
	// thread still waits in bind(2), so neither its tid nor its process's
	// pid has been reused, and the pidfd and the /proc reads are of the
	// process that asked.
	pidfd, err := unix.PidfdOpen(st.Tgid, 0)
	if err != nil {
		return seccomp.Continue
	}
	defer unix.Close(pidfd)
	fd := int(n.Args[0])
	key := swap.SockKey{Tgid: st.Tgid, FD: fd}
	childIno, err := procfs.FS("/proc").SocketInode(st.Tgid, fd)
	if err != nil || !seccomp.Valid(g.NotifFD, n.ID) {
		return seccomp.Continue
	}
	g.dropClosed()
	if prev := g.Held.Get(key); prev != nil && prev.Inode == childIno {
		return seccomp.Resp{} // the same bind, notified again after a signal
	}
	// takeover binds on the command's behalf: never a port it could not
	// bind itself.
	if specs[0].Net != target.NetUnix && int(addr.Port()) < privilegedBelow("/proc", st.Tgid) && !mayBindPrivileged("/proc", st.Tgid, st.CapEff) {
		return respErrno(unix.EACCES)
	}
	var spec target.Spec
	var sock int
	var made bool
	for _, spec = range specs {
		if sock, made, err = g.claimSocket(pidfd, st.Tgid, fd, spec.SockType()); !errors.Is(err, errNotTarget) {
			break
		}
	}
	if err == nil && made && !seccomp.Valid(g.NotifFD, n.ID) {
		unix.Close(sock) // made from /proc reads: of a process that may have gone since
		return seccomp.Continue
	}
	if errors.Is(err, errNotTarget) {
		return seccomp.Continue // UDP on a TCP target's port, say: no business of ours
	}
	if err != nil {
		g.Log.Warn("cannot copy nor make the command's socket; letting its bind through, and it will not be seen ready", "pid", st.Tgid, "fd", fd, "err", err)
		return seccomp.Continue
	}
	if g.AwaitPrev != nil && !g.AwaitPrev(ctx, func() bool { return seccomp.Valid(g.NotifFD, n.ID) }) {
		unix.Close(sock)
		return seccomp.Continue // the command died waiting, or takeover is ending
	}
	exe, _ := procfs.FS("/proc").Exe(st.Tgid)
	child := owner.Child{PID: st.Tgid, UID: st.UID, Exe: exe, Unit: g.Unit}
	install := func(old int) error { return injectSocket(g.NotifFD, n.ID, st.Tgid, fd, sock, old) }
	sw, held, err := g.Take.Take(ctx, swap.Claim{Child: child, Status: st, Sock: sock, Addr: addr, Spec: spec, Install: install}, g.Prev)
	if err != nil {
		unix.Close(sock)
		g.Log.Error("bind refused", "port", spec.String(), "pid", st.Tgid, "err", err)
		return respErrno(err)
	}
	if made && held == sock {
		// The command's own socket could not be copied: it gets the one
		// takeover made and bound in its place.
		if err := injectSocket(g.NotifFD, n.ID, st.Tgid, fd, sock, sock); err != nil {
			unix.Close(sock)
			sw.Abandon()
			g.Log.Error("cannot install the socket in the command", "pid", st.Tgid, "fd", fd, "err", err)
			return respErrno(unix.EADDRINUSE)
		}
	}
	sw.Began = began
	if !g.Held.Add(key, &swap.Held{CopyFD: held, Inode: target.InodeOf(held), Spec: spec, Addr: addr, Fence: sw.Fence, Sw: sw}, sw) {
		unix.Close(held) // the generation is being stopped
		sw.Abandon()
	}
	return seccomp.Resp{}
}

// dropClosed lets go of takeover's copies of the generation's sockets
// that no process of the generation holds any more, and of the swaps that
// took them: a probe socket that a server (or its port finder) bound and
// closed before its real bind would otherwise keep the port, and the real
// bind would fail with EADDRINUSE. A copy whose socket the command still
// holds at another fd (dup2, or in a child after the binding process
// closed it) is filed under that fd. Where the command's fds cannot be
// read, nothing is dropped. Unix targets are left as they are: their
// swaps rename files.
func (g *trap) dropClosed() {
	proc := procfs.FS("/proc")
	if !g.Alive() {
		// The command's first process is gone (a server that daemonized):
		// where its sockets went can no longer be told.
		return
	}
	var closed []swap.SockKey
	want := make(map[uint64]bool)
	g.Held.Each(func(k swap.SockKey, s *swap.Held) {
		if s.Spec.Net == target.NetUnix {
			return
		}
		if ino, err := proc.SocketInode(k.Tgid, k.FD); err == nil && ino == s.Inode {
			return
		}
		closed = append(closed, k)
		want[s.Inode] = true
	})
	if len(closed) == 0 {
		return
	}
	// Where the command holds those sockets now: the generation's
	// processes are its command and the command's descendants.
	at := make(map[uint64]swap.SockKey)
	for _, pid := range proc.WithDescendants([]int{g.PID}) {
		fds, _, err := proc.SocketFDs(pid, want)
		if err != nil {
			if pid == g.PID || !errors.Is(err, os.ErrNotExist) {
				return // cannot tell: keep every copy
			}
			continue // exited meanwhile
		}
		for fd, ino := range fds {
			if _, ok := at[ino]; !ok {
				at[ino] = swap.SockKey{Tgid: pid, FD: fd}
			}
		}
	}
	g.Held.Refile(closed, at, g.Log)
}

// bindTargets returns the targets a bind to raw (a struct sockaddr) by
// process tgid can be: for an IP address, the TCP and the UDP target of
// its port, as the socket's type decides between them.
func (g *trap) bindTargets(raw []byte, tgid int) ([]target.Spec, netip.AddrPort, bool) {
	addr, family, ok := target.ParseSockaddr(raw)
	if family == unix.AF_UNIX {
		path, ok := unixBindPath(raw, tgid)
		if !ok {
			return nil, addr, false
		}
		for _, spec := range g.Targets {
			if spec.Net == target.NetUnix && target.SamePathName(spec.Path, path) {
				return []target.Spec{spec}, addr, true
			}
		}
		return nil, addr, false
	}
	if !ok {
		return nil, addr, false
	}
	var specs []target.Spec
	for _, netw := range []string{"", target.NetUDP} {
		if spec, ok := g.Targets.Match(netw, addr); ok {
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

// onListen performs the command's listen(2) on takeover's copy of a target
// socket, whichever process of the generation calls it (uvicorn's workers
// listen on the socket their supervisor bound), and has readiness looked at.
func (g *trap) onListen(n *seccomp.Notif) seccomp.Resp {
	st, err := procfs.FS("/proc").Status(int(n.PID))
	if err != nil {
		return seccomp.Continue
	}
	ino, err := procfs.FS("/proc").SocketInode(st.Tgid, int(n.Args[0]))
	if err != nil || !seccomp.Valid(g.NotifFD, n.ID) {
		return seccomp.Continue
	}
	held := g.Held.HeldByInode(ino)
	if held == nil {
		return seccomp.Continue
	}
	if held.Fence != nil && (held.Fence.IsGone() || g.PrevDead != nil && g.PrevDead()) {
		if h, ok := g.handOverDead(n, st.Tgid, held); ok {
			held = h
		}
	}
	if err := unix.Listen(held.CopyFD, int(int32(n.Args[1]))); err != nil {
		return respErrno(err)
	}
	if held.Fence != nil {
		if err := held.Fence.Joined(held.CopyFD); err != nil {
			g.Log.Warn("cannot steer new connections to the old server while the new one starts; a rollback would reset those that reach the new one", "port", held.Spec.String(), "err", err)
		}
	}
	if g.Listened != nil {
		g.Listened()
	}
	return seccomp.Resp{}
}

// UnprivilegedPortStart is net.ipv4.ip_unprivileged_port_start (1024 when
// it cannot be read).
func UnprivilegedPortStart() int {
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

// handOverDead gives the command, at its first listen(2) on s (bound beside
// an old generation's socket in a fenced reload), that old socket in place
// of s: the old generation has died, and what waits in its accept queue is
// then accepted by the command instead of reset. It returns the socket now
// held in place of s, or false if s stays.
func (g *trap) handOverDead(n *seccomp.Notif, tgid int, s *swap.Held) (*swap.Held, bool) {
	if g.Prev == nil {
		return nil, false
	}
	if on, err := unix.GetsockoptInt(s.CopyFD, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on != 0 {
		return nil, false // it listens already: its socket serves
	}
	old := g.Prev.DupHeld(s.Spec, s.Addr)
	if old < 0 {
		return nil, false
	}
	fd := int(n.Args[0])
	why := swap.HandoffMismatch(old, s.CopyFD, s.Spec, s.Addr)
	if why == "" {
		if err := injectSocket(g.NotifFD, n.ID, tgid, fd, s.CopyFD, old); err != nil {
			why = err.Error()
		}
	}
	if why != "" {
		g.Log.Warn("the old generation died before the new one listened, and its socket cannot be handed over: what waits in it is lost", "port", s.Spec.String(), "why", why)
		unix.Close(old)
		return nil, false
	}
	h := &swap.Held{CopyFD: old, Inode: target.InodeOf(old), Spec: s.Spec, Addr: s.Addr}
	g.Held.Replace(s, h)
	unix.Close(s.CopyFD) // the command's own socket, closed in it by the handover
	g.Log.Info("the old generation died before the new one listened: the new one is given its socket and what waits in it", "port", s.Spec.String(), "generation", g.Num)
	return h, true
}

// injectSocket puts old at fd in the notifying process, in place of own (the
// command's socket, with which takeover's copy shares its flags). FD_CLOEXEC,
// a flag of the fd, is set as the command's fd had it. O_NONBLOCK is a flag
// of the socket, shared by the old server and the new while both run: it is
// set if either wants it, since a blocking socket would stall an event loop
// (node accepts until EAGAIN) or keep a closing server in accept(2), while a
// server that polls before it accepts takes EAGAIN in its stride. Once the
// swap completes the flag is the servers' own to set (redis sets it after
// listen(2), asyncio after bind(2)), and takeover leaves it alone; a swap
// that is abandoned (the new server rolled back, or dead before it was
// ready) puts it back as it was (a nonblockUndo), for an old server that
// accepts in a blocking loop would otherwise take EAGAIN for a failure.
func injectSocket(notifFD int, id uint64, tgid, fd, own, old int) error {
	ownFlags, err := unix.FcntlInt(uintptr(own), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	oldFlags, err := unix.FcntlInt(uintptr(old), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	set := ownFlags&unix.O_NONBLOCK != 0 && oldFlags&unix.O_NONBLOCK == 0
	if set {
		if _, err := unix.FcntlInt(uintptr(old), unix.F_SETFL, oldFlags|unix.O_NONBLOCK); err != nil {
			return err
		}
	}
	cloexec, err := procfs.FS("/proc").Cloexec(tgid, fd)
	if err == nil {
		err = seccomp.AddFD(notifFD, id, old, fd, cloexec)
	}
	if err != nil && set {
		unix.FcntlInt(uintptr(old), unix.F_SETFL, oldFlags) // the old server's, untouched
	}
	return err
}

// unlinkTarget reads the path an unlink(2) or unlinkat(2) names and returns
// the unix target it is, if any.
func (g *trap) unlinkTarget(n *seccomp.Notif) (target.Spec, bool) {
	dirfd, pathArg := int32(unix.AT_FDCWD), n.Args[0]
	if n.Nr == unix.SYS_UNLINKAT {
		if n.Args[2]&unix.AT_REMOVEDIR != 0 {
			return target.Spec{}, false
		}
		dirfd, pathArg = int32(n.Args[0]), n.Args[1]
	}
	name, err := seccomp.ReadString(g.NotifFD, n, pathArg)
	if err != nil || name == "" || !slices.ContainsFunc(g.Targets, func(p target.Spec) bool {
		return p.Net == target.NetUnix && filepath.Base(p.Path) == filepath.Base(name)
	}) {
		return target.Spec{}, false // most unlinks: some other file's
	}
	if !filepath.IsAbs(name) {
		var dir string
		if dirfd == unix.AT_FDCWD {
			dir, err = procfs.FS("/proc").Cwd(int(n.PID))
		} else {
			dir, err = procfs.FS("/proc").FDLink(int(n.PID), int(dirfd))
		}
		if err != nil {
			return target.Spec{}, false
		}
		name = filepath.Join(dir, name)
	}
	var st unix.Stat_t
	if unix.Lstat(name, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return target.Spec{}, false
	}
	for _, spec := range g.Targets {
		var t unix.Stat_t
		if spec.Net == target.NetUnix && unix.Lstat(spec.Path, &t) == nil && t.Ino == st.Ino && t.Dev == st.Dev {
			return spec, true
		}
	}
	return target.Spec{}, false
}

// onUnlink skips a command's unlink of a --path while a socket listens
// there: whichever generation serves it (an old one on its way out, a new
// one before or after its bind, a crashed one's socket that takeover holds
// for the restart), the path must keep naming it. An unlink of a stale
// file (no listener: a server that was killed) goes through, as the
// server's next bind needs it. The file of the last takeover's socket is
// removed when that takeover exits (cleanRunDir), once no one listens.
func (g *trap) onUnlink(n *seccomp.Notif) seccomp.Resp {
	spec, ok := g.unlinkTarget(n)
	if !ok {
		return seccomp.Continue
	}
	if socks, err := socktab.UnixListenersAt(spec.Path); err != nil || len(socks) == 0 || !seccomp.Valid(g.NotifFD, n.ID) {
		return seccomp.Continue
	}
	g.Log.Debug("kept the unix socket the command unlinked: a socket listens there", "path", spec.Path, "pid", n.PID)
	return seccomp.Resp{}
}
