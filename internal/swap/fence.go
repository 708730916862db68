package swap

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/takeover/takeover/internal/drain"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/socktab"
	"golang.org/x/sys/unix"
)

// Fencing keeps a server that does not drain from losing requests at a
// swap. In a plain handoff the old and the new server share one listening
// socket, and the old one accepts from it until it is told to stop; a
// server that closes what it accepted when it stops (redis, uvicorn,
// Tomcat, memcached) closes requests it had just taken.
//
// A fenced handoff gives the new server a socket of its own, bound beside
// the old one in one SO_REUSEPORT group (SO_REUSEPORT set on a socket that
// already listens lets another join it), and a one-instruction classic BPF
// program on the group (SO_ATTACH_REUSEPORT_CBPF) picks the socket each new
// connection goes to: the old one while the new server starts, so that a
// rollback loses nothing, and the new one once it is ready (or, for a
// canary, a share of them: canary.go). The old server then accepts what
// its queue still holds, finishes what it accepted, and only then is told
// to stop. The kernel runs the program once per handshake: an accept costs
// nothing more, where trapping accept(2) with seccomp would cost a
// notification per accept for the server's whole life (BenchmarkAccept).
//
// The group numbers its sockets in the order they joined (a socket that
// leaves is replaced by the last one), so with the old socket alone in it
// before the new one joins, the old one is 0 and the new one 1.

// A Fence is a fenced handoff of one TCP target: the old server's socket
// and the group it shares with the new one.
type Fence struct {
	oldInode uint64
	addr     netip.AddrPort // the old socket's

	mu   sync.Mutex
	up   bool // new connections go to the new socket
	gone bool // the old server exited: nothing to wait for
	// handshakes are the request sockets at the address when the fence
	// went up (by cookie), until each has left the handshake: the old
	// socket's are among them, and sock_diag does not say which.
	handshakes map[uint64]bool
	migrating  bool   // holds net.ipv4.tcp_migrate_req on (holdMigrate)
	Busy       string // the last connection Finished found busy, and why
	// raised is when the fence went up; loops are the old server's
	// keep-alive connections seen carrying request after request since
	// (drain.Loops), and Looping how many there were when Finished let
	// the old server go with them busy.
	raised  time.Time
	loops   drain.Loops
	Looping int
	// taken are the old server's connections taken to be relayed to the
	// new server before it is stopped (relay.go).
	taken taken

	// check is a health check's source, steered to the new socket while
	// it runs (checksteer.go).
	check netip.AddrPort
	// canary is the percent of new connections steered to the new socket
	// while the fence is down (canary.go); 0: none.
	canary int
}

const (
	oldInGroup = 0
	newInGroup = 1
)

// FenceBeside binds the command's socket c.sock beside old, the old
// server's listening socket at c.addr, in one SO_REUSEPORT group, and
// steers new connections to old. It returns why when it cannot, having left
// both sockets as they were (c.sock unbound).
func FenceBeside(c Claim, old int) (*Fence, string) {
	var o, n unix.Stat_t
	if err := unix.Fstat(old, &o); err != nil {
		return nil, fmt.Sprintf("cannot stat the old socket: %v", err)
	}
	if err := unix.Fstat(c.Sock, &n); err != nil {
		return nil, fmt.Sprintf("cannot stat the new socket: %v", err)
	}
	for _, s := range []int{old, c.Sock} {
		if p, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil || p == unix.IPPROTO_MPTCP {
			// (Go 1.24 and later listen with MPTCP where the kernel has it.)
			return nil, "an MPTCP socket: the kernel takes no SO_REUSEPORT program for one"
		}
	}
	if o.Uid != n.Uid {
		return nil, fmt.Sprintf("the old socket belongs to uid %d and the new one to uid %d: an SO_REUSEPORT group is one user's", o.Uid, n.Uid)
	}
	ls, err := socktab.DiagTCPListeners()
	if err != nil {
		return nil, err.Error()
	}
	if k := countAt(ls, c.Addr); k != 1 {
		return nil, fmt.Sprintf("%d sockets listen on %s (an SO_REUSEPORT group of the server's own), not one", k, c.Addr)
	}
	had, err := unix.GetsockoptInt(old, unix.SOL_SOCKET, unix.SO_REUSEPORT)
	if err != nil {
		return nil, fmt.Sprintf("cannot read the old socket's SO_REUSEPORT: %v", err)
	}
	undo := func() {
		unix.SetsockoptInt(c.Sock, unix.SOL_SOCKET, unix.SO_REUSEPORT, 0)
		if had == 0 {
			unix.SetsockoptInt(old, unix.SOL_SOCKET, unix.SO_REUSEPORT, 0)
		}
	}
	for _, s := range []int{old, c.Sock} {
		if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
			undo()
			return nil, fmt.Sprintf("cannot set SO_REUSEPORT: %v", err)
		}
	}
	// The old socket is in a group already if it was fenced before, with
	// the program that steered to its own newcomer: point it back at the
	// old socket before the new one joins. (EINVAL: no group yet; the new
	// socket's listen makes one.)
	steer(old, oldInGroup)
	if err := c.Bind(c.Sock); err != nil {
		undo()
		return nil, fmt.Sprintf("cannot bind beside the old socket: %v", err)
	}
	return &Fence{oldInode: o.Ino, addr: c.Addr}, ""
}

