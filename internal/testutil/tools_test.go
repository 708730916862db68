package testutil

import (
	"fmt"
	"testing"
)

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

// TestParseDepsList: scripts/deps.list parses, and a list with a name twice
// or a line without a package does not.
func TestParseDepsList(t *testing.T) {
	if _, err := DepsList(); err != nil {
		t.Fatal(err)
	}
	if _, err := parseDepsList("ssh openssh-client\nssh openssh-client\n"); err == nil {
		t.Error("a name listed twice parses")
	}
	if _, err := parseDepsList("# a comment\n\nssh\n"); err == nil {
		t.Error("a line without a package parses")
	}
}
