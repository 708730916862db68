// Command takeover restarts a network service with no downtime and no change
// to the service.
//
//	takeover --port 8100 -- java -jar app.jar
//
// starts the new version while the old one keeps serving. takeover runs the
// command under a seccomp filter that turns its bind(2) and listen(2) calls
// into notifications takeover answers. When the new server binds a target
// (a TCP or UDP --port, a unix --path), takeover finds the process that
// holds it (internal/owner), and
// either hands that process's listening socket to the new server, so that no
// connection is refused (internal/swap), or stops it and retries the bind
// with backoff until the port frees (retrybind.go). Once the new server
// accepts, the old one is asked to stop: once it has finished what it
// accepted, if it was fenced.
//
// The root package is the command line: main.go dispatches the
// subcommands (after turning the process into the shim or doctor's probe
// when it was started as one), cli.go has --help, version and the terminal,
// flags.go the launcher's flags, portowner.go `takeover who`, status.go
// `takeover status`, deploy.go `takeover reload` and `takeover deploy`,
// retrybind.go the rebind strategy (plugged into the core as its swap.Rebinder),
// doctor_linux.go, demo.go, demoserver.go, probe.go and startserver*.go the
// other subcommands. The rest lives in internal/, each package's doc saying
// what it holds and internal/deps_test.go what it may import: doctor and
// supervise (the launcher) above intercept (the seccomp trap), above swap
// (taking a target and stopping what held it), above owner, ready, systemd
// and rundir, above the leaves (target, pidfd, fdpass, procfs, socktab,
// seccomp, starter, load, metrics).
//
// One swap reads downward: supervise starts a generation; its bind(2)
// reaches intercept, which asks swap.Taker for the target: owner says who
// holds it, and the Taker hands the old socket over beside a fence, or runs
// the rebind retrybind.go plugs in. Back in supervise, ready.Look sees the
// new server accept, and the launcher records the swap (rundir, systemd)
// and stops the old server (swap, pidfd). README's "How the code is laid
// out" says the same at more length.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/takeover/takeover/internal/doctor"
	"github.com/takeover/takeover/internal/supervise"
)

// version is set at build time with -ldflags "-X main.version=..."; without
// it, `takeover version` reads the build information (cli.go).
var version = "dev"

// Exit statuses, as env, nohup and docker run use them.
const (
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	doctor.MaybeRunProbe()
	supervise.MaybeRunShim()
	if filepath.Base(os.Args[0]) == "start_server" { // a drop-in, through a symlink
		os.Exit(runStartServer(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "who":
			return runWho(args[1:], stdout, stderr)
		case "status":
			return runStatus(args[1:], stdout, stderr)
		case "reload":
			return runReload(args[1:], stdout, stderr)
		case "deploy":
			return runDeploy(args[1:], stdout, stderr)
		case "doctor":
			return runDoctor(args[1:], stdout, stderr)
		case "demo":
			return runDemo(args[1:], stdout, stderr)
		case "demo-server":
			return runDemoServer(args[1:], stdout, stderr)
		case "start-server":
			return runStartServer(args[1:], stdout, stderr)
		case "probe":
			return runProbe(args[1:], stdout, stderr)
		case "version":
			bi, ok := debug.ReadBuildInfo()
			fmt.Fprintln(stdout, versionString(version, bi, ok))
			return 0
		}
	}
	return runLauncher(args, stdout, stderr)
}
