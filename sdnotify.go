package main

import (
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// sdNotify sends state to the systemd notification socket named by
// NOTIFY_SOCKET. (false, nil) means not supported: NOTIFY_SOCKET is unset.
// (false, err) means the message could not be sent. (true, nil) means sent.
func sdNotify(state string) (bool, error) {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return false, nil
	}
	if path[0] == '@' { // an abstract socket
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return false, err
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, err
	}
	return true, nil
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as RELOADING=1 wants it.
func monotonicUsec() string {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return strconv.FormatInt(ts.Nano()/1000, 10)
}
