// Package load is the load generator and probe of takeover demo, takeover
// probe, the benchmarks and the tests: closed-loop clients that each open a
// connection, send one request, read the whole answer and again, and what
// they saw (failures by kind, latencies, the spans in which connections
// were refused).
package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A Config describes client load against one address: each worker opens
// a connection, sends an HTTP/1.0 request, reads the whole answer, and again.
type Config struct {
	Addr    string        // host:port, or the absolute path of a unix socket
	Workers int           // concurrent clients; 2
	Path    string        // "/"
	Timeout time.Duration // per request; 5s
	Pause   time.Duration // between one worker's requests; none
	Done    *atomic.Int64 // counts requests as they finish, if set
}

// A Failure is one request that did not get a 200.
type Failure struct {
	At   time.Time
	Kind string // refused, reset, timeout, failed
	Err  string // what the client saw
}

// A refusedSpan is a span in which connections were refused: from the start
// of the first refused connect to the start of the first connect, by any
// client, that got through after the last refused one. (A client refused
// and then kept off the CPU does not stretch it: another client's success
// ends it.)
type refusedSpan struct{ Start, End time.Time }

// Result is what a load run saw.
type Result struct {
	Requests, OK, Refused, Resets, Timeouts, Failed int
	Latencies                                       []time.Duration // of the requests that got a 200
	Starts                                          []time.Time     // when each of those began
	Failures                                        []Failure
}

// Record counts one request that began at t0 and ended as kind: "" (a
// good answer), refused, reset, timeout or another failure, with detail.
func (r *Result) Record(t0 time.Time, kind, detail string) {
	r.Requests++
	if kind == "" {
		r.OK++
		r.Latencies = append(r.Latencies, time.Since(t0))
		r.Starts = append(r.Starts, t0)
		return
	}
	r.Failures = append(r.Failures, Failure{t0, kind, detail})
	switch kind {
	case "refused":
		r.Refused++
	case "reset":
		r.Resets++
	case "timeout":
		r.Timeouts++
	default:
		r.Failed++
	}
}

// Run sends requests until ctx ends.
func Run(ctx context.Context, cfg Config) *Result {
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	req := HTTPRequest(cfg.Addr, cfg.Path)
	return RunWorkers(cfg.Workers, func() *Result {
		r := &Result{}
		for ctx.Err() == nil {
			t0 := time.Now()
			kind, detail := Request(cfg.Addr, req, cfg.Timeout)
			r.Record(t0, kind, detail)
			if cfg.Done != nil {
				cfg.Done.Add(1)
			}
			if cfg.Pause > 0 {
				time.Sleep(cfg.Pause)
			}
		}
		return r
	})
}

// RunWorkers runs work in that many goroutines at once and adds up what
// they saw.
func RunWorkers(workers int, work func() *Result) *Result {
	var mu sync.Mutex
	total := &Result{}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := work()
			mu.Lock()
			total.add(r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total
}

func (t *Result) add(r *Result) {
	t.Requests += r.Requests
	t.OK += r.OK
	t.Refused += r.Refused
	t.Resets += r.Resets
	t.Timeouts += r.Timeouts
	t.Failed += r.Failed
	t.Latencies = append(t.Latencies, r.Latencies...)
	t.Starts = append(t.Starts, r.Starts...)
	t.Failures = append(t.Failures, r.Failures...)
}

// HTTPRequest is an HTTP/1.0 request for path at addr.
func HTTPRequest(addr, path string) []byte {
	host := addr
	if Network(addr) == "unix" {
		host = "localhost"
	}
	return []byte("GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\n\r\n")
}

// Request makes one request and classifies its failure ("" on a 200), with
// what the client saw.
func Request(addr string, req []byte, timeout time.Duration) (kind, detail string) {
	conn, err := net.DialTimeout(Network(addr), addr, timeout)
	if err != nil {
		return Classify(err), err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(req); err != nil {
		return Classify(err), err.Error()
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return Classify(err), err.Error()
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.0 200")) && !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
		return "failed", fmt.Sprintf("answer %.40q", b)
	}
	return "", ""
}

// Network is the network an address is in: a path is a unix
// socket's.
func Network(addr string) string {
	if strings.HasPrefix(addr, "/") {
		return "unix"
	}
	return "tcp"
}

// Classify names the kind of failure err is: refused, reset, timeout or
// failed.
func Classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "failed"
}

// FailedRequests counts every request that did not get a 200.
func (r *Result) FailedRequests() int { return r.Requests - r.OK }

// refusedSpans returns the spans in which connections were refused, in
// order. A span ends at the first connect that got through after a refused
// one; the time its answer then took is latency, not refusal.
func (r *Result) refusedSpans() []refusedSpan {
	var refused []time.Time
	for _, f := range r.Failures {
		if f.Kind == "refused" {
			refused = append(refused, f.At)
		}
	}
	byTime := func(a, b time.Time) int { return a.Compare(b) }
	slices.SortFunc(refused, byTime)
	starts := slices.Clone(r.Starts)
	slices.SortFunc(starts, byTime)
	var spans []refusedSpan
	for i := 0; i < len(refused); {
		// The first success after refused[i] ends the span, and every
		// refusal before that success belongs to it.
		j, _ := slices.BinarySearchFunc(starts, refused[i], byTime)
		k := len(refused)
		end := refused[k-1]
		if j < len(starts) {
			end = starts[j]
			k, _ = slices.BinarySearchFunc(refused, end, byTime)
		}
		spans = append(spans, refusedSpan{refused[i], end})
		i = max(k, i+1) // a success at the very instant of a refusal ends nothing before it
	}
	return spans
}

// LongestRefused is the longest span in which connections were refused.
func (r *Result) LongestRefused() time.Duration {
	var d time.Duration
	for _, s := range r.refusedSpans() {
		d = max(d, s.End.Sub(s.Start))
	}
	return d
}

// WindowsIn returns, for each span of time [bounds[i], bounds[i+1]), the
// refused window in it: from the start of the first refused span that
// begins in it to the end of the last.
func (r *Result) WindowsIn(bounds []time.Time) []time.Duration {
	ws := make([]time.Duration, len(bounds)-1)
	spans := r.refusedSpans()
	for i := range ws {
		var first, last time.Time
		for _, s := range spans {
			if s.Start.Before(bounds[i]) || !s.Start.Before(bounds[i+1]) {
				continue
			}
			if first.IsZero() {
				first = s.Start
			}
			last = s.End
		}
		ws[i] = last.Sub(first)
	}
	return ws
}

// Percentile returns the p-th percentile (0..100) of ds.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// WriteTimeline writes one line per request to path: when it began, in
// seconds from start; its latency in milliseconds (0 if it failed); and
// "ok" or the kind of failure.
func (r *Result) WriteTimeline(path string, start time.Time) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for i, d := range r.Latencies {
		fmt.Fprintf(f, "%.4f %.3f ok\n", r.Starts[i].Sub(start).Seconds(), float64(d.Microseconds())/1000)
	}
	for _, fl := range r.Failures {
		fmt.Fprintf(f, "%.4f 0 %s\n", fl.At.Sub(start).Seconds(), fl.Kind)
	}
	return f.Close()
}

// FreePort asks the kernel for a free port on 127.0.0.1.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
