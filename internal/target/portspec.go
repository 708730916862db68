// Package target names what takeover manages: a TCP or UDP port on one
// address or on every address (a port spec, --port), or a unix stream
// socket's path (--path); and how the kernel decides that two binds of a
// port conflict (Conflicts), with the socket-address helpers every layer
// above shares.
package target

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// A Spec names a target: the listening sockets takeover manages. A
// TCP or UDP port on one address, or on every address of both families
// when Addr is not valid; or a unix stream socket's path.
type Spec struct {
	Net  string     // "" for TCP, netUDP, or netUnix
	Addr netip.Addr // the zero Addr means every address
	Port uint16
	Path string // netUnix only: absolute and clean
}

const (
	NetUDP  = "udp"
	NetUnix = "unix"
)

// Parse reads "8100", ":8100", "127.0.0.1:8100", "[::1]:8100" or
// "[::]:8100", each for TCP, or with "udp:" before it for UDP ("tcp:" is
// allowed too). Host names are refused: a name can resolve to several
// addresses, and the spec must say exactly which sockets may be replaced.
func Parse(s string) (Spec, error) {
	network := ""
	if rest, ok := strings.CutPrefix(s, "udp:"); ok {
		network, s = NetUDP, rest
	} else if rest, ok := strings.CutPrefix(s, "tcp:"); ok {
		s = rest
	}
	if strings.HasPrefix(s, "unix:") || strings.HasPrefix(s, "/") {
		return Spec{}, fmt.Errorf("port spec %q: a unix socket is named with --path, like --path /run/app.sock", s)
	}
	spec, err := parseAddrPort(s)
	spec.Net = network
	return spec, err
}

// ParsePath reads a --path: a unix socket's path, made absolute
// against the working directory.
func ParsePath(s string) (Spec, error) {
	if s == "" {
		return Spec{}, fmt.Errorf("empty --path: want the path of a unix socket, like /run/app.sock")
	}
	abs, err := filepath.Abs(s)
	if err != nil {
		return Spec{}, fmt.Errorf("--path %q: %w", s, err)
	}
	if len(abs) >= 108 { // sizeof(sun_path), with its NUL
		return Spec{}, fmt.Errorf("--path %q: %d bytes, longer than a unix socket's path may be (107)", s, len(abs))
	}
	return Spec{Net: NetUnix, Path: abs}, nil
}

func parseAddrPort(s string) (Spec, error) {
	if s == "" {
		return Spec{}, fmt.Errorf("empty port spec: want PORT or ADDR:PORT, like 8100 or 127.0.0.1:8100")
	}
	host, portText := "", s
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, portText = s[:i], s[i+1:]
		if strings.HasPrefix(host, "[") != strings.HasSuffix(host, "]") {
			return Spec{}, fmt.Errorf("port spec %q: unbalanced brackets", s)
		}
		if strings.HasPrefix(host, "[") {
			host = host[1 : len(host)-1]
		} else if strings.Contains(host, ":") {
			return Spec{}, fmt.Errorf("port spec %q: an IPv6 address goes in brackets, like [::1]:8100", s)
		}
	}
	port, err := ParsePort(portText)
	if err != nil {
		return Spec{}, fmt.Errorf("port spec %q: %w", s, err)
	}
	spec := Spec{Port: port}
	if host == "" {
		return spec, nil
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.Zone() != "" {
		return Spec{}, fmt.Errorf("port spec %q: %q is not an IP address (host names and zones are not accepted)", s, host)
	}
	spec.Addr = addr.Unmap()
	return spec, nil
}

func ParsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || s[0] == '+' {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("port 0 means any free port; name a fixed port from 1 to 65535")
	}
	return uint16(n), nil
}

func (p Spec) String() string {
	switch {
	case p.Net == NetUnix:
		return "unix:" + p.Path
	case p.Net != "":
		return p.Net + ":" + p.ipString()
	}
	return p.ipString()
}

func (p Spec) ipString() string {
	if !p.Addr.IsValid() {
		return strconv.Itoa(int(p.Port))
	}
	return netip.AddrPortFrom(p.Addr, p.Port).String()
}

// Describe names the target in a sentence: "port 8100", "UDP port 5353",
// "unix socket /run/app.sock".
func (p Spec) Describe() string {
	switch p.Net {
	case NetUnix:
		return "unix socket " + p.Path
	case NetUDP:
		return "UDP port " + p.ipString()
	}
	return "port " + p.ipString()
}

// BoundAt names a socket of the target bound to ap (unused for a path):
// "127.0.0.1:8100", "udp:[::]:5353", "unix:/run/app.sock".
func (p Spec) BoundAt(ap netip.AddrPort) string {
	switch p.Net {
	case NetUnix:
		return p.String()
	case NetUDP:
		return "udp:" + ap.String()
	}
	return ap.String()
}

// FdName is the target's name in LISTEN_FDNAMES: "tcp-8100", "udp-5353",
// "unix-app.sock".
func (p Spec) FdName() string {
	switch p.Net {
	case NetUnix:
		return "unix-" + filepath.Base(p.Path)
	case NetUDP:
		return "udp-" + strconv.Itoa(int(p.Port))
	}
	return "tcp-" + strconv.Itoa(int(p.Port))
}

