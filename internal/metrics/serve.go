package metrics

import (
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
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

// Serve serves GET /metrics on ln until stop is called. A unix socket's
// file is removed then only if it is still this one's: in a deploy the
// newer takeover's has taken the path.
func (s *Set) Serve(ln net.Listener) (stop func()) {
	var path string
	var mine os.FileInfo
	if u, ok := ln.(*net.UnixListener); ok {
		u.SetUnlinkOnClose(false)
		path = u.Addr().String()
		mine, _ = os.Stat(path)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", s.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		srv.Serve(ln) // until Close
		close(done)
	}()
	return func() {
		srv.Close()
		<-done
		if fi, err := os.Stat(path); mine != nil && err == nil && os.SameFile(fi, mine) {
			os.Remove(path)
		}
	}
}
