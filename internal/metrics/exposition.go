package metrics

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Prometheus' text exposition format (version 0.0.4), as prometheus/
// client_golang writes it: the families sorted by name, each with its HELP
// and TYPE lines; a family with labels and no sample yet is left out; label
// pairs sorted by name, histograms' le last.

// ContentType is the text format's, for an HTTP answer.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// The help of each family.
const (
	helpSwaps         = "Swaps of a target by strategy (fresh, handoff, rebind, rename) and result (ok, rolled_back)."
	helpSwapTime      = "From the new server's bind(2) of the target to its readiness."
	helpReadyWait     = "From the start of the new generation to its readiness."
	helpDrain         = "From the swap's completion to the old server's exit."
	helpRefused       = "How long a swap refused connections: a rebind's window (0 for a handoff; a fresh bind is not counted)."
	helpRestarts      = "Restarts of the command after it died having served."
	helpGiveUps       = "Times takeover gave up restarting after --max-restarts within --restart-window."
	helpRollbacks     = "New generations rolled back: not ready within --ready-timeout, or failed during --probation."
	helpFailedReloads = "Reloads whose new generation never served."
	helpGeneration    = "The number of the generation serving, counted from 1 in each takeover."
	helpDraining      = "Old servers finishing their connections before they exit."
	helpSocketsHeld   = "Listening sockets the serving generation took over or bound."
)

// Text returns the metrics in the text format: what GET /metrics answers
// and --metrics-file holds (node_exporter's textfile collector reads it).
func (s *Set) Text() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fams []family
	if len(s.swaps) > 0 {
		f := family{name: "takeover_swaps_total", help: helpSwaps, kind: "counter"}
		for k, n := range s.swaps {
			f.samples = append(f.samples, sample{labels: labels("result", k.result, "strategy", k.strategy, "target", k.target), value: float64(n)})
		}
		fams = append(fams, f)
	}
	for _, h := range []struct {
		name, help string
		by         map[string]*histogram
	}{
		{"takeover_swap_duration_seconds", helpSwapTime, s.swapTime},
		{"takeover_ready_wait_seconds", helpReadyWait, s.readyWait},
		{"takeover_drain_seconds", helpDrain, s.drain},
		{"takeover_refused_window_seconds", helpRefused, s.refused},
	} {
		if len(h.by) > 0 {
			fams = append(fams, histogramFamily(h.name, h.help, h.by))
		}
	}
	for _, c := range []struct {
		name, help, kind string
		v                float64
	}{
		{"takeover_restarts_total", helpRestarts, "counter", float64(s.restarts)},
		{"takeover_restart_give_ups_total", helpGiveUps, "counter", float64(s.giveUps)},
		{"takeover_rollbacks_total", helpRollbacks, "counter", float64(s.rollbacks)},
		{"takeover_failed_reloads_total", helpFailedReloads, "counter", float64(s.failedReloads)},
		{"takeover_generation", helpGeneration, "gauge", s.generation},
		{"takeover_old_generations_draining", helpDraining, "gauge", s.draining},
		{"takeover_sockets_held", helpSocketsHeld, "gauge", s.socketsHeld},
	} {
		fams = append(fams, family{name: c.name, help: c.help, kind: c.kind, samples: []sample{{value: c.v}}})
	}
	slices.SortFunc(fams, func(a, b family) int { return strings.Compare(a.name, b.name) })
	var b bytes.Buffer
	for _, f := range fams {
		f.write(&b)
	}
	return b.Bytes(), nil
}

type family struct {
	name, help, kind string
	samples          []sample
}

type sample struct {
	suffix string   // _bucket, _sum, _count
	labels []string // name, value, ...
	value  float64
}

// labels returns name-value pairs as given.
func labels(nv ...string) []string { return nv }

// histogramFamily writes each target's histogram as its cumulative
// buckets, sum and count.
func histogramFamily(name, help string, by map[string]*histogram) family {
	f := family{name: name, help: help, kind: "histogram"}
	for target, h := range by {
		var cum uint64
		for i, bound := range swapBuckets {
			cum += h.counts[i]
			f.samples = append(f.samples, sample{suffix: "_bucket", labels: labels("target", target, "le", formatFloat(bound)), value: float64(cum)})
		}
		f.samples = append(f.samples,
			sample{suffix: "_bucket", labels: labels("target", target, "le", "+Inf"), value: float64(h.n)},
			sample{suffix: "_sum", labels: labels("target", target), value: h.sum},
			sample{suffix: "_count", labels: labels("target", target), value: float64(h.n)})
	}
	return f
}

// write writes f: its samples in the order of their label values (a
// histogram's buckets in the order of their bounds, as written).
func (f family) write(b *bytes.Buffer) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", f.name, escapeHelp(f.help), f.name, f.kind)
	slices.SortStableFunc(f.samples, func(x, y sample) int {
		// By the labels before le (le keeps its order), then _bucket,
		// _sum, _count as written.
		return strings.Compare(strings.Join(withoutLE(x.labels), "\xff"), strings.Join(withoutLE(y.labels), "\xff"))
	})
	for _, s := range f.samples {
		b.WriteString(f.name + s.suffix)
		if len(s.labels) > 0 {
			b.WriteByte('{')
			for i := 0; i < len(s.labels); i += 2 {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(s.labels[i] + `="` + escapeLabel(s.labels[i+1]) + `"`)
			}
			b.WriteByte('}')
		}
		b.WriteString(" " + formatFloat(s.value) + "\n")
	}
}

// withoutLE returns the label pairs but a histogram's le.
func withoutLE(l []string) []string {
	if n := len(l); n >= 2 && l[n-2] == "le" {
		return l[:n-2]
	}
	return l
}

// formatFloat writes v as the text format does: Go's shortest 'g' form,
// and +Inf, -Inf, NaN.
func formatFloat(v float64) string {
	switch {
	case math.IsInf(v, +1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }
