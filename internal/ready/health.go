package ready

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/takeover/takeover/internal/target"
)

// A Health check is --ready http://HOST:PORT/PATH: the generation is ready
// once it is as --ready accept says and a GET of the URL, reaching it (not
// the old server at the same port), answers 2xx.
type Health struct {
	URL  string
	Addr netip.AddrPort // where the check connects: HOST:PORT
	Spec target.Spec    // the TCP --port target it reaches
}

// Gated reports whether a health check follows the mode.
func (w Want) Gated() bool { return w.Health != nil || w.Exec != "" }

// IsHealthURL reports whether --ready's value is meant as a URL rather
// than a mode.
func IsHealthURL(s string) bool { return strings.Contains(s, "://") }

// ParseHealth reads --ready http://HOST:PORT/PATH. HOST is an IP address
// (or localhost, 127.0.0.1) on this host that reaches a TCP --port target
// at PORT: a loopback address where the target is every address, else the
// target's own address. Takeover sends nothing off the host, and a check
// that does not reach the target's socket could not be steered to the new
// server.
func ParseHealth(raw string, targets target.List) (Health, error) {
	return ParseHealthFlag("--ready", raw, targets)
}

// ParseHealthFlag is ParseHealth for the flag named flag (--ready, or
// --health: probation's check, which follows the same rules).
func ParseHealthFlag(flag, raw string, targets target.List) (Health, error) {
	bad := func(format string, a ...any) (Health, error) {
		return Health{}, fmt.Errorf("%s %s: "+format, append([]any{flag, raw}, a...)...)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return bad("not a URL: %v", err)
	case u.Scheme == "https":
		return bad("takeover checks over plain http only: the check stays on this host (loopback or the --port's own address), so TLS would protect nothing; give the server an http health port among its --port targets, or use --ready-exec")
	case u.Scheme != "http":
		return bad("want http://HOST:PORT/PATH (or accept, listen, notify, interval)")
	case u.Host == "" || u.Opaque != "":
		return bad("no HOST:PORT: want http://HOST:PORT/PATH, like http://127.0.0.1:8100/healthz")
	case u.User != nil:
		return bad("no user:password@ in the URL, please: it would be logged")
	}
	host := u.Hostname()
	if host == "localhost" {
		host = "127.0.0.1"
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || addr.Zone() != "" {
		return bad("HOST %q is not an IP address: name a loopback address (127.0.0.1, [::1]) or the --port's own address, as takeover resolves nothing and sends nothing off the host", u.Hostname())
	}
	addr = addr.Unmap()
	port := uint16(80)
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return bad("port %q: want 1 to 65535", p)
		}
		port = uint16(n)
	}
	var tcp []target.Spec
	for _, s := range targets {
		if s.Net == "" && s.Port == port {
			tcp = append(tcp, s)
		}
	}
	if len(tcp) == 0 {
		return bad("port %d is not a TCP --port target: the check must reach the socket takeover hands to the new server (add --port %d, or check with --ready-exec)", port, port)
	}
	for _, s := range tcp {
		if reaches(s.Addr, addr) {
			return Health{URL: u.String(), Addr: netip.AddrPortFrom(addr, port), Spec: s}, nil
		}
	}
	if !addr.IsLoopback() {
		return bad("HOST %v is neither a loopback address nor the address of --port %v: takeover sends its health checks nowhere off the host", addr, tcp[0])
	}
	return bad("HOST %v does not reach --port %v: use that target's address", addr, tcp[0])
}

// reaches reports whether a connection to addr reaches a socket bound to
// bound (the zero Addr: every address of both families).
func reaches(bound, addr netip.Addr) bool {
	bound = bound.Unmap()
	switch {
	case !bound.IsValid():
		return addr.IsLoopback()
	case bound.IsUnspecified() && bound.Is4():
		return addr.IsLoopback() && addr.Is4()
	case bound.IsUnspecified():
		return addr.IsLoopback() // [::]: dual-stack unless the server sets IPV6_V6ONLY
	}
	return bound == addr
}
