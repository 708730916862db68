// Package metrics is what a takeover launcher counts, in Prometheus' format
// (--metrics, --metrics-file): its swaps by target, strategy and result,
// how long they took, its restarts, give-ups, rollbacks and failed reloads,
// and gauges of its generation, the old generations draining and the
// sockets it holds. The launcher reports into a Set with plain calls; the
// Set's Counts go into the launcher's status record, from which the next
// takeover of the same targets starts its counters.
package metrics

import (
	"bytes"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
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

// A Set holds one launcher's metrics in a registry of its own. A nil Set
// counts nothing (a launcher made by hand, in a test).
type Set struct {
	reg                                         *prometheus.Registry
	swaps                                       *prometheus.CounterVec
	swapTime, readyWait, drain, refused         *prometheus.HistogramVec
	restarts, giveUps, rollbacks, failedReloads prometheus.Counter
	generation, draining, socketsHeld           prometheus.Gauge
}

// swapBuckets span a sub-millisecond rebind window to a JVM's minute of
// start-up.
var swapBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// New returns a Set whose counters start from prior (the takeover it
// replaces: see Counts).
func New(prior Counts) *Set {
	s := &Set{reg: prometheus.NewRegistry()}
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: swapBuckets}, []string{"target"})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	s.swaps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "takeover_swaps_total",
		Help: "Swaps of a target by strategy (fresh, handoff, rebind, rename) and result (ok, rolled_back)."}, []string{"target", "strategy", "result"})
	s.swapTime = hist("takeover_swap_duration_seconds", "From the new server's bind(2) of the target to its readiness.")
	s.readyWait = hist("takeover_ready_wait_seconds", "From the start of the new generation to its readiness.")
	s.drain = hist("takeover_drain_seconds", "From the swap's completion to the old server's exit.")
	s.refused = hist("takeover_refused_window_seconds", "How long a swap refused connections: a rebind's window (0 for a handoff; a fresh bind is not counted).")
	s.restarts = counter("takeover_restarts_total", "Restarts of the command after it died having served.")
	s.giveUps = counter("takeover_restart_give_ups_total", "Times takeover gave up restarting after --max-restarts within --restart-window.")
	s.rollbacks = counter("takeover_rollbacks_total", "New generations stopped for not being ready within --ready-timeout.")
	s.failedReloads = counter("takeover_failed_reloads_total", "Reloads whose new generation never served.")
	s.generation = gauge("takeover_generation", "The number of the generation serving, counted from 1 in each takeover.")
	s.draining = gauge("takeover_old_generations_draining", "Old servers finishing their connections before they exit.")
	s.socketsHeld = gauge("takeover_sockets_held", "Listening sockets the serving generation took over or bound.")
	s.reg.MustRegister(s.swaps, s.swapTime, s.readyWait, s.drain, s.refused, s.restarts, s.giveUps, s.rollbacks, s.failedReloads,
		s.generation, s.draining, s.socketsHeld)
	for _, c := range prior.Swaps {
		s.swaps.WithLabelValues(c.Target, c.Strategy, c.Result).Add(float64(c.N))
	}
	s.restarts.Add(float64(prior.Restarts))
	s.giveUps.Add(float64(prior.GiveUps))
	s.rollbacks.Add(float64(prior.Rollbacks))
	s.failedReloads.Add(float64(prior.FailedReloads))
	return s
}

// Swap counts a swap of target and, for a completed one, how long it took.
func (s *Set) Swap(target, strategy, result string, took, readyWait, refused time.Duration) {
	if s == nil {
		return
	}
	s.swaps.WithLabelValues(target, strategy, result).Inc()
	if result != OK {
		return
	}
	s.swapTime.WithLabelValues(target).Observe(took.Seconds())
	s.readyWait.WithLabelValues(target).Observe(readyWait.Seconds())
	if strategy != "fresh" {
		s.refused.WithLabelValues(target).Observe(refused.Seconds())
	}
}

// Drained observes how long an old server of target took to exit.
func (s *Set) Drained(target string, d time.Duration) {
	s.drain.WithLabelValues(target).Observe(d.Seconds())
}

func (s *Set) Restart()      { s.inc(func(s *Set) prometheus.Counter { return s.restarts }) }
func (s *Set) GiveUp()       { s.inc(func(s *Set) prometheus.Counter { return s.giveUps }) }
func (s *Set) Rollback()     { s.inc(func(s *Set) prometheus.Counter { return s.rollbacks }) }
func (s *Set) FailedReload() { s.inc(func(s *Set) prometheus.Counter { return s.failedReloads }) }

func (s *Set) inc(counter func(*Set) prometheus.Counter) {
	if s != nil {
		counter(s).Inc()
	}
}

// Serving sets the gauges: the generation serving, the old ones draining,
// the sockets held.
func (s *Set) Serving(generation, draining, sockets int) {
	if s == nil {
		return
	}
	s.generation.Set(float64(generation))
	s.draining.Set(float64(draining))
	s.socketsHeld.Set(float64(sockets))
}

// Draining sets the gauge of old generations draining.
func (s *Set) Draining(n int) {
	if s != nil {
		s.draining.Set(float64(n))
	}
}

// Counts returns the counters, for the status record.
func (s *Set) Counts() Counts {
	c := Counts{}
	if s == nil {
		return c
	}
	mfs, _ := s.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			v := uint64(m.GetCounter().GetValue())
			switch mf.GetName() {
			case "takeover_swaps_total":
				sc := SwapCount{N: v}
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "target":
						sc.Target = l.GetValue()
					case "strategy":
						sc.Strategy = l.GetValue()
					case "result":
						sc.Result = l.GetValue()
					}
				}
				c.Swaps = append(c.Swaps, sc)
			case "takeover_restarts_total":
				c.Restarts = v
			case "takeover_restart_give_ups_total":
				c.GiveUps = v
			case "takeover_rollbacks_total":
				c.Rollbacks = v
			case "takeover_failed_reloads_total":
				c.FailedReloads = v
			}
		}
	}
	return c
}

// Handler serves the metrics (GET /metrics).
func (s *Set) Handler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
}

// Text returns the metrics in the text format, for --metrics-file (what
// node_exporter's textfile collector reads).
func (s *Set) Text() ([]byte, error) {
	mfs, err := s.reg.Gather()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			return nil, err
		}
	}
	return b.Bytes(), nil
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
