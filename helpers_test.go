package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/doctor"
	"github.com/takeover/takeover/internal/starter"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// The test binary impersonates the servers the tests need (the os/exec
// pattern): TestMain runs a helper instead of the tests when
// TAKEOVER_TEST_HELPER names one.
func TestMain(m *testing.M) {
	doctor.MaybeRunProbe() // TestDoctorJSON's probe is this test binary, as main's is takeover
	if mode := os.Getenv(testutil.HelperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[1:]))
	}
	// Tests stop takeovers mid-swap, each with a run directory of its own,
	// where no marker tells the next one to put net.ipv4.tcp_migrate_req
	// back: the host's is put back as it was found.
	const migrateReq = "/proc/sys/net/ipv4/tcp_migrate_req"
	found, _ := os.ReadFile(migrateReq)
	code := m.Run()
	if now, _ := os.ReadFile(migrateReq); len(found) > 0 && string(now) != string(found) {
		os.WriteFile(migrateReq, found, 0)
	}
	if binPath != "" { // takeoverBin's build, in a temp dir of its own
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

func runHelper(mode string, args []string) int {
	addr := "127.0.0.1:0"
	if len(args) > 0 {
		addr = args[0]
	}
	switch mode {
	case "unlinker": // unlink a missing file addr (a count) times; print the ns each took
		n, _ := strconv.Atoi(addr)
		began := time.Now()
		for i := 0; i < n; i++ {
			unix.Unlink("/nonexistent-takeover-bench/file")
		}
		fmt.Printf("%d\n", time.Since(began).Nanoseconds()/int64(max(n, 1)))
		return 0
	case "hang", "hangfork", "hangtcp": // listen and ignore SIGTERM; hangfork passes the socket on to a new process when it comes; hangtcp listens with plain TCP, not Go's MPTCP
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		var lc net.ListenConfig
		lc.SetMultipathTCP(mode != "hangtcp")
		ln, err := lc.Listen(context.Background(), "tcp", addr)
		if err != nil {
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		go func() {
			for range sigs {
				if mode == "hangfork" {
					forkHolder(ln)
				}
			}
		}()
		http.Serve(ln, helloHTTP())
		return 0
	case "signals": // serve, and print each signal but TERM, which stops it
		sigs := make(chan os.Signal, 8)
		signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGHUP, syscall.SIGQUIT)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		go func() {
			for s := range sigs {
				fmt.Printf("got %v\n", s)
			}
		}()
		return serveUntilTerm(ln)
	case "extra": // bind UDP on the target port and TCP on port 0 first, then serve
		host, port, _ := net.SplitHostPort(addr)
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, port))
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper: udp:", err)
			return 1
		}
		defer udp.Close()
		other, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper: other port:", err)
			return 1
		}
		defer other.Close()
		go http.Serve(other, helloHTTP())
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		fmt.Printf("listening %s udp %s other %s\n", ln.Addr(), udp.LocalAddr(), other.Addr())
		return serveUntilTerm(ln)
	case "holdfd": // hold fd 3 until killed
		time.Sleep(time.Hour)
		return 0
	case "slowlisten": // bind, and listen only 500ms later, as servers that bind early do
		ap := netip.MustParseAddrPort(addr)
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			return 1
		}
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
			fmt.Fprintln(os.Stderr, "helper: bind:", err)
			return 1
		}
		time.Sleep(500 * time.Millisecond)
		if err := syscall.Listen(fd, 128); err != nil {
			fmt.Fprintln(os.Stderr, "helper: listen:", err)
			return 1
		}
		ln, err := net.FileListener(os.NewFile(uintptr(fd), "listener"))
		if err != nil {
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		return serveUntilTerm(ln)
	case "bindcrash": // bind the port, then exit before listen(2)
		ap := netip.MustParseAddrPort(addr)
		fd, _ := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()})
		fmt.Printf("bound %v\n", err)
		return 4
	case "listencrash": // listen without accepting, then exit: during --kill-old-delay
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		time.Sleep(500 * time.Millisecond)
		return 5
	case "listenonly": // listen and never accept, until SIGTERM
		fd, err := rawListen(addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		defer syscall.Close(fd)
		fmt.Printf("listening %s\n", addr)
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		<-term
		return 0
	case "lateaccept": // listen, and accept only 800ms later, as Tomcat does: its acceptor starts late
		fd, err := rawListen(addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		fmt.Printf("listening %s\n", addr)
		time.Sleep(800 * time.Millisecond)
		mark("accepting")
		ln, err := net.FileListener(os.NewFile(uintptr(fd), "listener")) // into Go's epoll set only now
		if err != nil {
			return 1
		}
		return serveUntilTerm(ln)
	case "marked": // serve, and mark the stop signal when it comes
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		go http.Serve(ln, helloHTTP())
		<-term
		mark("stop signal")
		return 0
	case "activated": // serve the socket systemd passes (LISTEN_FDS, fd 3), as go-systemd's activation does; "notify" sends READY=1 500ms later
		if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") != "1" {
			fmt.Fprintf(os.Stderr, "helper: LISTEN_PID=%q LISTEN_FDS=%q, want %d and 1\n", os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getpid())
			return 1
		}
		ln, err := net.FileListener(os.NewFile(3, os.Getenv("LISTEN_FDNAMES")))
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		if len(args) > 1 && args[1] == "notify" {
			go func() {
				time.Sleep(500 * time.Millisecond)
				mark("ready")
				c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET"))
				if err == nil {
					c.Write([]byte("STATUS=up\nREADY=1"))
					c.Close()
				}
			}()
		}
		return serveUntilTerm(ln)
	case "passed": // serve the sockets LISTEN_FDS or SERVER_STARTER_PORT pass: the stream socket by HTTP, UDP ones by echo
		return servePassed()
	case "notifier": // listen, and send READY=1 500ms later, then serve
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		go func() {
			time.Sleep(500 * time.Millisecond)
			mark("ready")
			if c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET")); err == nil {
				c.Write([]byte("READY=1"))
				c.Close()
			}
		}()
		return serveUntilTerm(ln)
	case "usr1notifier": // listen, and send READY=1 when SIGUSR1 comes, then serve
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return 1
		}
		fmt.Printf("listening %s\n", ln.Addr())
		go func() {
			<-usr1
			if c, err := net.Dial("unixgram", os.Getenv("NOTIFY_SOCKET")); err == nil {
				c.Write([]byte("READY=1"))
				c.Close()
			} else {
				fmt.Fprintln(os.Stderr, "helper: READY=1:", err)
			}
		}()
		return serveUntilTerm(ln)
	case "starter": // serve the socket SERVER_STARTER_PORT names, as Server::Starter's helper reads it
		ports, err := starter.ParseEnv(os.Getenv("SERVER_STARTER_PORT"))
		if err != nil || len(ports) != 1 || os.Getenv("SERVER_STARTER_GENERATION") == "" {
			fmt.Fprintf(os.Stderr, "helper: SERVER_STARTER_PORT=%q SERVER_STARTER_GENERATION=%q\n", os.Getenv("SERVER_STARTER_PORT"), os.Getenv("SERVER_STARTER_GENERATION"))
			return 1
		}
		ln, err := net.FileListener(os.NewFile(uintptr(ports[0].FD), ports[0].Addr))
		if err != nil {
			return 1
		}
		fmt.Printf("listening %s %s\n", ln.Addr(), os.Getenv("SERVER_STARTER_PORT"))
		return serveUntilTerm(ln)
	case "ssworker": // a start_server worker that notes what it sees (startserver_test.go)
		return runStarterWorker()
	case "exit": // exit with the status in args[0]
		code, _ := strconv.Atoi(addr)
		return code
	case "healthserve": // serve over plain TCP; /healthz answers TAKEOVER_TEST_HEALTH's status (health_test.go)
		return runHealthServe(addr)
	case "tcpserve", "noaccept": // swapcore_test.go's servers
		return runCoreHelper(mode, args)
	case "crash": // fail before binding anything
		fmt.Fprintln(os.Stderr, "helper: crashing before bind")
		return 3
	}
	if code, ok := testutil.RunHelper(mode, args, serveUntilTerm); ok { // serve, prefork, worker, wrapper
		return code
	}
	fmt.Fprintln(os.Stderr, "unknown helper", mode)
	return 2
}

