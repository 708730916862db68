package procfs

// Tests of the syscall reader.

import (
	"errors"
	"io/fs"
	"testing"
)

func TestParseSyscall(t *testing.T) {
	tests := []struct {
		in   string
		want Syscall
		ok   bool
	}{
		{"288 0x5 0x7f001000 0x7f001080 0x80800 0x0 0x0 0x7f00a000 0x7f00b000\n", Syscall{Nr: 288, Args: [6]uint64{5, 0x7f001000, 0x7f001080, 0x80800}}, true},
		{"running\n", Syscall{}, false},
		{"-1 0x7ffd0000 0x7f000000\n", Syscall{}, false},
		{"288 0x3\n", Syscall{}, false},
		{"7 0xzz 0x1 0x0 0x0 0x0 0x0 0x1 0x2", Syscall{}, false},
	}
	for _, tt := range tests {
		got, ok := parseSyscall([]byte(tt.in))
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseSyscall(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func FuzzParseSyscall(f *testing.F) {
	f.Add([]byte("288 0x5 0x7f001000 0x7f001080 0x80800 0x0 0x0 0x7f00a000 0x7f00b000"))
	f.Add([]byte("running"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if sc, ok := parseSyscall(b); ok && sc.Nr < 0 {
			t.Fatalf("parseSyscall(%q) = %+v: a negative number is no system call", b, sc)
		}
	})
}

func TestSyscallFixtures(t *testing.T) {
	tests := []struct {
		name     string
		proc     FS
		pid, tid int
		want     Syscall
		ok       bool
		wantErr  error
	}{
		{"in accept4", waiting, 301, 311, Syscall{Nr: 288, Args: [6]uint64{5, 0x7f001000, 0x7f001080, 0x80800}}, true, nil},
		{"running", waiting, 301, 301, Syscall{}, false, nil},
		{"outside a system call", waiting, 304, 304, Syscall{}, false, nil},
		{"truncated", waiting, 305, 305, Syscall{}, false, nil},
		{"an argument that is no number", broken, 400, 400, Syscall{}, false, nil},
		{"no such thread", waiting, 301, 399, Syscall{}, false, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok, err := tt.proc.Syscall(tt.pid, tt.tid)
			if got != tt.want || ok != tt.ok || !errors.Is(err, tt.wantErr) {
				t.Errorf("Syscall(%d, %d) = %+v, %v, %v; want %+v, %v, %v", tt.pid, tt.tid, got, ok, err, tt.want, tt.ok, tt.wantErr)
			}
		})
	}
}
