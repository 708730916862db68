package procfs

// Tests of the readers of a process's small files.

import (
	"errors"
	"io/fs"
	"testing"
)

func TestProcFiles(t *testing.T) {
	tests := []struct {
		name string
		read func(pid int) (string, error)
		want string
	}{
		{"Cmdline", fixtures.Cmdline, "/usr/sbin/nginx -g daemon off;"},
		{"Comm", fixtures.Comm, "nginx"},
		{"Exe", fixtures.Exe, "/usr/sbin/nginx"}, // replaced on disk since it started
		{"Cwd", fixtures.Cwd, "/srv/nginx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := tt.read(100); got != tt.want || err != nil {
				t.Errorf("%s(100) = %q, %v; want %q", tt.name, got, err, tt.want)
			}
			if got, err := tt.read(999); got != "" || !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s(999) = %q, %v; want ErrNotExist", tt.name, got, err)
			}
		})
	}
}
