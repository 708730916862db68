package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// start_server --daemonize. start_server forks twice once set up; Go
// cannot fork, so the process starts itself again (/proc/self/exe, the same
// arguments) in a new session with stdin from /dev/null, and waits for that
// daemon to report over a pipe: once it has bound its sockets and written
// its pid file, the parent exits 0, as start_server's does; if the daemon
// fails first, its error is on the same stderr and the parent exits with
// its status.

// daemonEnv marks the daemon runDaemon starts; its value is the fd of the
// pipe the daemon reports on.
const daemonEnv = "TAKEOVER_START_SERVER_DAEMON"

// daemonReadyPipe returns, in a daemon runDaemon started, the pipe its
// parent waits on; isDaemon is false in any other process.
func daemonReadyPipe() (ready *os.File, isDaemon bool) {
	v, ok := os.LookupEnv(daemonEnv)
	if !ok {
		return nil, false
	}
	os.Unsetenv(daemonEnv) // the workers must not see it
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, true
	}
	unix.CloseOnExec(fd)
	return os.NewFile(uintptr(fd), "start_server-ready"), true
}

// signalReady tells the daemon's parent that set-up is done; nil: no parent
// waits.
func signalReady(ready *os.File) error {
	if ready == nil {
		return nil
	}
	defer ready.Close()
	_, err := ready.Write([]byte{'R'})
	return err
}

// runDaemon starts the daemon and returns the parent's exit status: 0 once
// the daemon is set up; its status if it exits before; a failure if it is
// not set up within limit, when it is stopped.
func runDaemon(limit time.Duration, stderr io.Writer) int {
	null, err := os.Open(os.DevNull)
	if err != nil {
		fmt.Fprintf(stderr, "start_server: --daemonize: %v\n", err)
		return exitFailure
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "start_server: --daemonize: %v\n", err)
		return exitFailure
	}
	defer r.Close()
	p, err := os.StartProcess("/proc/self/exe", os.Args, &os.ProcAttr{
		Env:   append(os.Environ(), daemonEnv+"=3"),
		Files: []*os.File{null, os.Stdout, os.Stderr, w},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	})
	w.Close()
	if err != nil {
		fmt.Fprintf(stderr, "start_server: --daemonize: fork failed: %v\n", err)
		return exitFailure
	}
	reported := make(chan bool, 1)
	go func() {
		b := make([]byte, 1)
		n, _ := r.Read(b)
		reported <- n == 1 && b[0] == 'R'
	}()
	timeout := time.After(limit)
	select {
	case ok := <-reported:
		if ok {
			return 0
		}
		// The pipe closed unreported: the daemon is exiting.
		exited := make(chan *os.ProcessState, 1)
		go func() {
			st, _ := p.Wait()
			exited <- st
		}()
		select {
		case st := <-exited:
			fmt.Fprintf(stderr, "start_server: the daemon (pid %d) failed before it was set up: %v\n", p.Pid, st)
			if code := st.ExitCode(); code > 0 {
				return code
			}
			return exitFailure
		case <-timeout:
		}
	case <-timeout:
	}
	fmt.Fprintf(stderr, "start_server: the daemon (pid %d) was not set up within %v; stopping it\n", p.Pid, limit)
	p.Signal(unix.SIGTERM) // our child, not reaped: the pid is still its own
	return exitFailure
}
