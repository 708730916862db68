package seccomp

import (
	"testing"

	"golang.org/x/sys/unix"
)

// run runs a classic BPF program of the opcodes Filter uses on one system
// call of architecture arch.
func run(t *testing.T, prog []unix.SockFilter, arch uint32, nr int) uint32 {
	for pc, acc := 0, uint32(0); pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case ldW:
			acc = map[uint32]uint32{dataArch: arch, dataNr: uint32(nr)}[in.K]
		case jeqK:
			if acc == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case retK:
			return in.K
		default:
			t.Fatalf("opcode %#x at %d", in.Code, pc)
		}
	}
	t.Fatal("the program fell off its end")
	return 0
}

func TestFilter(t *testing.T) {
	const action = unix.SECCOMP_RET_USER_NOTIF
	for _, calls := range [][]uint32{{unix.SYS_BIND}, {unix.SYS_BIND, unix.SYS_LISTEN, unix.SYS_UNLINKAT}} {
		prog := Filter(calls, action)
		for _, nr := range calls {
			if got := run(t, prog, AuditArch, int(nr)); got != action {
				t.Errorf("Filter(%v): call %d gets %#x, want %#x", calls, nr, got, action)
			}
		}
		for _, nr := range []int{unix.SYS_CONNECT, unix.SYS_ACCEPT4, unix.SYS_OPENAT, unix.SYS_RENAMEAT} {
			if got := run(t, prog, AuditArch, nr); got != unix.SECCOMP_RET_ALLOW {
				t.Errorf("Filter(%v): call %d gets %#x, want it allowed", calls, nr, got)
			}
		}
		if got := run(t, prog, AuditArch+1, int(calls[0])); got != unix.SECCOMP_RET_ALLOW {
			t.Errorf("Filter(%v): another architecture's call gets %#x, want it allowed", calls, got)
		}
	}
}
