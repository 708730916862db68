package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/procfs"
)

// runDir holds takeover's per-port locks and generation records. Every
// takeover of one user on one machine must agree on it.
func runDir() string {
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

// A lockOwner is the takeover holding a port's lock, as it wrote itself
// into the lock file.
type lockOwner struct {
	PID   int
	Start uint64 // clock ticks after boot, to tell a reused pid
}

// lockWaitReport is how often a takeover waiting for a port's lock says so.
const lockWaitReport = 5 * time.Second

// lockTargets takes the locks of the targets' keys (portSpec.key), in key
// order so that two takeovers naming the same targets cannot deadlock,
// waiting while another takeover holds one, until ctx ends. waiting is
// called when it starts to wait and every lockWaitReport after, with the
// lock's owner. Closing the returned files (or exiting) releases the locks.
func lockTargets(ctx context.Context, dir string, keys []string, me lockOwner, waiting func(key string, owner lockOwner, waited time.Duration)) ([]*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s for the port locks: %w", dir, err)
	}
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var held []*os.File
	for _, key := range keys {
		f, err := lockTarget(ctx, dir, key, me, waiting)
		if err != nil {
			releaseLocks(held)
			return nil, err
		}
		held = append(held, f)
	}
	return held, nil
}

func lockTarget(ctx context.Context, dir string, key string, me lockOwner, waiting func(key string, owner lockOwner, waited time.Duration)) (*os.File, error) {
	path := lockPath(dir, key)
	began := time.Now()
	var told time.Time
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open the lock %s: %w", path, err)
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if !samePath(f, path) {
				f.Close() // removed by its last owner meanwhile: lock the new one
				continue
			}
			f.Truncate(0)
			f.WriteAt([]byte(fmt.Sprintf("%d %d\n", me.PID, me.Start)), 0)
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if told.IsZero() || time.Since(told) >= lockWaitReport {
			told = time.Now()
			waiting(key, readLockOwner(f), time.Since(began).Round(time.Second))
		}
		f.Close()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func lockPath(dir, key string) string {
	return filepath.Join(dir, key+".lock")
}

// samePath reports whether path still names f's file.
func samePath(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && os.SameFile(a, b)
}

func readLockOwner(f *os.File) lockOwner {
	b := make([]byte, 64)
	n, _ := f.ReadAt(b, 0)
	var o lockOwner
	fmt.Sscanf(string(b[:n]), "%d %d", &o.PID, &o.Start)
	return o
}

func releaseLocks(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// removeRunFiles removes a target's lock and record when no takeover needs
// them any more: the lock is free and the record names self or a launcher
// that is gone. It takes the lock first, so that it never removes a file
// another takeover is about to use. It reports whether it removed them.
func removeRunFiles(dir, key string, self int) bool {
	path := lockPath(dir, key)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil || !samePath(f, path) {
		return false
	}
	if r, ok := readRecord(dir, key); ok && r.Launcher != self {
		return false
	}
	os.Remove(recordPath(dir, key))
	os.Remove(path)
	return true
}

// liveLaunchers returns the takeover launchers that the run directory
// records for some target and that still run.
func liveLaunchers(dir string) []int {
	var names []string
	for _, pattern := range []string{"port-*.json", "udp-*.json", "unix-*.json"} {
		m, _ := filepath.Glob(filepath.Join(dir, pattern))
		names = append(names, m...)
	}
	var pids []int
	for _, name := range names {
		if r, ok := readRecord(dir, strings.TrimSuffix(filepath.Base(name), ".json")); ok && !slices.Contains(pids, r.Launcher) {
			pids = append(pids, r.Launcher)
		}
	}
	return pids
}

// A genRecord names the takeover launcher that serves a target now. A newer
// takeover writes its own before it signals the old one: that is how the old
// launcher tells "replaced" (exit 0) from "stopped" (exit with the child's
// status), and where the next lookup starts.
type genRecord struct {
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

func recordPath(dir, key string) string {
	return filepath.Join(dir, key+".json")
}

// readRecord returns the record of a target's key when its launcher still
// runs.
func readRecord(dir, key string) (genRecord, bool) {
	b, err := os.ReadFile(recordPath(dir, key))
	if err != nil {
		return genRecord{}, false
	}
	var r genRecord
	if json.Unmarshal(b, &r) != nil || r.Launcher <= 0 {
		return genRecord{}, false
	}
	st, err := procfs.FS("/proc").Stat(r.Launcher)
	if err != nil || st.Start != r.LauncherStart {
		return genRecord{}, false // gone, and perhaps its pid reused
	}
	return r, true
}

func writeRecord(dir, key string, r genRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return writeFileAtomic(recordPath(dir, key), b)
}

// writeFileAtomic writes path through a temporary file and a rename, so a
// reader sees the old contents or the new, never a part.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
