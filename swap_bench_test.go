package main

import (
	"context"
	"regexp"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/load"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/testutil"
)

// BenchmarkSwap replaces a server 25 times under a concurrent request loop
// and reports the refused window per swap as the clients saw it (median and
// max) and as takeover logged it:
//
//	go test -run '^$' -bench Swap -benchtime 1x
//
// rebind-busy-port first serves the load for 3 s, which leaves ~14,000
// TIME_WAIT sockets on the port (13,817 counted with ss once), and every
// bind(2) and listen(2) on the port walks them (a port that has served for
// a while).
func BenchmarkSwap(b *testing.B) {
	for _, bb := range []struct {
		name, strategy string
		warm           time.Duration
	}{
		{"rebind", "rebind", 0},
		{"rebind-busy-port", "rebind", 3 * time.Second},
		{"handoff", "handoff", 0},
	} {
		b.Run(bb.name, func(b *testing.B) {
			for b.Loop() {
				benchSwaps(b, bb.strategy, 25, bb.warm)
			}
		})
	}
}

var windowRe = regexp.MustCompile(`refused_window=([0-9.]+[µmn]?s)`)

func benchSwaps(b *testing.B, strategy string, swaps int, warm time.Duration) {
	port := testutil.FreePort(b)
	addr := "127.0.0.1:" + port
	start := func() *demoRun { return startBench(b, strategy, addr) }
	cur := start()
	if err := waitHTTP(addr, 5*time.Second); err != nil {
		b.Fatalf("%v; takeover's stderr:\n%s", err, cur.stderr.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	loaded := make(chan *load.Result, 1)
	go func() { loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: 2}) }()
	time.Sleep(warm)
	bounds := []time.Time{time.Now()}
	var runs []*demoRun // read once each has exited: a rebind's swap line comes after the old one is gone
	for range swaps {
		next := start()
		if err := cur.wait(60 * time.Second); err != nil {
			cancel()
			b.Fatal(err)
		}
		runs = append(runs, next)
		cur = next
		bounds = append(bounds, time.Now())
	}
	time.Sleep(50 * time.Millisecond)
	cancel()
	r := <-loaded
	bounds[len(bounds)-1] = time.Now()
	ws := r.WindowsIn(bounds)
	slices.Sort(ws)
	b.ReportMetric(float64(swaps), "swaps")
	b.ReportMetric(float64(r.FailedRequests()), "failed")
	b.ReportMetric(float64(r.Refused), "refused")
	b.ReportMetric(supervise.Ms(load.Percentile(ws, 50)), "refused-median-ms")
	b.ReportMetric(supervise.Ms(load.Percentile(ws, 100)), "refused-max-ms")
	cur.cmd.Process.Signal(syscall.SIGTERM)
	if err := cur.wait(30 * time.Second); err != nil {
		b.Error(err)
	}
	var logged []time.Duration
	for _, run := range runs {
		if m := windowRe.FindStringSubmatch(run.stderr.String()); m != nil {
			d, _ := time.ParseDuration(m[1])
			logged = append(logged, d)
		}
	}
	if len(logged) > 0 {
		b.ReportMetric(supervise.Ms(load.Percentile(logged, 50)), "takeover-window-median-ms")
		b.ReportMetric(supervise.Ms(load.Percentile(logged, 100)), "takeover-window-max-ms")
	}
}

// startBench starts the real takeover binary on the built-in server.
func startBench(b *testing.B, strategy, addr string) *demoRun {
	d := demo{self: takeoverBin(b), strategy: strategy}
	r, err := d.start(addr)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.cmd.Process.Signal(syscall.SIGTERM) })
	return r
}
