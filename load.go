package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// A loadConfig describes client load against one address: each worker opens
// a connection, sends an HTTP/1.0 request, reads the whole answer, and again.
type loadConfig struct {
	Addr    string
	Workers int           // concurrent clients; 2
	Path    string        // "/"
	Timeout time.Duration // per request; 5s
	Pause   time.Duration // between one worker's requests; none
	Done    *atomic.Int64 // counts requests as they finish, if set
}

// A failure is one request that did not get a 200.
type failure struct {
	At   time.Time
	Kind string // refused, reset, timeout, failed
	Err  string // what the client saw
}

// A refusedRun is a span in which one client's connections were refused:
// from the start of the first refused connect to the start of the next
// connect that was not refused.
type refusedRun struct{ Start, End time.Time }

// loadResult is what a load run saw.
type loadResult struct {
	Requests, OK, Refused, Resets, Timeouts, Failed int
	Latencies                                       []time.Duration // of the requests that got a 200
	Starts                                          []time.Time     // when each of those began
	Failures                                        []failure
	Runs                                            []refusedRun
}

// runLoad sends requests until ctx ends.
func runLoad(ctx context.Context, cfg loadConfig) *loadResult {
	if cfg.Workers == 0 {
		cfg.Workers = 2
	}
	if cfg.Path == "" {
		cfg.Path = "/"
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	req := []byte("GET " + cfg.Path + " HTTP/1.0\r\nHost: " + cfg.Addr + "\r\n\r\n")
	var mu sync.Mutex
	total := &loadResult{}
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &loadResult{}
			var runStart time.Time
			for ctx.Err() == nil {
				t0 := time.Now()
				kind, detail := request(cfg.Addr, req, cfg.Timeout)
				r.Requests++
				if cfg.Done != nil {
					cfg.Done.Add(1)
				}
				if kind == "" {
					r.OK++
					r.Latencies = append(r.Latencies, time.Since(t0))
					r.Starts = append(r.Starts, t0)
					if !runStart.IsZero() {
						// The port accepted again when this connect began:
						// how long the answer then took is latency.
						r.Runs = append(r.Runs, refusedRun{runStart, t0})
						runStart = time.Time{}
					}
				} else {
					r.Failures = append(r.Failures, failure{t0, kind, detail})
					switch kind {
					case "refused":
						r.Refused++
						if runStart.IsZero() {
							runStart = t0
						}
					case "reset":
						r.Resets++
					case "timeout":
						r.Timeouts++
					default:
						r.Failed++
					}
				}
				if cfg.Pause > 0 {
					time.Sleep(cfg.Pause)
				}
			}
			mu.Lock()
			total.add(r)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return total
}

func (t *loadResult) add(r *loadResult) {
	t.Requests += r.Requests
	t.OK += r.OK
	t.Refused += r.Refused
	t.Resets += r.Resets
	t.Timeouts += r.Timeouts
	t.Failed += r.Failed
	t.Latencies = append(t.Latencies, r.Latencies...)
	t.Starts = append(t.Starts, r.Starts...)
	t.Failures = append(t.Failures, r.Failures...)
	t.Runs = append(t.Runs, r.Runs...)
}

// request makes one request and classifies its failure ("" on a 200), with
// what the client saw.
func request(addr string, req []byte, timeout time.Duration) (kind, detail string) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return classify(err), err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(req); err != nil {
		return classify(err), err.Error()
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return classify(err), err.Error()
	}
	if !bytes.HasPrefix(b, []byte("HTTP/1.0 200")) && !bytes.HasPrefix(b, []byte("HTTP/1.1 200")) {
		return "failed", fmt.Sprintf("answer %.40q", b)
	}
	return "", ""
}

func classify(err error) string {
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

// failedRequests counts every request that did not get a 200.
func (r *loadResult) failedRequests() int { return r.Requests - r.OK }

// longestRefused is the longest span in which some client was refused.
func (r *loadResult) longestRefused() time.Duration {
	var d time.Duration
	for _, run := range r.Runs {
		d = max(d, run.End.Sub(run.Start))
	}
	return d
}

// windowsIn returns, for each span [bounds[i], bounds[i+1]), the refused
// window in it: from the first refused connect to the first connect, by any
// client, that got through after the last refused one. (A client refused and
// then kept off the CPU does not stretch the window: another client's success
// bounds it.)
func (r *loadResult) windowsIn(bounds []time.Time) []time.Duration {
	starts := slices.Clone(r.Starts)
	slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
	ws := make([]time.Duration, len(bounds)-1)
	for i := range ws {
		var first, last time.Time
		for _, f := range r.Failures {
			if f.Kind != "refused" || f.At.Before(bounds[i]) || !f.At.Before(bounds[i+1]) {
				continue
			}
			if first.IsZero() || f.At.Before(first) {
				first = f.At
			}
			if f.At.After(last) {
				last = f.At
			}
		}
		if first.IsZero() {
			continue
		}
		j, _ := slices.BinarySearchFunc(starts, last, func(a, b time.Time) int { return a.Compare(b) })
		if j < len(starts) {
			ws[i] = starts[j].Sub(first)
		} else {
			ws[i] = bounds[i+1].Sub(first)
		}
	}
	return ws
}

// percentile returns the p-th percentile (0..100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}
