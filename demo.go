package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/load"
)

// runDemo implements `takeover demo`: it runs the built-in HTTP server under
// takeover on a free loopback port, replaces it --swaps times under built-in
// load, once by handoff and once by rebind, and prints what the clients saw.
func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("takeover demo", "usage: takeover demo [--swaps N] [--workers N] [--init-delay D]\n\nReplaces the built-in server under load, by handoff and by rebind, and\nprints what the clients saw.\n")
	swaps := fs.Int("swaps", 20, "replacements per strategy (1 to 1000)")
	workers := fs.Int("workers", 2, "concurrent clients (1 to 64)")
	initDelay := fs.Duration("init-delay", 200*time.Millisecond, "how long the server takes to start (0 to 1m)")
	if ok, code := parseArgs(fs, args, stdout, stderr); !ok {
		return code
	}
	switch {
	case *swaps < 1 || *swaps > 1000:
		fmt.Fprintf(stderr, "takeover demo: --swaps %d: want 1 to 1000\n", *swaps)
		return exitUsage
	case *workers < 1 || *workers > 64:
		fmt.Fprintf(stderr, "takeover demo: --workers %d: want 1 to 64\n", *workers)
		return exitUsage
	case *initDelay < 0 || *initDelay > time.Minute:
		fmt.Fprintf(stderr, "takeover demo: --init-delay %v: want 0 to 1m\n", *initDelay)
		return exitUsage
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "takeover demo: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "takeover demo: the built-in server (%v to start) replaced %d times per strategy under %d clients, on loopback\n\n",
		*initDelay, *swaps, *workers)
	var rows []demoRow
	ok := true
	for _, strategy := range []string{"handoff", "rebind"} {
		d := demo{self: self, strategy: strategy, swaps: *swaps, workers: *workers, initDelay: *initDelay, progress: progress{stdout, isTerminal(stdout)}}
		row, err := d.run()
		if err != nil {
			fmt.Fprintf(stderr, "\ntakeover demo: %s: %v\n", strategy, err)
			return exitFailure
		}
		rows = append(rows, row)
		ok = ok && row.swaps == *swaps && (strategy != "handoff" || row.result.FailedRequests() == 0)
	}
	writeDemoTable(stdout, rows)
	if !ok {
		fmt.Fprintln(stdout, "\nsome swaps did not complete, or a handoff failed requests")
		return exitFailure
	}
	return 0
}

// writeDemoTable prints what the clients saw, a row per strategy, and what
// the failed requests are: without it "34 failed" reads like a defect of
// the demo, not the price of a rebind.
func writeDemoTable(w io.Writer, rows []demoRow) {
	fmt.Fprintf(w, "\n%-9s %6s %9s %7s %8s %6s %6s %16s %12s\n", "strategy", "swaps", "requests", "failed", "refused", "reset", "other", "longest refused", "p99 latency")
	failed := false
	for _, r := range rows {
		res := r.result
		fmt.Fprintf(w, "%-9s %6d %9d %7d %8d %6d %6d %16v %12v\n", r.strategy, r.swaps, res.Requests,
			res.FailedRequests(), res.Refused, res.Resets, res.Timeouts+res.Failed, res.LongestRefused().Round(time.Microsecond),
			load.Percentile(res.Latencies, 99).Round(time.Microsecond))
		failed = failed || res.FailedRequests() > 0
	}
	if failed {
		fmt.Fprint(w, `
failed: requests that got no answer, the cost of a rebind (takeover's
fallback when no handoff can be had). refused: no socket listened on the
port between the old server's exit and the new one's bind. reset: the old
server closed with the connection queued or unanswered. other: timed out,
or a bad answer. A handoff passes the listening socket on: none fails.
`)
	}
}

type demoRow struct {
	strategy string
	swaps    int
	result   *load.Result
}

type demo struct {
	self      string
	strategy  string
	swaps     int
	workers   int
	initDelay time.Duration
	progress  progress
}

