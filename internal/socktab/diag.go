package socktab

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// DiagTCPListeners asks the kernel for every listening TCP socket through
// NETLINK_SOCK_DIAG (inet_diag), for IPv4 and IPv6. Listeners are few, so a
// dump filtered by state costs tens of microseconds.
func DiagTCPListeners() ([]Socket, error) {
	return diagInet(unix.IPPROTO_TCP, tcpStateMask)
}

// diagUDP asks the kernel for every UDP socket that is bound and not
// connected: a server's.
func diagUDP() ([]Socket, error) {
	return diagInet(unix.IPPROTO_UDP, udpStateMask)
}

func diagInet(proto uint8, states uint32) ([]Socket, error) {
	var socks []Socket
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		var err error
		socks, err = diagDump(diagRequest(family, proto, states), parseDiagMsg, socks)
		if err != nil {
			return nil, err
		}
	}
	return socks, nil
}

// diagDump sends one sock_diag dump request and parses its answers.
func diagDump(req []byte, parse func([]byte) (Socket, bool), socks []Socket) ([]Socket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	return readDiagDump(fd, make([]byte, 32<<10), parse, socks)
}

const (
	nlmsgHdrLen   = 16
	diagReqLen    = 56      // struct inet_diag_req_v2
	diagMsgLen    = 72      // struct inet_diag_msg
	tcpStateMask  = 1 << 10 // TCP_LISTEN
	udpStateMask  = 1 << 7  // TCP_CLOSE: bound, not connected
	diagFlagsDump = unix.NLM_F_REQUEST | unix.NLM_F_DUMP
)

// diagRequest builds an nlmsghdr and an inet_diag_req_v2 asking for the
// family's sockets of protocol proto in the states of the mask.
func diagRequest(family, proto uint8, states uint32) []byte {
	return diagMessage(unix.SOCK_DIAG_BY_FAMILY, diagFlagsDump, diagReqLen, family, proto, states)
}

// diagMessage builds a sock_diag message: an nlmsghdr of type typ with
// flags, then a request of reqLen bytes that begins, as inet_diag_req_v2
// and unix_diag_req both do, with the family, the protocol and the mask
// of states; the caller fills in the rest of the request.
func diagMessage(typ, flags uint16, reqLen int, family, proto uint8, states uint32) []byte {
	b := make([]byte, nlmsgHdrLen+reqLen)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	b[16], b[17] = family, proto
	ne.PutUint32(b[20:], states)
	return b
}

func readDiagDump(fd int, buf []byte, parse func([]byte) (Socket, bool), socks []Socket) ([]Socket, error) {
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
			if s, ok := parse(b[nlmsgHdrLen:msgLen]); ok {
				socks = append(socks, s)
			}
			b = b[(msgLen+3)&^3:]
		}
	}
}

// inetDiagSKV6Only is INET_DIAG_SKV6ONLY, the attribute (a u8) the kernel
// adds, unasked, to every listening or bound-unconnected AF_INET6 socket's
// answer: its IPV6_V6ONLY.
const inetDiagSKV6Only = 11

// parseDiagMsg reads a struct inet_diag_msg: family, state, timer, retrans,
// the socket id (ports big-endian, addresses in network order), expires,
// rqueue, wqueue, uid, inode; and of its attributes, INET_DIAG_SKV6ONLY.
func parseDiagMsg(m []byte) (Socket, bool) {
	if len(m) < diagMsgLen {
		return Socket{}, false
	}
	port := binary.BigEndian.Uint16(m[4:])
	var addr netip.Addr
	switch m[0] {
	case unix.AF_INET:
		addr = netip.AddrFrom4([4]byte(m[8:12]))
	case unix.AF_INET6:
		addr = netip.AddrFrom16([16]byte(m[8:24])).Unmap()
	default:
		return Socket{}, false
	}
	ne := binary.NativeEndian
	s := Socket{
		Addr:   netip.AddrPortFrom(addr, port),
		Queued: ne.Uint32(m[56:]), // idiag_rqueue: a listener's accept queue
		UID:    ne.Uint32(m[64:]),
		Inode:  uint64(ne.Uint32(m[68:])),
	}
	eachAttr(m[diagMsgLen:], func(typ uint16, v []byte) {
		if typ == inetDiagSKV6Only && len(v) >= 1 && m[0] == unix.AF_INET6 {
			s.V6Only = v[0] != 0
		}
	})
	return s, true
}

// eachAttr calls f with the type and value of each netlink attribute
// (struct nlattr: length, type, value padded to 4 bytes) in b.
func eachAttr(b []byte, f func(typ uint16, v []byte)) {
	ne := binary.NativeEndian
	for len(b) >= 4 {
		n := int(ne.Uint16(b[0:]))
		if n < 4 || n > len(b) {
			return
		}
		f(ne.Uint16(b[2:]), b[4:n])
		b = b[min((n+3)&^3, len(b)):]
	}
}

// Unix sockets through sock_diag (include/uapi/linux/unix_diag.h).
const (
	unixDiagReqLen = 24 // struct unix_diag_req
	unixDiagMsgLen = 16 // struct unix_diag_msg
	udiagShowVFS   = 0x2
	udiagShowRQLen = 0x10
	unixDiagVFS    = 1
	unixDiagRQLen  = 4
)

// diagUnixListeners asks the kernel for every listening unix stream
// socket, with the inode and device of the file it is bound to: a path
// names a socket by that file, whatever name the socket was bound at.
func diagUnixListeners() ([]Socket, error) {
	b := diagMessage(unix.SOCK_DIAG_BY_FAMILY, diagFlagsDump, unixDiagReqLen, unix.AF_UNIX, 0, tcpStateMask)
	binary.NativeEndian.PutUint32(b[28:], udiagShowVFS|udiagShowRQLen)
	return diagDump(b, parseUnixDiagMsg, nil)
}

// parseUnixDiagMsg reads a struct unix_diag_msg (family, type, state, pad,
// inode, cookie) and its attributes; sockets bound to no file are skipped.
func parseUnixDiagMsg(m []byte) (Socket, bool) {
	if len(m) < unixDiagMsgLen || m[0] != unix.AF_UNIX || m[1] != unix.SOCK_STREAM {
		return Socket{}, false
	}
	ne := binary.NativeEndian
	s := Socket{Inode: uint64(ne.Uint32(m[4:]))}
	eachAttr(m[unixDiagMsgLen:], func(typ uint16, v []byte) {
		switch typ {
		case unixDiagVFS:
			if len(v) >= 8 {
				s.VFSIno, s.VFSDev = uint64(ne.Uint32(v[0:])), ne.Uint32(v[4:])
			}
		case unixDiagRQLen:
			if len(v) >= 4 {
				s.Queued = ne.Uint32(v[0:])
			}
		}
	})
	return s, s.VFSIno != 0
}

// tcpConnectedMask: the states of a connection a server has accepted and
// not yet closed (ESTABLISHED, and CLOSE_WAIT once the client has closed).
const tcpConnectedMask = 1<<1 | 1<<8
