package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/takeover/takeover/internal/swap"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/starter"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// start_server at run time: its status file, auto-restart, exit status,
// log file and pid file, and the --restart and --stop clients.

// openLog opens --log-file: spec is a file appended to, or "| command",
// run by the shell, whose input it returns.
func openLog(spec string) (*os.File, error) {
	cmdline, ok := strings.CutPrefix(strings.TrimLeft(spec, " \t\n"), "|")
	if !ok {
		return os.OpenFile(spec, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_NOCTTY, 0o666) // the daemon leads a session
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("/bin/sh", "-c", strings.TrimSpace(cmdline))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = r, os.Stdout, os.Stderr
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("failed to open pipe %q: %w", spec, err)
	}
	// takeover's reaper collects it, once the os package lets go of its
	// pidfd (the reaper leaves a child with a pidfd held to its holder). A
	// log command that dies must not take takeover with it: writes get
	// EPIPE, as start_server ignores SIGPIPE.
	cmd.Process.Release()
	signal.Notify(make(chan os.Signal, 1), unix.SIGPIPE)
	return w, nil
}

// redirectOutput sends takeover's and the workers' stdout and stderr to w.
func redirectOutput(w *os.File) error {
	for _, fd := range []int{1, 2} {
		if err := unix.Dup3(int(w.Fd()), fd, 0); err != nil {
			return err
		}
	}
	return nil
}

