package main

// The command line as users of Linux tools expect it: long flags shown with
// two dashes, a version from the build, progress redrawn only on a terminal.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// newFlagSet is a subcommand's flag set. The flag package prints nothing:
// parseArgs says what is wrong in one line, and prints the usage (then the
// flags as printFlags spells them) only for --help.
func newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		printFlags(fs, fs.Output())
	}
	return fs
}

// parseArgs parses args with fs. --help (or -h) prints the usage to stdout:
// (false, 0). A bad flag prints what is wrong, with the flag spelled as the
// help spells it, and a line pointing to --help, to stderr: (false,
// exitUsage). (true, 0) means go on.
func parseArgs(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) (ok bool, code int) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return true, 0
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(stdout)
		fs.Usage()
		fs.SetOutput(io.Discard)
		return false, 0
	}
	badUsage(stderr, fs.Name(), flagError(err))
	return false, exitUsage
}

// badUsage tells the user what is wrong with the command line of cmd
// ("takeover who"), and where the usage is, instead of burying the error
// under the whole usage.
func badUsage(stderr io.Writer, cmd, what string) {
	fmt.Fprintf(stderr, "%s: %s\nRun '%s --help' for usage.\n", cmd, what, cmd)
}

// flagError is the flag package's error with the flag spelled as --help
// and README spell it: "flag provided but not defined: --nope", "invalid
// value "99999" for flag --port: ...". A one-letter flag keeps one dash.
func flagError(err error) string {
	msg := err.Error()
	for _, prefix := range []string{"flag provided but not defined: -", "flag needs an argument: -"} {
		if name, ok := strings.CutPrefix(msg, prefix); ok {
			return prefix[:len(prefix)-1] + dashed(name)
		}
	}
	// invalid value "V" for flag -NAME: ERR; invalid boolean value "V" for -NAME: ERR
	for _, prefix := range []string{"invalid value ", "invalid boolean value "} {
		rest, ok := strings.CutPrefix(msg, prefix)
		if !ok {
			continue
		}
		value, err := strconv.QuotedPrefix(rest) // the value may hold " for -"
		if err != nil {
			return msg
		}
		for _, of := range []string{" for flag -", " for -"} {
			if r, ok := strings.CutPrefix(rest[len(value):], of); ok {
				name, why, _ := strings.Cut(r, ": ")
				return prefix + value + of[:len(of)-1] + dashed(name) + ": " + why
			}
		}
	}
	return msg
}

// dashed is a flag's name as the help spells it: --port, -p.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// printFlags is flag.PrintDefaults with the spelling README and every example
// use: --port, not Go's -port. A one-letter flag keeps its single dash (-p,
// -q, -v). Go's flag package takes both spellings, so nothing else changes.
func printFlags(fs *flag.FlagSet, w io.Writer) {
	fs.VisitAll(func(f *flag.Flag) {
		var b strings.Builder
		fmt.Fprintf(&b, "  %s", dashed(f.Name))
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
