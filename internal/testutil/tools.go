package testutil

// What the tests need beyond Go (scripts/deps.list), and what a test does
// where it is not installed.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// requireAllEnv set to 1 says everything in scripts/deps.list is installed
// (scripts/check.sh sets it when scripts/deps.sh found it all, and CI sets
// it): a test that finds something missing then fails instead of skipping.
const requireAllEnv = "TAKEOVER_TESTS_REQUIRE_ALL"

// DepsList is scripts/deps.list, read once: each thing a test may need, and
// the Debian package that has it.
var DepsList = sync.OnceValues(func() (map[string]string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(root, "scripts", "deps.list"))
	if err != nil {
		return nil, err
	}
	return parseDepsList(string(b))
})

// parseDepsList reads scripts/deps.list: lines of what to look for and its
// package; blank lines and lines starting with # are skipped.
func parseDepsList(text string) (map[string]string, error) {
	deps := map[string]string{}
	for i, line := range strings.Split(text, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("scripts/deps.list:%d: %q: want what to look for and its package", i+1, line)
		}
		if _, dup := deps[f[0]]; dup {
			return nil, fmt.Errorf("scripts/deps.list:%d: %s is listed twice", i+1, f[0])
		}
		deps[f[0]] = f[1]
	}
	return deps, nil
}

// RequireTool ends the test unless name (as scripts/deps.list names it) is
// installed: a skip of one line saying what to install, or a failure where
// TAKEOVER_TESTS_REQUIRE_ALL=1 says everything is.
func RequireTool(t testing.TB, name string) {
	t.Helper()
	if name == "" {
		return
	}
	deps, err := DepsList()
	if err != nil {
		t.Fatal(err)
	}
	checkTool(t, deps, os.Getenv(requireAllEnv) == "1", name)
}

// hasTool says whether name is here, as scripts/deps.sh's has does: a
// command on the PATH, an executable at an absolute path, or python3:MODULE.
func hasTool(name string) bool {
	if module, ok := strings.CutPrefix(name, "python3:"); ok {
		return PythonWith(module) != ""
	}
	_, err := exec.LookPath(name)
	return err == nil
}

// checkTool is RequireTool's decision, given the list and whether
// everything is said to be installed.
func checkTool(tb testing.TB, deps map[string]string, requireAll bool, name string) {
	tb.Helper()
	pkg, ok := deps[name]
	if !ok {
		tb.Fatalf("%s is not in scripts/deps.list, which scripts/deps.sh installs: add it with its Debian package", name)
		return
	}
	if hasTool(name) {
		return
	}
	msg := fmt.Sprintf("needs %s (apt-get install %s), not installed", name, pkg)
	if requireAll {
		tb.Fatalf("%s, though %s=1 says everything is", msg, requireAllEnv)
		return
	}
	tb.Skip(msg)
}

// PythonWith returns a python3 that can import module: the one on PATH, or
// Debian's, whose packages (python3-uvicorn) a pyenv python does not see.
func PythonWith(module string) string {
	for _, py := range []string{"python3", "/usr/bin/python3"} {
		if exec.Command(py, "-c", "import "+module).Run() == nil {
			return py
		}
	}
	return ""
}
