package swap

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var loopbacks = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}

// TestCanaryShares: a canary of 10 % sends 10 % of new connections to the
// new socket and the rest to the old one, within a binomial bound (4.5
// standard deviations: 10 ± 3 % of 2000), from ephemeral ports, which the
// kernel hands out near-sequentially, and from random ones; 50 % half of
// them; 0 and 100 % every one to one side. On IPv4 and IPv6.
func TestCanaryShares(t *testing.T) {
	for _, lo := range loopbacks {
		for _, tc := range []struct {
			percent, n int
			random     bool // bind each client to a random port
		}{
			{10, 2000, false}, {10, 2000, true},
			{50, 2000, false}, {50, 2000, true},
			{0, 300, false}, {100, 300, false},
		} {
			ports := "ephemeral"
			if tc.random {
				ports = "random"
			}
			t.Run(fmt.Sprintf("%v/%d%%/%s", lo, tc.percent, ports), func(t *testing.T) {
				old, nw, addr := groupOfTwo(t, lo)
				f := &Fence{addr: addr}
				if err := f.Joined(nw); err != nil {
					t.Fatal(err)
				}
				if err := f.Canary(nw, tc.percent); err != nil {
					t.Fatalf("Canary: %v", err)
				}
				onOld, onNew := spread(t, addr, tc.n, tc.random, old, nw)
				p := float64(tc.percent) / 100
				share := float64(onNew) / float64(tc.n)
				bound := 4.5 * math.Sqrt(p*(1-p)/float64(tc.n))
				t.Logf("%d of %d connections (%.2f %%) reached the new socket, %d the old one; want %d ± %.2f %%",
					onNew, tc.n, 100*share, onOld, tc.percent, 100*bound)
				if onOld+onNew != tc.n || math.Abs(share-p) > bound {
					t.Errorf("a canary of %d %%: the new socket accepted %d connections and the old one %d, of %d",
						tc.percent, onNew, onOld, tc.n)
				}
			})
		}
	}
}

// spread makes n connections to addr, from ephemeral ports or from random
// ones, and returns how many the old and the new socket accepted.
func spread(t *testing.T, addr netip.AddrPort, n int, random bool, old, nw int) (onOld, onNew int) {
	t.Helper()
	const batch = 100 // within the listeners' backlog
	for made := 0; made < n; {
		var cs []net.Conn
		for len(cs) < min(batch, n-made) {
			d := net.Dialer{Timeout: 5 * time.Second}
			if random {
				d.LocalAddr = &net.TCPAddr{IP: addr.Addr().AsSlice(), Port: 1024 + rand.IntN(65536-1024)}
			}
			c, err := d.Dial("tcp", addr.String())
			if random && errors.Is(err, unix.EADDRINUSE) {
				continue // a port in use: another
			}
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		waitAccepting(t, len(cs), old, nw)
		a, b := acceptAll(t, old), acceptAll(t, nw)
		onOld, onNew = onOld+len(a), onNew+len(b)
		closeFDs(a)
		closeFDs(b)
		for _, c := range cs {
			c.Close()
		}
		made += len(cs)
	}
	return onOld, onNew
}

// waitAccepting waits until the accept queues of fds hold n connections
// between them.
func waitAccepting(t *testing.T, n int, fds ...int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		queued := 0
		for _, fd := range fds {
			info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
			if err != nil {
				t.Fatal(err)
			}
			queued += int(info.Unacked) // a listener's tcpi_unacked is its accept queue
		}
		if queued >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the accept queues hold %d connections after 10s, want %d", queued, n)
		}
	}
}

// TestCanaryKeepsCheck: under a canary of 10 %, the connection of each of
// 8 checks (which the hash alone would send to the new socket once in 10)
// reaches the new socket, with SteerCheck before or after Canary; after
// EndCheck the canary holds: connections reach both sockets. On IPv4 and
// IPv6.
func TestCanaryKeepsCheck(t *testing.T) {
	for _, lo := range loopbacks {
		t.Run(lo.String(), func(t *testing.T) {
			old, nw, addr := groupOfTwo(t, lo)
			f := &Fence{addr: addr}
			if err := f.Joined(nw); err != nil {
				t.Fatal(err)
			}
			var checks []int // their ports
			for i := range 8 {
				if i%2 == 0 {
					if err := f.Canary(nw, 10); err != nil {
						t.Fatal(err)
					}
				}
				from := checkSource(t, lo)
				if err := f.SteerCheck(nw, from); err != nil {
					t.Fatal(err)
				}
				if i%2 == 1 {
					if err := f.Canary(nw, 10); err != nil {
						t.Fatal(err)
					}
				}
				d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: net.TCPAddrFromAddrPort(from)}
				c, err := d.Dial("tcp", addr.String())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if err := f.EndCheck(nw); err != nil {
					t.Fatal(err)
				}
				checks = append(checks, int(from.Port()))
			}
			waitAccepting(t, len(checks), old, nw)
			onOld, onNew := acceptAll(t, old), acceptAll(t, nw)
			defer closeFDs(onOld)
			defer closeFDs(onNew)
			var reached []int
			for _, fd := range onNew {
				peer, _ := unix.Getpeername(fd)
				reached = append(reached, portOf(peer))
			}
			slices.Sort(checks)
			slices.Sort(reached)
			if len(onOld) != 0 || !slices.Equal(reached, checks) {
				t.Fatalf("the checks' connections, from ports %v: the new socket accepted those from %v, and the old one %d", checks, reached, len(onOld))
			}
			if nOld, nNew := spread(t, addr, 300, false, old, nw); nOld == 0 || nNew == 0 {
				t.Errorf("after the checks, of 300 connections the old socket accepted %d and the new one %d; want a canary's share", nOld, nNew)
			}
		})
	}
}

// TestCanaryEnds: a share out of 0 to 100 is refused and leaves the canary
// as it was; Lower ends a canary, and a check after it (SteerCheck,
// EndCheck) does not bring it back; once the old server is gone a canary
// is refused.
func TestCanaryEnds(t *testing.T) {
	old, nw, addr := groupOfTwo(t, loopbacks[0])
	f := &Fence{addr: addr}
	if err := f.Joined(nw); err != nil {
		t.Fatal(err)
	}
	if err := f.Canary(nw, 50); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int{-1, 101} {
		if err := f.Canary(nw, bad); err == nil {
			t.Errorf("Canary(%d) = nil, want an error", bad)
		}
	}
	if nOld, nNew := spread(t, addr, 200, false, old, nw); nOld == 0 || nNew == 0 {
		t.Errorf("after refused shares, of 200 connections the old socket accepted %d and the new one %d; want the canary of 50 %% as it was", nOld, nNew)
	}
	if err := f.Lower(nw); err != nil {
		t.Fatal(err)
	}
	if err := f.SteerCheck(nw, checkSource(t, loopbacks[0])); err != nil {
		t.Fatal(err)
	}
	if err := f.EndCheck(nw); err != nil {
		t.Fatal(err)
	}
	if nOld, nNew := spread(t, addr, 200, false, old, nw); nNew != 0 {
		t.Errorf("lowered: of 200 connections the old socket accepted %d and the new one %d; want all on the old one", nOld, nNew)
	}
	f.OldGone(nw)
	if err := f.Canary(nw, 10); err == nil {
		t.Errorf("Canary(10) once the old server is gone = nil, want an error")
	}
}
