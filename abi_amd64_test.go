package main

import (
	"bufio"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
)

// TestX32BindTrapped: a bind(2) made in the x32 ABI (x86_64's number with
// __X32_SYSCALL_BIT) is trapped and taken over as a native one. The filter
// matched native numbers only, so such a bind went past takeover to the
// kernel (which, where it runs x32 programs, would have bound the port
// unseen; here it answers ENOSYS). testdata/x32bind makes it.
func TestX32BindTrapped(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "x32bind")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = "testdata/x32bind"
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build testdata/x32bind: %v\n%s", err, out)
	}
	port := testutil.FreePort(t)
	r := startTakeover(t, "", "--port", "127.0.0.1:"+port, "--", bin, port)
	if l := r.line(t); l != "listening" {
		t.Fatalf("the x32 bind was not taken over: the command printed %q\n%s", l, r.stderr)
	}
	r.waitLog(t, "took over")
	if s := r.stderr.String(); !strings.Contains(s, "strategy=fresh") {
		t.Errorf("no swap line with strategy=fresh:\n%s", s)
	}
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+port, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if l, err := bufio.NewReader(c).ReadString('\n'); l != "x32\n" {
		t.Errorf("the port answered %q, %v; want the x32 command", l, err)
	}
}
