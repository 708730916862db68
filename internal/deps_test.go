// Package internal holds takeover's packages; this test keeps their layers.
package internal

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/takeover/takeover"

// allowed says, for each of takeover's packages, which of takeover's
// packages it may import (directly; what those import is allowed with them).
// A package stands above everything it may import, so no import runs back
// up: the swap core knows no launcher and no seccomp, the leaves know
// nothing of takeover's. The root (the command line) may import any of
// them. A new package must be placed here, where it belongs.
var allowed = map[string][]string{
	// Leaves: readers of /proc and netlink, the seccomp filter, start_server's
	// formats, the load generator, pidfds, passing sockets, targets.
	"procfs":  nil,
	"socktab": nil,
	"seccomp": nil,
	"starter": nil,
	"load":    nil,
	"pidfd":   nil,
	"fdpass":  nil,
	"target":  nil,
	"metrics": nil, // what a launcher counts, in Prometheus' format

	"rundir":  {"procfs"},
	"drain":   {"socktab"},
	"ready":   {"procfs", "socktab", "target"},
	"owner":   {"procfs", "socktab", "target"},
	"systemd": {"procfs", "rundir", "target"},

	// The swap core: one target taken over and the old server stopped.
	// Never the launcher (supervise), the trap (seccomp), readiness.
	"swap": {"procfs", "socktab", "target", "owner", "pidfd", "rundir", "fdpass", "systemd", "drain"},

	// The trap that answers a generation's binds: the swap core below it,
	// never the launcher.
	"intercept": {"procfs", "socktab", "seccomp", "target", "owner", "pidfd", "swap"},

	// takeover doctor's checks and the probe it examines: the trap, not
	// the launcher.
	"doctor": {"intercept", "seccomp", "procfs", "rundir", "target"},

	// Helpers for the tests of any package (and the root's): imported by
	// tests alone, so no package's table may name it. It imports nothing
	// whose own tests use it (rundir's would be an external rundir_test).
	"testutil": {"load", "rundir"},

	// The launcher of one command: everything below it.
	"supervise": {"procfs", "socktab", "seccomp", "starter", "pidfd", "fdpass", "target", "rundir", "ready", "owner", "systemd", "swap", "intercept", "metrics"},
}

// closure returns pkg's allowed packages and theirs, all the way down.
func closure(pkg string) map[string]bool {
	seen := map[string]bool{}
	var walk func(string)
	walk = func(p string) {
		for _, d := range allowed[p] {
			if !seen[d] {
				seen[d] = true
				walk(d)
			}
		}
	}
	walk(pkg)
	return seen
}

// listDeps returns `go list -deps` of every package under internal/: each
// line a package and what it imports, directly or not.
func listDeps(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"/internal/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// violations checks the lines of listDeps against allowed.
func violations(lines []string) []string {
	var bad, listed []string
	for _, line := range lines {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], module+"/internal/")
		if !ok {
			continue
		}
		listed = append(listed, pkg)
		if _, ok := allowed[pkg]; !ok {
			bad = append(bad, "internal/"+pkg+" is not in deps_test.go's table: say what it may import")
			continue
		}
		may := closure(pkg)
		for _, dep := range fields[1:] {
			if dep == module {
				bad = append(bad, "internal/"+pkg+" imports the root package")
			}
			if d, ok := strings.CutPrefix(dep, module+"/internal/"); ok && !may[d] {
				bad = append(bad, "internal/"+pkg+" imports internal/"+d+", which it may not (deps_test.go)")
			}
		}
	}
	for pkg := range allowed {
		if !slices.Contains(listed, pkg) {
			bad = append(bad, "deps_test.go names internal/"+pkg+", which go list does not know")
		}
	}
	return bad
}

// TestDeps checks every package under internal/ against allowed, with what
// `go list -deps` says it imports: a new import that runs upward (or
// sideways where the table does not allow it) fails here.
func TestDeps(t *testing.T) {
	for _, v := range violations(listDeps(t)) {
		t.Error(v)
	}
}

// TestDepsCatchesUpward makes sure the check can fail: with owner allowed
// nothing, its real import of target is refused.
func TestDepsCatchesUpward(t *testing.T) {
	lines := listDeps(t)
	saved := allowed["owner"]
	allowed["owner"] = nil
	defer func() { allowed["owner"] = saved }()
	want := "internal/owner imports internal/target, which it may not (deps_test.go)"
	if v := violations(lines); !slices.Contains(v, want) {
		t.Fatalf("violations = %q, want it to hold %q", v, want)
	}
}
