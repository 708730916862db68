package swap

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// Unix-domain targets (--path). A path names a socket through its file:
// connect(2) finds the listener by the file's inode, whatever name the
// socket was bound at. So a handoff shares the old listener as for TCP, and
// where there is no handoff the new socket is bound at a temporary name and
// renamed over the path once its server is ready: either way connect never
// fails.
// What servers do to the file on the way out is the rest: most unlink
// their path when they stop (nginx, Go, gunicorn), and a new one may unlink
// it before its bind (gunicorn, asyncio). Under takeover those unlinks
// are seen by the seccomp filter and skipped while a socket listens at the
// path (onUnlink); for a server not started under takeover the directory
// is watched instead, and the path linked back (guard). The last takeover
// removes the file once no one listens (removeStaleSocket).

// Bind binds sock to the claim's target: an IP address, or a unix path,
// whose file then gets the owner and the mode it would have had, had the
// command bound it itself.
func (c Claim) Bind(sock int) error {
	if c.Spec.Net != target.NetUnix {
		return unix.Bind(sock, target.SockaddrOf(c.Addr))
	}
	return c.BindPath(sock, c.Spec.Path)
}

// BindPath binds sock to path as the claim's thread would (bindPathAs).
// A socket takeover binds for itself, to pass on, gets takeover's umask, or
// c.pathMode where that is set.
func (c Claim) BindPath(sock int, path string) error {
	if c.Child.PID != os.Getpid() {
		owner, err := c.Status.FileOwner()
		if err != nil {
			return fmt.Errorf("the umask and ids of pid %d: %w", c.Child.PID, err)
		}
		return bindPathAs(sock, path, fileOwner(owner))
	}
	if c.PathMode == 0 {
		return unix.Bind(sock, &unix.SockaddrUnix{Name: path})
	}
	return bindWithMode(sock, path, c.PathMode)
}

// bindPathAs binds sock to path as owner: with its filesystem ids and
// groups, so that the kernel checks its right to create a file in the
// directory (takeover never binds a path the command could not) and the
// file is its; and with its umask.
func bindPathAs(sock int, path string, owner fileOwner) error {
	return onThrowawayThread(func() error { return owner.bind(sock, path) })
}

// bindWithMode binds sock to path as takeover, the socket file born with
// mode perm: the mode is never set afterwards by the file's name, which the
// owner of the directory could by then have pointed at any file (a symlink
// renamed over it between the bind and a chmod).
func bindWithMode(sock int, path string, perm uint32) error {
	return onThrowawayThread(func() error { return bindUmasked(sock, path, 0o777&^perm, uint32(os.Geteuid())) })
}

// onThrowawayThread runs f on an OS thread of its own, which exits when f
// returns: what f changes of the thread (its filesystem ids and groups, its
// umask) goes with it.
func onThrowawayThread(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread exits with the goroutine.
		runtime.LockOSThread()
		errc <- f()
	}()
	return <-errc
}

// bindUmasked binds sock to path with umask mask, on the calling thread,
// which must be locked and thrown away: the umask belongs to the
// filesystem context, which threads share until one unshares it. uid is
// whom the file is for (the thread's filesystem uid).
//
// Where unshare is refused (a container's default seccomp profile refuses
// it without CAP_SYS_ADMIN), the socket's own mode is set instead (bind
// gives the file the socket's mode less the umask), and where takeover's
// umask still takes away bits the mode keeps, they are added after the
// bind through a descriptor of the file, opened without following a
// symlink, and only if it is still the file just made: a socket file of
// uid's with one link. Otherwise the bind fails and the file is left alone.
func bindUmasked(sock int, path string, mask, uid uint32) error {
	mask &= 0o777
	if err := unix.Unshare(unix.CLONE_FS); err == nil {
		unix.Umask(int(mask))
		return unix.Bind(sock, &unix.SockaddrUnix{Name: path})
	}
	// Refused where the thread acts as a command's uid (the socket is
	// takeover's): chmodBound does it then.
	unix.Fchmod(sock, 0o777&^mask)
	if err := unix.Bind(sock, &unix.SockaddrUnix{Name: path}); err != nil {
		return err
	}
	return chmodBound(path, 0o777&^mask, uid)
}