// freshInGroup sets SO_REUSEPORT on a TCP socket bound fresh where a later
// swap may fence it, so that its first listen makes an SO_REUSEPORT group
// of one. A socket that joins a group only when it is fenced switches, for
// its SYN cookies, from its own record of its last SYN queue overflow to
// the new group's, which is empty: until the group overflows again, every
// client still completing a cookie handshake with it (its ACK dropped
// while the accept queue was full, and retried) is reset, as if the cookie
// were forged (24 to 32 resets in one burst at the first swap of a python
// server with a backlog of 5 under 50 clients).
func freshInGroup(c Claim, fence bool) {
	if fence && c.Spec.Net == "" {
		unix.SetsockoptInt(c.Sock, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}
}

// countAt counts the listeners bound to exactly addr.
func countAt(ls []socktab.Socket, addr netip.AddrPort) int {
	want := netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	k := 0
	for _, s := range ls {
		if s.Addr == want {
			k++
		}
	}
	return k
}

// steer attaches to sock's SO_REUSEPORT group the program that sends every
// new connection to the group's socket at index.
func steer(sock int, index uint32) error {
	return attach(sock, []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: index}})
}

// attach attaches the classic program prog to sock's SO_REUSEPORT group,
// in place of the one it had.
func attach(sock int, prog []unix.SockFilter) error {
	return unix.SetsockoptSockFprog(sock, unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
		&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
}

// Joined is called once the new socket listens, which is when it joins the
// group: until the fence is up, connections go to the old socket.
func (f *Fence) Joined(sock int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.up {
		return nil // a later listen(2) on it (a prefork worker's)
	}
	if f.gone {
		f.up = true
		return steer(sock, newInGroup)
	}
	return f.steerOld(sock)
}

// Raise sends every new connection to the new socket, sock, and notes the
// handshakes under way at the address: from then on, a handshake that
// begins is the new socket's, so the old socket's are among those.
func (f *Fence) Raise(sock int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up = true
	if err := steer(sock, newInGroup); err != nil {
		return err
	}
	f.raised, f.loops = time.Now(), drain.Loops{}
	f.handshakes = map[uint64]bool{}
	reqs, err := f.requests()
	for _, r := range reqs {
		f.handshakes[r.Cookie] = true
	}
	return err
}

// requests returns the request sockets at the fence's address.
func (f *Fence) requests() ([]socktab.Request, error) {
	reqs, err := socktab.DiagTCPRequests(f.addr.Port())
	if err != nil || f.addr.Addr().IsUnspecified() {
		return reqs, err
	}
	want := f.addr.Addr().Unmap()
	return slices.DeleteFunc(reqs, func(r socktab.Request) bool { return r.Local.Addr() != want }), nil
}

// handshaking reports whether a handshake that was under way when the
// fence went up still is. The old socket's may be: the client's ACK not
// arrived yet, or dropped because the old socket's accept queue was full
// (the client counts itself connected, and sends its request); the kernel
// takes it into the old socket's queue at the client's next segment or at
// its own SYN-ACK retransmit. A listener that closes resets what is still
// in its handshake, unless net.ipv4.tcp_migrate_req is on.
func (f *Fence) handshaking() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.handshakes) == 0 {
		return false, nil
	}
	reqs, err := f.requests()
	if err != nil {
		return false, err
	}
	still := map[uint64]bool{}
	for _, r := range reqs {
		if f.handshakes[r.Cookie] {
			still[r.Cookie] = true
		}
	}
	f.handshakes = still
	return len(still) > 0, nil
}

// OldGone records that the old server exited (a reload's old generation
// died before the new one was ready, or was stopped), and sends new
// connections to the new socket, sock, if it listens and the fence is not
// up already.
func (f *Fence) OldGone(sock int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gone = true
	if f.up {
		return nil // raised already, and perhaps settled since
	}
	if on, err := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || on == 0 {
		return err
	}
	f.up = true
	return steer(sock, newInGroup)
}

