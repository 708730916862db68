package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// A portSpec names the listening sockets takeover manages: a port on one
// address, or on every address of both families when Addr is not valid.
type portSpec struct {
	Addr netip.Addr // the zero Addr means every address
	Port uint16
}

// parsePortSpec reads "8100", ":8100", "127.0.0.1:8100", "[::1]:8100" or
// "[::]:8100". Host names are refused: a name can resolve to several
// addresses, and the spec must say exactly which sockets may be replaced.
func parsePortSpec(s string) (portSpec, error) {
	if s == "" {
		return portSpec{}, fmt.Errorf("empty port spec: want PORT or ADDR:PORT, like 8100 or 127.0.0.1:8100")
	}
	host, portText := "", s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, portText = s[:i], s[i+1:]
		if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") {
			return portSpec{}, fmt.Errorf("port spec %q: unbalanced brackets", s)
		}
		if strings.HasPrefix(host, "[") {
			host = host[1 : len(host)-1]
		} else if strings.Contains(host, ":") {
			return portSpec{}, fmt.Errorf("port spec %q: an IPv6 address goes in brackets, like [::1]:8100", s)
		}
	}
	port, err := parsePort(portText)
	if err != nil {
		return portSpec{}, fmt.Errorf("port spec %q: %w", s, err)
	}
	spec := portSpec{Port: port}
	if host == "" {
		return spec, nil
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.Zone() != "" {
		return portSpec{}, fmt.Errorf("port spec %q: %q is not an IP address (host names and zones are not accepted)", s, host)
	}
	spec.Addr = addr.Unmap()
	return spec, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || s[0] == '+' {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("port 0 means any free port; name a fixed port from 1 to 65535")
	}
	return uint16(n), nil
}

func (p portSpec) String() string {
	if !p.Addr.IsValid() {
		return strconv.Itoa(int(p.Port))
	}
	return netip.AddrPortFrom(p.Addr, p.Port).String()
}

// matches reports whether a socket bound to ap is one the spec names. A
// wildcard spec names the wildcard of either family: Go, for one, binds
// "0.0.0.0:8100" as a dual-stack [::]:8100.
func (p portSpec) matches(ap netip.AddrPort) bool {
	if ap.Port() != p.Port {
		return false
	}
	a := ap.Addr().Unmap()
	if !p.Addr.IsValid() || a == p.Addr {
		return true
	}
	return p.Addr.IsUnspecified() && a.IsUnspecified()
}

// conflicts reports whether a listener bound to held keeps a bind to want
// from succeeding: the same port, and addresses that overlap. An IPv6
// wildcard is taken as dual-stack (the Linux default, net.ipv6.bindv6only=0).
func conflicts(want, held netip.AddrPort) bool {
	if want.Port() != held.Port() {
		return false
	}
	a, b := want.Addr().Unmap(), held.Addr().Unmap()
	if a == b {
		return true
	}
	if a.Is4() == b.Is4() {
		return a.IsUnspecified() || b.IsUnspecified()
	}
	// Different families overlap only through an IPv6 wildcard.
	return (a.Is6() && a.IsUnspecified()) || (b.Is6() && b.IsUnspecified())
}

// specList is a repeatable --port flag.
type specList []portSpec

func (l *specList) String() string {
	parts := make([]string, len(*l))
	for i, p := range *l {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

func (l *specList) Set(s string) error {
	p, err := parsePortSpec(s)
	if err != nil {
		return err
	}
	*l = append(*l, p)
	return nil
}

// match returns the first spec that names ap.
func (l specList) match(ap netip.AddrPort) (portSpec, bool) {
	for _, p := range l {
		if p.matches(ap) {
			return p, true
		}
	}
	return portSpec{}, false
}
