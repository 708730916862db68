package starter

import (
	"strings"
	"testing"
	"time"
)

// TestOptionBounds: every number start_server reads in seconds, and every
// fd, is bounded, with a line that says what is wrong: --kill-timeout=
// 10000000000 overflowed a time.Duration to a negative one (SIGKILL at
// once), and --port=P=2000000000 had takeover allocate for two billion fds.
func TestOptionBounds(t *testing.T) {
	for _, tt := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"--kill-timeout=10000000000"}, want: "--kill-timeout=10000000000: want at most 31536000 seconds"},
		{args: []string{"--interval=10000000000"}, want: "--interval=10000000000: want at most 31536000 seconds"},
		{args: []string{"--kill-old-delay=10000000000"}, want: "--kill-old-delay=10000000000: want 0 to 31536000 seconds"},
		{args: []string{"--enable-auto-restart", "--auto-restart-interval=10000000000"}, want: "--auto-restart-interval=10000000000: want 0 to 31536000 seconds"},
		{args: []string{"--backlog=4294967297"}, want: "--backlog=4294967297: want at most 2147483647"},
		{env: map[string]string{"KILL_OLD_DELAY": "10000000000"}, want: `KILL_OLD_DELAY="10000000000": want a whole number of seconds, at most 31536000`},
		{env: map[string]string{"ENABLE_AUTO_RESTART": "1", "AUTO_RESTART_INTERVAL": "10000000000"}, want: `AUTO_RESTART_INTERVAL="10000000000": want a whole number of seconds, at most 31536000`},
	} {
		for _, name := range []string{"KILL_OLD_DELAY", "ENABLE_AUTO_RESTART", "AUTO_RESTART_INTERVAL", "ENVDIR"} {
			t.Setenv(name, tt.env[name]) // Check sets them: restored after the test
		}
		o, err := Parse(append(tt.args, "--port=8000", "--", "true"))
		if err != nil {
			t.Fatalf("Parse(%q): %v", tt.args, err)
		}
		if err := o.Check(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q with %v: Check() = %v (kill timeout %v, interval %v, kill-old-delay %v, auto-restart %v); want an error with %q",
				tt.args, tt.env, err, o.KillTimeout, o.Interval, o.KillOldDelay, o.AutoRestart, tt.want)
		}
	}
	for _, name := range []string{"KILL_OLD_DELAY", "ENABLE_AUTO_RESTART", "AUTO_RESTART_INTERVAL", "ENVDIR"} {
		t.Setenv(name, "")
	}
	o, err := Parse([]string{"--kill-timeout=31536000", "--interval=31536000", "--port=8000", "--", "true"})
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Check(); err != nil || o.KillTimeout != 8760*time.Hour || o.Interval != 8760*time.Hour {
		t.Errorf("a year's --kill-timeout and --interval: %v, %v, %v; want 8760h", err, o.KillTimeout, o.Interval)
	}
	for _, tt := range []struct{ in, want string }{
		{"8000=2000000000", "fd 2000000000: want an fd from 0 to 65535"},
		{"127.0.0.1:8000=65536", "fd 65536: want an fd from 0 to 65535"},
	} {
		if p, err := ParsePort(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParsePort(%q) = %+v, %v; want an error with %q", tt.in, p, err, tt.want)
		}
	}
	if p, err := ParsePort("8000=65535"); err != nil || p.FD != 65535 {
		t.Errorf("ParsePort(8000=65535) = %+v, %v; want fd 65535", p, err)
	}
	if s, err := ParseEnv("8000=2000000000"); err == nil {
		t.Errorf("ParseEnv(8000=2000000000) = %v, want an error", s)
	}
}
