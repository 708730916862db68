package main

// The command line as users of Linux tools expect it: long flags shown with
// two dashes, a version from the build, progress redrawn only on a terminal.

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"golang.org/x/sys/unix"
)

// newFlagSet is a subcommand's flag set: errors and --help go to stderr,
// --help being usage and then the flags as printFlags spells them.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		printFlags(fs, stderr)
	}
	return fs
}

// printFlags is flag.PrintDefaults with the spelling README and every example
// use: --port, not Go's -port. A one-letter flag keeps its single dash (-p,
// -q, -v). Go's flag package takes both spellings, so nothing else changes.
func printFlags(fs *flag.FlagSet, w io.Writer) {
	fs.VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		var b strings.Builder
		fmt.Fprintf(&b, "  %s%s", dash, f.Name)
		name, usage := flag.UnquoteUsage(f)
		if name != "" {
			b.WriteString(" " + name)
		}
		if b.Len() <= 4 { // "  -q": the usage fits on the same line, as in Go's
			b.WriteString("\t")
		} else {
			b.WriteString("\n    \t")
		}
		b.WriteString(strings.ReplaceAll(usage, "\n", "\n    \t"))
		if !zeroDefault(f.DefValue) {
			if g, ok := f.Value.(flag.Getter); ok && isString(g.Get()) {
				fmt.Fprintf(&b, " (default %q)", f.DefValue)
			} else {
				fmt.Fprintf(&b, " (default %v)", f.DefValue)
			}
		}
		fmt.Fprintln(w, b.String())
	})
}

func isString(v any) bool { _, ok := v.(string); return ok }

// zeroDefault reports a default that says nothing, which Go's flag package
// leaves out of the help too.
func zeroDefault(v string) bool {
	switch v {
	case "", "0", "0s", "false", "[]":
		return true
	}
	return false
}

// versionString is what `takeover version` prints: the version -ldflags set,
// or else the module version and VCS revision the go command recorded in the
// build (go build in a git checkout records them; go run and go test do not
// record the revision).
func versionString(ldflags string, bi *debug.BuildInfo, ok bool) string {
	if ldflags != "" && ldflags != "dev" {
		return "takeover " + ldflags
	}
	if !ok {
		return "takeover dev (no build information)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	out := "takeover " + v
	if rev != "" {
		out += " (" + rev
		if at != "" {
			out += ", " + at
		}
		if modified {
			out += ", modified"
		}
		out += ")"
	}
	return out + ", " + bi.GoVersion
}

// isTerminal reports whether w is a terminal, where a line can be redrawn in
// place with \r; a pipe or a file gets whole lines instead.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
