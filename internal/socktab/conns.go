package socktab

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// A Conn is one TCP connection as sock_diag shows it, with what its
// tcp_info says of the traffic on it: enough to tell, from outside the
// process that holds it, whether that process has read a request it has
// not answered (package drain).
type Conn struct {
	Inode  uint64
	Cookie uint64 // names the socket for its lifetime (DestroyTCP)
	Family uint8
	State  uint8 // TCP_ESTABLISHED (1), TCP_CLOSE_WAIT (8), ...
	Local  netip.AddrPort
	Remote netip.AddrPort
	// RQueue is the bytes received and not yet read by the process;
	// WQueue the bytes written and not yet acknowledged by the peer
	// (sent or not).
	RQueue, WQueue uint32
	// How long ago the last data segment was sent and received, and the
	// last ACK received (tcpi_last_data_sent, tcpi_last_data_recv,
	// tcpi_last_ack_recv): the kernel keeps them in jiffies (4 ms at
	// HZ=250), so two events in one tick read the same.
	LastDataSent, LastDataRecv, LastAckRecv time.Duration
	// BytesReceived and BytesAcked count the data received and the data
	// sent and acknowledged over the connection's life (Linux 4.1; 0 on
	// an older kernel).
	BytesReceived, BytesAcked uint64
	Info                      bool // the kernel gave tcp_info: the fields above it are set
}

const (
	inetDiagInfo = 2 // INET_DIAG_INFO: the attribute that holds a struct tcp_info
	sockDestroy  = 21
)

// DiagTCPConns returns the TCP connections whose local port is port and
// that are still open at this end (ESTABLISHED, and CLOSE_WAIT once the
// peer has closed), with their tcp_info. On a server, those are the ones
// it accepted and has not closed, and clients of other servers that happen
// to use port as their own (their inodes tell them apart).
func DiagTCPConns(port uint16) ([]Conn, error) {
	return diagConns([]uint8{unix.AF_INET, unix.AF_INET6}, port, tcpConnectedMask, true)
}

// tcpHeldMask: the states of a connection its process may still hold,
// from ESTABLISHED to its close: FIN_WAIT1 and FIN_WAIT2 once the process
// shut down its end (python's socketserver does, just before it closes),
// CLOSE_WAIT, LAST_ACK and CLOSING once the peer has closed too.
const tcpHeldMask = 1<<1 | 1<<4 | 1<<5 | 1<<8 | 1<<9 | 1<<11

// DiagTCPHeld returns the TCP connections of family (AF_INET or AF_INET6)
// whose local port is port and that a process still holds (they have an
// inode), whether or not either end has shut down its side; without
// tcp_info. A connection its process has closed has no inode and is left
// out. (The kernel walks its whole established hash for each family, TIME_WAIT
// sockets and other namespaces' included: one family is half the cost.)
func DiagTCPHeld(family uint8, port uint16) ([]Conn, error) {
	return diagConns([]uint8{family}, port, tcpHeldMask, false)
}

// diagConns dumps the TCP connections of families in the states of mask
// whose local port is port and that have an inode, with their tcp_info if
// info.
func diagConns(families []uint8, port uint16, mask uint32, info bool) ([]Conn, error) {
	var conns []Conn
	keep := func(m []byte) (Socket, bool) {
		if c, ok := parseConnMsg(m); ok && c.Local.Port() == port && c.Inode != 0 {
			conns = append(conns, c)
		}
		return Socket{}, false
	}
	for _, family := range families {
		req := diagRequest(family, unix.IPPROTO_TCP, mask)
		if info {
			req[nlmsgHdrLen+2] = 1 << (inetDiagInfo - 1) // idiag_ext
		}
		if _, err := diagDump(req, keep, nil); err != nil {
			return nil, err
		}
	}
	return conns, nil
}

