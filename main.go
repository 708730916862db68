// Command takeover restarts a network service with no downtime and no change
// to the service.
//
//	takeover --port 8100 -- java -jar app.jar
//
// starts the new version while the old one keeps serving. takeover runs the
// command under a seccomp filter that turns its bind(2) and listen(2) calls
// into notifications takeover answers. When the new server binds a target
// (a TCP or UDP --port, a unix --path), takeover finds the process that
// holds it (portowner.go), and
// either hands that process's listening socket to the new server, so that no
// connection is refused (handoff_linux.go), or stops it and retries the bind
// with backoff until the port frees (retrybind.go). Once the new server
// accepts, the old one is asked to stop: once it has finished what it
// accepted, if it was fenced.
//
// The pieces:
//   - main.go: subcommand dispatch; cli.go: --help, version, the terminal;
//     flags.go: the launcher's flags (config) and exit statuses.
//   - portspec.go: targets (TCP and UDP ports, unix paths); internal/socktab:
//     the kernel's socket tables (sock_diag, /proc/net); portowner.go: who
//     holds a target and which process to signal; who.go: `takeover who`;
//     policy.go: who may be replaced.
//   - internal/procfs: every reader of /proc/PID, the /proc root a parameter.
//   - internal/seccomp: the kernel's seccomp user notification (the filter,
//     the listener, notifications, the notifying thread's memory, ADDFD);
//     shim_linux.go: the re-executed shim that installs it for the command;
//     intercept_linux.go: the calls trapped, and their arguments.
//   - lifecycle.go: a launcher's life as a state machine (starting, serving,
//     reloading, backing off, restarting, stopping, replaced);
//     launcher_linux.go: the launcher that runs it, its generations and
//     signals; lifecycle_linux.go: what the lifecycle asks of the launcher.
//   - generation_linux.go: a generation (one run of the command) and its
//     state; status.go: --status-file; heldsock_linux.go: the sockets a
//     generation holds; bind_linux.go: answering its binds and listens.
//   - swap_linux.go: a swap, from the bind to the old server stopped;
//     takeport_linux.go: free port, handoff or rebind; claim_linux.go: the
//     command's socket, copied or made; handoff_linux.go and retrybind.go:
//     the two strategies; unixpath_linux.go: unix targets' files (binding as
//     the command, rename, unlinks kept, stale files); fence_linux.go: a TCP
//     handoff's new socket beside the old one, in one SO_REUSEPORT group
//     steered by a BPF program, so that the old server gets nothing new once
//     the new one is ready; oldproc_linux.go: the old server, by pidfd.
//   - ready_linux.go, accepting_linux.go: when a new generation is ready (it
//     waits for connections: epoll, accept, poll, select, read from /proc).
//   - fdpass_linux.go: takeovers hand sockets to each other over unix sockets.
//   - passing_linux.go: --sockets systemd and server-starter; startserver.go,
//     startserver_run.go, startserver_daemon.go: `start_server`, a drop-in
//     for Server::Starter's, and its --daemonize; internal/starter: its
//     formats (command line, --port, SERVER_STARTER_PORT, status, pid and
//     env files).
//   - state.go: per-port locks and generation records; sdnotify.go: systemd.
//   - doctor_linux.go, doctor_probe_linux.go: `takeover doctor`.
//   - demo.go, demoserver.go, probe.go: `takeover demo`, its built-in
//     server, `takeover probe`; internal/load: the load the demo, the
//     benchmarks and scripts/ use.
//
// One swap reads downward: launcher_linux.go starts a generation, whose
// bind(2) bind_linux.go answers; takeport_linux.go asks portowner.go
// (internal/socktab, internal/procfs) who holds the port and takes it by
// handoff_linux.go or retrybind.go; ready_linux.go sees the new server
// accept, and swap_linux.go stops the old one. README's "How the code is
// laid out" says the same at more length.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

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
	switch os.Getenv(supervise.ShimEnv) {
	case "":
	case supervise.PassShim:
		supervise.RunPassShim(os.Args[1:])
	default:
		supervise.RunShim(os.Args[1:])
	}
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
