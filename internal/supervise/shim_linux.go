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
const ShimEnv = "_TAKEOVER_SHIM"

// shimUnlinks is shimEnv's value when the filter is to trap unlinks too:
// the launcher has unix targets.
const shimUnlinks = "unlinks"

// shimFD is the shim's end of the socketpair to the launcher.
const ShimFD = 3

// shimSilentEnv is for tests only (TestShimSilent), and nothing else
// reads it: set to "exec", the shim installs its filter but never answers
// the launcher, and execs the command all the same, as if the launcher's
// receive had failed after the exec; set to "hang", it never answers and
// waits for ever.
const ShimSilentEnv = "_TAKEOVER_TEST_SHIM_SILENT"

// runShim never returns: it execs the command or exits.
func RunShim(args []string) {
	runtime.LockOSThread() // the filter binds to this thread, which must exec
	unix.CloseOnExec(ShimFD)
	if len(args) == 0 {
		shimFail(ExitLauncher, "shim: no command")
	}
	fd, err := seccomp.Install(intercept.TrappedCalls(os.Getenv(ShimEnv) == shimUnlinks))
	if err != nil {
		SendShimResult(-1, err.Error())
		shimFail(ExitLauncher, err.Error())
	}
	switch os.Getenv(ShimSilentEnv) {
	case "hang":
		select {}
	case "exec":
	default:
		if err := SendShimResult(fd, ""); err != nil {
			shimFail(ExitLauncher, "shim: cannot reach the launcher: "+err.Error())
		}
	}
	unix.Close(fd) // the launcher has its copy; the command must not hold one

	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, ShimEnv+"=") && !strings.HasPrefix(kv, ShimSilentEnv+"=") {
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

// sendShimResult sends the notification fd, or the reason there is none.
func SendShimResult(fd int, errText string) error {
	if fd < 0 {
		return unix.Sendmsg(ShimFD, []byte("error: "+errText), nil, nil, 0)
	}
	return unix.Sendmsg(ShimFD, []byte("ok"), unix.UnixRights(fd), nil, 0)
}

// errShimSilent means the shim did not answer in time.
var errShimSilent = errors.New("the shim did not hand over the bind filter")

// recvShimResult receives what sendShimResult sent, waiting until deadline
// at most. io.EOF-like results (the shim died before it sent anything)
// come back as an error too.
func RecvShimResult(sock int, deadline time.Time) (int, error) {
	buf := make([]byte, 1024)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return -1, errShimSilent
		}
		pfd := []unix.PollFd{{Fd: int32(sock), Events: unix.POLLIN}}
		if n, err := unix.Poll(pfd, int(min(left.Milliseconds()+1, 1<<30))); err == unix.EINTR || err == nil && n == 0 {
			continue
		} else if err != nil {
			return -1, fmt.Errorf("wait for the notification fd: %w", err)
		}
		n, oobn, _, _, err := unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC|unix.MSG_DONTWAIT)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return -1, fmt.Errorf("receive the notification fd: %w", err)
		}
		msg := string(buf[:n])
		if n == 0 {
			return -1, errors.New("the command exited before its bind filter was installed")
		}
		if msg != "ok" {
			return -1, fmt.Errorf("%w%s", seccomp.ErrUnavailable, strings.TrimPrefix(msg, "error: "+seccomp.ErrUnavailable.Error()))
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			return -1, errors.New("the shim sent no notification fd")
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			return -1, errors.New("the shim sent no notification fd")
		}
		return fds[0], nil
	}
}
