package testutil

import (
	"path/filepath"
	"testing"

	"github.com/takeover/takeover/internal/rundir"
)

// RunDir opens a fresh run directory, closed at cleanup. (So that testutil
// may import rundir, rundir's own tests, if it gets any that need testutil,
// are to be an external package rundir_test.)
func RunDir(t testing.TB) *rundir.Dir {
	t.Helper()
	d, err := rundir.Open(filepath.Join(t.TempDir(), "run"), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}
