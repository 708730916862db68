// Package testutil holds what the tests of several packages need: a free
// port, the module's root (for fixtures and scripts/deps.list), the tools a
// test requires (RequireTool), helper processes (the test binary started
// again in a helper mode, as os/exec's tests do), HTTP gets, and private
// network namespaces. Only tests import it; it imports no package of
// takeover's core, so that any package's own tests may use it.
package testutil

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
)

// ModuleRoot is the directory of go.mod above the test's working directory
// (its package's directory), found once.
var ModuleRoot = sync.OnceValues(func() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", errors.New("no go.mod above the test's directory")
		}
		dir = up
	}
})

// ModuleFile is rel, a path relative to the module's root (a fixture such
// as testdata/server.py), made absolute.
func ModuleFile(t testing.TB, rel string) string {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, rel)
}

// FreePort returns a port the kernel just gave out and released.
func FreePort(t testing.TB) string {
	t.Helper()
	port, err := load.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return strconv.Itoa(port)
}

// HasIPv6 says whether this machine has an IPv6 loopback to listen on.
func HasIPv6() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// Get fetches http://addr/path and returns the body.
func Get(addr, path string) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	host := addr
	if load.Network(addr) == "unix" {
		host = "localhost"
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
	resp, err := c.Get("http://" + host + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

// WaitServing polls addr until a request succeeds, and returns the answer.
func WaitServing(t testing.TB, addr string) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		body, err := Get(addr, "/")
		if err == nil {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not serve: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ProcessGone reports whether pid has exited (or is a zombie nobody reaped).
func ProcessGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err != nil || strings.Contains(string(b), ") Z ")
}

// WaitGone waits until pid has exited, for at most 30s.
func WaitGone(t testing.TB, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ProcessGone(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d is still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
