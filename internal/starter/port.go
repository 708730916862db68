package starter

// start_server's --port syntax, and the fds the ports are passed at.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// A Port is one start_server --port: "8100", "host:8100",
// "[v6]:8100", each with an optional "=FD" and a "u" before the port for
// UDP.
type Port struct {
	Host string // "" for a bare port: 0.0.0.0, as start_server binds it
	Port string
	FD   int // -1: none asked for
	UDP  bool
	Name string // as SERVER_STARTER_PORT names it
}

// MaxFD is the highest fd a socket may be passed at: a process passes the
// fds below it too, so an fd of 2000000000 would have takeover allocate
// for two billion of them.
const MaxFD = 65535

// ParsePort reads a --port the way start_server's patterns do.
func ParsePort(s string) (Port, error) {
	a := Port{FD: -1}
	bad := fmt.Errorf("--port %q: want PORT, HOST:PORT or [IPV6]:PORT (uPORT for UDP), each with an optional =FD", s)
	rest := strings.TrimSpace(s)
	if i := strings.LastIndexByte(rest, '='); i >= 0 {
		fd, err := strconv.Atoi(strings.TrimSpace(rest[i+1:]))
		if err != nil || fd < 0 || strings.ContainsAny(rest[i+1:], "+-") {
			return a, bad
		}
		if fd > MaxFD {
			return a, fmt.Errorf("--port %q: fd %d: want an fd from 0 to %d", s, fd, MaxFD)
		}
		a.FD, rest = fd, strings.TrimSpace(rest[:i])
	}
	v6 := false
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 || !strings.HasPrefix(strings.TrimLeft(rest[end+1:], " \t"), ":") {
			return a, bad
		}
		a.Host = strings.TrimSpace(rest[1:end])
		rest = strings.TrimLeft(rest[end+1:], " \t")[1:]
		v6 = true
	} else if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		a.Host, rest = strings.TrimSpace(rest[:i]), rest[i+1:]
		if a.Host == "" {
			return a, bad
		}
	}
	if strings.ContainsFunc(a.Host, badHostRune) {
		return a, bad // "=:0=0" would name itself "=:0", a port of fd ":0"
	}
	rest = strings.TrimSpace(rest)
	if after, ok := strings.CutPrefix(rest, "u"); ok {
		a.UDP, rest = true, after
	}
	if rest == "" || strings.Trim(rest, "0123456789") != "" || a.Host == "" && v6 {
		return a, bad
	}
	a.Port = rest
	switch {
	case a.Host == "":
		a.Name = a.Port
	case v6 || strings.Contains(a.Host, ":"):
		a.Name = "[" + a.Host + "]:" + a.Port
	default:
		a.Name = a.Host + ":" + a.Port
	}
	return a, nil
}

// badHostRune reports whether r has no place in a host name or address:
// '=' (it starts the fd), brackets (they enclose an IPv6 address), spaces
// and control characters.
func badHostRune(r rune) bool {
	return r == '=' || r == '[' || r == ']' || r <= ' ' || r == 0x7f
}

// Resolve is the address start_server binds for a: 0.0.0.0 for a bare
// port (IPv4 only), a host name's first IPv4 address (start_server's
// gethostbyname).
func (a Port) Resolve(ctx context.Context) (netip.Addr, error) {
	switch addr, err := netip.ParseAddr(a.Host); {
	case a.Host == "":
		return netip.IPv4Unspecified(), nil
	case err == nil && addr.Zone() == "":
		return addr.Unmap(), nil
	case strings.Contains(a.Host, ":"):
		return netip.Addr{}, fmt.Errorf("%q is not an IPv6 address", a.Host)
	default:
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", a.Host)
		if err != nil || len(addrs) == 0 {
			return netip.Addr{}, fmt.Errorf("failed to resolve host %s: %v", a.Host, err)
		}
		return addrs[0].Unmap(), nil
	}
}

// AssignFDs gives each --port its fd: the one it asks for, else the lowest
// free one from 3.
func AssignFDs(args []Port) ([]int, error) {
	used := make(map[int]string)
	for _, a := range args {
		if a.FD < 0 {
			continue
		}
		if other, ok := used[a.FD]; ok {
			return nil, fmt.Errorf("--port %s and --port %s both ask for fd %d", other, a.Name, a.FD)
		}
		used[a.FD] = a.Name
	}
	fds := make([]int, len(args))
	next := 3
	for i, a := range args {
		if a.FD >= 0 {
			fds[i] = a.FD
			continue
		}
		for used[next] != "" {
			next++
		}
		fds[i], used[next] = next, a.Name
	}
	return fds, nil
}
