package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
)

// TestDemoServerRssminerNoShell: demo-server --rssminer never hands its
// address to a shell (issue 28, low item: it built `lsof -i:PORT | xargs
// kill` as a shell command): an address whose port is a command line is
// refused, and the command never runs.
func TestDemoServerRssminerNoShell(t *testing.T) {
	dir := t.TempDir()
	for i, port := range []string{"1;touch %s", "$(touch %s)", "`touch %s`", "1|touch %s"} {
		marker := filepath.Join(dir, "ran"+string(rune('a'+i)))
		addr := "127.0.0.1:" + strings.ReplaceAll(port, "%s", marker)
		var stdout, stderr bytes.Buffer
		code := runDemoServer([]string{"--rssminer", addr}, &stdout, &stderr)
		if code == 0 {
			t.Errorf("demo-server --rssminer %q exited 0, want a refusal", addr)
		}
		if _, err := os.Lstat(marker); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("demo-server --rssminer %q ran the shell command in its port (%s exists: %v)", addr, marker, err)
		}
		if !strings.Contains(stderr.String(), "not a number") {
			t.Errorf("demo-server --rssminer %q said %q; want the port refused as not a number", addr, stderr.String())
		}
	}
}

// TestDemoServerRssminerKillsHolder: the recipe still works without a
// shell: the holder of the port is killed (lsof's pid, SIGTERM) and the
// demo server binds the port once it is free.
func TestDemoServerRssminerKillsHolder(t *testing.T) {
	testutil.RequireTool(t, "lsof")
	holder := testutil.StartHelper(t, "serve", "127.0.0.1:0")
	exited := make(chan error, 1)
	go func() { exited <- holder.Cmd.Wait() }()
	r := startRun(t, exec.Command(takeoverBin(t), "demo-server", "--rssminer", holder.Addr))
	if l := r.line(t); l != "listening "+holder.Addr {
		t.Errorf("demo-server printed %q, want listening %s", l, holder.Addr)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the holder of the port exited with %v, want 0 (SIGTERM: it drains and exits)", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("the holder of the port still runs 30s after demo-server --rssminer listened")
	}
}
