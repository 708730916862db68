package main

import (
	"encoding/binary"
	"net/netip"

	"github.com/takeover/takeover/internal/seccomp"
	"golang.org/x/sys/unix"
)

// trappedCalls are the system calls the command's filter sends to
// takeover: bind(2) and listen(2), and with unix targets unlink(2) and
// unlinkat(2) too.
func trappedCalls(unlinks bool) []uint32 {
	calls := []uint32{unix.SYS_BIND, unix.SYS_LISTEN}
	if unlinks {
		calls = append(calls, unix.SYS_UNLINKAT)
		if nr := seccomp.SysUnlink; nr >= 0 {
			calls = append(calls, uint32(nr))
		}
	}
	return calls
}

// parseSockaddr reads a struct sockaddr_in or sockaddr_in6. ok is false for
// every other family, and for a length bind(2) itself would refuse.
func parseSockaddr(b []byte) (ap netip.AddrPort, family int, ok bool) {
	if len(b) < 2 {
		return netip.AddrPort{}, 0, false
	}
	family = int(binary.NativeEndian.Uint16(b))
	switch {
	case family == unix.AF_INET && len(b) >= unix.SizeofSockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:])), family, true
	case family == unix.AF_INET6 && len(b) >= 24: // SIN6_LEN_RFC2133: without the scope id
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[8:24])), binary.BigEndian.Uint16(b[2:])), family, true
	}
	return netip.AddrPort{}, family, false
}
