package supervise

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/intercept"
	"github.com/takeover/takeover/internal/seccomp"
	"golang.org/x/sys/unix"
)

// shimEnv marks the re-executed takeover that becomes the command: it
// installs the bind filter on itself, hands the notification fd to the
// launcher over fd 3 (a socketpair), and execs the command in its place.
const shimEnv = "_TAKEOVER_SHIM"

// shimUnlinks is shimEnv's value when the filter is to trap unlinks too:
// the launcher has unix targets.
const shimUnlinks = "unlinks"

// runShim never returns: it execs the command or exits.
func runShim(args []string) {
	runtime.LockOSThread() // the filter binds to this thread, which must exec
	unix.CloseOnExec(intercept.ShimFD)
	if len(args) == 0 {
		shimFail(ExitLauncher, "shim: no command")
	}
	fd, err := seccomp.Install(intercept.TrappedCalls(os.Getenv(shimEnv) == shimUnlinks))
	if err != nil {
		intercept.SendShimResult(-1, err.Error())
		shimFail(ExitLauncher, err.Error())
	}
	switch os.Getenv(intercept.ShimSilentEnv) {
	case "hang":
		for { // a sleep, not select{}: with no timer the runtime would call it a deadlock and exit
			time.Sleep(time.Hour)
		}
	case "exec":
	default:
		if err := intercept.SendShimResult(fd, ""); err != nil {
			shimFail(ExitLauncher, "shim: cannot reach the launcher: "+err.Error())
		}
	}
	unix.Close(fd) // the launcher has its copy; the command must not hold one

	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, shimEnv+"=") && !strings.HasPrefix(kv, intercept.ShimSilentEnv+"=") {
			env = append(env, kv)
		}
	}
	err = syscall.Exec(args[0], args[1:], env)
	code := exitNotExecutable
	if errors.Is(err, os.ErrNotExist) {
		code = exitNotFound
	}
	shimFail(code, fmt.Sprintf("takeover: cannot run %s: %v", args[0], err))
}

func shimFail(code int, msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(code)
}

// MaybeRunShim turns this process into the shim that starts a generation's
// command (or the one that passes it sockets), if the launcher started it as
// one; main calls it first of all.
func MaybeRunShim() {
	switch os.Getenv(shimEnv) {
	case "":
	case passShim:
		runPassShim(os.Args[1:])
	default:
		runShim(os.Args[1:])
	}
}
