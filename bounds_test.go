package main

import (
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/testutil"
)

// TestDurationFlagBounds: every duration flag of the launcher is bounded
// (a year), with a line that says which: --kill-old-delay and
// --ready-timeout of two million hours each were accepted, and the lock
// wait they add up to (lockTimeout) overflowed to a negative one.
func TestDurationFlagBounds(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--kill-timeout", "100000h"}, "--kill-timeout 100000h0m0s: want at most 8760h0m0s (a year)"},
		{[]string{"--bind-timeout", "100000h"}, "--bind-timeout 100000h0m0s: want at most 8760h0m0s"},
		{[]string{"--kill-old-delay", "2000000h", "--ready-timeout", "2000000h"}, "--kill-old-delay 2000000h0m0s: want at most 8760h0m0s"},
		{[]string{"--ready-timeout", "100000h"}, "--ready-timeout 100000h0m0s: want at most 8760h0m0s"},
		{[]string{"--lock-timeout", "100000h"}, "--lock-timeout 100000h0m0s: want at most 8760h0m0s"},
		{[]string{"--interval", "100000h"}, "--interval 100000h0m0s: want at most 8760h0m0s"},
		{[]string{"--restart-window", "100000h"}, "--restart-window 100000h0m0s: want at most 8760h0m0s"},
	} {
		c, err := parseFlags(append(tt.args, "-p", "1", "--", "true"), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v (lock timeout %v); want an error with %q", tt.args, err, c.EffectiveLockTimeout(), tt.want)
		}
	}
	year := "8760h"
	c, err := parseFlags([]string{"--kill-timeout", year, "--bind-timeout", "8759h", "--kill-old-delay", year, "--ready-timeout", year,
		"--strategy", "handoff", "-p", "1", "--", "true"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if d := c.EffectiveLockTimeout(); d < 3*8760*time.Hour {
		t.Errorf("every bound at its most: lockTimeout() = %v, want more than 3 years", d)
	}
}

// TestStartServerBounds: start_server refuses, exit status 2 and a line
// that says why, an fd no process can have (--port=P=2000000000 died of
// out-of-memory) and a --kill-timeout that overflows (10000000000 s was a
// negative duration: SIGKILL at once).
func TestStartServerBounds(t *testing.T) {
	bin := takeoverBin(t)
	port := testutil.FreePort(t)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--port=127.0.0.1:" + port + "=2000000000"}, "fd 2000000000: want an fd from 0 to 65535"},
		{[]string{"--port=127.0.0.1:" + port, "--kill-timeout=10000000000"}, "--kill-timeout=10000000000: want at most 31536000 seconds"},
	} {
		cmd := exec.Command(bin, append(append([]string{"start-server"}, tt.args...), "--", "true")...)
		done := make(chan struct{})
		var out []byte
		var err error
		go func() { out, err = cmd.CombinedOutput(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("start_server %q still ran after 60s: %s", tt.args, out)
		}
		if code := cmd.ProcessState.ExitCode(); code != exitUsage || !strings.Contains(string(out), tt.want) {
			t.Errorf("start_server %q: %v, exit status %d, %q; want %d and %q", tt.args, err, code, out, exitUsage, tt.want)
		}
	}
}
