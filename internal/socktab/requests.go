package socktab

import (
	"encoding/binary"
	"net/netip"

	"golang.org/x/sys/unix"
)

// A Request is a TCP connection in its handshake on a listening socket: a
// request socket (TCP_NEW_SYN_RECV), the server's SYN-ACK sent and the
// client's ACK not yet taken into the listener's accept queue, either not
// arrived or dropped because the queue was full (the client then counts
// itself connected, and the kernel takes the connection in at the client's
// next segment or its own SYN-ACK retransmit). A listener that closes
// meanwhile resets it, unless net.ipv4.tcp_migrate_req moves it to another
// listener of its SO_REUSEPORT group.
//
// sock_diag does not say which listener a request belongs to: only its
// addresses and its cookie, which names it for its lifetime.
type Request struct {
	Local, Remote netip.AddrPort
	Cookie        uint64
}

// tcpSynRecvMask asks for TCP_SYN_RECV sockets, to which inet_diag adds the
// request sockets (TCP_NEW_SYN_RECV) of every listener.
const tcpSynRecvMask = 1 << 3

// DiagTCPRequests returns the TCP request sockets whose local port is
// port, for IPv4 and IPv6. It walks the kernel's established hash, as
// DiagTCPConns does.
func DiagTCPRequests(port uint16) ([]Request, error) {
	var reqs []Request
	keep := func(m []byte) (Socket, bool) {
		if r, ok := parseRequestMsg(m); ok && r.Local.Port() == port {
			reqs = append(reqs, r)
		}
		return Socket{}, false
	}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if _, err := diagDump(diagRequest(family, unix.IPPROTO_TCP, tcpSynRecvMask), keep, nil); err != nil {
			return nil, err
		}
	}
	return reqs, nil
}

// parseRequestMsg reads the addresses and the cookie of a struct
// inet_diag_msg: family, state, timer, retrans, then the socket id (ports
// big-endian, addresses in network order, the interface, the cookie as two
// 32-bit words, low first).
func parseRequestMsg(m []byte) (Request, bool) {
	if len(m) < diagMsgLen || m[1] != 3 { // TCP_SYN_RECV
		return Request{}, false
	}
	local, remote, ok := diagAddrs(m)
	if !ok {
		return Request{}, false
	}
	ne := binary.NativeEndian
	return Request{
		Local:  local,
		Remote: remote,
		Cookie: uint64(ne.Uint32(m[44:])) | uint64(ne.Uint32(m[48:]))<<32,
	}, true
}