// rawListen binds and listens on an IPv4 addr or a unix socket's path
// with system calls alone, so that the socket is in no epoll set: Go's
// net.Listen would put it in the runtime's at once.
func rawListen(addr string) (int, error) {
	family, sa := syscall.AF_UNIX, syscall.Sockaddr(&syscall.SockaddrUnix{Name: addr})
	if !strings.HasPrefix(addr, "/") {
		ap, err := netip.ParseAddrPort(addr)
		if err != nil {
			return -1, err
		}
		family, sa = syscall.AF_INET, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.Listen(fd, 128); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// servePassed serves the sockets passed to it, as systemd (LISTEN_FDS,
// LISTEN_FDNAMES, LISTEN_PID its own pid) or start_server
// (SERVER_STARTER_PORT) pass them: one stream socket by HTTP, each UDP
// socket by echo. Its first line repeats the variables that said where
// the sockets are. On SIGTERM it drains the stream socket and answers every
// datagram it has read.
func servePassed() int {
	var fds []int
	var vars []string
	if n := os.Getenv("LISTEN_FDS"); n != "" {
		if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
			fmt.Fprintf(os.Stderr, "helper: LISTEN_PID=%q, want %d\n", os.Getenv("LISTEN_PID"), os.Getpid())
			return 1
		}
		count, _ := strconv.Atoi(n)
		for i := range count {
			fds = append(fds, 3+i)
		}
		vars = []string{"LISTEN_FDS=" + n, "LISTEN_FDNAMES=" + os.Getenv("LISTEN_FDNAMES")}
	} else {
		ports, err := starter.ParseEnv(os.Getenv("SERVER_STARTER_PORT"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		for _, p := range ports {
			fds = append(fds, p.FD)
		}
		vars = []string{"SERVER_STARTER_PORT=" + os.Getenv("SERVER_STARTER_PORT"), "SERVER_STARTER_GENERATION=" + os.Getenv("SERVER_STARTER_GENERATION")}
	}
	var ln net.Listener
	var echoes []net.PacketConn
	for _, fd := range fds {
		typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
		if err != nil {
			fmt.Fprintf(os.Stderr, "helper: fd %d: %v\n", fd, err)
			return 1
		}
		f := os.NewFile(uintptr(fd), "passed")
		if typ == syscall.SOCK_DGRAM {
			var pc net.PacketConn
			pc, err = net.FilePacketConn(f)
			echoes = append(echoes, pc)
		} else {
			ln, err = net.FileListener(f)
		}
		f.Close()
		if err != nil {
			fmt.Fprintf(os.Stderr, "helper: fd %d: %v\n", fd, err)
			return 1
		}
	}
	if ln == nil {
		fmt.Fprintln(os.Stderr, "helper: no stream socket passed")
		return 1
	}
	fmt.Printf("listening %s\n", strings.Join(vars, " "))
	var wg sync.WaitGroup
	for _, pc := range echoes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(buf[:n], from)
			}
		}()
	}
	code := serveUntilTerm(ln)
	for _, pc := range echoes {
		pc.SetReadDeadline(time.Now()) // ends the echo after the datagram it has read
	}
	wg.Wait()
	return code
}