// progress shows the demo's swaps as they happen: one line redrawn in place
// on a terminal, a line per swap on a pipe or a file (a log keeps them all,
// and a redrawn line would reach it as one line of thousands of characters).
type progress struct {
	w   io.Writer
	tty bool
}

func (p progress) swapped(strategy string, i, n int, requests int64) {
	line := fmt.Sprintf("%-8s swap %3d/%d  %7d requests", strategy, i, n, requests)
	if p.tty {
		fmt.Fprint(p.w, "\r"+line)
	} else {
		fmt.Fprintln(p.w, line)
	}
}

func (p progress) finished(strategy string, swaps, n, requests, failed int) {
	if p.tty {
		fmt.Fprintf(p.w, "\r%-8s swap %3d/%d  %7d requests, %d failed\n", strategy, swaps, n, requests, failed)
		return
	}
	fmt.Fprintf(p.w, "%-8s done: %d of %d swaps, %d requests, %d failed\n", strategy, swaps, n, requests, failed)
}

// A demoRun is one takeover started by the demo.
type demoRun struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	done   chan error
}

func (d demo) start(addr string) (*demoRun, error) {
	r := &demoRun{done: make(chan error, 1)}
	r.cmd = exec.Command(d.self, "--strategy", d.strategy, "--port", addr, "--",
		d.self, "demo-server", "--init-delay", d.initDelay.String(), addr)
	r.cmd.Stderr = &r.stderr
	r.cmd.WaitDelay = 5 * time.Second // a server left behind must not hold Wait
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { r.done <- r.cmd.Wait() }()
	return r, nil
}

// wait waits for the run to exit 0.
func (r *demoRun) wait(limit time.Duration) error {
	select {
	case err := <-r.done:
		if err != nil {
			return fmt.Errorf("takeover %v: %v\n%s", r.cmd.Args, err, r.stderr.String())
		}
		return nil
	case <-time.After(limit):
		r.cmd.Process.Kill()
		<-r.done
		return fmt.Errorf("takeover did not exit within %v\n%s", limit, r.stderr.String())
	}
}

func (d demo) run() (demoRow, error) {
	row := demoRow{strategy: d.strategy}
	port, err := load.FreePort()
	if err != nil {
		return row, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cur, err := d.start(addr)
	if err != nil {
		return row, err
	}
	defer func() {
		cur.cmd.Process.Signal(syscall.SIGTERM)
		cur.wait(30 * time.Second)
	}()
	if err := waitHTTP(addr, 30*time.Second); err != nil {
		return row, fmt.Errorf("the first server never answered: %v\n%s", err, cur.stderr.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	var count atomic.Int64
	loaded := make(chan *load.Result, 1)
	go func() { loaded <- load.Run(ctx, load.Config{Addr: addr, Workers: d.workers, Done: &count}) }()
	for i := 1; i <= d.swaps; i++ {
		next, err := d.start(addr)
		if err != nil {
			cancel()
			return row, err
		}
		if err := cur.wait(60 * time.Second); err != nil {
			cur = next
			cancel()
			row.result = <-loaded
			return row, err
		}
		cur = next
		row.swaps = i
		d.progress.swapped(d.strategy, i, d.swaps, count.Load())
	}
	if err := waitHTTP(addr, 30*time.Second); err != nil {
		cancel()
		return row, err
	}
	cancel()
	row.result = <-loaded
	d.progress.finished(d.strategy, row.swaps, d.swaps, row.result.Requests, row.result.FailedRequests())
	return row, nil
}

// waitHTTP waits until addr answers a request.
func waitHTTP(addr string, limit time.Duration) error {
	req := []byte("GET / HTTP/1.0\r\n\r\n")
	deadline := time.Now().Add(limit)
	for {
		kind, detail := load.Request(addr, req, time.Second)
		if kind == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New(detail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
