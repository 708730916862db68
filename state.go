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
	"syscall"
	"time"
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

// lockPorts takes the per-port locks of ports, in port order so that two
// takeovers naming the same ports cannot deadlock, waiting while another
// takeover holds one, until ctx ends. waiting is called when it starts to
// wait and every lockWaitReport after, with the lock's owner. Closing the
// returned files (or exiting) releases the locks.
func lockPorts(ctx context.Context, dir string, ports []uint16, me lockOwner, waiting func(port uint16, owner lockOwner, waited time.Duration)) ([]*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s for the port locks: %w", dir, err)
	}
	ports = slices.Clone(ports)
	slices.Sort(ports)
	ports = slices.Compact(ports)
	var held []*os.File
	for _, port := range ports {
		f, err := lockPort(ctx, dir, port, me, waiting)
		if err != nil {
			releaseLocks(held)
			return nil, err
		}
		held = append(held, f)
	}
	return held, nil
}

func lockPort(ctx context.Context, dir string, port uint16, me lockOwner, waiting func(port uint16, owner lockOwner, waited time.Duration)) (*os.File, error) {
	path := lockPath(dir, port)
	began := time.Now()
	var told time.Time
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("open the lock of port %d: %w", port, err)
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
			return nil, fmt.Errorf("lock port %d: %w", port, err)
		}
		if told.IsZero() || time.Since(told) >= lockWaitReport {
			told = time.Now()
			waiting(port, readLockOwner(f), time.Since(began).Round(time.Second))
		}
		f.Close()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func lockPath(dir string, port uint16) string {
	return filepath.Join(dir, fmt.Sprintf("port-%d.lock", port))
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

// removeRunFiles removes a port's lock and record when no takeover needs
// them any more: the lock is free and the record names self or a launcher
// that is gone. It takes the lock first, so that it never removes a file
// another takeover is about to use.
func removeRunFiles(dir string, port uint16, self int) {
	path := lockPath(dir, port)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil || !samePath(f, path) {
		return
	}
	if r, ok := readRecord(dir, port); ok && r.Launcher != self {
		return
	}
	os.Remove(recordPath(dir, port))
	os.Remove(path)
}

// liveLaunchers returns the takeover launchers that the run directory
// records for some port and that still run.
func liveLaunchers(dir string) []int {
	names, _ := filepath.Glob(filepath.Join(dir, "port-*.json"))
	var pids []int
	for _, name := range names {
		var port uint16
		if _, err := fmt.Sscanf(filepath.Base(name), "port-%d.json", &port); err != nil {
			continue
		}
		if r, ok := readRecord(dir, port); ok && !slices.Contains(pids, r.Launcher) {
			pids = append(pids, r.Launcher)
		}
	}
	return pids
}

// A genRecord names the takeover launcher that serves a port now. A newer
// takeover writes its own before it signals the old one: that is how the old
// launcher tells "replaced" (exit 0) from "stopped" (exit with the child's
// status), and where the next lookup starts.
type genRecord struct {
	Launcher      int    `json:"launcher_pid"`
	LauncherStart uint64 `json:"launcher_start"`
	Child         int    `json:"child_pid,omitempty"`
}

func recordPath(dir string, port uint16) string {
	return filepath.Join(dir, fmt.Sprintf("port-%d.json", port))
}

// readRecord returns the record of port when its launcher still runs.
func readRecord(dir string, port uint16) (genRecord, bool) {
	b, err := os.ReadFile(recordPath(dir, port))
	if err != nil {
		return genRecord{}, false
	}
	var r genRecord
	if json.Unmarshal(b, &r) != nil || r.Launcher <= 0 {
		return genRecord{}, false
	}
	st, err := readStat("/proc", r.Launcher)
	if err != nil || st.Start != r.LauncherStart {
		return genRecord{}, false // gone, and perhaps its pid reused
	}
	return r, true
}

func writeRecord(dir string, port uint16, r genRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return writeFileAtomic(recordPath(dir, port), b)
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