// mark appends "PID what" to the file TAKEOVER_TEST_MARK names: lines of
// several processes, in the order things happened.
func mark(what string) {
	f, err := os.OpenFile(os.Getenv("TAKEOVER_TEST_MARK"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return
	}
	fmt.Fprintf(f, "%d %s\n", os.Getpid(), what)
	f.Close()
}

// forkHolder starts a process that holds ln's socket (as fd 3) until
// killed, and prints its pid.
func forkHolder(ln net.Listener) {
	f, _ := ln.(*net.TCPListener).File()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "TAKEOVER_TEST_HELPER=holdfd")
	cmd.ExtraFiles = []*os.File{f}
	if cmd.Start() == nil {
		fmt.Printf("forked %d\n", cmd.Process.Pid)
	}
}

// helloHTTP is helloHandler as an http.Handler, for the helpers that
// serve with net/http's own server.
func helloHTTP() http.Handler {
	hello := helloHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, hello(&demoRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query()}))
	})
}

// serveUntilTerm serves the helpers' handler and drains on SIGTERM.
func serveUntilTerm(ln net.Listener) int { return serveDraining(ln, helloHandler()) }

// A daemonProc is a long-lived process a test harness starts (unshare for
// systemd-nspawn, dockerd): the leader of its own process group, to be
// killed as one, and sent SIGTERM (an orderly exit) if the test process dies
// before it is stopped.
type daemonProc struct {
	cmd     *exec.Cmd     // set once started
	done    chan struct{} // closed once cmd has been reaped (or failed to start)
	waitErr error         // cmd.Wait's result, set before done is closed
}

// start starts cmd as the daemonProc.
func (p *daemonProc) start(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	p.done = make(chan struct{})
	started := make(chan error)
	go func() {
		// Pdeathsig fires when the thread that forked ends, and this package
		// ends threads (goroutines exiting locked, internal/doctor/probe.go):
		// fork from a thread of our own, kept until the process is reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(p.done)
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.cmd = cmd
		started <- nil
		p.waitErr = cmd.Wait()
	}()
	return <-started
}

// exited reports whether the process has been reaped.
func (p *daemonProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// fileTail is the end of a log file, at most n bytes.
func fileTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	off := max(st.Size()-n, 0)
	buf := make([]byte, st.Size()-off)
	f.ReadAt(buf, off)
	return string(buf)
}
