package starter

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLockPIDFileRefusesSymlink: a pid file path that is a symlink (planted
// by another user where it may write) is refused, and its target is left
// as it was. (Before, the target was truncated and overwritten.)
func TestLockPIDFileRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "app.pid")
	if err := os.Symlink(target, pidFile); err != nil {
		t.Fatal(err)
	}
	if f, err := LockPIDFile(pidFile); err == nil {
		f.Close()
		t.Error("LockPIDFile followed a symlink")
	}
	if b, _ := os.ReadFile(target); string(b) != "keep\n" {
		t.Errorf("the symlink's target holds %q", b)
	}
}
