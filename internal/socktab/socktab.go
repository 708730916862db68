// Package socktab reads the kernel's socket tables: the listening TCP and
// unix sockets and the bound UDP ones, with their inodes, addresses, owners
// and queues, through sock_diag (tens of microseconds) or the /proc/net
// files (a walk of the kernel's hash tables, and fixtures for tests). Who
// holds a socket is not here: that is a walk of /proc/PID/fd.
package socktab

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// A Socket is one listening TCP or unix socket, or a bound UDP one: what
// the kernel's socket tables say of it, before anyone looks for the
// processes that hold it.
type Socket struct {
	Inode uint64
	Addr  netip.AddrPort // TCP and UDP
	UID   uint32         // the owner of the socket's inode: the user who created it
	// V6Only is an IPv6 socket's IPV6_V6ONLY: bound to [::], it takes no
	// IPv4 connection and leaves IPv4 addresses of its port to other
	// sockets (nginx's `listen [::]:80`). sock_diag only: the /proc/net
	// tables do not say, and a socket read from them has it false.
	V6Only bool
	// Queued is the accept queue's length: connections waiting for the
	// server to accept them (sock_diag only).
	Queued uint32
	// A unix socket's file: its inode number's low 32 bits and its device
	// (the kernel's encoding), all that sock_diag gives (boundTo).
	VFSIno uint64
	VFSDev uint32
}

// UnixListenersAt returns the listening unix socket bound to the file at
// path (none if there is no file, or no listener has it: a stale file).
func UnixListenersAt(path string) ([]Socket, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%s is not a socket", path)
	}
	socks, err := diagUnixListeners()
	if err != nil {
		return nil, err
	}
	dev := kernelDev(st.Dev)
	at := boundTo(socks, st.Ino, dev)
	if len(at) == 0 {
		// st_dev may not be the device sock_diag gives (mountDev).
		if mdev, err := mountDev(path); err == nil && mdev != dev {
			at = boundTo(socks, st.Ino, mdev)
		}
	}
	return at, nil
}

// boundTo returns the sockets of socks bound to the file with inode ino on
// device dev (the kernel's encoding). The kernel gives the file's inode
// number in 32 bits (struct unix_diag_vfs), so only the low 32 bits of ino
// are compared, with the device: where inode numbers take 64 bits (tmpfs
// with inode64, XFS, btrfs) the whole number would never match, and a
// socket file would seem to have no listener.
func boundTo(socks []Socket, ino uint64, dev uint32) []Socket {
	var at []Socket
	for _, s := range socks {
		if s.VFSIno != 0 && s.VFSIno == uint64(uint32(ino)) && s.VFSDev == dev {
			at = append(at, s)
		}
	}
	return at
}

// kernelDev is st_dev in the kernel's encoding (MKDEV), as sock_diag gives it.
func kernelDev(dev uint64) uint32 {
	return uint32(unix.Major(dev))<<20 | uint32(unix.Minor(dev))
}

// mountDev returns the device of the filesystem the file at path is on as
// sock_diag gives it, its superblock's: the one mountinfo gives for the
// file's mount. st_dev is not always that: btrfs gives each subvolume a
// device of its own, and overlayfs over several filesystems (xino off)
// gives a file its layer's.
func mountDev(path string) (uint32, error) {
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	if stx.Mask&unix.STATX_MNT_ID == 0 {
		return 0, errors.New("statx gave no mount id")
	}
	// thread-self: a thread may have a mount namespace of its own.
	b, err := os.ReadFile("/proc/thread-self/mountinfo")
	if err != nil {
		return 0, err
	}
	return mountinfoDev(b, stx.Mnt_id)
}

// mountinfoDev returns the device (the kernel's encoding) of mount id in
// the text of a /proc/PID/mountinfo, whose lines begin
//
//	ID PARENT-ID MAJOR:MINOR ROOT MOUNT-POINT ...
func mountinfoDev(mountinfo []byte, id uint64) (uint32, error) {
	want := strconv.FormatUint(id, 10)
	for line := range strings.Lines(string(mountinfo)) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != want {
			continue
		}
		major, minor, ok := strings.Cut(f[2], ":")
		ma, err1 := strconv.ParseUint(major, 10, 12)
		mi, err2 := strconv.ParseUint(minor, 10, 20)
		if !ok || err1 != nil || err2 != nil {
			return 0, fmt.Errorf("mount %d: device %q: %w", id, f[2], errMalformed)
		}
		return uint32(ma)<<20 | uint32(mi), nil
	}
	return 0, fmt.Errorf("mount %d not in mountinfo", id)
}

