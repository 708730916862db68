package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/starter"
)

// runDemoServer implements `takeover demo-server [--init-delay D] ADDR`
// (or a unix socket's PATH): the
// built-in HTTP server of `takeover demo` and scripts/bench.sh. It starts
// slowly, as a JVM does, serves "pid=0012345 gen=", and drains on SIGTERM. Under
// Server::Starter it takes its socket from SERVER_STARTER_PORT.
const demoServerUsage = "usage: takeover demo-server [--init-delay D] [--rssminer] ADDR|PATH\n"

func runDemoServer(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("takeover demo-server", demoServerUsage)
	initDelay := fs.Duration("init-delay", 0, "how long to initialize before binding")
	rssminer := fs.Bool("rssminer", false, "after initializing, kill the port's holder (lsof | xargs kill) and retry the bind every 150ms, 30 times")
	if ok, code := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	if fs.NArg() != 1 {
		badUsage(stderr, fs.Name(), "want one ADDR or PATH")
		return exitUsage
	}
	if *initDelay < 0 || *initDelay > time.Hour {
		fmt.Fprintf(stderr, "takeover demo-server: --init-delay %v: want 0 to 1h\n", *initDelay)
		return exitUsage
	}
	time.Sleep(*initDelay)
	var ln net.Listener
	var err error
	switch {
	case os.Getenv("SERVER_STARTER_PORT") != "":
		ln, err = serverStarterListener(os.Getenv("SERVER_STARTER_PORT"), fs.Arg(0))
	case *rssminer:
		ln, err = rssminerListen(fs.Arg(0))
	default:
		ln, err = net.Listen(load.Network(fs.Arg(0)), fs.Arg(0)) // a path is a unix socket's
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo-server: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	return serveDraining(ln, helloHandler())
}

// helloHandler answers "pid=0012345 gen=G": which process answered (of
// fixed width, so that ab, which counts an answer of another length as
// failed, counts only real failures), after ?sleep=D if asked.
func helloHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if d, err := time.ParseDuration(r.URL.Query().Get("sleep")); err == nil {
			time.Sleep(d)
		}
		fmt.Fprintf(w, "%s gen=%s\n", pidField(os.Getpid()), os.Getenv("TAKEOVER_TEST_GEN"))
	})
}

// pidField is how helloHandler names a process.
func pidField(pid int) string { return fmt.Sprintf("pid=%07d", pid) }

// serveDraining serves on ln until SIGTERM or SIGINT, then stops accepting,
// serves every request it accepted, and returns 0.
func serveDraining(ln net.Listener, h http.Handler) int {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	d := newDrainingServer(h)
	d.serve(ln)
	select {
	case err := <-d.served:
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	case <-term:
	}
	d.drain()
	return 0
}

// A drainingServer serves HTTP on listeners until drained.
//
// http.Server.Shutdown alone drops a request that arrives on a connection
// accepted just before it (conn.serve returns once the server is shutting
// down), so the drain first closes the listeners, then waits for the
// connections they accepted to send their request, then shuts down.
type drainingServer struct {
	srv       *http.Server
	listeners []net.Listener
	served    chan error // each Serve's end

	mu    sync.Mutex
	fresh map[net.Conn]bool // accepted, no request read yet
}

func newDrainingServer(h http.Handler) *drainingServer {
	d := &drainingServer{served: make(chan error, 16), fresh: map[net.Conn]bool{}}
	d.srv = &http.Server{Handler: h, ConnState: func(c net.Conn, st http.ConnState) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if st == http.StateNew {
			d.fresh[c] = true
		} else {
			delete(d.fresh, c)
		}
	}}
	return d
}

// serve serves on ln until the drain (at most 16 listeners).
func (d *drainingServer) serve(ln net.Listener) {
	d.listeners = append(d.listeners, ln)
	go func() { d.served <- d.srv.Serve(ln) }()
}

// drain stops accepting, serves every request accepted, and shuts down.
func (d *drainingServer) drain() {
	for _, ln := range d.listeners {
		ln.Close()
	}
	for range d.listeners {
		<-d.served // every accepted connection is tracked now
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		d.mu.Lock()
		n := len(d.fresh)
		d.mu.Unlock()
		if n == 0 {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d.srv.Shutdown(ctx)
}

// serverStarterListener returns the listener SERVER_STARTER_PORT passes for
// addr (or the only one, when there is one).
func serverStarterListener(env, addr string) (net.Listener, error) {
	ports, err := starter.ParseEnv(env)
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	for _, p := range ports {
		if len(ports) == 1 || p.Addr == addr || p.Addr == port || strings.HasSuffix(p.Addr, ":"+port) {
			return net.FileListener(os.NewFile(uintptr(p.FD), p.Addr))
		}
	}
	return nil, fmt.Errorf("SERVER_STARTER_PORT %q passes no socket for %s", env, addr)
}

// rssminerListen is the 2012 Rssminer recipe, as its post describes it: once
// initialized, kill whatever listens on the port, then retry the bind every
// 150 ms, up to 30 times. The recipe's `lsof | xargs kill` is run as argv,
// never through a shell: the port is a number, the pids are lsof's.
func rssminerListen(addr string) (net.Listener, error) {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q of %s: not a number from 0 to 65535", portStr, addr)
	}
	out, _ := exec.Command("lsof", "-t", "-sTCP:LISTEN", "-i:"+strconv.FormatUint(port, 10)).Output()
	for _, f := range strings.Fields(string(out)) {
		// As xargs kill, but never pid 1, a group (0, -1) or this process.
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	for range 30 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(150 * time.Millisecond)
	}
	return nil, err
}
