package testutil

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// HelperEnv names the helper mode the test binary runs instead of its tests
// (the os/exec pattern): a package's TestMain calls Main, or RunHelper.
const HelperEnv = "TAKEOVER_TEST_HELPER"

// Main is the TestMain of a package whose tests start helpers: when
// HelperEnv names a mode, the test binary runs that helper and exits (own's
// modes first, if own is not nil, then RunHelper's, serving plain HTTP);
// otherwise it runs the tests.
func Main(m *testing.M, own func(mode string, args []string) (code int, ok bool)) {
	if mode := os.Getenv(HelperEnv); mode != "" {
		if own != nil {
			if code, ok := own(mode, os.Args[1:]); ok {
				os.Exit(code)
			}
		}
		if code, ok := RunHelper(mode, os.Args[1:], nil); ok {
			os.Exit(code)
		}
		fmt.Fprintln(os.Stderr, "unknown helper", mode)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// RunHelper runs the helper modes every package's tests may use, each a
// server that prints "listening ADDR ..." first and serves with serve (plain
// HTTP until killed if serve is nil):
//
//   - serve [ADDR]: listen on ADDR (127.0.0.1:0; it may start tcp4:, tcp6:
//     or unix:) and serve;
//   - prefork [ADDR]: listen, then start two workers that inherit the socket
//     and serve it too ("listening ADDR workers PID,PID");
//   - worker: serve the socket on fd 3 (prefork's);
//   - wrapper [ADDR]: a stand-in for a takeover launcher: runs a serve
//     helper under it.
//
// ok is false for a mode it does not know.
func RunHelper(mode string, args []string, serve func(net.Listener) int) (code int, ok bool) {
	if serve == nil {
		serve = serveHTTP
	}
	addr := "127.0.0.1:0"
	if len(args) > 0 {
		addr = args[0]
	}
	switch mode {
	case "serve":
		network := "tcp"
		if n, a, ok := strings.Cut(addr, ":"); ok && (n == "tcp4" || n == "tcp6" || n == "unix") {
			network, addr = n, a
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1, true
		}
		fmt.Printf("listening %s\n", ln.Addr())
		return serve(ln), true
	case "prefork":
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return 1, true
		}
		f, _ := ln.(*net.TCPListener).File()
		var pids []string
		for range 2 {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), HelperEnv+"=worker")
			cmd.ExtraFiles = []*os.File{f}
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				return 1, true
			}
			defer cmd.Process.Kill()
			pids = append(pids, fmt.Sprint(cmd.Process.Pid))
		}
		// File() left the shared socket blocking: make it non-blocking
		// again, or closing the listener would not wake the accept.
		f.Close()
		rc, _ := ln.(*net.TCPListener).SyscallConn()
		rc.Control(func(fd uintptr) { syscall.SetNonblock(int(fd), true) })
		fmt.Printf("listening %s workers %s\n", ln.Addr(), strings.Join(pids, ","))
		return serve(ln), true
	case "worker":
		ln, err := net.FileListener(os.NewFile(3, "listener"))
		if err != nil {
			return 1, true
		}
		return serve(ln), true
	case "wrapper":
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), HelperEnv+"=serve")
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := cmd.Run(); err != nil {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// serveHTTP answers every request with the helper's pid, until killed.
func serveHTTP(ln net.Listener) int {
	http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "pid=%d\n", os.Getpid())
	}))
	return 1
}

// A HelperProc is a helper started by a test, with its first line of output.
type HelperProc struct {
	Cmd   *exec.Cmd
	Line  string // the first line the helper printed, "listening ADDR ..."
	Addr  string
	Lines *bufio.Scanner
}

// StartHelper starts the test binary as helper mode and waits for its first
// line. The process is killed at cleanup.
func StartHelper(t testing.TB, mode string, args ...string) *HelperProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), HelperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	return StartAndReadLine(t, cmd)
}

// StartAndReadLine starts cmd and waits for its first line of stdout.
func StartAndReadLine(t testing.TB, cmd *exec.Cmd) *HelperProc {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	h := &HelperProc{Cmd: cmd, Lines: bufio.NewScanner(out)}
	line := make(chan string, 1)
	go func() {
		if h.Lines.Scan() {
			line <- h.Lines.Text()
		}
		close(line)
		go io.Copy(io.Discard, out) // keep the pipe drained
	}()
	select {
	case l, ok := <-line:
		if !ok {
			t.Fatalf("%v exited before printing a line", cmd.Args)
		}
		h.Line = l
	case <-time.After(60 * time.Second):
		t.Fatalf("%v printed nothing in 60s", cmd.Args)
	}
	if f := strings.Fields(h.Line); len(f) >= 2 && f[0] == "listening" {
		h.Addr = f[1]
	}
	return h
}
