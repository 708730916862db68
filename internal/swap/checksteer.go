package swap

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// A health check (--ready http://...) must reach the new server, while the
// fence still sends every new connection to the old one, which serves the
// same address. The kernel picks the socket of an SO_REUSEPORT group for a
// connection once, at its SYN (and at the ACK of a SYN cookie handshake,
// the same packet as far as the program is concerned), by running the
// group's program on that packet: SO_ATTACH_REUSEPORT_CBPF runs with
// skb->data past the TCP header, but a classic program reads the packet
// before it through SKF_NET_OFF, the IP header (bpf_internal_load_pointer_
// neg_helper). So while a check runs, the program sends the one connection
// whose source is takeover's checking socket (its address and port,
// bound before it connects, so no other socket on the host has them, and a
// packet from another host cannot carry a local source address) to the new
// socket, and every other one to the old socket as before (or where a
// canary's hash sends it: canary.go). A packet the program cannot read
// makes it return 0, the old socket.

// SteerCheck has the group send the connection from (takeover's checking
// socket, bound) to the new socket, and every other one where it went: sock
// is any socket of the group. Once the fence is up (or the old server is
// gone) everything goes to the new socket already, and it changes nothing.
func (f *Fence) SteerCheck(sock int, from netip.AddrPort) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.up {
		return nil
	}
	f.check = from
	return f.steerOld(sock)
}

// EndCheck puts the program back as it was before SteerCheck.
func (f *Fence) EndCheck(sock int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.check = netip.AddrPort{}
	if f.up {
		return nil
	}
	return f.steerOld(sock)
}

// steerOld sends new connections to the old socket, or a canary's share of
// them to the new one (canary.go), and a check's under way to the new one;
// f.mu is held.
func (f *Fence) steerOld(sock int) error {
	var prog []unix.SockFilter
	if f.check.IsValid() {
		prog = checkRule(f.check, newInGroup)
	}
	if f.canary > 0 {
		prog = append(prog, canaryRule(f.canary)...)
	} else {
		prog = append(prog, unix.SockFilter{Code: ret, K: oldInGroup})
	}
	return attach(sock, prog)
}

// skfNetOff is SKF_NET_OFF: a classic BPF load at k+skfNetOff reads k bytes
// into the packet's network (IP) header.
const skfNetOff = ^uint32(0x100000 - 1) // -0x100000

// Classic BPF opcodes of the programs.
const (
	ldB  = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
	ldH  = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
	ldW  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	ldHX = unix.BPF_LD | unix.BPF_H | unix.BPF_IND
	ldxM = unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH // X = 4*(P[k]&0xf), the IPv4 header's length
	andK = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
	jeq  = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	ret  = unix.BPF_RET | unix.BPF_K
)

// checkRule returns the classic instructions that return to for a TCP
// packet from the address and port from, and go on past their end for
// every other one.
func checkRule(from netip.AddrPort, to uint32) []unix.SockFilter {
	var p []unix.SockFilter
	var misses []int // jeqs whose false branch is past the end
	load := func(code uint16, k uint32) { p = append(p, unix.SockFilter{Code: code, K: k}) }
	match := func(v uint32) {
		misses = append(misses, len(p))
		p = append(p, unix.SockFilter{Code: jeq, K: v})
	}
	addr := from.Addr().Unmap()
	load(ldB, skfNetOff) // version and IHL
	load(andK, 0xf0)
	if addr.Is4() {
		a := addr.As4()
		match(0x40)
		load(ldW, skfNetOff+12) // source address
		match(binary.BigEndian.Uint32(a[:]))
		load(ldxM, skfNetOff)
		load(ldHX, skfNetOff) // the TCP header's source port, after the IP header
	} else {
		a := addr.As16()
		match(0x60)
		load(ldB, skfNetOff+6) // next header: TCP, no extension header
		match(unix.IPPROTO_TCP)
		for i := 0; i < 16; i += 4 {
			load(ldW, skfNetOff+8+uint32(i)) // source address
			match(binary.BigEndian.Uint32(a[i : i+4]))
		}
		load(ldH, skfNetOff+40) // the TCP header's source port
	}
	match(uint32(from.Port()))
	p = append(p, unix.SockFilter{Code: ret, K: to})
	for _, i := range misses {
		p[i].Jf = uint8(len(p) - (i + 1))
	}
	return p
}
