package main

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

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

// threadStatus holds the fields takeover needs from /proc/PID/status: the
// thread group (process) id, the real uid and the effective capabilities.
type threadStatus struct {
	Tgid   int
	UID    int
	CapEff uint64
	// What the thread's new files get (fileOwner): its filesystem ids,
	// groups and umask, where the kernel says them.
	files              fileOwner
	hasFSIDs, hasUmask bool
}

// fileOwner returns what a file the thread made would get.
func (st threadStatus) fileOwner() (fileOwner, error) {
	if !st.hasFSIDs || !st.hasUmask {
		return fileOwner{}, fmt.Errorf("status without the filesystem ids or the umask: %w", errMalformed)
	}
	return st.files, nil
}

// readStatus reads procRoot/PID/status; PID may be a thread's id.
func readStatus(procRoot string, pid int) (threadStatus, error) {
	b, err := os.ReadFile(procRoot + "/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return threadStatus{}, err
	}
	return parseThreadStatus(string(b))
}

// parseThreadStatus reads Tgid, the real Uid and CapEff, which it needs,
// and the fourth (filesystem) ids of Uid and Gid, Groups and Umask, which
// only a unix target's bind needs.
func parseThreadStatus(s string) (threadStatus, error) {
	st := threadStatus{files: fileOwner{Groups: []int{}}}
	var seen int
	fsIDs := 0
	for _, line := range strings.Split(s, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			continue
		}
		var err error
		switch key {
		case "Tgid":
			st.Tgid, err = strconv.Atoi(f[0])
			seen |= 1
		case "Uid":
			st.UID, err = strconv.Atoi(f[0])
			seen |= 2
			if err == nil && len(f) == 4 {
				st.files.UID, err = strconv.Atoi(f[3])
				fsIDs++
			}
		case "Gid":
			if len(f) == 4 {
				st.files.GID, err = strconv.Atoi(f[3])
				fsIDs++
			}
		case "Groups":
			for _, g := range f {
				var n int
				if n, err = strconv.Atoi(g); err != nil {
					break
				}
				st.files.Groups = append(st.files.Groups, n)
			}
		case "Umask":
			var m uint64
			m, err = strconv.ParseUint(f[0], 8, 32)
			st.files.Umask, st.hasUmask = uint32(m), true
		case "CapEff":
			st.CapEff, err = strconv.ParseUint(f[0], 16, 64)
			seen |= 4
		}
		if err != nil {
			return threadStatus{}, fmt.Errorf("status %s: %w", key, errMalformed)
		}
	}
	if seen != 7 || st.Tgid <= 0 {
		return threadStatus{}, fmt.Errorf("status: %w", errMalformed)
	}
	st.hasFSIDs = fsIDs == 2
	return st, nil
}