// UDPBound returns the bound, unconnected UDP sockets, as TCPListeners
// does TCP listeners.
func UDPBound(procRoot string) ([]Socket, error) {
	if procRoot == "/proc" {
		if socks, err := diagUDP(); err == nil {
			return socks, nil
		}
	}
	return readProcNet(procRoot, []string{"udp", "udp6"}, udpUnconnected)
}

const (
	tcpListen      = 0x0A // TCP_LISTEN in the st column of /proc/net/tcp
	udpUnconnected = 0x07 // TCP_CLOSE in /proc/net/udp: bound, not connected
)

var errMalformed = errors.New("malformed line")

// TCPListeners returns the TCP sockets in the LISTEN state. Under the
// real /proc it asks the kernel's sock_diag interface, which answers in tens
// of microseconds; elsewhere, or where sock_diag is missing, it parses
// procRoot/net/tcp and tcp6, which walks the kernel's whole hash table.
func TCPListeners(procRoot string) ([]Socket, error) {
	if procRoot == "/proc" {
		socks, err := DiagTCPListeners()
		if err == nil {
			return socks, nil
		}
	}
	return readProcNet(procRoot, []string{"tcp", "tcp6"}, tcpListen)
}

// readProcNet reads the sockets in state of the /proc/net tables names.
func readProcNet(procRoot string, names []string, state uint8) ([]Socket, error) {
	var all []Socket
	for _, name := range names {
		socks, err := readProcNetTCP(filepath.Join(procRoot, "net", name), state)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6 in this kernel
		}
		if err != nil {
			return nil, err
		}
		all = append(all, socks...)
	}
	return all, nil
}

// readProcNetTCP reads the sockets in state of one /proc/net/tcp-format
// file. Malformed lines are skipped: the file is read while the kernel
// changes it, and one bad line must not hide the others.
func readProcNetTCP(path string, state uint8) ([]Socket, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseProcNetTCP(f, state)
}

func parseProcNetTCP(r io.Reader, state uint8) ([]Socket, error) {
	var socks []Socket
	sc := bufio.NewScanner(r)
	first := true
	for sc.Scan() {
		if first { // the header
			first = false
			continue
		}
		s, st, err := parseProcNetLine(sc.Text())
		if err != nil || st != state {
			continue
		}
		socks = append(socks, s)
	}
	return socks, sc.Err()
}

// parseProcNetLine parses one entry of /proc/net/tcp or tcp6:
//
//	sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
//	0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 4711 ...
//
// It returns the socket and its state.
func parseProcNetLine(line string) (Socket, uint8, error) {
	f := strings.Fields(line)
	if len(f) < 10 || !strings.HasSuffix(f[0], ":") {
		return Socket{}, 0, errMalformed
	}
	addr, err := parseHexAddrPort(f[1])
	if err != nil {
		return Socket{}, 0, err
	}
	state, err := strconv.ParseUint(f[3], 16, 8)
	if err != nil {
		return Socket{}, 0, fmt.Errorf("state %q: %w", f[3], errMalformed)
	}
	uid, err := strconv.ParseUint(f[7], 10, 32)
	if err != nil {
		return Socket{}, 0, fmt.Errorf("uid %q: %w", f[7], errMalformed)
	}
	inode, err := strconv.ParseUint(f[9], 10, 64)
	if err != nil {
		return Socket{}, 0, fmt.Errorf("inode %q: %w", f[9], errMalformed)
	}
	return Socket{Inode: inode, Addr: addr, UID: uint32(uid)}, uint8(state), nil
}

// parseHexAddrPort reads "0100007F:1F90": the address as the kernel prints
// its 32-bit words (host byte order, hex), the port as a hex number.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok || (len(hexAddr) != 8 && len(hexAddr) != 32) || len(hexPort) != 4 {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, errMalformed)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, errMalformed)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", s, errMalformed)
	}
	// Each 32-bit word was printed as a number in host order: put its bytes
	// back in memory order.
	var b [16]byte
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	var addr netip.Addr
	if len(raw) == 4 {
		addr = netip.AddrFrom4([4]byte(b[:4]))
	} else {
		addr = netip.AddrFrom16(b).Unmap()
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
