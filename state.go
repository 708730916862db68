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

// lockPorts takes the per-port locks of ports, in port order so that two
// takeovers naming the same ports cannot deadlock, waiting while another
// takeover holds one. waiting is called once if it has to wait. Closing the
// returned files (or exiting) releases the locks.
func lockPorts(ctx context.Context, dir string, ports []uint16, waiting func(port uint16)) ([]*os.File, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s for the port locks: %w", dir, err)
	}
	ports = slices.Clone(ports)
	slices.Sort(ports)
	ports = slices.Compact(ports)
	var held []*os.File
	release := func() {
		for _, f := range held {
			f.Close()
		}
	}
	for _, port := range ports {
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("port-%d.lock", port)), os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			release()
			return nil, fmt.Errorf("open the lock of port %d: %w", port, err)
		}
		held = append(held, f)
		told := false
		for {
			err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) {
				release()
				return nil, fmt.Errorf("lock port %d: %w", port, err)
			}
			if !told {
				waiting(port)
				told = true
			}
			select {
			case <-ctx.Done():
				release()
				return nil, ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	return held, nil
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
