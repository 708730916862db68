// Package systemd speaks systemd's protocols: sd_notify (READY=1, STATUS=,
// MAINPID=), the file descriptor store (FDSTORE=1), and sockets passed
// with LISTEN_FDS, matched to takeover's targets.
package systemd

import (
	"fmt"
	"os"
	"strconv"

	"github.com/takeover/takeover/internal/rundir"
	"golang.org/x/sys/unix"
)

// Notify sends state to the systemd notification socket named by
// NOTIFY_SOCKET. (false, nil) means not supported: NOTIFY_SOCKET is unset.
// (false, err) means the message could not be sent. (true, nil) means sent.
func Notify(state string) (bool, error) { return sdNotifyFDs(state, nil) }

// sdNotifyFDs sends state with fds attached (SCM_RIGHTS), as FDSTORE=1
// wants them; the fds stay the caller's. Its results are sdNotify's.
func sdNotifyFDs(state string, fds []int) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(sock)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	// A leading '@' names an abstract socket, as x/sys/unix takes it too.
	if err := unix.Sendmsg(sock, []byte(state), oob, &unix.SockaddrUnix{Name: path}, 0); err != nil {
		return false, fmt.Errorf("send to NOTIFY_SOCKET %s: %w", path, err)
	}
	return true, nil
}

// UnderSystemd reports whether NOTIFY_SOCKET is systemd's, not that of a
// takeover this one runs under (which gives its commands TAKEOVER_PID and
// a NOTIFY_SOCKET of its own, and keeps no file descriptors).
func UnderSystemd() bool {
	return os.Getenv("NOTIFY_SOCKET") != "" && os.Getenv(rundir.LauncherEnv) == ""
}

// MonotonicUsec is CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it.
func MonotonicUsec() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return strconv.FormatInt(ts.Nano()/1000, 10)
}
