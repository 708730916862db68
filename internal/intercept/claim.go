package intercept

import (
	"errors"
	"fmt"

	"github.com/takeover/takeover/internal/pidfd"

	"github.com/takeover/takeover/internal/procfs"
	"golang.org/x/sys/unix"
)

// takeover needs its own copy of every socket the command binds to a
// target: it binds it, hands it to the next generation, and tells when it
// listens. The exact copy comes from pidfd_getfd, which a container's
// default seccomp profile (without CAP_SYS_PTRACE) and Yama can forbid.
// Then takeover makes the socket itself, as the command asked for it, and
// installs it at the command's fd in place of the command's own.

// errNotTarget means the command's socket is of a type no target has.
var errNotTarget = errors.New("not a socket type takeover manages")

// claimSocket returns takeover's socket for the command's fd if it is of
// socket type typ: a copy of the command's own, or, where copying is not
// allowed, a new one made like it (made is true: the caller must install
// it in the command). pfd is process tgid's, which the copy goes through.
func (g *trap) claimSocket(pfd, tgid, fd, typ int) (sock int, made bool, err error) {
	sock, _, err = pidfd.CopySocketFrom(pfd, tgid, fd)
	if err == nil {
		if t, _ := unix.GetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_TYPE); t != typ {
			unix.Close(sock)
			return -1, false, errNotTarget
		}
		return sock, false, nil
	}
	if !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.ENOSYS) {
		return -1, false, err
	}
	copyErr := err
	sock, err = socketLike("/proc", tgid, fd, typ)
	if err != nil {
		return -1, false, err
	}
	g.MadeOnce.Do(func() {
		g.Log.Warn("cannot copy the command's sockets; takeover makes them and installs them in the command: options it set before bind(2) (SO_REUSEPORT, IPV6_V6ONLY, buffer sizes) are not kept; "+pidfd.PtraceAdvice,
			"err", copyErr)
	})
	return sock, true, nil
}

// socketLike makes a socket of the protocol and family of the command's
// fd, if it is of type typ, non-blocking if it was, with SO_REUSEADDR (what
// servers set; a rebind past TIME_WAIT needs it) and the kernel's
// IPV6_V6ONLY default. All of it is read without ptrace rights: the
// protocol from the socket's system.sockprotoname attribute, the flags
// from fdinfo.
func socketLike(proc procfs.FS, tgid, fd, typ int) (int, error) {
	name, err := proc.SocketProtocol(tgid, fd)
	if err != nil {
		return -1, fmt.Errorf("read the protocol of fd %d of pid %d: %w", fd, tgid, err)
	}
	family, protoType, proto, ok := socketProto(name)
	if !ok || protoType != typ {
		return -1, errNotTarget
	}
	flags, err := proc.FDFlags(tgid, fd)
	if err != nil {
		return -1, err
	}
	typ |= unix.SOCK_CLOEXEC
	if flags&unix.O_NONBLOCK != 0 {
		typ |= unix.SOCK_NONBLOCK
	}
	sock, err := unix.Socket(family, typ, proto)
	if err != nil {
		return -1, fmt.Errorf("make a socket like fd %d of pid %d: %w", fd, tgid, err)
	}
	if err := unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(sock)
		return -1, err
	}
	return sock, nil
}

// socketProto maps a socket's protocol name to its family, type and
// protocol number; ok is false for all but TCP, MPTCP, UDP and unix
// stream sockets.
func socketProto(name string) (family, typ, proto int, ok bool) {
	switch name {
	case "TCP":
		return unix.AF_INET, unix.SOCK_STREAM, 0, true
	case "TCPv6":
		return unix.AF_INET6, unix.SOCK_STREAM, 0, true
	case "MPTCP":
		return unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_MPTCP, true
	case "MPTCPv6":
		return unix.AF_INET6, unix.SOCK_STREAM, unix.IPPROTO_MPTCP, true
	case "UDP":
		return unix.AF_INET, unix.SOCK_DGRAM, 0, true
	case "UDPv6":
		return unix.AF_INET6, unix.SOCK_DGRAM, 0, true
	case "UNIX-STREAM": // (before Linux 5.15, "UNIX" for every type: not told apart)
		return unix.AF_UNIX, unix.SOCK_STREAM, 0, true
	}
	return 0, 0, 0, false
}
