package systemd

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// Sockets systemd passes to takeover at its start (LISTEN_FDS, from fd 3):
// those of its file descriptor store, kept from an earlier takeover of the
// unit (fdstore.go), and those of socket units (ListenStream=,
// ListenDatagram=). Each that fits a --port or --path is held as a crashed
// generation's sockets are: the command's bind gets it, and nothing is
// refused while the command starts.

// A Passed is a socket systemd passed that fits a target.
type Passed struct {
	FD    int // close-on-exec, takeover's
	Inode uint64
	name  string // its LISTEN_FDNAMES name
	Spec  target.Spec
	Addr  netip.AddrPort // TCP and UDP
	Via   string         // "fd-store" (a name takeover stores under) or "listen-fds" (a socket unit, systemd-socket-activate)
}

// listenFDsStart is the first fd systemd passes (SD_LISTEN_FDS_START).
const listenFDsStart = 3

// passedAtStart are the fds LISTEN_FDS counted (LISTEN_PID this process)
// that were open when takeover started, before it opened anything of its
// own: the port lock, its sockets, and maybe the Go runtime's epoll fd
// (opened by the os package's init where stdin is non-blocking) could
// otherwise sit at fds that an overstated LISTEN_FDS counts. Only an fd
// that was a socket then, and is the same socket still, is ever taken or
// closed.
var passedAtStart = openAtStart(os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_PID"))

// An fdAtStart is what an fd LISTEN_FDS counted was at takeover's start.
type fdAtStart struct {
	dev, ino uint64
	socket   bool
}

// openAtStart fstats the fds LISTEN_FDS counts, when LISTEN_PID is this
// process: fd → what it was.
func openAtStart(count, pid string) map[int]fdAtStart {
	n, err := strconv.Atoi(count)
	if err != nil || n <= 0 || n > maxListenFDs || pid != strconv.Itoa(os.Getpid()) {
		return nil
	}
	open := make(map[int]fdAtStart)
	for fd := listenFDsStart; fd < listenFDsStart+n; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) == nil {
			open[fd] = fdAtStart{dev: st.Dev, ino: st.Ino, socket: st.Mode&unix.S_IFMT == unix.S_IFSOCK}
		}
	}
	return open
}

// maxListenFDs bounds LISTEN_FDS.
const maxListenFDs = 1024