// diagAddrs reads the local and remote address of a struct inet_diag_msg's
// socket id (ports big-endian, addresses in network order).
func diagAddrs(m []byte) (local, remote netip.AddrPort, ok bool) {
	var l, r netip.Addr
	switch m[0] {
	case unix.AF_INET:
		l, r = netip.AddrFrom4([4]byte(m[8:12])), netip.AddrFrom4([4]byte(m[24:28]))
	case unix.AF_INET6:
		l, r = netip.AddrFrom16([16]byte(m[8:24])).Unmap(), netip.AddrFrom16([16]byte(m[24:40])).Unmap()
	default:
		return local, remote, false
	}
	return netip.AddrPortFrom(l, binary.BigEndian.Uint16(m[4:])), netip.AddrPortFrom(r, binary.BigEndian.Uint16(m[6:])), true
}

// parseConnMsg reads a struct inet_diag_msg and its INET_DIAG_INFO.
func parseConnMsg(m []byte) (Conn, bool) {
	if len(m) < diagMsgLen {
		return Conn{}, false
	}
	local, remote, ok := diagAddrs(m)
	if !ok {
		return Conn{}, false
	}
	ne := binary.NativeEndian
	c := Conn{
		Family: m[0],
		State:  m[1],
		Local:  local,
		Remote: remote,
		Cookie: uint64(ne.Uint32(m[44:])) | uint64(ne.Uint32(m[48:]))<<32,
		RQueue: ne.Uint32(m[56:]),
		WQueue: ne.Uint32(m[60:]),
		Inode:  uint64(ne.Uint32(m[68:])),
	}
	eachAttr(m[diagMsgLen:], func(typ uint16, v []byte) {
		if typ == inetDiagInfo {
			c.setInfo(v)
		}
	})
	return c, true
}

// setInfo reads the fields of a struct tcp_info (include/uapi/linux/tcp.h)
// that Conn keeps; a kernel gives as much of it as it knows.
func (c *Conn) setInfo(b []byte) {
	ne := binary.NativeEndian
	ms := func(off int) time.Duration { return time.Duration(ne.Uint32(b[off:])) * time.Millisecond }
	if len(b) < 60 {
		return
	}
	c.Info = true
	c.LastDataSent, c.LastDataRecv, c.LastAckRecv = ms(44), ms(52), ms(56)
	if len(b) >= 136 {
		c.BytesAcked, c.BytesReceived = ne.Uint64(b[120:]), ne.Uint64(b[128:])
	}
}

// DestroyTCP closes the connection c in the kernel (SOCK_DESTROY, which
// needs CAP_NET_ADMIN and CONFIG_INET_DIAG_DESTROY): the peer gets a reset,
// and the process that holds the socket an ECONNABORTED at its next read or
// write. It fails with ENOENT if c has gone meanwhile (the cookie names
// the one socket c was).
func DestroyTCP(c Conn) error {
	b := diagMessage(sockDestroy, unix.NLM_F_REQUEST|unix.NLM_F_ACK, diagReqLen, c.Family, unix.IPPROTO_TCP, 1<<c.State)
	ne := binary.NativeEndian
	r := b[nlmsgHdrLen:]
	binary.BigEndian.PutUint16(r[8:], c.Local.Port())
	binary.BigEndian.PutUint16(r[10:], c.Remote.Port())
	putAddr := func(dst []byte, a netip.Addr) {
		if c.Family == unix.AF_INET6 {
			a16 := a.As16()
			copy(dst, a16[:])
		} else {
			a4 := a.As4()
			copy(dst, a4[:])
		}
	}
	putAddr(r[12:], c.Local.Addr())
	putAddr(r[28:], c.Remote.Addr())
	ne.PutUint32(r[48:], uint32(c.Cookie))
	ne.PutUint32(r[52:], uint32(c.Cookie>>32))
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fmt.Errorf("sock_diag destroy: %w", err)
	}
	if n >= nlmsgHdrLen+4 && ne.Uint16(buf[4:]) == unix.NLMSG_ERROR {
		if errno := int32(ne.Uint32(buf[nlmsgHdrLen:])); errno != 0 {
			return fmt.Errorf("sock_diag destroy: %w", unix.Errno(-errno))
		}
	}
	return nil
}