// chmodBound gives the socket file just bound at path mode perm if it has
// not got it yet, never by its name: the owner of the directory may have
// renamed something else over it since the bind.
func chmodBound(path string, perm, uid uint32) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the socket file just bound: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat the socket file just bound: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Uid != uid || st.Nlink != 1 {
		return fmt.Errorf("the socket file just bound at %s was replaced (now mode %#o, uid %d, %d links): its mode is not set", path, st.Mode, st.Uid, st.Nlink)
	}
	if st.Mode&0o777 == perm {
		return nil
	}
	// An O_PATH descriptor has no fchmod; its /proc link reaches the very
	// file, whatever its name now (as glibc's fchmodat AT_SYMLINK_NOFOLLOW).
	if err := unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", fd), perm); err != nil {
		return fmt.Errorf("set the mode of the socket file just bound: %w", err)
	}
	return nil
}

// bind binds sock to path on the calling thread, which it makes act as o:
// the thread must be locked and thrown away (bindPathAs).
func (o fileOwner) bind(sock int, path string) error {
	if os.Geteuid() == 0 {
		if err := unix.Setgroups(o.Groups); err != nil {
			return fmt.Errorf("take the command's groups: %w", err)
		}
		unix.Setfsgid(o.GID)
		unix.Setfsuid(o.UID) // from 0 to another: the file capabilities go too
		// Neither call reports a failure but by what it returns next time.
		if uid, _ := unix.SetfsuidRetUid(-1); uid != o.UID {
			return fmt.Errorf("act as the command's uid %d: still %d", o.UID, uid)
		}
		if gid, _ := unix.SetfsgidRetGid(-1); gid != o.GID {
			return fmt.Errorf("act as the command's gid %d: still %d", o.GID, gid)
		}
	}
	// The mode comes from the umask at the bind, as for the command's own
	// bind: never from a chmod of the path after it (bindWithMode).
	uid := uint32(os.Geteuid())
	if uid == 0 {
		uid = uint32(o.UID)
	}
	return bindUmasked(sock, path, o.Umask, uid)
}

// A fileOwner is what a process's new files get: its filesystem ids and
// groups, and the mode bits its umask takes away.
type fileOwner procfs.FileOwner

// sideNames counts the side names this takeover has made.
var sideNames atomic.Int64

// sideName is a name beside path for takeover's own use: hidden, and
// unique to this takeover, this swap and what.
func sideName(path, what string) string {
	return filepath.Join(filepath.Dir(path), fmt.Sprintf(".%s.takeover-%s-%d-%d", filepath.Base(path), what, os.Getpid(), sideNames.Add(1)))
}

// A PathSwap is the unix side of a swap: the file the old server answers
// at, kept under a side name until the old server is gone.
type PathSwap struct {
	Path    string
	Pending string // the new socket's temporary name until its server is ready (rename)
	keep    string // a link to the socket file the path must name at the end
	oldKeep string // a link to the old socket's file, for a rollback (rename)
}

// RenameOver completes a rename once the new server is ready: the old file
// is linked aside (for a rollback) and the new one renamed over the path,
// in one step for every connect.
func (ps *PathSwap) RenameOver() error {
	if ps == nil || ps.Pending == "" {
		return nil
	}
	ps.oldKeep = sideName(ps.Path, "old")
	if err := unix.Link(ps.Path, ps.oldKeep); err != nil {
		ps.oldKeep = ""
	}
	ps.keep = sideName(ps.Path, "keep")
	if err := unix.Link(ps.Pending, ps.keep); err != nil {
		return fmt.Errorf("link %s: %w", ps.Pending, err)
	}
	if err := unix.Rename(ps.Pending, ps.Path); err != nil {
		return fmt.Errorf("rename %s over %s: %w", ps.Pending, ps.Path, err)
	}
	ps.Pending = ""
	return nil
}

