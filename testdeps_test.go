package main

// What the tests need beyond Go (scripts/deps.list): RequireTool and its
// list are testutil's (internal/testutil/tools.go).

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	"github.com/takeover/takeover/internal/testutil"
)

// TestDepsList: scripts/deps.list lists every tool a test names in a
// RequireTool call, at the root and in the internal packages (those passed
// in variables are checked when the test runs).
func TestDepsList(t *testing.T) {
	deps, err := testutil.DepsList()
	if err != nil {
		t.Fatal(err)
	}
	root, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	inner, err := filepath.Glob("internal/*/*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`RequireTool\(\w+, "([^"]+)"\)`)
	calls := 0
	for _, f := range slices.Concat(root, inner) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllStringSubmatch(string(b), -1) {
			calls++
			if _, ok := deps[m[1]]; !ok {
				t.Errorf("%s: RequireTool(%q), which scripts/deps.list does not list", f, m[1])
			}
		}
	}
	if calls == 0 {
		t.Error("no RequireTool call found: the pattern is stale")
	}
	// The tables of servers and supervisors, whose needs are variables.
	var needs []string
	for _, s := range slices.Concat(realServers(), unixServers()) {
		needs = append(needs, s.need...)
	}
	for _, s := range probationServers() {
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
