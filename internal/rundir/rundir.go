// Package rundir is the run directory every takeover of a user agrees on:
// checked (owner, mode 0700, no symlink) and opened once, then per-target
// locks and generation records, files created with openat and O_NOFOLLOW,
// and the unix sockets on which takeovers pass sockets to each other.
package rundir

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/procfs"
	"golang.org/x/sys/unix"
)

// Default holds takeover's per-port locks and generation records. Every
// takeover of one user on one machine must agree on it.
func Default() string {
	if d := os.Getenv("TAKEOVER_RUN_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/run/takeover"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "takeover")
	}
	return filepath.Join(os.TempDir(), "takeover-"+strconv.Itoa(os.Geteuid()))
}

// A Dir is the run directory, checked to be this user's alone and
// held open: every file in it is reached through the open directory
// (openat with O_NOFOLLOW), never by a path another user could have
// swapped for a symlink. Its records say whom takeover may signal and its
// lock files are written: another user's directory (a /tmp/takeover-UID
// made first by someone else) could aim both at anything of ours.
type Dir struct {
	path string
	f    *os.File // O_DIRECTORY|O_NOFOLLOW
}

// errUnsafeRunDir is wrapped by openRunDir's refusals.
var errUnsafeRunDir = errors.New("another user could plant or redirect takeover's locks and records there")

// Open checks and opens the run directory at path, creating it (mode
// 0700) when it is missing and create is set. It refuses a directory that
// is a symlink, is not owned by the effective uid, or that group or others
// may enter: takeover trusts what it finds there.
func Open(path string, create bool) (*Dir, error) {
	if create {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create the run directory %s: %w", path, err)
		}
		if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("create the run directory %s: %w", path, err)
		}
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	if err := Check(path, fi); err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the run directory %s: %w", path, err)
	}
	d := &Dir{path: path, f: os.NewFile(uintptr(fd), path)}
	// What was checked is what is open: not swapped since the Lstat.
	opened, err := d.f.Stat()
	if err == nil && !os.SameFile(fi, opened) {
		err = fmt.Errorf("run directory %s changed while takeover opened it: %w", path, errUnsafeRunDir)
	}
	if err == nil {
		err = Check(path, opened)
	}
	if err != nil {
		d.f.Close()
		return nil, err
	}
	return d, nil
}

// Check refuses a run directory another user could write to.
func Check(path string, fi fs.FileInfo) error {
	fix := fmt.Sprintf("set TAKEOVER_RUN_DIR, the same for every takeover of this user, to a directory of uid %d with mode 0700 (or have its owner remove this one)", os.Geteuid())
	switch owner := int(fi.Sys().(*syscall.Stat_t).Uid); {
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("run directory %s is a symbolic link: %w; %s", path, errUnsafeRunDir, fix)
	case !fi.IsDir():
		return fmt.Errorf("run directory %s is not a directory; %s", path, fix)
	case owner != os.Geteuid():
		return fmt.Errorf("run directory %s is owned by uid %d, not by this user (uid %d): %w; %s", path, owner, os.Geteuid(), errUnsafeRunDir, fix)
	case fi.Mode().Perm()&0o077 != 0:
		return fmt.Errorf("run directory %s has mode %04o, not 0700: %w; chmod 700 %s", path, fi.Mode().Perm(), errUnsafeRunDir, path)
	}
	return nil
}

// Close closes the directory.
func (d *Dir) Close() error { return d.f.Close() }

func (d *Dir) fd() int { return int(d.f.Fd()) }

// name is a file's path in the directory, for messages.
func (d *Dir) name(file string) string { return filepath.Join(d.path, file) }

// Open opens file in the directory, never through a symlink.
func (d *Dir) Open(file string, flag int, perm uint32) (*os.File, error) {
	for {
		fd, err := unix.Openat(d.fd(), file, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC, perm)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: d.name(file), Err: err}
		}
		return os.NewFile(uintptr(fd), d.name(file)), nil
	}
}

// remove removes file from the directory (not a directory itself).
func (d *Dir) remove(file string) error {
	if err := unix.Unlinkat(d.fd(), file, 0); err != nil {
		return &fs.PathError{Op: "remove", Path: d.name(file), Err: err}
	}
	return nil
}

