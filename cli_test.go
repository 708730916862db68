package main

import (
	"bytes"
	"errors"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/supervise"
)

// Every subcommand's --help (and -h) exits 0 with the usage on stdout, spells
// long flags as README does (--port), and the launcher's lists every
// subcommand run dispatches.
func TestHelpSpellsLongFlags(t *testing.T) {
	goStyle := regexp.MustCompile(`(?m)^  -[a-z][a-z-]+`)
	for _, args := range [][]string{{"--help"}, {"-h"}, {"who", "--help"}, {"status", "--help"}, {"reload", "--help"}, {"deploy", "--help"}, {"deploy", "-h"}, {"doctor", "--help"}, {"demo", "--help"}, {"demo", "-h"}, {"probe", "--help"}, {"demo-server", "--help"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 0 || stderr.Len() > 0 {
			t.Errorf("%v: exit %d, stderr %q; want 0 and the usage on stdout", args, code, stderr.String())
		}
		help := stdout.String()
		if m := goStyle.FindString(help); m != "" {
			t.Errorf("%v: %q in the help, want two dashes:\n%s", args, m, help)
		}
		if !strings.HasPrefix(help, "usage: takeover") || !strings.Contains(help, "  --") {
			t.Errorf("%v: no --flag in the help:\n%s", args, help)
		}
	}
	for _, args := range [][]string{{"start-server", "--help"}, {"start-server", "-h"}} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 0 || stderr.Len() > 0 || !strings.HasPrefix(stdout.String(), "Usage:\n      start_server") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want 0 and start_server's usage on stdout", args, code, stdout.String(), stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 {
		t.Errorf("--help: exit %d, want 0", code)
	}
	help := stdout.String()
	for _, want := range []string{"\n  --port PORTSPEC\n", "\n  -p PORTSPEC\n", "\n  -q\tlog errors only\n", `(default "TERM")`, "(default 10s)"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help lacks %q:\n%s", want, help)
		}
	}
	for _, sub := range []string{"who", "status", "reload", "deploy", "doctor", "demo", "probe", "demo-server", "start-server", "version"} {
		if !strings.Contains(help, "takeover "+sub+" ") && !strings.Contains(help, "takeover "+sub+"\n") {
			t.Errorf("--help does not list %q:\n%s", sub, help)
		}
	}
}

// A bad flag is said in one line, spelled as the help spells it, with one
// line pointing to --help: not buried under the whole usage. The launcher
// exits 125 (README: takeover's own failures, as env and docker run) and
// start_server 1 (as its Getopt::Long); the other subcommands exit 2.
func TestBadFlagOneLine(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want string // the first line
		cmd  string
	}{
		{[]string{"--port", "99999", "--", "true"}, supervise.ExitLauncher, `takeover: invalid value "99999" for flag --port: port spec "99999": port "99999" is not a number from 1 to 65535`, "takeover"},
		{[]string{"-port", "99999", "--", "true"}, supervise.ExitLauncher, `takeover: invalid value "99999" for flag --port: `, "takeover"},
		{[]string{"--nope", "--", "true"}, supervise.ExitLauncher, "takeover: flag provided but not defined: --nope", "takeover"},
		{[]string{"--kill-timeout", "soon", "-p", "1", "--", "true"}, supervise.ExitLauncher, `takeover: invalid value "soon" for flag --kill-timeout: `, "takeover"},
		{[]string{"-p"}, supervise.ExitLauncher, "takeover: flag needs an argument: -p", "takeover"},
		{[]string{"who", "--nope", "80"}, exitUsage, "takeover who: flag provided but not defined: --nope", "takeover who"},
		{[]string{"who", "--json=maybe", "80"}, exitUsage, `takeover who: invalid boolean value "maybe" for --json: `, "takeover who"},
		{[]string{"status", "--nope", "80"}, exitUsage, "takeover status: flag provided but not defined: --nope", "takeover status"},
		{[]string{"status", "80000"}, exitUsage, `takeover status: port spec "80000": `, "takeover status"},
		{[]string{"reload", "--nope", "80"}, exitUsage, "takeover reload: flag provided but not defined: --nope", "takeover reload"},
		{[]string{"reload"}, exitUsage, "takeover reload: name one PORTSPEC or PATH, or --pid", "takeover reload"},
		{[]string{"reload", "80", "81"}, exitUsage, "takeover reload: name one PORTSPEC or PATH, or --pid", "takeover reload"},
		{[]string{"reload", "--pid", "1", "80"}, exitUsage, "takeover reload: name one PORTSPEC or PATH, or --pid", "takeover reload"},
		{[]string{"reload", "--pid", "-3"}, exitUsage, "takeover reload: --pid must be a process id", "takeover reload"},
		{[]string{"reload", "80000"}, exitUsage, `takeover reload: port spec "80000": `, "takeover reload"},
		{[]string{"reload", "--timeout", "0", "80"}, exitUsage, "takeover reload: --timeout must be positive", "takeover reload"},
		{[]string{"deploy", "--timeout", "x", "-p", "80", "--", "true"}, exitUsage, `takeover deploy: invalid value "x" for flag --timeout: `, "takeover deploy"},
		{[]string{"deploy", "--nope", "-p", "80", "--", "true"}, exitUsage, "takeover deploy: flag provided but not defined: --nope", "takeover deploy"},
		{[]string{"deploy", "--port", "99999", "--", "true"}, exitUsage, `takeover deploy: invalid value "99999" for flag --port: `, "takeover deploy"},
		{[]string{"deploy", "-p", "80"}, exitUsage, "takeover deploy: ", "takeover deploy"},
		{[]string{"demo", "--swaps", "x"}, exitUsage, `takeover demo: invalid value "x" for flag --swaps: `, "takeover demo"},
		{[]string{"demo", "--swaps"}, exitUsage, "takeover demo: flag needs an argument: --swaps", "takeover demo"},
		{[]string{"probe", "--duration", "x"}, exitUsage, `takeover probe: invalid value "x" for flag --duration: `, "takeover probe"},
		{[]string{"demo-server", "--init-delay", "x", "127.0.0.1:0"}, exitUsage, `takeover demo-server: invalid value "x" for flag --init-delay: `, "takeover demo-server"},
		{[]string{"demo-server"}, exitUsage, "takeover demo-server: want one ADDR or PATH", "takeover demo-server"},
		{[]string{"doctor", "--nope"}, exitUsage, "takeover doctor: flag provided but not defined: --nope", "takeover doctor"},
		{[]string{"doctor", "extra"}, exitUsage, `takeover doctor: unexpected argument "extra"`, "takeover doctor"},
		{[]string{"start-server", "--nope"}, exitFailure, "takeover start-server: flag provided but not defined: --nope", "takeover start-server"},
		{[]string{"start-server", "--interval=x"}, exitFailure, `takeover start-server: invalid value "x" for flag --interval: `, "takeover start-server"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tt.args, &stdout, &stderr)
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if code != tt.code || len(lines) != 2 || !strings.HasPrefix(lines[0], tt.want) || lines[1] != "Run '"+tt.cmd+" --help' for usage." || stdout.Len() > 0 {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant exit %d and two lines: %q..., Run '%s --help' for usage.", tt.args, code, stderr.String(), tt.code, tt.want, tt.cmd)
		}
	}
}

