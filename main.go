// Command takeover restarts a network service with no downtime and no change
// to the service.
//
//	takeover --port 8100 -- java -jar app.jar
//
// starts the new version while the old one keeps serving. takeover runs the
// command under a seccomp filter that turns its bind(2) and listen(2) calls
// into notifications takeover answers. When the new server binds a --port
// target, takeover finds the process that holds the port (portowner.go), and
// either hands that process's listening socket to the new server, so that no
// connection is refused (handoff_linux.go), or stops it and retries the bind
// with backoff until the port frees (retrybind.go). Once the new server
// listens, the old one is asked to stop.
//
// The pieces:
//   - main.go: the command line and logging.
//   - portspec.go, procnet.go, sockdiag_linux.go, portowner.go, fdwalk_linux.go:
//     who holds a port, through /proc and sock_diag; `takeover who`.
//   - who.go: `takeover who`.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit statuses, as env, nohup and docker run use them.
const (
	exitFailure       = 1
	exitUsage         = 2
	exitLauncher      = 125 // takeover itself failed
	exitNotExecutable = 126
	exitNotFound      = 127
)

func main() {
	if os.Getenv(shimEnv) != "" {
		runShim(os.Args[1:])
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "who":
			return runWho(args[1:], stdout, stderr)
		case "demo":
			return runDemo(args[1:], stdout, stderr)
		case "demo-server":
			return runDemoServer(args[1:], stdout, stderr)
		case "probe":
			return runProbe(args[1:], stdout, stderr)
		case "version":
			fmt.Fprintf(stdout, "takeover %s\n", version)
			return 0
		}
	}
	return runLauncher(args, stdout, stderr)
}
