// Package metrics is what a takeover launcher counts, in Prometheus' format
// (--metrics, --metrics-file): its swaps by target, strategy and result,
// how long they took, its restarts, give-ups, rollbacks and failed reloads,
// and gauges of its generation, the old generations draining and the
// sockets it holds. The launcher reports into a Set with plain calls; the
// Set's Counts go into the launcher's status record, from which the next
// takeover of the same targets starts its counters.
package metrics

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Counts are a Set's counters, as a status record holds them: what a newer
// takeover of the same targets starts from.
type Counts struct {
	Swaps         []SwapCount `json:"swaps,omitempty"`
	Restarts      uint64      `json:"restarts"`
	GiveUps       uint64      `json:"restart_give_ups"`
	Rollbacks     uint64      `json:"rollbacks"`
	FailedReloads uint64      `json:"failed_reloads"`
}

// A SwapCount is how many swaps of one target ended one way.
type SwapCount struct {
	Target   string `json:"target"`
	Strategy string `json:"strategy"`
	Result   string `json:"result"` // ok, rolled_back
	N        uint64 `json:"n"`
}

// The results of a swap.
const (
	OK         = "ok"          // the new generation was ready and the old one stopped
	RolledBack = "rolled_back" // the new generation was not ready in time and was stopped
)

// A Set holds one launcher's metrics. A nil Set counts nothing (a
// launcher made by hand, in a test). Its methods are safe for concurrent
// use.
//
// The text format is written here (exposition.go) rather than by
// prometheus/client_golang: that library's package initialisation (its
// default registry's collectors, protobuf descriptors, net/http) cost
// every process of this binary some 8 ms of CPU at start here (`perf
// stat`: 19 against 11 ms for `takeover version`), and every takeover
// process pays it: each generation's shim, `takeover who` and `status`.
// The tests parse what is written with prometheus/common's text parser
// and promtool, and check it against client_golang's own output for the
// same counts (TestSameAsClientGolang).
type Set struct {
	mu                                          sync.Mutex
	swaps                                       map[swapKey]uint64
	swapTime, readyWait, drain, refused         map[string]*histogram // by target
	restarts, giveUps, rollbacks, failedReloads uint64
	generation, draining, socketsHeld           float64
}

type swapKey struct{ target, strategy, result string }

// swapBuckets span a sub-millisecond rebind window to a JVM's minute of
// start-up.
var swapBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// A histogram counts observations in swapBuckets (each its own bucket;
// the text format's are cumulative).
type histogram struct {
	counts []uint64 // len(swapBuckets)+1: the last is above every bound
	sum    float64
	n      uint64
}

func (h *histogram) observe(v float64) {
	i, _ := slices.BinarySearch(swapBuckets, v) // the first bound >= v: buckets are "le"
	h.counts[i]++
	h.sum += v
	h.n++
}

// observe adds v to the histogram of target in hs.
func observe(hs map[string]*histogram, target string, v float64) {
	h := hs[target]
	if h == nil {
		h = &histogram{counts: make([]uint64, len(swapBuckets)+1)}
		hs[target] = h
	}
	h.observe(v)
}

// New returns a Set whose counters start from prior (the takeover it
// replaces: see Counts).
func New(prior Counts) *Set {
	s := &Set{swaps: map[swapKey]uint64{}, swapTime: map[string]*histogram{}, readyWait: map[string]*histogram{},
		drain: map[string]*histogram{}, refused: map[string]*histogram{},
		restarts: prior.Restarts, giveUps: prior.GiveUps, rollbacks: prior.Rollbacks, failedReloads: prior.FailedReloads}
	for _, c := range prior.Swaps {
		s.swaps[swapKey{c.Target, c.Strategy, c.Result}] += c.N
	}
	return s
}

// Swap counts a swap of target and, for a completed one, how long it took.
func (s *Set) Swap(target, strategy, result string, took, readyWait, refused time.Duration) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.swaps[swapKey{target, strategy, result}]++
	if result != OK {
		return
	}
	observe(s.swapTime, target, took.Seconds())
	observe(s.readyWait, target, readyWait.Seconds())
	if strategy != "fresh" {
		observe(s.refused, target, refused.Seconds())
	}
}

// Drained observes how long an old server of target took to exit.
func (s *Set) Drained(target string, d time.Duration) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	observe(s.drain, target, d.Seconds())
}

func (s *Set) Restart()      { s.inc(func(s *Set) *uint64 { return &s.restarts }) }
func (s *Set) GiveUp()       { s.inc(func(s *Set) *uint64 { return &s.giveUps }) }
func (s *Set) Rollback()     { s.inc(func(s *Set) *uint64 { return &s.rollbacks }) }
func (s *Set) FailedReload() { s.inc(func(s *Set) *uint64 { return &s.failedReloads }) }

func (s *Set) inc(counter func(*Set) *uint64) {
	if s != nil {
		s.mu.Lock()
		*counter(s)++
		s.mu.Unlock()
	}
}

// Serving sets the gauges: the generation serving, the old ones draining,
// the sockets held.
func (s *Set) Serving(generation, draining, sockets int) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.generation, s.draining, s.socketsHeld = float64(generation), float64(draining), float64(sockets)
}

// Draining sets the gauge of old generations draining.
func (s *Set) Draining(n int) {
	if s != nil {
		s.mu.Lock()
		s.draining = float64(n)
		s.mu.Unlock()
	}
}

// Counts returns the counters, for the status record.
func (s *Set) Counts() Counts {
	c := Counts{}
	if s == nil {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, n := range s.swaps {
		c.Swaps = append(c.Swaps, SwapCount{Target: k.target, Strategy: k.strategy, Result: k.result, N: n})
	}
	slices.SortFunc(c.Swaps, func(a, b SwapCount) int {
		return cmp.Or(cmp.Compare(a.Target, b.Target), cmp.Compare(a.Strategy, b.Strategy), cmp.Compare(a.Result, b.Result))
	})
	c.Restarts, c.GiveUps, c.Rollbacks, c.FailedReloads = s.restarts, s.giveUps, s.rollbacks, s.failedReloads
	return c
}

// Add returns the sum of a and b, swaps of the same labels added up: the
// counts of several takeovers replaced at once.
func Add(a, b Counts) Counts {
	out := Counts{Restarts: a.Restarts + b.Restarts, GiveUps: a.GiveUps + b.GiveUps, Rollbacks: a.Rollbacks + b.Rollbacks, FailedReloads: a.FailedReloads + b.FailedReloads}
	out.Swaps = slices.Clone(a.Swaps)
	for _, sc := range b.Swaps {
		i := slices.IndexFunc(out.Swaps, func(o SwapCount) bool {
			return o.Target == sc.Target && o.Strategy == sc.Strategy && o.Result == sc.Result
		})
		if i < 0 {
			out.Swaps = append(out.Swaps, sc)
		} else {
			out.Swaps[i].N += sc.N
		}
	}
	return out
}
