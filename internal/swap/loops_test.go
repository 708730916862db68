package swap

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/drain"
)

// TestFenceKeepAliveLoops: a fenced old server that does not close its
// keep-alive connections, under clients that send request after request on
// them, is finished once every busy connection is such a loop, after
// drain.LoopPatience, where it used to wait for --drain-timeout (issue 30);
// a connection that carries a binary stream both ways (a WebSocket's
// frames) holds it still.
func TestFenceKeepAliveLoops(t *testing.T) {
	t.Run("http", func(t *testing.T) {
		f, stop := loopingServer(t, 3, 0)
		defer stop()
		var done time.Duration
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			ok, err := f.Finished([]int{os.Getpid()})
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				done = time.Since(f.raised) // when Raise began
				break
			}
		}
		switch {
		case done == 0:
			t.Fatalf("three keep-alive loops: not finished within 10 s; busy: %s", f.Busy)
		case done < drain.LoopPatience:
			t.Errorf("finished %v after the fence went up, before drain.LoopPatience (%v)", done, drain.LoopPatience)
		case f.Looping != 3:
			t.Errorf("finished with %d loops, want 3", f.Looping)
		}
	})
	t.Run("stream", func(t *testing.T) {
		f, stop := loopingServer(t, 2, 1)
		defer stop()
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			ok, err := f.Finished([]int{os.Getpid()})
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				t.Fatalf("two keep-alive loops and a binary stream: finished (%d loops); the stream must hold the drain", f.Looping)
			}
		}
	})
}

// loopingServer is an old server in this process, fenced, with loops
// HTTP/1.1 keep-alive connections and streams binary ones, each client
// sending its next request (or frame) as soon as it has read the answer,
// and the server reading it 3 ms later (so that it is seen waiting). It
// returns the fence, raised, and stop, which ends the clients.
func loopingServer(t *testing.T, loops, streams int) (*Fence, func()) {
	t.Helper()
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	file, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { file.Close() })
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	own := tcpSocket(t)
	f := joinFence(t, own, int(file.Fd()), addr, 16)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	const req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	const frame = "\x81\x85abcdefghi"
	for i := range loops + streams {
		isHTTP := i < loops
		c, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(2)
		go func() { // the server's end
			defer wg.Done()
			defer s.Close()
			r := bufio.NewReader(s)
			for ctx.Err() == nil {
				time.Sleep(3 * time.Millisecond)
				s.SetDeadline(time.Now().Add(time.Second))
				if isHTTP {
					if _, err := readRequest(r); err != nil {
						continue
					}
					io.WriteString(s, resp)
				} else {
					if _, err := io.ReadFull(r, make([]byte, len(frame))); err != nil {
						continue
					}
					io.WriteString(s, frame)
				}
			}
		}()
		go func() { // the client
			defer wg.Done()
			defer c.Close()
			r := bufio.NewReader(c)
			for ctx.Err() == nil {
				c.SetDeadline(time.Now().Add(time.Second))
				if isHTTP {
					io.WriteString(c, req)
					readResponse(r)
				} else {
					io.WriteString(c, frame)
					io.ReadFull(r, make([]byte, len(frame)))
				}
			}
		}()
	}
	if err := f.Raise(own); err != nil {
		t.Fatal(err)
	}
	return f, func() { cancel(); wg.Wait() }
}

func readRequest(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return "", err
		}
		b.WriteString(l)
		if l == "\r\n" {
			return b.String(), nil
		}
	}
}

func readResponse(r *bufio.Reader) error {
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}
