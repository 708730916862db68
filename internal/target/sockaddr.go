package target

import (
	"encoding/binary"
	"net/netip"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// SamePathName reports whether two absolute paths name the same entry:
// the same name in the same directory, symbolic links followed.
func SamePathName(a, b string) bool {
	if a == b {
		return true
	}
	if filepath.Base(a) != filepath.Base(b) {
		return false
	}
	da, err1 := filepath.EvalSymlinks(filepath.Dir(a))
	db, err2 := filepath.EvalSymlinks(filepath.Dir(b))
	return err1 == nil && err2 == nil && da == db
}

func FamilyName(f int) string {
	switch f {
	case unix.AF_INET:
		return "IPv4"
	case unix.AF_INET6:
		return "IPv6"
	case unix.AF_UNIX:
		return "unix"
	}
	return "family " + strconv.Itoa(f)
}

func AddrPortOf(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

func InodeOf(fd int) uint64 {
	var st unix.Stat_t
	unix.Fstat(fd, &st)
	return st.Ino
}

// ParseSockaddr reads a struct sockaddr_in or sockaddr_in6. ok is false for
// every other family, and for a length bind(2) itself would refuse.
func ParseSockaddr(b []byte) (ap netip.AddrPort, family int, ok bool) {
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

// SockaddrOf converts an address for bind(2), keeping its family.
func SockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