// names lists the directory's files.
func (d *Dir) names() ([]string, error) {
	f, err := d.Open(".", unix.O_RDONLY|unix.O_DIRECTORY, 0) // an offset of its own
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// sockPath names file in the directory through the open directory
// (/proc/self/fd/N/file), for bind(2) and connect(2), which take a path:
// it reaches the directory that was checked, whatever happens to its name,
// and stays short of sun_path's 108 bytes however long that name is.
func (d *Dir) sockPath(file string) string {
	return "/proc/self/fd/" + strconv.Itoa(d.fd()) + "/" + file
}

// An Owner is the takeover holding a port's lock, as it wrote itself
// into the lock file.
type Owner struct {
	PID   int
	Start uint64 // clock ticks after boot, to tell a reused pid
}

// lockWaitReport is how often a takeover waiting for a port's lock says so.
const lockWaitReport = 5 * time.Second

// Lock takes the locks of the targets' keys (portSpec.key), in key
// order so that two takeovers naming the same targets cannot deadlock,
// waiting while another takeover holds one, until ctx ends. waiting is
// called when it starts to wait and every lockWaitReport after, with the
// lock's owner. Closing the returned files (or exiting) releases the locks.
func Lock(ctx context.Context, dir *Dir, keys []string, me Owner, waiting func(key string, owner Owner, waited time.Duration)) ([]*os.File, error) {
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var held []*os.File
	for _, key := range keys {
		f, err := lockTarget(ctx, dir, key, me, waiting)
		if err != nil {
			ReleaseLocks(held)
			return nil, err
		}
		held = append(held, f)
	}
	return held, nil
}

func lockTarget(ctx context.Context, dir *Dir, key string, me Owner, waiting func(key string, owner Owner, waited time.Duration)) (*os.File, error) {
	name := LockName(key)
	began := time.Now()
	var told time.Time
	for {
		f, err := dir.Open(name, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open the lock: %w", err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if !dir.SamePath(f, name) {
				f.Close() // removed by its last owner meanwhile: lock the new one
				continue
			}
			f.Truncate(0)
			f.WriteAt([]byte(fmt.Sprintf("%d %d\n", me.PID, me.Start)), 0)
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", dir.name(name), err)
		}
		if told.IsZero() || time.Since(told) >= lockWaitReport {
			told = time.Now()
			waiting(key, ReadLockOwner(f), time.Since(began).Round(time.Second))
		}
		f.Close()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// LockName names a target's lock file in the run directory.
func LockName(key string) string { return key + ".lock" }

// SamePath reports whether file in the directory still names f's file.
func (d *Dir) SamePath(f *os.File, file string) bool {
	var a, b unix.Stat_t
	err1 := unix.Fstat(int(f.Fd()), &a)
	err2 := unix.Fstatat(d.fd(), file, &b, unix.AT_SYMLINK_NOFOLLOW)
	return err1 == nil && err2 == nil && a.Dev == b.Dev && a.Ino == b.Ino
}

func ReadLockOwner(f *os.File) Owner {
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	var o Owner
	fmt.Sscanf(string(b[:n]), "%d %d", &o.PID, &o.Start)
	return o
}

func ReleaseLocks(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// RemoveFiles removes a target's lock and record when no takeover needs
// them any more: the lock is free and the record names self or a launcher
// that is gone. It takes the lock first, so that it never removes a file
// another takeover is about to use. It reports whether it removed them.
func RemoveFiles(dir *Dir, key string, self int) bool {
	name := LockName(key)
	f, err := dir.Open(name, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil || !dir.SamePath(f, name) {
		return false
	}
	if r, ok := ReadRecord(dir, key); ok && r.Launcher != self {
		return false
	}
	dir.remove(recordName(key))
	dir.remove(name)
	return true
}

// ClearDead removes what takeovers that died left in the run directory
// (killed, they could not clean up): the lock and record of a target whose
// lock is free and whose record names no live launcher (removeRunFiles,
// under the lock), a launcher's socket that no one listens on, and the
// temporary files and notify sockets (of earlier versions) of a pid that
// is gone. A file a live takeover uses is never removed: its lock is held
// or its record's launcher (pid and start time) lives, and its socket
// listens (listenSeqpacket renames it into place only once it does).
func (d *Dir) ClearDead() {
	names, _ := d.names()
	for _, name := range names {
		var pid, num int
		switch {
		case strings.HasSuffix(name, ".lock") && !strings.HasPrefix(name, "."):
			RemoveFiles(d, strings.TrimSuffix(name, ".lock"), 0)
		case scanName(name, "launcher-%d.sock", &pid):
			if !pidAlive(pid) || d.nobodyListens(name) {
				d.remove(name)
			}
		case scanName(name, ".launcher-%d.sock.new", &pid), scanName(name, "notify-%d-%d.sock", &pid, &num), scanName(name, statusPattern, &pid):
			if !pidAlive(pid) {
				d.remove(name)
			}
		case strings.HasPrefix(name, "."):
			// writeFileAt's .FILE.PID.RAND
			f := strings.Split(name, ".")
			if len(f) >= 4 && scanName(f[len(f)-2], "%d", &pid) && !pidAlive(pid) {
				d.remove(name)
			}
		}
	}
}

// scanName parses name as format says, the whole of it.
func scanName(name, format string, args ...any) bool {
	if _, err := fmt.Sscanf(name, format, args...); err != nil {
		return false
	}
	return fmt.Sprintf(format, derefInts(args)...) == name
}

func derefInts(args []any) []any {
	out := make([]any, len(args))
	for i, a := range args {
		out[i] = *a.(*int)
	}
	return out
}

// pidAlive reports whether a process pid exists (a zombie too).
func pidAlive(pid int) bool {
	return pid > 0 && unix.Kill(pid, 0) != unix.ESRCH
}

// nobodyListens reports whether the stream or seqpacket socket file is
// one no process listens on any more: a connection to it is refused.
func (d *Dir) nobodyListens(name string) bool {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return unix.Connect(fd, &unix.SockaddrUnix{Name: d.sockPath(name)}) == unix.ECONNREFUSED
}

// LiveLaunchers returns the takeover launchers that the run directory
// records for some target and that still run.
func LiveLaunchers(dir *Dir) []int {
	if dir == nil {
		return nil
	}
	all, _ := dir.names()
	var names []string
	for _, pattern := range []string{"port-*.json", "udp-*.json", "unix-*.json"} {
		for _, name := range all {
			if ok, _ := filepath.Match(pattern, name); ok {
				names = append(names, name)
			}
		}
	}
	var pids []int
	for _, name := range names {
		if r, ok := ReadRecord(dir, strings.TrimSuffix(name, ".json")); ok && !slices.Contains(pids, r.Launcher) {
			pids = append(pids, r.Launcher)
		}
	}
	return pids
}

// A Record names the takeover launcher that serves a target now. A newer
// takeover writes its own before it signals the old one: that is how the old
// launcher tells "replaced" (exit 0) from "stopped" (exit with the child's
// status), and where the next lookup starts.
type Record struct {
	Launcher      int    `json:"launcher_pid"`
	LauncherStart uint64 `json:"launcher_start"`
	Child         int    `json:"child_pid,omitempty"`
	// StopSignal is the signal the launcher sends the one it replaces: to
	// that one, only this signal means "replaced" (0: any, as an older
	// takeover recorded none).
	StopSignal int `json:"stop_signal,omitempty"`
	// DetachedUntil: the supervisor stopped the launcher with
	// --detach-on-stop; it serves until then unless replaced.
	DetachedUntil *time.Time `json:"detached_until,omitempty"`
}

// recordName names a target's record in the run directory.
func recordName(key string) string { return key + ".json" }

// maxRecord bounds what readRecord reads.
const maxRecord = 64 << 10

// ReadRecord returns the record of a target's key when its launcher still
// runs.
func ReadRecord(dir *Dir, key string) (Record, bool) {
	if dir == nil {
		return Record{}, false
	}
	f, err := dir.Open(recordName(key), os.O_RDONLY, 0)
	if err != nil {
		return Record{}, false
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRecord))
	f.Close()
	if err != nil {
		return Record{}, false
	}
	var r Record
	if json.Unmarshal(b, &r) != nil || r.Launcher <= 0 {
		return Record{}, false
	}
	if !procfs.FS("/proc").StartedAt(r.Launcher, r.LauncherStart) {
		return Record{}, false // gone, and perhaps its pid reused
	}
	return r, true
}

func WriteRecord(dir *Dir, key string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return writeFileAt(dir.f, dir.path, recordName(key), b)
}

// WriteFileAtomic writes path through a temporary file and a rename, so a
// reader sees the old contents or the new, never a part.
func WriteFileAtomic(path string, b []byte) error {
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return writeFileAt(dir, filepath.Dir(path), filepath.Base(path), b)
}

// writeFileAt writes file (mode 0644) in the open directory dir, named
// dirName in errors, through a temporary file of its own (O_EXCL, so never
// a file someone else made or a symlink's target) and a rename, each
// fsynced: after a crash the file holds the old contents or the new.
func writeFileAt(dir *os.File, dirName, file string, b []byte) error {
	var tmp string
	var f *os.File
	for try := 0; f == nil; try++ {
		tmp = fmt.Sprintf(".%s.%d.%d", file, os.Getpid(), rand.Uint32())
		fd, err := unix.Openat(int(dir.Fd()), tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		switch {
		case err == nil:
			f = os.NewFile(uintptr(fd), filepath.Join(dirName, tmp))
		case (err == unix.EEXIST || err == unix.EINTR) && try < 100:
		default:
			return &fs.PathError{Op: "create", Path: filepath.Join(dirName, tmp), Err: err}
		}
	}
	_, err := f.Write(b)
	if err == nil {
		err = f.Chmod(0o644) // fchmod: the file we made, whatever its name now names
	}
	if err == nil {
		err = f.Sync() // the contents on disk before the name, or a crash could leave it empty
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(int(dir.Fd()), tmp, int(dir.Fd()), file)
		if err != nil {
			err = &os.LinkError{Op: "rename", Old: filepath.Join(dirName, tmp), New: filepath.Join(dirName, file), Err: err}
		}
	}
	if err != nil {
		unix.Unlinkat(int(dir.Fd()), tmp, 0)
		return err
	}
	return dir.Sync() // and the rename
}

// launcherEnv names the variable a takeover launcher sets in its child's
// environment to its own pid, for the command's own use. takeover itself
// never reads it back: servers overwrite their environment with their
// process title (nginx, redis), so who manages a process is decided from
// the run directory's generation records and the process tree.
const LauncherEnv = "TAKEOVER_PID"

// LauncherSockPath is where launcher pid serves its sockets to newer
// takeovers.
func LauncherSockPath(dir *Dir, pid int) string {
	return dir.sockPath("launcher-" + strconv.Itoa(pid) + ".sock")
}

// statusPattern names a launcher's status record in the run directory.
const statusPattern = "status-%d.json"

// WriteStatus writes launcher pid's status record (what `takeover status`
// reads), atomically.
func (d *Dir) WriteStatus(pid int, b []byte) error {
	return writeFileAt(d.f, d.path, fmt.Sprintf(statusPattern, pid), b)
}

// RemoveStatus removes launcher pid's status record.
func (d *Dir) RemoveStatus(pid int) { d.remove(fmt.Sprintf(statusPattern, pid)) }

// Statuses returns the status records in the directory by launcher pid,
// those of pids that still run (whether the same process: the caller
// checks its start time, which the record holds).
func (d *Dir) Statuses() map[int][]byte {
	out := make(map[int][]byte)
	if d == nil {
		return out
	}
	names, _ := d.names()
	for _, name := range names {
		var pid int
		if !scanName(name, statusPattern, &pid) || !pidAlive(pid) {
			continue
		}
		if b, ok := d.ReadStatus(pid); ok {
			out[pid] = b
		}
	}
	return out
}

// ReadStatus returns launcher pid's status record.
func (d *Dir) ReadStatus(pid int) ([]byte, bool) {
	f, err := d.Open(fmt.Sprintf(statusPattern, pid), os.O_RDONLY, 0)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecord))
	return b, err == nil
}

// Remove removes file from the directory.
func (d *Dir) Remove(file string) error { return d.remove(file) }
