package intercept

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/takeover/takeover/internal/seccomp"
	"golang.org/x/sys/unix"
)

// shimFD is the shim's end of the socketpair to the launcher.
const ShimFD = 3

// shimSilentEnv is for tests only (TestShimSilent), and nothing else
// reads it: set to "exec", the shim installs its filter but never answers
// the launcher, and execs the command all the same, as if the launcher's
// receive had failed after the exec; set to "hang", it never answers and
// waits for ever.
const ShimSilentEnv = "_TAKEOVER_TEST_SHIM_SILENT"

// SendShimResult sends the notification fd, or the reason there is none.
func SendShimResult(fd int, errText string) error {
	if fd < 0 {
		return unix.Sendmsg(ShimFD, []byte("error: "+errText), nil, nil, 0)
	}
	return unix.Sendmsg(ShimFD, []byte("ok"), unix.UnixRights(fd), nil, 0)
}

// errShimSilent means the shim did not answer in time.
var ErrShimSilent = errors.New("the shim did not hand over the bind filter")

// RecvShimResult receives what sendShimResult sent, waiting until deadline
// at most. io.EOF-like results (the shim died before it sent anything)
// come back as an error too.
func RecvShimResult(sock int, deadline time.Time) (int, error) {
	buf := make([]byte, 1024)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return -1, ErrShimSilent
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