// passedSocket reports whether fd is a socket that was passed: a socket at
// takeover's start (passedAtStart), the same one still. An fd that was
// open but not a socket is made close-on-exec (the command gets what it
// binds, never a stray fd), and is never closed: it may be the runtime's.
func passedSocket(fd int) (bool, error) {
	was, ok := passedAtStart[fd]
	if !ok {
		return false, fmt.Errorf("LISTEN_FDS counts fd %d, which was not open when takeover started: LISTEN_FDS overstates what was passed", fd)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Dev != was.dev || st.Ino != was.ino {
		return false, fmt.Errorf("fd %d is no longer the file passed at takeover's start", fd)
	}
	if !was.socket {
		unix.CloseOnExec(fd)
		return false, fmt.Errorf("fd %d is not a socket", fd)
	}
	return true, nil
}

// Inherit takes the sockets passed to this process as LISTEN_FDS
// that fit targets. The rest are closed, each with a warning that names
// it; but only sockets verified as passed (passedSocket) are ever taken or
// closed: an fd LISTEN_FDS counts that was not a socket at takeover's start
// is left open, whatever it is now (takeover's own, an overstated
// LISTEN_FDS). LISTEN_PID must be this process: otherwise the variables
// are for someone else and are left alone. The caller unsets LISTEN_* for
// the command either way.
func Inherit(log *slog.Logger, targets target.List, env func(string) string) []Passed {
	count, pid := env("LISTEN_FDS"), env("LISTEN_PID")
	if count == "" {
		return nil
	}
	if pid != strconv.Itoa(os.Getpid()) {
		log.Debug("LISTEN_FDS is not for this process; ignored", "listen_pid", pid, "pid", os.Getpid())
		return nil
	}
	n, err := strconv.Atoi(count)
	if err != nil || n < 0 || n > maxListenFDs {
		log.Warn("LISTEN_FDS is not a count of file descriptors; ignored", "listen_fds", count)
		return nil
	}
	names := strings.Split(env("LISTEN_FDNAMES"), ":")
	var got []Passed
	for i := range n {
		fd, name := listenFDsStart+i, ""
		if i < len(names) {
			name = names[i]
		}
		if ok, err := passedSocket(fd); !ok {
			log.Warn("an fd LISTEN_FDS counts is left alone", "fd", fd, "name", name, "err", err)
			continue
		}
		s, err := classifyPassed(fd, name, targets, got)
		if err != nil {
			log.Warn("a socket systemd passed is refused", "fd", fd, "name", name, "err", err)
			unix.Close(fd) // a socket passed to takeover, verified
			continue
		}
		log.Debug("holding a socket systemd passed", "fd", fd, "name", name, "target", s.Spec.String(), "via", s.Via)
		got = append(got, s)
	}
	return got
}

// classifyPassed says which target the passed fd is for, or why it is
// refused: not open, not a socket, of no target's kind or address, or the
// same socket as one already taken.
func classifyPassed(fd int, name string, targets target.List, taken []Passed) (Passed, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return Passed{}, fmt.Errorf("LISTEN_FDS counts fd %d, which is not open: %w", fd, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return Passed{}, fmt.Errorf("fd %d is not a socket", fd)
	}
	unix.CloseOnExec(fd) // the command gets what it binds, never a stray copy
	for _, t := range taken {
		if t.Inode == st.Ino {
			return Passed{}, fmt.Errorf("fd %d is the socket of fd %d again", fd, t.FD)
		}
	}
	kind, addr, path, err := PassedKind(fd)
	if err != nil {
		return Passed{}, fmt.Errorf("fd %d: %w", fd, err)
	}
	for _, spec := range targets {
		if passedFits(spec, kind, addr, path) {
			via := "listen-fds"
			if name == spec.StoreName() {
				via = "fd-store"
			}
			if hasSocketFor(taken, spec, addr) {
				return Passed{}, fmt.Errorf("fd %d (%s) is a second socket for %s", fd, kind, spec)
			}
			return Passed{FD: fd, Inode: st.Ino, name: name, Spec: spec, Addr: addr, Via: via}, nil
		}
	}
	return Passed{}, fmt.Errorf("fd %d (%s) fits no --port or --path of this takeover (%s)", fd, kind, targets.String())
}

// hasSocketFor reports whether a socket for spec at addr was taken already.
func hasSocketFor(taken []Passed, spec target.Spec, addr netip.AddrPort) bool {
	for _, t := range taken {
		if t.Spec == spec && t.Addr == addr {
			return true
		}
	}
	return false
}

// PassedKind describes a passed socket: "TCP 127.0.0.1:8100" (listening),
// "UDP [::]:8125", "unix /run/app.sock"; a stream socket that does not
// listen, and other kinds, are errors.
func PassedKind(fd int) (kind string, addr netip.AddrPort, path string, err error) {
	typ, err1 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	family, err2 := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	sa, err3 := unix.Getsockname(fd)
	if err1 != nil || err2 != nil || err3 != nil {
		return "", addr, "", fmt.Errorf("cannot read the socket's type and address")
	}
	if typ == unix.SOCK_STREAM {
		if v, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); v == 0 {
			return "", addr, "", fmt.Errorf("a %s stream socket that does not listen", target.FamilyName(family))
		}
	}
	switch {
	case family == unix.AF_UNIX && typ == unix.SOCK_STREAM:
		u, _ := sa.(*unix.SockaddrUnix)
		if u == nil || u.Name == "" || u.Name[0] == '@' {
			return "", addr, "", fmt.Errorf("a unix socket with no path")
		}
		return "unix " + u.Name, addr, u.Name, nil
	case (family == unix.AF_INET || family == unix.AF_INET6) && (typ == unix.SOCK_STREAM || typ == unix.SOCK_DGRAM):
		addr = target.AddrPortOf(sa)
		proto := "TCP"
		if typ == unix.SOCK_DGRAM {
			proto = "UDP"
		}
		return proto + " " + addr.String(), addr, "", nil
	}
	return "", addr, "", fmt.Errorf("a socket of family %s and type %d, which no target has", target.FamilyName(family), typ)
}

// passedFits reports whether a passed socket of kind at addr or path is
// one the target names.
func passedFits(spec target.Spec, kind string, addr netip.AddrPort, path string) bool {
	switch {
	case spec.Net == target.NetUnix:
		return path != "" && target.SamePathName(spec.Path, path)
	case spec.Net == target.NetUDP:
		return strings.HasPrefix(kind, "UDP ") && spec.Matches(addr)
	}
	return strings.HasPrefix(kind, "TCP ") && spec.Matches(addr)
}
