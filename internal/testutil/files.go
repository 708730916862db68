package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// OpenTempDir makes a directory that user nobody may enter; t.TempDir's
// parent is private to root. It is removed at cleanup.
func OpenTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "takeover-fdpass-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// CopyTestBinary copies this test binary into dir: go test builds it in a
// directory only its owner may enter.
func CopyTestBinary(t testing.TB, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(dir, "client.test")
	if err := os.WriteFile(client, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return client
}
