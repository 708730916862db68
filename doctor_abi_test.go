package main

import (
	"strings"
	"testing"

	"github.com/takeover/takeover/internal/doctor"
)

// TestDoctorIOUring: doctor says where a server could bind through
// io_uring, which no seccomp filter sees, and what to do.
func TestDoctorIOUring(t *testing.T) {
	for _, tt := range []struct {
		release, disabled, status, detail string
	}{
		{"6.18.44-fc-v1294", "0\n", doctor.StatusOK, "enabled for every process"},
		{"6.11.0", "1\n", doctor.StatusOK, "enabled for privileged processes"},
		{"6.12.3", "", doctor.StatusOK, "enabled for every process"},
		{"6.18.44", "2\n", doctor.StatusOK, "io_uring is disabled"},
		{"6.10.14", "0\n", doctor.StatusOK, "predates IORING_OP_BIND"},
		{"5.15.0", "", doctor.StatusOK, "predates IORING_OP_BIND"},
		{"weird", "0", doctor.StatusOK, "enabled for every process"},
	} {
		c := doctor.IoUringCheck(tt.release, tt.disabled)
		if c.Status != tt.status || !strings.Contains(c.Detail, tt.detail) || strings.Contains(c.Detail, "enabled") != (len(c.Do) > 0) {
			t.Errorf("ioUringCheck(%q, %q) = %+v; want %s and %q", tt.release, tt.disabled, c, tt.status, tt.detail)
		}
	}
}