// flagError spells the flag as the help does, in every error the flag
// package makes, and leaves a value that looks like a flag alone.
func TestFlagError(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"flag provided but not defined: -nope", "flag provided but not defined: --nope"},
		{"flag provided but not defined: -x", "flag provided but not defined: -x"},
		{"flag needs an argument: -port", "flag needs an argument: --port"},
		{`invalid value "99999" for flag -port: port spec "99999": no`, `invalid value "99999" for flag --port: port spec "99999": no`},
		{`invalid value "a for flag -b: c" for flag -p: bad`, `invalid value "a for flag -b: c" for flag -p: bad`},
		{`invalid boolean value "x" for -json: parse error`, `invalid boolean value "x" for --json: parse error`},
		{"bad flag syntax: ---x", "bad flag syntax: ---x"},
	} {
		if got := flagError(errors.New(tt.in)); got != tt.want {
			t.Errorf("flagError(%q) = %q, want %q", tt.in, got, tt.want)
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

// The demo's table says what its failed requests are: refused and reset,
// the cost of a rebind, in columns that add up, and a note under the table.
func TestDemoTable(t *testing.T) {
	lat := []time.Duration{3 * time.Millisecond}
	handoff := &load.Result{Requests: 1000, OK: 1000, Latencies: lat}
	rebind := &load.Result{Requests: 990, OK: 956, Refused: 30, Resets: 3, Timeouts: 1, Latencies: lat}
	var out bytes.Buffer
	writeDemoTable(&out, []demoRow{{"handoff", 20, handoff}, {"rebind", 20, rebind}})
	got := strings.Fields(strings.Split(out.String(), "\n")[1])
	if want := []string{"strategy", "swaps", "requests", "failed", "refused", "reset", "other", "longest", "refused", "p99", "latency"}; !slices.Equal(got, want) {
		t.Errorf("header %q, want %q", got, want)
	}
	for _, want := range [][]string{
		{"handoff", "20", "1000", "0", "0", "0", "0", "0s", "3ms"},
		{"rebind", "20", "990", "34", "30", "3", "1", "0s", "3ms"},
	} {
		if !slices.ContainsFunc(strings.Split(out.String(), "\n"), func(l string) bool { return slices.Equal(strings.Fields(l), want) }) {
			t.Errorf("no row %q in:\n%s", want, out.String())
		}
	}
	for _, want := range []string{"failed: requests that got no answer, the cost of a rebind", "refused: no socket listened", "reset: the old", "A handoff passes the listening socket on"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the table does not say %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	writeDemoTable(&out, []demoRow{{"handoff", 20, handoff}})
	if strings.Contains(out.String(), "failed:") {
		t.Errorf("a note with nothing failed:\n%s", out.String())
	}
}