// IsGone reports whether the old server exited.
func (f *Fence) IsGone() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.gone
}

// Lower sends new connections back to the old socket (sock is any socket
// of the group), a canary's share too: the new server exited before its
// swap completed.
func (f *Fence) Lower(sock int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.up = false
	f.canary = 0
	return steer(sock, oldInGroup)
}

// Settle pins the group to the new socket, sock, once the old socket has
// left it (its last holder closed it): the new socket is then the group's
// first, and a socket that joined after it (another process of the user,
// binding with SO_REUSEPORT) would otherwise take every connection the
// program steers to the second. It waits up to a second for the old socket
// to go, and leaves the program as it is if it does not. Then, the old
// socket's handshakes done (up to a second more), it lets go of
// net.ipv4.tcp_migrate_req.
func (f *Fence) Settle(ctx context.Context, sock int) bool {
	defer f.ReleaseMigrate()
	deadline := time.Now().Add(time.Second)
	for {
		ls, err := socktab.DiagTCPListeners()
		if err == nil && !slices.ContainsFunc(ls, func(s socktab.Socket) bool { return s.Inode == f.oldInode }) {
			f.mu.Lock()
			ok := steer(sock, 0) == nil
			f.mu.Unlock()
			// A handshake of the closed socket is moved to the new one
			// when the client's ACK comes, if the sysctl is still on.
			for end := time.Now().Add(time.Second); time.Now().Before(end) && ctx.Err() == nil; time.Sleep(5 * time.Millisecond) {
				if busy, err := f.handshaking(); !busy || err != nil {
					break
				}
			}
			return ok
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Finished reports whether the fenced old server has nothing left to
// finish: no handshake that may be its socket's is under way, no
// connection waits in its socket's queue, and every connection one of pids
// (its processes) holds is idle: its requests answered (drain.Finished).
// (In that order: a handshake that completes meanwhile is in the queue
// when that is looked at.)
func (f *Fence) Finished(pids []int) (bool, error) {
	if f.IsGone() {
		return true, nil // what waits in its queue is handed over or lost: none of it will be accepted there
	}
	if busy, err := f.handshaking(); busy || err != nil {
		return false, err
	}
	ls, err := socktab.DiagTCPListeners()
	if err != nil {
		return false, err
	}
	for _, s := range ls {
		if s.Inode == f.oldInode && s.Queued > 0 {
			return false, nil
		}
	}
	conns, err := socktab.DiagTCPConns(f.addr.Port())
	if err != nil || len(conns) == 0 {
		return err == nil, err
	}
	// Its keep-alive connections need not end: it has finished once it
	// has answered every request it read on them (issue 30), or once
	// those still busy are loops that will never be idle (drain.Loops).
	ours, holders, err := heldConns("/proc", conns, pids)
	ok, c, why := drain.Finished(ours, drain.Settle)
	if ok {
		return true, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	loops := 0
	if f.loops != nil { // raised
		for i, c := range ours {
			if f.loops.Peek(c) && len(holders[i]) > 0 {
				f.loops.Saw(c, peek(holders[i][0], c.Inode))
			}
		}
		n, held, heldWhy, all := f.loops.AllLooping(ours, drain.Settle)
		if all && time.Since(f.raised) >= drain.LoopPatience {
			f.Looping = n
			return true, err
		}
		if heldWhy != "" {
			c, why = held, heldWhy
		}
		loops = n
	}
	f.Busy = fmt.Sprintf("%v: %s (in %v, out %v ago; %d keep-alive loops beside it)", c.Remote, why, c.LastDataRecv, c.LastDataSent, loops)
	return false, err
}

// heldConns returns those of conns that one of pids holds, and a holder of
// each.
func heldConns(proc procfs.FS, conns []socktab.Conn, pids []int) ([]socktab.Conn, [][]procfs.Holder, error) {
	inodes := make([]uint64, len(conns))
	for i, c := range conns {
		inodes[i] = c.Inode
	}
	found, err := proc.Holders(inodes, pids)
	var held []socktab.Conn
	var holders [][]procfs.Holder
	for i, hs := range found {
		if len(hs) > 0 {
			held = append(held, conns[i])
			holders = append(holders, hs)
		}
	}
	return held, holders, err
}

// peek returns the first bytes waiting unread on the connection h holds,
// without taking them (a copy of its socket, MSG_PEEK); nil if it cannot
// be copied or is no longer the socket inode.
func peek(h procfs.Holder, inode uint64) []byte {
	sock, ino, err := pidfd.CopySocket(h.PID, h.FD)
	if err != nil {
		return nil
	}
	defer unix.Close(sock)
	if ino != inode {
		return nil // the fd was closed and reused meanwhile
	}
	return peekHead(sock)
}

// peekHead returns the first bytes waiting unread on the connection sock,
// enough for drain.RequestLine ("OPTIONS "), without taking them.
func peekHead(sock int) []byte {
	buf := make([]byte, 8)
	n, _, err := unix.Recvfrom(sock, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return nil
	}
	return buf[:n]
}

// migrateReqPath is net.ipv4.tcp_migrate_req (Linux 5.14) of takeover's
// network namespace, which is the fenced sockets' (sock_diag found the old
// one there).
const migrateReqPath = "/proc/sys/net/ipv4/tcp_migrate_req"

// net.ipv4.tcp_migrate_req is held on while this process has a fenced
// swap under way, and put back to 0 by the last one if it was 0 before.
//
// A takeover killed mid-swap cannot put it back, so root's takeovers share
// a marker in the run directory per network namespace, named for its
// cookie (SO_NETNS_COOKIE: unlike the inode of /proc/self/ns/net, never
// reused while the machine runs). It holds the pid and start time of the
// takeover that turned the sysctl on (empty: it was on already). Each
// takeover holding the sysctl keeps a shared OFD lock on its byte 1, which
// dies with it (SIGKILL too), and locks byte 0 to look and change. One
// that can lock byte 1 exclusively is alone: a marker with contents was
// then left by a takeover that died (or let go while another held on), and
// it adopts it (HoldMigrate) or puts the sysctl back to 0 and removes it
// (ReleaseMigrate; MigrateMarkerIn as a launcher starts). Races left:
// takeovers with different run directories (TAKEOVER_RUN_DIR), or of a
// version before markers, do not see each other: as before, the one that
// turned it on puts it back, perhaps under the other's swap (its second
// guard cut short, never its drain); and a value an operator writes during
// a swap is undone at its end.
var migrate struct {
	sync.Mutex
	users  int
	set    bool        // this process turned it on (no marker)
	dir    *rundir.Dir // the run directory (MigrateMarkerIn), root's only
	name   string      // the marker's name in dir
	marker *os.File    // held open, byte 1 locked shared, while users > 0
}

// MigrateMarkerIn makes dir, a launcher's run directory, the place of its
// network namespace's tcp_migrate_req marker, and puts back what a
// takeover killed mid-swap there left on. It costs a socket and an
// openat that finds nothing, and nothing where takeover is not root.
func MigrateMarkerIn(dir *rundir.Dir) {
	migrate.Lock()
	defer migrate.Unlock()
	if os.Geteuid() != 0 {
		return // only root may write the sysctl
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return
	}
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	unix.Close(fd)
	if err != nil {
		return
	}
	migrate.dir, migrate.name = dir, fmt.Sprintf("tcp_migrate_req-%d", cookie)
	if m, alone := lockMarker(false); alone {
		putBack(m)
	} else if m != nil {
		m.Close()
	}
}

// lockMarker opens the marker (creating it if create) and locks its byte
// 0; alone reports whether no other takeover holds the sysctl (byte 1 then
// locked exclusively). nil without a marker.
func lockMarker(create bool) (m *os.File, alone bool) {
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	for migrate.dir != nil {
		m, err := migrate.dir.Open(migrate.name, flag, 0o600)
		if err != nil {
			return nil, false
		}
		if err := lockByte(m, 0, unix.F_WRLCK, true); err != nil {
			m.Close()
			return nil, false
		}
		if migrate.dir.SamePath(m, migrate.name) {
			return m, lockByte(m, 1, unix.F_WRLCK, false) == nil
		}
		m.Close() // removed by the last takeover to let go meanwhile
	}
	return nil, false
}

// markerLockWait bounds a wait for the marker's byte 0, which another
// takeover holds only while it looks and changes: one stopped (SIGSTOP) or
// stuck there must not stop this one's swap. Past it, the marker is left
// alone and this process guards the sysctl as one without a marker does.
const markerLockWait = 2 * time.Second

// lockByte sets an OFD lock of typ on byte b of f, waiting up to
// markerLockWait if wait.
func lockByte(f *os.File, b int64, typ int16, wait bool) error {
	lk := unix.Flock_t{Type: typ, Start: b, Len: 1}
	deadline := time.Now().Add(markerLockWait)
	for {
		err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk)
		switch {
		case err == unix.EINTR:
		case wait && (err == unix.EAGAIN || err == unix.EACCES) && time.Now().Before(deadline):
			time.Sleep(5 * time.Millisecond)
		default:
			return err
		}
	}
}

// putBack, alone with the marker m, puts the sysctl back to 0 if a
// takeover turned it on, and removes the marker.
func putBack(m *os.File) {
	if markerSays(m) && sysctlIs("1") {
		writeSysctl(migrateReqPath, "0")
	}
	migrate.dir.Remove(migrate.name)
	m.Close()
}

func sysctlIs(v string) bool {
	b, err := os.ReadFile(migrateReqPath)
	return err == nil && strings.TrimSpace(string(b)) == v
}

// HoldMigrate turns net.ipv4.tcp_migrate_req on for the fence's swap, if
// it is off: then a listening socket that closes while another of its
// SO_REUSEPORT group listens hands that one its accept queue and its
// handshakes under way, where the kernel would otherwise reset them. With
// takeover's one-instruction classic program on the group (not an eBPF
// program attached for migration), the kernel picks among the sockets that
// still listen by hash: once the old socket closes, the new one is the
// only one. It is put back once the old socket has gone (settle), so that
// the host is left as it was found; the drain has by then emptied what
// it would have moved, and it is a second guard. (false, nil) means it was
// on already (or this process holds it); (true, nil) that it was turned
// on, or taken over from a takeover killed mid-swap; (false, err) that it could not be (not root in this network
// namespace, /proc/sys read-only, a kernel before 5.14): the drain alone
// then keeps the old socket's queue from being reset.
func (f *Fence) HoldMigrate() (bool, error) {
	migrate.Lock()
	defer migrate.Unlock()
	if f.migrating {
		return false, nil
	}
	f.migrating = true
	migrate.users++
	if migrate.users > 1 {
		return false, nil
	}
	m, alone := lockMarker(true)
	v, err := os.ReadFile(migrateReqPath)
	was := strings.TrimSpace(string(v))
	set := false
	if adopt := alone && was == "1" && markerSays(m); err == nil && (was == "0" || adopt) {
		// The marker first: killed before the sysctl, a takeover leaves a
		// marker and a 0, which the next one just removes.
		if err = writeMarker(m); err == nil && was == "0" {
			err = writeSysctl(migrateReqPath, "1")
		}
		set = err == nil
		migrate.set = set && m == nil
	}
	switch {
	case m == nil:
	case err != nil && alone:
		putBack(m)
	case err != nil:
		m.Close()
	default: // byte 1 shared (from exclusive, at once), then byte 0 free
		lockByte(m, 1, unix.F_RDLCK, false)
		lockByte(m, 0, unix.F_UNLCK, false)
		migrate.marker = m
	}
	return set, err
}

// ReleaseMigrate lets go of the fence's hold: the last one (of root's
// takeovers in the namespace, with a marker) puts net.ipv4.tcp_migrate_req
// back to 0 if a takeover turned it on and it is still on.
func (f *Fence) ReleaseMigrate() {
	migrate.Lock()
	defer migrate.Unlock()
	if !f.migrating {
		return
	}
	f.migrating = false
	if migrate.users--; migrate.users > 0 {
		return
	}
	if m := migrate.marker; m != nil {
		migrate.marker = nil
		if lockByte(m, 0, unix.F_WRLCK, true) == nil && lockByte(m, 1, unix.F_WRLCK, false) == nil {
			putBack(m)
		} else {
			m.Close() // another takeover holds it: the last one puts it back
		}
		return
	}
	if migrate.set && sysctlIs("1") {
		writeSysctl(migrateReqPath, "0")
	}
	migrate.set = false
}

// markerSays reports whether the marker m names a takeover that turned
// the sysctl on; writeMarker writes this one into it.
func markerSays(m *os.File) bool {
	n, _ := m.ReadAt(make([]byte, 1), 0)
	return n > 0
}

func writeMarker(m *os.File) error {
	if m == nil {
		return nil
	}
	st, err := procfs.FS("/proc").Stat(os.Getpid())
	if err == nil {
		err = m.Truncate(0)
	}
	if err == nil {
		_, err = m.WriteAt([]byte(fmt.Sprintf("%d %d\n", os.Getpid(), st.Start)), 0)
	}
	return err
}

func writeSysctl(path, v string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(v + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// FenceAttrs are the log attributes that say whether a swap was fenced.
func (sw *Record) FenceAttrs() []any {
	switch {
	case sw.Fence != nil:
		return []any{"fenced", true}
	case sw.NotFenced != "":
		return []any{"fenced", false, "not_fenced", sw.NotFenced}
	}
	return nil
}
