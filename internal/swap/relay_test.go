package swap

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestTakeConns: a fenced old server that does not close its keep-alive
// connections itself, under clients that send request after request on
// them and never retry, is stopped (SIGKILL) once takeover has taken its
// connections: no client sees an error, and each gets its next answer from
// the new server (issue 30). Before, each lost the request in flight. The
// Go server (net/http, no Shutdown) closes its fd at the end of file of a
// copy shut for reading; the half-closing one (as node's http does:
// shutdown(2) at an end of file, then close) answers 3 ms after a request
// comes, so that its connections are seen between two requests and taken
// in repair mode.
func TestTakeConns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("repair mode and pidfd_getfd of another process need root") // TestMain of the root package runs as root in CI
	}
	for _, mode := range []string{"go", "halfclose"} {
		t.Run(mode, func(t *testing.T) {
			const clients = 8
			if mode == "go" { // every connection shut for reading, none taken in repair mode
				defer func(d time.Duration) { betweenFor = d }(betweenFor)
				betweenFor = 0
			}
			cmd := exec.Command(os.Args[0], mode)
			cmd.Env = append(os.Environ(), testutil.HelperEnv+"=keepalive")
			cmd.Stderr = os.Stderr
			old := testutil.StartAndReadLine(t, cmd)
			pid := cmd.Process.Pid
			addr := netip.MustParseAddrPort(old.Addr)
			spec, _ := target.Parse(old.Addr)
			ls, err := owner.Listeners("/proc", spec, nil, false)
			if err != nil || len(ls) != 1 || len(ls[0].Holders) == 0 {
				t.Fatalf("%d listeners on %s (%v)", len(ls), old.Addr, err)
			}
			oldSock, _, err := pidfd.CopySocket(pid, ls[0].Holders[0].FD)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(oldSock)
			own := tcpSocket(t)
			f := joinFence(t, own, oldSock, addr, 128)
			ln, err := net.FileListener(os.NewFile(uintptr(own), "new"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "new") }))

			stop := make(chan struct{})
			var wg sync.WaitGroup
			var errs, fromNew atomic.Int64
			var firstErr atomic.Value
			var connected sync.WaitGroup // each client has had an answer from the old server
			for range clients {
				wg.Add(1)
				connected.Add(1)
				go func() {
					defer wg.Done()
					newSeen, first := false, true
					for c := (net.Conn)(nil); ; {
						select {
						case <-stop:
							if c != nil {
								c.Close()
							}
							if newSeen {
								fromNew.Add(1)
							}
							return
						default:
						}
						if c == nil {
							var err error
							if c, err = net.DialTimeout("tcp", addr.String(), 5*time.Second); err != nil {
								errs.Add(1)
								firstErr.CompareAndSwap(nil, err.Error())
								return
							}
						}
						c.SetDeadline(time.Now().Add(5 * time.Second))
						body, closed, err := roundTrip(c)
						if err != nil {
							errs.Add(1)
							firstErr.CompareAndSwap(nil, err.Error())
							c.Close()
							c = nil
							continue
						}
						newSeen = newSeen || body == "new"
						if first {
							first = false
							connected.Done()
						}
						if closed {
							c.Close()
							c = nil
						}
					}
				}()
			}
			var once sync.Once
			end := func() { once.Do(func() { close(stop) }); wg.Wait() }
			defer end()
			connected.Wait()

			if err := f.Raise(own); err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				ok, err := f.Finished([]int{pid})
				if err != nil {
					t.Fatal(err)
				}
				if ok && f.Looping > 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not finished with keep-alive loops within 10 s (busy: %s)", f.Busy)
				}
			}
			n, err := f.TakeConns([]int{pid}, 5*time.Second, slog.New(slog.DiscardHandler))
			if err != nil || n != clients {
				t.Fatalf("took %d connections (%v), want %d", n, err, clients)
			}
			if !f.AwaitReleased(t.Context(), 2*time.Second) {
				t.Fatal("the old server still holds taken connections after 2 s")
			}
			cmd.Process.Kill() // a server that does not drain: gone at once
			cmd.Wait()
			time.Sleep(500 * time.Millisecond) // the clients go on, on the new server
			end()
			f.WaitRelays()
			relayed, repaired := f.Relayed()
			t.Logf("%d connections taken, %d in repair mode, %d relayed", n, repaired, relayed)
			if e := errs.Load(); e > 0 {
				t.Errorf("%d errors seen by the clients (first: %v)", e, firstErr.Load())
			}
			if got := fromNew.Load(); got != clients {
				t.Errorf("%d of %d clients were answered by the new server", got, clients)
			}
			if relayed == 0 {
				t.Error("no request relayed")
			}
			if mode == "halfclose" && repaired == 0 || mode == "go" && repaired > 0 {
				t.Errorf("%d taken between two requests (repair mode)", repaired)
			}
		})
	}
}

