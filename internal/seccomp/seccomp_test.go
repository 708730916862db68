package seccomp

import (
	"testing"

	"golang.org/x/sys/unix"
)

// run runs a classic BPF program of the opcodes Filter uses on one system
// call of architecture arch.
func run(t *testing.T, prog []unix.SockFilter, arch uint32, nr int) uint32 {
	return runArg(t, prog, arch, nr, 0)
}

// runArg is run with the call's first argument.
func runArg(t *testing.T, prog []unix.SockFilter, arch uint32, nr int, arg0 uint32) uint32 {
	for pc, acc := 0, uint32(0); pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case ldW:
			acc = map[uint32]uint32{dataArch: arch, dataNr: uint32(nr), dataArg0: arg0}[in.K]
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

// TestFilterOtherABIs: a call is trapped in every ABI a process can make it
// in here: x32 on x86_64, and the 32-bit one (i386's own numbers and its
// socketcall(2); arm's on arm64); what is not trapped there is allowed.
func TestFilterOtherABIs(t *testing.T) {
	const action = unix.SECCOMP_RET_USER_NOTIF
	calls := []uint32{unix.SYS_BIND, unix.SYS_LISTEN, unix.SYS_UNLINKAT}
	prog := Filter(calls, action)
	for _, nr := range calls {
		if x32Bit != 0 {
			if got := run(t, prog, AuditArch, int(nr|x32Bit)); got != action {
				t.Errorf("x32 call %#x gets %#x, want %#x", nr|x32Bit, got, action)
			}
		}
		for _, c := range compatCalls[nr] {
			if got := run(t, prog, compatArch, int(c)); got != action {
				t.Errorf("32-bit call %d (native %d) gets %#x, want %#x", c, nr, got, action)
			}
		}
		if op, ok := compatSocketcallOps[nr]; ok {
			if got := runArg(t, prog, compatArch, int(compatSocketcall), op); got != action {
				t.Errorf("socketcall(%d) gets %#x, want %#x", op, got, action)
			}
		}
	}
	if x32Bit != 0 {
		if got := run(t, prog, AuditArch, unix.SYS_CONNECT|x32Bit); got != unix.SECCOMP_RET_ALLOW {
			t.Errorf("x32 connect gets %#x, want it allowed", got)
		}
	}
	if got := run(t, prog, compatArch, 3); got != unix.SECCOMP_RET_ALLOW { // read(2) on i386 and arm
		t.Errorf("a 32-bit read gets %#x, want it allowed", got)
	}
	if compatSocketcall != 0 {
		for _, op := range []uint32{1, 3, 5} { // socket, connect, accept
			if got := runArg(t, prog, compatArch, int(compatSocketcall), op); got != unix.SECCOMP_RET_ALLOW {
				t.Errorf("socketcall(%d) gets %#x, want it allowed", op, got)
			}
		}
	}
	if got := run(t, Filter([]uint32{unix.SYS_CONNECT}, action), compatArch, int(compatCalls[unix.SYS_BIND][0])); got != unix.SECCOMP_RET_ALLOW {
		t.Errorf("a 32-bit bind when only connect is trapped gets %#x, want it allowed", got)
	}
}

// TestNative: Recv reports an x32 or 32-bit call as the native one, with
// 32-bit arguments cut to 32 bits.
func TestNative(t *testing.T) {
	if x32Bit != 0 {
		n := Notif{Arch: AuditArch, Nr: unix.SYS_BIND | x32Bit, Args: [6]uint64{3, 0x1000, 16}}
		native(-1, &n)
		if n.Nr != unix.SYS_BIND || n.Args[1] != 0x1000 {
			t.Errorf("x32 bind reads as %d %v, want %d", n.Nr, n.Args, unix.SYS_BIND)
		}
	}
	for call, nrs := range compatCalls {
		for _, nr := range nrs {
			n := Notif{Arch: compatArch, Nr: int32(nr), Args: [6]uint64{0xffffffff00000003, 0x2000, 16}}
			native(-1, &n)
			want, wantArgs := int32(call), [6]uint64{3, 0x2000, 16}
			if nr == compatUnlink {
				want, wantArgs = unix.SYS_UNLINKAT, [6]uint64{uint64(uint32(0xffffff9c)), 3, 0} // AT_FDCWD, the path
			}
			if n.Nr != want || n.Args != wantArgs {
				t.Errorf("32-bit call %d reads as %d %v, want %d %v", nr, n.Nr, n.Args, want, wantArgs)
			}
		}
	}
	if compatSocketcall != 0 {
		// Its arguments cannot be read (no such notification): left as is.
		n := Notif{Arch: compatArch, Nr: int32(compatSocketcall), Args: [6]uint64{uint64(compatSocketcallOps[unix.SYS_BIND]), 0x3000}}
		native(-1, &n)
		if n.Nr != int32(compatSocketcall) {
			t.Errorf("an unreadable socketcall reads as %d, want it left as %d", n.Nr, compatSocketcall)
		}
	}
	n := Notif{Arch: AuditArch + 1, Nr: 7}
	if native(-1, &n); n.Nr != 7 {
		t.Errorf("another architecture's call 7 reads as %d", n.Nr)
	}
}
