package owner

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/takeover/takeover/internal/testutil"
)

// TestServiceManagerNotByName: systemd is known by the root-owned file it
// runs and its user namespace, never by its name: fixtures of /proc/PID
// (exe and ns/user links to real files, comm) say which process is one.
func TestServiceManagerNotByName(t *testing.T) {
	const systemd = "/usr/lib/systemd/systemd"
	testutil.RequireTool(t, systemd)
	own := filepath.Join(t.TempDir(), "systemd") // a copy of one's own, named systemd
	if err := os.WriteFile(own, []byte("#!/bin/sh\n"), 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(own, 0o777)
	proc := t.TempDir()
	for _, tt := range []struct {
		name      string
		pid       int
		exe, ns   string // "" for none (unreadable)
		comm      string
		isManager bool
	}{
		{"systemd's binary", 100, systemd, "/proc/self/ns/user", "systemd", true},
		{"another binary named systemd", 102, "/bin/sh", "/proc/self/ns/user", "systemd", false},
		{"a file named systemd that others may write", 103, own, "/proc/self/ns/user", "systemd", false},
		{"systemd's binary in another user namespace", 104, systemd, "/proc/self/ns/net", "systemd", false},
		{"pid 1 named systemd, its exe unreadable", 1, "", "", "systemd", true},
		{"pid 1 of another name, its exe unreadable", 1, "", "", "init", false},
		{"another pid named systemd, its exe unreadable", 105, "", "", "systemd", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(proc, tt.name, strconv.Itoa(tt.pid))
			if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, "comm"), []byte(tt.comm+"\n"), 0o644)
			if tt.exe != "" {
				os.Symlink(tt.exe, filepath.Join(dir, "exe"))
			}
			if tt.ns != "" {
				os.Symlink(tt.ns, filepath.Join(dir, "ns/user"))
			}
			if got := IsServiceManager(filepath.Join(proc, tt.name), tt.pid); got != tt.isManager {
				t.Errorf("serviceManager = %v, want %v", got, tt.isManager)
			}
		})
	}
}
