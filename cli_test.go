package main

import (
	"bytes"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

// Every subcommand's --help spells long flags as README does (--port) and the
// launcher's lists every subcommand run dispatches.
func TestHelpSpellsLongFlags(t *testing.T) {
	goStyle := regexp.MustCompile(`(?m)^  -[a-z][a-z-]+`)
	for _, args := range [][]string{{"--help"}, {"who", "--help"}, {"doctor", "--help"}, {"demo", "--help"}, {"probe", "--help"}, {"demo-server", "--help"}} {
		var stdout, stderr bytes.Buffer
		run(args, &stdout, &stderr)
		help := stderr.String()
		if m := goStyle.FindString(help); m != "" {
			t.Errorf("%v: %q in the help, want two dashes:\n%s", args, m, help)
		}
		if !strings.HasPrefix(help, "usage: takeover") || !strings.Contains(help, "  --") {
			t.Errorf("%v: no --flag in the help:\n%s", args, help)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 {
		t.Errorf("--help: exit %d, want 0", code)
	}
	help := stderr.String()
	for _, want := range []string{"\n  --port PORTSPEC\n", "\n  -p PORTSPEC\n", "\n  -q\tlog errors only\n", `(default "TERM")`, "(default 10s)"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q:\n%s", want, help)
		}
	}
	for _, sub := range []string{"who", "doctor", "demo", "probe", "demo-server", "start-server", "version"} {
		if !strings.Contains(help, "takeover "+sub+" ") && !strings.Contains(help, "takeover "+sub+"\n") {
			t.Errorf("--help does not list %q:\n%s", sub, help)
		}
	}
}

func TestVersionString(t *testing.T) {
	bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261203172714-bea64f7646ea+dirty"}, Settings: []debug.BuildSetting{
		{Key: "vcs", Value: "git"},
		{Key: "vcs.revision", Value: "bea64f7646eaa0f18aa4112c778e9bc7f4facb17"},
		{Key: "vcs.time", Value: "2026-12-03T17:27:14Z"},
		{Key: "vcs.modified", Value: "true"},
	}}
	clean := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.4.0"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "false"},
	}}
	for _, c := range []struct {
		ldflags string
		bi      *debug.BuildInfo
		ok      bool
		want    string
	}{
		{"1.2.3", bi, true, "takeover 1.2.3"},
		{"dev", bi, true, "takeover v0.0.0-20261203172714-bea64f7646ea+dirty (bea64f7646eaa0f18aa4112c778e9bc7f4facb17, 2026-12-03T17:27:14Z, modified), go1.26.8"},
		{"dev", clean, true, "takeover v1.4.0 (abc123), go1.26.8"},
		{"dev", &debug.BuildInfo{GoVersion: "go1.26.8"}, true, "takeover (devel), go1.26.8"},
		{"dev", nil, false, "takeover dev (no build information)"},
	} {
		if got := versionString(c.ldflags, c.bi, c.ok); got != c.want {
			t.Errorf("versionString(%q, ...) = %q, want %q", c.ldflags, got, c.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"version"}, &stdout, &stderr); code != 0 || !strings.HasSuffix(stdout.String(), ", "+runtime.Version()+"\n") {
		t.Errorf("takeover version: exit %d, %q; want the build's Go version %s", code, stdout.String(), runtime.Version())
	}
}

// On a pipe the demo writes a line per swap; on a terminal it redraws one.
func TestDemoProgress(t *testing.T) {
	var pipe, tty bytes.Buffer
	for _, p := range []progress{{&pipe, false}, {&tty, true}} {
		for i := 1; i <= 3; i++ {
			p.swapped("handoff", i, 3, int64(100*i))
		}
		p.finished("handoff", 3, 3, 301, 0)
	}
	if got, want := pipe.String(), "handoff  swap   1/3      100 requests\nhandoff  swap   2/3      200 requests\nhandoff  swap   3/3      300 requests\nhandoff  done: 3 of 3 swaps, 301 requests, 0 failed\n"; got != want {
		t.Errorf("on a pipe:\n%q\nwant\n%q", got, want)
	}
	if got := tty.String(); strings.Count(got, "\n") != 1 || strings.Count(got, "\r") != 4 || !strings.HasSuffix(got, "\rhandoff  swap   3/3      301 requests, 0 failed\n") {
		t.Errorf("on a terminal: %q, want 4 redraws of one line", got)
	}
	if isTerminal(&pipe) {
		t.Error("a bytes.Buffer is not a terminal")
	}
}