// StoreName is the target's name in systemd's file descriptor store
// (FDNAME=): "tcp-8100", "tcp-127.0.0.1-8100", "udp-8125",
// "unix-/run/app.sock". systemd refuses ':' in a name.
func (p Spec) StoreName() string {
	if p.Net == NetUnix {
		return "unix-" + p.Path
	}
	proto := "tcp-"
	if p.Net == NetUDP {
		proto = "udp-"
	}
	return proto + strings.NewReplacer("[", "", "]", "", ":", "-").Replace(p.ipString())
}

// StarterName is the target's name in SERVER_STARTER_PORT, as start_server
// writes it: "8100", "127.0.0.1:8100", "[::1]:8100", a UDP port the same
// (start_server drops its "u"), a path as it is.
func (p Spec) StarterName() string {
	if p.Net == NetUnix {
		return p.Path
	}
	return p.ipString()
}

// Key names the target's lock and record in the run directory: all
// addresses of one port share them, as they can conflict.
func (p Spec) Key() string {
	switch p.Net {
	case NetUnix:
		sum := sha256.Sum256([]byte(p.Path))
		return "unix-" + hex.EncodeToString(sum[:8])
	case NetUDP:
		return "udp-" + strconv.Itoa(int(p.Port))
	}
	return "port-" + strconv.Itoa(int(p.Port))
}

// WholePort is the spec for every address of the target's port (a unix
// target is its own): every socket there can conflict with a bind to it.
func (p Spec) WholePort() Spec {
	if p.Net == NetUnix {
		return p
	}
	return Spec{Net: p.Net, Port: p.Port}
}

// SockType is the socket type the target's sockets have.
func (p Spec) SockType() int {
	if p.Net == NetUDP {
		return syscall.SOCK_DGRAM
	}
	return syscall.SOCK_STREAM
}

// Matches reports whether a socket bound to ap is one the spec names. A
// wildcard spec names the wildcard of either family: Go, for one, binds
// "0.0.0.0:8100" as a dual-stack [::]:8100.
func (p Spec) Matches(ap netip.AddrPort) bool {
	if p.Net == NetUnix || ap.Port() != p.Port {
		return false
	}
	a := ap.Addr().Unmap()
	if !p.Addr.IsValid() || a == p.Addr {
		return true
	}
	return p.Addr.IsUnspecified() && a.IsUnspecified()
}

// An InetBind is where an IP socket is bound, all a bind conflict depends
// on: its address and port, and its IPV6_V6ONLY (which matters for the
// IPv6 wildcard alone).
type InetBind struct {
	Addr   netip.AddrPort
	V6Only bool
}

// Conflicts reports whether a listener bound at held keeps a bind at want
// from succeeding, as the kernel decides it (inet_rcv_saddr_equal): the
// same port, and an address of the same family on each side where one of
// the two is that family's wildcard or both are the same. An IPv4 address,
// or a v4-mapped one on an IPv6 socket, is of IPv4; an IPv6 address is of
// IPv6; the IPv6 wildcard [::] is of both unless it is IPv6-only. So
// nginx's `listen 80; listen [::]:80;` (the second IPv6-only) is two
// sockets on one port that do not conflict.
func Conflicts(want, held InetBind) bool {
	if want.Addr.Port() != held.Addr.Port() {
		return false
	}
	w4, w6 := want.families()
	h4, h6 := held.families()
	return overlap(w4, h4) || overlap(w6, h6)
}

// families returns the IPv4 and the IPv6 address b takes: the zero Addr
// for a family it leaves free.
func (b InetBind) families() (v4, v6 netip.Addr) {
	a := b.Addr.Addr().Unmap()
	switch {
	case a.Is4():
		return a, netip.Addr{}
	case a.IsUnspecified() && !b.V6Only:
		return netip.IPv4Unspecified(), a
	}
	return netip.Addr{}, a
}

// overlap reports whether two addresses of one family take a common one.
func overlap(a, b netip.Addr) bool {
	return a.IsValid() && b.IsValid() && (a == b || a.IsUnspecified() || b.IsUnspecified())
}

// List is a repeatable --port flag.
type List []Spec

func (l *List) String() string {
	parts := make([]string, len(*l))
	for i, p := range *l {
		parts[i] = p.String()
	}
	return strings.Join(parts, ",")
}

func (l *List) Set(s string) error {
	p, err := Parse(s)
	if err != nil {
		return err
	}
	*l = append(*l, p)
	return nil
}

// PathFlag is the repeatable --path flag: it adds unix targets to the
// same list as --port, so that their order is the order given.
// PathFlag is a flag.Value that adds each --path given to a list.
type PathFlag struct{ List *List }

func (f PathFlag) String() string {
	if f.List == nil {
		return ""
	}
	return f.List.String()
}

func (f PathFlag) Set(s string) error {
	p, err := ParsePath(s)
	if err != nil {
		return err
	}
	*f.List = append(*f.List, p)
	return nil
}

// Match returns the first spec of network netw ("" or netUDP) that names ap.
func (l List) Match(netw string, ap netip.AddrPort) (Spec, bool) {
	for _, p := range l {
		if p.Net == netw && p.Matches(ap) {
			return p, true
		}
	}
	return Spec{}, false
}
