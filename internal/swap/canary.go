package swap

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// A canary (--canary PERCENT, issue 31) sends a share of new connections
// to the new server while the old one, fenced, serves the rest, so that a
// release that fails under real traffic fails for that share only and is
// rolled back with Lower. The group's program picks the socket of each
// connection from a hash of its source address and port, so that every
// packet of a connection the kernel runs it on (the SYN, a SYN sent again
// after the first was dropped, the ACK that completes a SYN cookie
// handshake) picks the same socket. Loopback or NATed clients share one
// address and take near-sequential ephemeral ports (Linux 6 steps by a
// small random even number), so the hash multiplies by an odd constant
// close to 2³²/φ (Fibonacci hashing) and compares the product's 32 bits,
// led by its high ones, with the share's threshold: successive ports land
// spread over the whole range rather than in runs, and a share of 10 % is
// 10 % of successive ports and of random ones alike, within noise
// (TestCanaryShares).

// Canary sends percent (0 to 100) of new connections to the new socket and
// the rest to the old one (sock is any socket of the group), and a check
// under way (SteerCheck) to the new socket still. 100 is Raise; 0 sends
// every new connection back to the old socket, as Lower does, but for a
// check under way. A canary holds until Raise, Lower or another Canary.
// Once the old server is gone (OldGone) there is nothing to share with,
// and a canary short of 100 is an error.
func (f *Fence) Canary(sock int, percent int) error {
	if percent < 0 || percent > 100 {
		return fmt.Errorf("a canary of %d%%: the share of new connections sent to the new server is 0 to 100", percent)
	}
	if percent == 100 {
		return f.Raise(sock)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gone {
		return fmt.Errorf("a canary of %d%%: the old server exited, and every new connection goes to the new one", percent)
	}
	f.up = false
	f.canary = percent
	return f.steerOld(sock)
}

// canaryHash is the hash's multiplier, 2³²/φ rounded to an odd number:
// its multiples of successive numbers are spread about as evenly over 2³²
// as numbers can be (the three distance theorem), where a multiplier such as
// 0x10001 puts successive ports in long runs (at 10 %, all 2000 of a test's
// connections from successive ports went to the old socket).
const canaryHash = 0x9e3779b1

// canaryRule returns the classic instructions that return newInGroup for
// percent (1 to 99) of TCP packets, on a hash of their source address and
// port, and oldInGroup for the others and for a packet they cannot read
// (a load past the packet's end ends the program, which returns 0): 27
// instructions, of which an IPv4 packet runs 14 and an IPv6 one 19.
func canaryRule(percent int) []unix.SockFilter {
	const (
		tax  = unix.BPF_MISC | unix.BPF_TAX
		xorX = unix.BPF_ALU | unix.BPF_XOR | unix.BPF_X
		mulK = unix.BPF_ALU | unix.BPF_MUL | unix.BPF_K
		ja   = unix.BPF_JMP | unix.BPF_JA
		jge  = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	)
	// The share's threshold: a hash below it goes to the new socket.
	below := uint32(uint64(percent) << 32 / 100)
	return []unix.SockFilter{
		{Code: ldB, K: skfNetOff}, // version and IHL
		{Code: andK, K: 0xf0},
		{Code: jeq, K: 0x60, Jt: 7},  // IPv6: to 10
		{Code: jeq, K: 0x40, Jf: 22}, // neither: to 26, the old socket
		// IPv4: the source port (after the header, X long) xor the
		// source address.
		{Code: ldxM, K: skfNetOff},
		{Code: ldHX, K: skfNetOff},
		{Code: tax},
		{Code: ldW, K: skfNetOff + 12},
		{Code: xorX},
		{Code: ja, K: 13}, // to 23, the hash
		// IPv6: the source port (where it is without an extension
		// header, which a SYN seldom has) xor the source address's four
		// words.
		{Code: ldH, K: skfNetOff + 40},
		{Code: tax},
		{Code: ldW, K: skfNetOff + 8},
		{Code: xorX},
		{Code: tax},
		{Code: ldW, K: skfNetOff + 12},
		{Code: xorX},
		{Code: tax},
		{Code: ldW, K: skfNetOff + 16},
		{Code: xorX},
		{Code: tax},
		{Code: ldW, K: skfNetOff + 20},
		{Code: xorX},
		// The hash, and the share.
		{Code: mulK, K: canaryHash},
		{Code: jge, K: below, Jt: 1},
		{Code: ret, K: newInGroup},
		{Code: ret, K: oldInGroup},
	}
}