// KeepHandedOver notes, for a handoff, the file at the path: the shared
// listener's, which the old server may unlink on its way out.
func KeepHandedOver(path string) *PathSwap {
	ps := &PathSwap{Path: path, keep: sideName(path, "keep")}
	if unix.Link(path, ps.keep) != nil {
		return nil
	}
	return ps
}

// Guard links the path back to the kept file whenever it names nothing
// while the old server stops (a server not under takeover unlinking it), until
// ctx ends; it says how often it had to. It wakes at each change in the
// path's directory (inotify), or every 2 ms where it cannot watch it.
func (ps *PathSwap) Guard(ctx context.Context) <-chan int {
	done := make(chan int, 1)
	if ps == nil || ps.keep == "" {
		done <- 0
		return done
	}
	w := watchDir(filepath.Dir(ps.Path)) // watching before the caller signals
	go func() {
		defer w.close()
		restored := 0
		for {
			if ps.restore() {
				restored++
			}
			if ctx.Err() != nil {
				done <- restored
				return
			}
			w.wait()
		}
	}()
	return done
}

// A dirWatch wakes its waiter when entries of a directory are removed or
// renamed.
type dirWatch struct{ fd int }

func watchDir(dir string) dirWatch {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return dirWatch{-1}
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_DELETE|unix.IN_MOVED_FROM|unix.IN_MOVED_TO|unix.IN_CREATE); err != nil {
		unix.Close(fd)
		return dirWatch{-1}
	}
	return dirWatch{fd}
}

// wait returns after a change, or at most 20 ms (2 ms without inotify).
func (w dirWatch) wait() {
	if w.fd < 0 {
		time.Sleep(2 * time.Millisecond)
		return
	}
	unix.Poll([]unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}}, 20)
	buf := make([]byte, 4096)
	for {
		if n, _ := unix.Read(w.fd, buf); n <= 0 {
			return
		}
	}
}

func (w dirWatch) close() {
	if w.fd >= 0 {
		unix.Close(w.fd)
	}
}

// restore makes the path name the kept file again if it names nothing; it
// reports whether it had to. Whatever else is at the path is left alone.
func (ps *PathSwap) restore() bool {
	return unix.Link(ps.keep, ps.Path) == nil
}

// Finish removes the side names once the swap has ended.
func (ps *PathSwap) Finish() {
	if ps == nil {
		return
	}
	for _, name := range []string{ps.Pending, ps.keep, ps.oldKeep} {
		if name != "" {
			unix.Unlink(name)
		}
	}
}

// rollBack puts the old socket's file back at the path, after a rename,
// for a generation that is rolled back.
func (ps *PathSwap) rollBack() {
	if ps == nil || ps.oldKeep == "" {
		ps.Finish()
		return
	}
	unix.Rename(ps.oldKeep, ps.Path)
	ps.oldKeep = ""
	ps.Finish()
}

// RemoveStaleSocket removes the socket file at path if no process but self
// listens on it: a file left behind, on which a bind would fail. Anything
// but a socket is left alone.
//
// A socket in another network namespace (a container's, behind a bind
// mount) is not in this one's tables: a connect that is refused is asked
// too, before the file goes. It reports whether it removed the file.
func RemoveStaleSocket(path string, self int) bool {
	var st unix.Stat_t
	if unix.Lstat(path, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return false
	}
	ls, err := owner.Listeners("/proc", target.Spec{Net: target.NetUnix, Path: path}, nil, false)
	if err != nil {
		return false
	}
	for _, o := range ls {
		if len(o.Holders) == 0 || o.Hidden {
			return false // perhaps held by a process this user cannot see
		}
		for _, h := range o.Holders {
			if h.PID != self {
				return false
			}
		}
	}
	if len(ls) == 0 && !connectRefused(path) {
		return false
	}
	return unix.Unlink(path) == nil
}

// connectRefused reports whether a connect to the unix socket at path is
// refused: no one listens on it, in any network namespace.
func connectRefused(path string) bool {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: path}) == unix.ECONNREFUSED
}