// clearPath does to a --path what start_server does before its bind: a
// socket file there is removed, with start_server's warning. A file a live
// server listens on is left for takeover to take over (a handoff, or a new
// socket renamed over it) rather than cut off from its clients; a file
// that is not a socket is refused, where start_server would remove it.
func clearPath(spec target.Spec, name string, stderr io.Writer) error {
	var st unix.Stat_t
	if err := unix.Lstat(spec.Path, &st); errors.Is(err, unix.ENOENT) {
		return nil
	} else if err != nil {
		return fmt.Errorf("--path %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("--path %s: %s is there and is not a socket; takeover's start_server does not remove it: remove it yourself, or name another path", name, spec.Path)
	}
	if swap.RemoveStaleSocket(spec.Path, os.Getpid()) { // a live server's is left: the Taker decides
		fmt.Fprintf(stderr, "removing existing socket file:%s\n", name)
	}
	return nil
}

// removePaths is start_server's path_remove_guard: when it exits, each
// --path's socket file is removed, unless another process listens on it
// by then (a newer takeover that took the socket over).
func removePaths(specs []target.Spec) {
	for _, spec := range specs {
		swap.RemoveStaleSocket(spec.Path, os.Getpid())
	}
}

// restartServer is start_server --restart: HUP the running start_server
// and wait until the status file lists one generation, a newer one than
// before.
func restartServer(pidFile, statusFile string) error {
	if pidFile == "" || statusFile == "" {
		return errors.New("--restart option requires --pid-file and --status-file to be set as well")
	}
	f, err := os.Open(pidFile)
	if err != nil {
		return fmt.Errorf("failed to open file %s: %w", pidFile, err)
	}
	pid, err := starter.ReadPIDFile(f)
	f.Close()
	if err != nil {
		return err
	}
	gens, err := starter.ReadStatus(statusFile)
	if err != nil {
		return fmt.Errorf("failed to open file %s: %w", statusFile, err)
	}
	if len(gens) == 0 {
		return fmt.Errorf("no active process found in the status file %s", statusFile)
	}
	waitFor := gens[len(gens)-1] + 1
	pidfd, err := openStarter(pidFile, pid)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	if err := unix.PidfdSendSignal(pidfd, unix.SIGHUP, nil, 0); err != nil {
		return fmt.Errorf("failed to send SIGHUP to the server process %d: %w", pid, err)
	}
	for deadline := time.Now().Add(clientWait); ; {
		if time.Now().After(deadline) {
			return fmt.Errorf("generation %d did not start within %v: see start_server's log", waitFor, clientWait)
		}
		gens, err := starter.ReadStatus(statusFile)
		if err != nil {
			return fmt.Errorf("waiting for generation %d: %w", waitFor, err)
		}
		// A start that failed takes a generation number too: the next one
		// may be later than waitFor.
		if len(gens) == 1 && gens[0] >= waitFor {
			return nil
		}
		if unix.PidfdSendSignal(pidfd, 0, nil, 0) == unix.ESRCH {
			return fmt.Errorf("start_server pid %d exited before generation %d started", pid, waitFor)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stopServer is start_server --stop: TERM the running start_server and
// wait for it to exit, which releases its lock on the pid file.
func stopServer(pidFile string, stderr io.Writer) error {
	if pidFile == "" {
		return errors.New("--stop option requires --pid-file to be set as well")
	}
	f, err := os.OpenFile(pidFile, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("failed to open file %s: %w", pidFile, err)
	}
	defer f.Close()
	pid, err := starter.ReadPIDFile(f)
	if err != nil {
		return err
	}
	pidfd, err := openStarter(pidFile, pid)
	if err != nil {
		return err
	}
	defer unix.Close(pidfd)
	fmt.Fprintf(stderr, "stop_server (pid:%d) stopping now (pid:%d)...\n", os.Getpid(), pid)
	if err := unix.PidfdSendSignal(pidfd, unix.SIGTERM, nil, 0); err != nil {
		return fmt.Errorf("failed to send SIGTERM to the server process %d: %w", pid, err)
	}
	for deadline := time.Now().Add(clientWait); ; time.Sleep(50 * time.Millisecond) {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if err != unix.EWOULDBLOCK {
			return fmt.Errorf("flock %s: %w", pidFile, err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start_server pid %d did not exit within %v", pid, clientWait)
		}
	}
}

// checkRunning makes sure pid is the start_server running now before it is
// signalled: a running start_server (either implementation) holds a lock
// on its pid file, and a file nobody holds is stale, its pid perhaps
// another process's by now.
func checkRunning(pidFile string, pid int) error {
	f, err := os.Open(pidFile)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		return fmt.Errorf("no start_server runs for %s (nothing holds its lock): pid %d is not signalled", pidFile, pid)
	}
	return nil
}

// openStarter returns a pidfd for the start_server that pidFile names as
// pid, to signal it through: the pidfd is opened first, then the process
// checked to be the one that holds the file's exclusive lock (as both
// implementations take it when they write their pid), so that neither a
// stale file's pid, now another process's, nor a file whose lock someone
// else holds (a shared lock needs only read access) gets a process that is
// no start_server signalled.
func openStarter(pidFile string, pid int) (int, error) {
	if err := checkRunning(pidFile, pid); err != nil {
		return -1, err
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return -1, fmt.Errorf("start_server pid %d of %s: %w", pid, pidFile, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(pidFile, &st); err != nil {
		unix.Close(pidfd)
		return -1, err
	}
	locks, err := procfs.FS("/proc").Locks()
	if err != nil {
		unix.Close(pidfd)
		return -1, fmt.Errorf("read /proc/locks to check pid %d of %s: %w", pid, pidFile, err)
	}
	if !slices.ContainsFunc(locks, func(l procfs.Lock) bool {
		return l.Kind == "FLOCK" && l.Write && l.PID == pid && l.Major == unix.Major(st.Dev) && l.Minor == unix.Minor(st.Dev) && l.Inode == st.Ino
	}) {
		unix.Close(pidfd)
		return -1, fmt.Errorf("pid %d does not hold the lock on %s, so it is not the start_server that wrote it (the file is stale, or another process holds its lock): pid %d is not signalled", pid, pidFile, pid)
	}
	return pidfd, nil
}

// clientWait bounds how long --restart and --stop wait for the server.
const clientWait = 5 * time.Minute
