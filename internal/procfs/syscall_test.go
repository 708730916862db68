package procfs

// Tests of the syscall reader.

import (
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
