package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cenkalti/backoff/v4"
	"golang.org/x/sys/unix"
)

// A rebind is the fallback way to take a port over: stop the old holders,
// then bind the new server's socket as soon as the port frees. Clients see
// refused connections between the old listener's close and the new listen,
// and lose what waited in the old accept queue.
type rebind struct {
	Sock        int // takeover's copy of the new server's socket
	Addr        netip.AddrPort
	Old         []*oldProcess // the stop targets, signalled once
	Holders     []*oldProcess // every process holding the port: SIGKILLed after KillTimeout
	Signal      unix.Signal
	KillTimeout time.Duration
}

// rebindTimes says how a rebind went, for the swap's log line.
type rebindTimes struct {
	Free     time.Duration // from the stop signal until the bind succeeded
	LastBusy time.Time     // the last attempt that found the port still held
	Attempts int
	Killed   bool // the old holders were SIGKILLed
}

// retryPolicy starts at 50us and stays at or below 250us, so the port is
// taken within a quarter of a millisecond of freeing, at a cost of about
// four thousand cheap bind(2) calls a second while the old server drains.
func retryPolicy() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 50 * time.Microsecond
	b.Multiplier = 1.5
	b.RandomizationFactor = 0.1
	b.MaxInterval = 250 * time.Microsecond
	b.MaxElapsedTime = 0 // ctx bounds it: --bind-timeout
	b.Reset()
	return b
}

// run signals the old processes, then retries the bind until it succeeds,
// ctx ends (--bind-timeout) or bind fails for a reason other than the port
// being in use. On success the socket is already listening, with the widest
// backlog, so that clients queue from the first microsecond rather than wait
// for the new server's own listen(2), which re-sets the backlog.
func (r rebind) run(ctx context.Context) (rebindTimes, error) {
	var t rebindTimes
	// Without SO_REUSEADDR, connections of the old socket in TIME_WAIT keep
	// the port from being bound for a minute.
	if err := unix.SetsockoptInt(r.Sock, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return t, fmt.Errorf("set SO_REUSEADDR: %w", err)
	}
	start := time.Now()
	for _, p := range r.Old {
		if err := p.signal(r.Signal); err != nil && !errors.Is(err, unix.ESRCH) {
			return t, fmt.Errorf("signal pid %d: %w", p.PID, err)
		}
	}
	killAt := start.Add(r.KillTimeout)
	bind := func() error {
		t.Attempts++
		err := unix.Bind(r.Sock, sockaddrOf(r.Addr))
		if errors.Is(err, unix.EADDRINUSE) {
			t.LastBusy = time.Now()
			if !t.Killed && time.Now().After(killAt) {
				t.Killed = true
				for _, p := range r.Holders {
					p.signal(unix.SIGKILL)
				}
			}
			return err
		}
		if err != nil {
			return backoff.Permanent(err)
		}
		return nil
	}
	err := backoff.Retry(bind, backoff.WithContext(retryPolicy(), ctx))
	t.Free = time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			return t, fmt.Errorf("port %s still in use after %v: %w", r.Addr, t.Free.Round(time.Millisecond), unix.EADDRINUSE)
		}
		return t, err
	}
	if err := unix.Listen(r.Sock, unix.SOMAXCONN); err != nil {
		return t, fmt.Errorf("listen: %w", err)
	}
	return t, nil
}

// sockaddrOf converts an address for bind(2), keeping its family.
func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ap.Addr().Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}
