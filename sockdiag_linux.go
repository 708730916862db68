package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// diagListeners asks the kernel for every listening TCP socket through
// NETLINK_SOCK_DIAG (inet_diag), for IPv4 and IPv6. Listeners are few, so a
// dump filtered by state costs tens of microseconds.
func diagListeners() ([]socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	var socks []socket
	buf := make([]byte, 32<<10)
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := unix.Sendto(fd, diagRequest(family), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		socks, err = readDiagDump(fd, buf, socks)
		if err != nil {
			return nil, err
		}
	}
	return socks, nil
}

const (
	nlmsgHdrLen   = 16
	diagReqLen    = 56 // struct inet_diag_req_v2
	diagMsgLen    = 72 // struct inet_diag_msg
	tcpStateMask  = 1 << 10
	diagFlagsDump = unix.NLM_F_REQUEST | unix.NLM_F_DUMP
)

// diagRequest builds an nlmsghdr and an inet_diag_req_v2 asking for the
// family's TCP sockets in the LISTEN state.
func diagRequest(family uint8) []byte {
	b := make([]byte, nlmsgHdrLen+diagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(b[6:], diagFlagsDump)
	b[16] = family
	b[17] = unix.IPPROTO_TCP
	ne.PutUint32(b[20:], tcpStateMask)
	return b
}

func readDiagDump(fd int, buf []byte, socks []socket) ([]socket, error) {
	ne := binary.NativeEndian
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for b := buf[:n]; len(b) >= nlmsgHdrLen; {
			msgLen := int(ne.Uint32(b[0:]))
			if msgLen < nlmsgHdrLen || msgLen > len(b) {
				return nil, fmt.Errorf("sock_diag: truncated message")
			}
			switch ne.Uint16(b[4:]) {
			case unix.NLMSG_DONE:
				return socks, nil
			case unix.NLMSG_ERROR:
				errno := int32(ne.Uint32(b[nlmsgHdrLen:]))
				return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
			}
			if s, ok := parseDiagMsg(b[nlmsgHdrLen:msgLen]); ok {
				socks = append(socks, s)
			}
			b = b[(msgLen+3)&^3:]
		}
	}
}

// parseDiagMsg reads a struct inet_diag_msg: family, state, timer, retrans,
// the socket id (ports big-endian, addresses in network order), expires,
// rqueue, wqueue, uid, inode.
func parseDiagMsg(m []byte) (socket, bool) {
	if len(m) < diagMsgLen {
		return socket{}, false
	}
	port := binary.BigEndian.Uint16(m[4:])
	var addr netip.Addr
	switch m[0] {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(m[8:12]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(m[8:24])).Unmap()
	default:
		return socket{}, false
	}
	ne := binary.NativeEndian
	return socket{
		Addr:   netip.AddrPortFrom(addr, port),
		Queued: ne.Uint32(m[56:]), // idiag_rqueue: a listener's accept queue
		UID:    ne.Uint32(m[64:]),
		Inode:  uint64(ne.Uint32(m[68:])),
	}, true
}
