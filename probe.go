package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/supervise"
)

// runProbe implements `takeover probe`: the load and probe program of
// scripts/bench.sh and scripts/stress.sh. It sends HTTP/1.0 requests, one
// connection each, for --duration, and prints what it saw as JSON.
func runProbe(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("takeover probe", "usage: takeover probe --addr HOST:PORT [--duration D] [--workers N] [--pause D] [--timeout D] [--timeline FILE]\n\nHTTP/1.0 load, a connection per request, printed as JSON.\n")
	addr := fs.String("addr", "", "HOST:PORT to load (loopback only)")
	duration := fs.Duration("duration", 10*time.Second, "how long to run (up to 1h)")
	workers := fs.Int("workers", 2, "concurrent clients (1 to 256)")
	timeline := fs.String("timeline", "", "write one line per request: seconds, latency ms, outcome")
	pause := fs.Duration("pause", 0, "wait this long between one client's requests (up to 1s): a lighter load")
	timeout := fs.Duration("timeout", 5*time.Second, "count a request that takes longer as timed out (up to 1m; ab's is 30s)")
	if ok, code := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	host, _, err := net.SplitHostPort(*addr)
	ip := net.ParseIP(host)
	switch {
	case err != nil || ip == nil || !ip.IsLoopback():
		fmt.Fprintf(stderr, "takeover probe: --addr %q: want a loopback HOST:PORT, like 127.0.0.1:8100\n", *addr)
		return exitUsage
	case *duration <= 0 || *duration > time.Hour:
		fmt.Fprintf(stderr, "takeover probe: --duration %v: want more than 0, at most 1h\n", *duration)
		return exitUsage
	case *workers < 1 || *workers > 256:
		fmt.Fprintf(stderr, "takeover probe: --workers %d: want 1 to 256\n", *workers)
		return exitUsage
	case *pause < 0 || *pause > time.Second:
		fmt.Fprintf(stderr, "takeover probe: --pause %v: want 0 to 1s\n", *pause)
		return exitUsage
	case *timeout <= 0 || *timeout > time.Minute:
		fmt.Fprintf(stderr, "takeover probe: --timeout %v: want more than 0, at most 1m\n", *timeout)
		return exitUsage
	}
	// SIGINT or SIGTERM ends the run early, with the results printed.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *duration)
	defer cancel()
	start := time.Now()
	r := load.Run(ctx, load.Config{Addr: *addr, Workers: *workers, Pause: *pause, Timeout: *timeout})
	if *timeline != "" {
		if err := r.WriteTimeline(*timeline, start); err != nil {
			fmt.Fprintf(stderr, "takeover probe: %v\n", err)
			return exitFailure
		}
	}
	out := map[string]any{
		"requests": r.Requests, "failed": r.FailedRequests(), "refused": r.Refused, "resets": r.Resets,
		"timeouts": r.Timeouts, "other": r.Failed,
		"longest_refused_ms": supervise.Ms(r.LongestRefused()),
		"p50_ms":             supervise.Ms(load.Percentile(r.Latencies, 50)),
		"p99_ms":             supervise.Ms(load.Percentile(r.Latencies, 99)),
		"max_ms":             supervise.Ms(load.Percentile(r.Latencies, 100)),
		"other_errors":       otherErrors(r, 5),
	}
	json.NewEncoder(stdout).Encode(out)
	return 0
}

// otherErrors returns what the clients saw of up to n failures that were
// not refused, reset nor timed out: the first of each kind of error.
func otherErrors(r *load.Result, n int) []string {
	var errs []string
	for _, f := range r.Failures {
		if f.Kind != "refused" && f.Kind != "reset" && f.Kind != "timeout" && !slices.Contains(errs, f.Err) && len(errs) < n {
			errs = append(errs, f.Err)
		}
	}
	return errs
}
