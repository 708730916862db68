package main

// What the tests need beyond Go (scripts/deps.list), and what a test does
// where it is not installed.

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// requireAllEnv set to 1 says everything in scripts/deps.list is installed
// (scripts/check.sh sets it when scripts/deps.sh found it all, and CI sets
// it): a test that finds something missing then fails instead of skipping.
const requireAllEnv = "TAKEOVER_TESTS_REQUIRE_ALL"

// depsList is scripts/deps.list, read once: each thing a test may need, and
// the Debian package that has it.
var depsList = sync.OnceValues(func() (map[string]string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	// The module's root, wherever the test's package is.
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		up := filepath.Dir(dir)
		if up == dir {
			return nil, errors.New("no go.mod above the test's directory")
		}
		dir = up
	}
	b, err := os.ReadFile(filepath.Join(dir, "scripts", "deps.list"))
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

// hasTool says whether name is here, as scripts/deps.sh's has does: a
// command on the PATH, an executable at an absolute path, or python3:MODULE.
func hasTool(name string) bool {
	if module, ok := strings.CutPrefix(name, "python3:"); ok {
		return pythonWith(module) != ""
	}
	_, err := exec.LookPath(name)
	return err == nil
}

// checkTool is requireTool's decision, given the list and whether
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

// fakeTB records what checkTool asks of a test.
type fakeTB struct {
	testing.TB
	skipped, fatal string
}

func (f *fakeTB) Helper()                   {}
func (f *fakeTB) Skip(args ...any)          { f.skipped = fmt.Sprint(args...) }
func (f *fakeTB) Fatalf(s string, a ...any) { f.fatal = fmt.Sprintf(s, a...) }

func TestCheckTool(t *testing.T) {
	deps := map[string]string{"sh": "dash", "no-such-tool-takeover": "fake-pkg", "python3:no_such_module_takeover": "python3-fake"}
	for _, tt := range []struct {
		name, tool  string
		requireAll  bool
		skip, fatal string
	}{
		{"there", "sh", false, "", ""},
		{"there, all required", "sh", true, "", ""},
		{"missing: a skip of one line", "no-such-tool-takeover", false, "needs no-such-tool-takeover (apt-get install fake-pkg), not installed", ""},
		{"missing python module", "python3:no_such_module_takeover", false, "needs python3:no_such_module_takeover (apt-get install python3-fake), not installed", ""},
		{"missing, all required: a failure", "no-such-tool-takeover", true, "", "needs no-such-tool-takeover (apt-get install fake-pkg), not installed, though TAKEOVER_TESTS_REQUIRE_ALL=1 says everything is"},
		{"not listed, though there", "true", false, "", "true is not in scripts/deps.list, which scripts/deps.sh installs: add it with its Debian package"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeTB{}
			checkTool(f, deps, tt.requireAll, tt.tool)
			if f.skipped != tt.skip || f.fatal != tt.fatal {
				t.Errorf("checkTool(%q, requireAll %v): skipped %q, fatal %q; want %q, %q", tt.tool, tt.requireAll, f.skipped, f.fatal, tt.skip, tt.fatal)
			}
		})
	}
}

// TestDepsList: scripts/deps.list parses, and lists every tool a test names
// in a requireTool call (those passed in variables are checked when the test
// runs).
func TestDepsList(t *testing.T) {
	deps, err := depsList()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parseDepsList("ssh openssh-client\nssh openssh-client\n"); err == nil {
		t.Error("a name listed twice parses")
	}
	if _, err := parseDepsList("# a comment\n\nssh\n"); err == nil {
		t.Error("a line without a package parses")
	}
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`requireTool\(\w+, "([^"]+)"\)`)
	calls := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(b), -1) {
			calls++
			if _, ok := deps[m[1]]; !ok {
				t.Errorf("%s: requireTool(%q), which scripts/deps.list does not list", f, m[1])
			}
		}
	}
	if calls == 0 {
		t.Error("no requireTool call found: the pattern is stale")
	}
	// The tables of servers and supervisors, whose needs are variables.
	var needs []string
	for _, s := range slices.Concat(realServers(), unixServers()) {
		needs = append(needs, s.need...)
	}
	for _, s := range slices.Concat(servers(t), slices.Collect(maps.Values(drainers(t)))) {
		needs = append(needs, s.need)
	}
	for _, k := range supervisorKinds() {
		needs = append(needs, k.tools...)
	}
	for _, n := range needs {
		if _, ok := deps[n]; n != "" && !ok {
			t.Errorf("a test needs %q, which scripts/deps.list does not list", n)
		}
	}
}