// roundTrip sends one keep-alive GET on c and reads the answer: its body,
// and whether the server will close the connection after it.
func roundTrip(c net.Conn) (string, bool, error) {
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return "", false, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", false, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b), resp.Close, err
}

// keepAliveServer serves HTTP/1.1 keep-alive on 127.0.0.1, on a socket
// with SO_REUSEPORT set before its listen (as takeover sets it on a server
// it starts: the socket a fence joins), and prints "listening ADDR". As
// style "go": net/http, which closes a connection at an end of file; as
// "halfclose": as node's http server, half-closing it (shutdown(2)) first,
// and reading each request 3 ms after it came.
func keepAliveServer(style string) int {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		c.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1) })
		return nil
	}}
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return 1
	}
	fmt.Printf("listening %s\n", ln.Addr())
	if style == "go" {
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "pid=%d", os.Getpid()) }))
		return 1
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return 1
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				time.Sleep(3 * time.Millisecond)
				req, err := readRequest(r)
				if err == io.EOF && req == "" {
					c.(*net.TCPConn).CloseWrite()
					return
				}
				if err != nil || !strings.HasPrefix(req, "GET ") {
					return
				}
				if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\npid=%d", len(fmt.Sprint(os.Getpid()))+4, os.Getpid()); err != nil {
					return
				}
			}
		}()
	}
}

// TestCloseAfter: the relayed request's header says Connection: close,
// after its request line, whatever it said before.
func TestCloseAfter(t *testing.T) {
	for in, want := range map[string]string{
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n":                      "GET / HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n",
		"POST /a HTTP/1.1\r\nConnection: keep-alive\r\n\r\nbody": "POST /a HTTP/1.1\r\nConnection: close\r\nConnection: keep-alive\r\n\r\nbody",
		"GET / HTTP/1.0\n\n":                                     "GET / HTTP/1.0\nConnection: close\r\n\n",
		"GET /half-a-request-line":                               "GET /half-a-request-line",
	} {
		if got := string(closeAfter([]byte(in))); got != want {
			t.Errorf("closeAfter(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestTakenOnce: a fence takes only the connections to its own address
// (nginx's `listen 80; listen [::]:80;` has a fence for each, on one port),
// a wildcard's those to any, and none that another fence of this process
// has taken and not let go of.
func TestTakenOnce(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	port := ln.Addr().(*net.TCPAddr).AddrPort().Port()
	count := func(addr string) int {
		f := &Fence{addr: netip.AddrPortFrom(netip.MustParseAddr(addr), port)}
		ours, _, err := f.heldConns([]int{os.Getpid()})
		if err != nil {
			t.Fatal(err)
		}
		return len(ours)
	}
	if n := count("127.0.0.1"); n != 1 {
		t.Fatalf("the fence at 127.0.0.1 finds %d connections, want 1", n)
	}
	if n := count("0.0.0.0"); n != 1 {
		t.Errorf("a wildcard fence finds %d connections, want 1", n)
	}
	if n := count("127.0.0.2"); n != 0 {
		t.Errorf("a fence at 127.0.0.2 finds %d connections to 127.0.0.1, want 0", n)
	}
	f := &Fence{addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port)}
	ours, _, _ := f.heldConns([]int{os.Getpid()})
	markTaken(ours[0].Inode, true)
	if n := count("0.0.0.0"); n != 0 {
		t.Errorf("a connection another fence took is found again (%d)", n)
	}
	markTaken(ours[0].Inode, false)
	if n := count("127.0.0.1"); n != 1 {
		t.Errorf("a connection let go of is not found again (%d)", n)
	}
}
