package metrics

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ParseAddr reads --metrics ADDR: a unix socket's absolute path (it has a
// /), a bare port (loopback: 127.0.0.1), localhost:PORT, or IP:PORT. Any
// address is taken as named, 0.0.0.0 too; what is refused is an address
// that names none (":9101", which Go would take as every address). It
// returns the network and address to listen on.
func ParseAddr(addr string) (network, address string, err error) {
	if strings.Contains(addr, "/") {
		if !strings.HasPrefix(addr, "/") {
			return "", "", fmt.Errorf("--metrics %q: a unix socket's path must be absolute", addr)
		}
		return "unix", addr, nil
	}
	if p, err := strconv.ParseUint(addr, 10, 16); err == nil && p > 0 {
		return "tcp", net.JoinHostPort("127.0.0.1", addr), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("--metrics %q: want 127.0.0.1:9101, a port (on 127.0.0.1) or a unix socket's path", addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return "", "", fmt.Errorf("--metrics %q: %q is not a port (1 to 65535)", addr, port)
	}
	switch {
	case host == "":
		return "", "", fmt.Errorf("--metrics %q names no address: pass 127.0.0.1:%s for loopback, or 0.0.0.0:%s to serve the metrics to every network on purpose", addr, port, port)
	case host == "localhost":
		host = "127.0.0.1"
	default:
		if _, err := netip.ParseAddr(host); err != nil {
			return "", "", fmt.Errorf("--metrics %q: %q is not an IP address", addr, host)
		}
	}
	return "tcp", net.JoinHostPort(host, port), nil
}

// Listen listens on what ParseAddr returned. A TCP port is taken with
// SO_REUSEPORT, so that the takeover that replaces this one in a deploy
// can serve the same port while this one drains; a unix path is taken
// from the socket there (the older takeover's, which keeps its socket).
func Listen(network, address string) (net.Listener, error) {
	if network == "unix" {
		if fi, err := os.Lstat(address); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			os.Remove(address)
		}
		return net.Listen("unix", address)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(context.Background(), "tcp", address)
}

// Serve serves GET /metrics on ln until stop is called: one request per
// connection, answered and closed (Prometheus and curl take that as any
// HTTP/1.1 server's answer). A unix socket's file is removed then only if
// it is still this one's: in a deploy the newer takeover's has taken the
// path.
func (s *Set) Serve(ln net.Listener) (stop func()) {
	var path string
	var mine os.FileInfo
	if u, ok := ln.(*net.UnixListener); ok {
		u.SetUnlinkOnClose(false)
		path = u.Addr().String()
		mine, _ = os.Stat(path)
	}
	var answering sync.WaitGroup
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond) // EMFILE and the like: try again
				continue
			}
			answering.Add(1)
			go func() {
				defer answering.Done()
				s.answer(c)
			}()
		}
	}()
	return func() {
		ln.Close()
		<-done
		answering.Wait()
		if fi, err := os.Stat(path); mine != nil && err == nil && os.SameFile(fi, mine) {
			os.Remove(path)
		}
	}
}

// answerTimeout bounds one scrape: reading the request and writing the
// answer.
var answerTimeout = 10 * time.Second

// answer reads one HTTP/1.x request from c, answers it and closes c: GET
// or HEAD of /metrics gets the metrics; another path 404, another method
// 405, something that is not HTTP/1 400.
func (s *Set) answer(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(answerTimeout))
	r := bufio.NewReader(io.LimitReader(c, 64<<10))
	line, err := r.ReadString('\n')
	if err != nil {
		return
	}
	for { // the header fields, up to the empty line
		l, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if l == "\r\n" || l == "\n" {
			break
		}
	}
	method, rest, _ := strings.Cut(strings.TrimRight(line, "\r\n"), " ")
	target, proto, _ := strings.Cut(rest, " ")
	path, _, _ := strings.Cut(target, "?")
	code, body, ctype := 200, []byte(nil), ContentType
	switch {
	case !strings.HasPrefix(proto, "HTTP/1."):
		code = 400
	case path != "/metrics":
		code = 404
	case method != "GET" && method != "HEAD":
		code = 405
	default:
		body, _ = s.Text()
	}
	if code != 200 {
		body, ctype = []byte(statusText[code]+"\n"), "text/plain; charset=utf-8"
	}
	head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n", code, statusText[code], ctype, len(body))
	if code == 405 {
		head += "Allow: GET, HEAD\r\n"
	}
	if method == "HEAD" {
		body = nil
	}
	c.Write(append([]byte(head+"\r\n"), body...))
}

var statusText = map[int]string{200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
