package procfs

// Tests of the cgroup reader.

import (
	"testing"
)

func TestUnitOfCgroup(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"cgroup2", "0::/system.slice/app.service\n", "app.service"},
		{"hybrid", "12:pids:/system.slice/app.service\n1:name=systemd:/system.slice/app.service\n0::/system.slice/app.service\n", "app.service"},
		{"template", "0::/system.slice/system-takeover.slice/takeover@web.service\n", "takeover@web.service"},
		{"transient", "0::/system.slice/run-u12.service\n", "run-u12.service"},
		{"session", "0::/user.slice/user-0.slice/session-3.scope\n", "session-3.scope"},
		{"no systemd", "0::/\n", ""},
		{"v1 controller only", "4:memory:/docker/abc.service\n", ""},
		{"truncated", "0::", ""},
		{"empty", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := unitOfCgroup(tt.in); got != tt.want {
				t.Errorf("unitOfCgroup(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestSystemdUnitFixtures(t *testing.T) {
	for _, tt := range []struct {
		name string
		proc FS
		pid  int
		want string
	}{
		{"a service's", fixtures, 100, "nginx.service"},
		{"a line without its hierarchy id", broken, 400, ""},
		{"no cgroup file", fixtures, 101, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.proc.SystemdUnit(tt.pid); got != tt.want {
				t.Errorf("SystemdUnit(%d) = %q, want %q", tt.pid, got, tt.want)
			}
		})
	}
}
