package metrics

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// canonical parses text in Prometheus' text format with prometheus/
// common's parser and writes it back out, the families sorted by name:
// what a scraper makes of it, whatever the order of the lines.
func canonical(t *testing.T, text []byte) string {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf("prometheus/common cannot parse the text: %v\n%s", err, text)
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	slices.Sort(names)
	var b bytes.Buffer
	for _, n := range names {
		if _, err := expfmt.MetricFamilyToText(&b, fams[n]); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// clientGolang is the same Set in prometheus/client_golang, the library
// made for the format: the reference the hand-written text is checked
// against.
type clientGolang struct {
	reg                                         *prometheus.Registry
	swaps                                       *prometheus.CounterVec
	swapTime, readyWait, drain, refused         *prometheus.HistogramVec
	restarts, giveUps, rollbacks, failedReloads prometheus.Counter
	generation, draining, socketsHeld           prometheus.Gauge
}

func newClientGolang() *clientGolang {
	c := &clientGolang{reg: prometheus.NewRegistry()}
	hist := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: swapBuckets}, []string{"target"})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	c.swaps = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "takeover_swaps_total", Help: helpSwaps}, []string{"target", "strategy", "result"})
	c.swapTime = hist("takeover_swap_duration_seconds", helpSwapTime)
	c.readyWait = hist("takeover_ready_wait_seconds", helpReadyWait)
	c.drain = hist("takeover_drain_seconds", helpDrain)
	c.refused = hist("takeover_refused_window_seconds", helpRefused)
	c.restarts = counter("takeover_restarts_total", helpRestarts)
	c.giveUps = counter("takeover_restart_give_ups_total", helpGiveUps)
	c.rollbacks = counter("takeover_rollbacks_total", helpRollbacks)
	c.failedReloads = counter("takeover_failed_reloads_total", helpFailedReloads)
	c.generation = gauge("takeover_generation", helpGeneration)
	c.draining = gauge("takeover_old_generations_draining", helpDraining)
	c.socketsHeld = gauge("takeover_sockets_held", helpSocketsHeld)
	c.reg.MustRegister(c.swaps, c.swapTime, c.readyWait, c.drain, c.refused, c.restarts, c.giveUps, c.rollbacks, c.failedReloads,
		c.generation, c.draining, c.socketsHeld)
	return c
}

func (c *clientGolang) text(t *testing.T) []byte {
	mfs, err := c.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// TestSameAsClientGolang: the hand-written text format says what
// prometheus/client_golang says for the same counts, as prometheus/common's
// parser reads both: families, help, types, labels (escaped), values,
// histograms' buckets (on their bounds too), sums and counts.
func TestSameAsClientGolang(t *testing.T) {
	s, c := New(Counts{}), newClientGolang()
	if got, want := canonical(t, mustText(t, s)), canonical(t, c.text(t)); got != want {
		t.Errorf("before any swap (-client_golang +hand-written):\n%s", cmp.Diff(want, got))
	}
	swap := func(target, strategy, result string, took, ready, refused time.Duration) {
		s.Swap(target, strategy, result, took, ready, refused)
		c.swaps.WithLabelValues(target, strategy, result).Inc()
		if result != OK {
			return
		}
		c.swapTime.WithLabelValues(target).Observe(took.Seconds())
		c.readyWait.WithLabelValues(target).Observe(ready.Seconds())
		if strategy != "fresh" {
			c.refused.WithLabelValues(target).Observe(refused.Seconds())
		}
	}
	swap("8100", "fresh", OK, 2*time.Millisecond, 900*time.Millisecond, 0)
	swap("8100", "handoff", OK, time.Millisecond, 1200*time.Millisecond, 0)
	swap("8100", "rebind", OK, 5*time.Millisecond, 75*time.Second, 1100*time.Microsecond) // above every bound
	swap("8100", "handoff", RolledBack, 0, 0, 0)
	swap("/run/a \"b\"\\c.sock", "handoff", OK, 500*time.Microsecond, time.Second, 0) // on a bound; a label to escape
	swap("udp:8125", "handoff", OK, 10*time.Millisecond, 2500*time.Millisecond, 0)
	for _, d := range []time.Duration{0, 5 * time.Second, 61 * time.Second} {
		s.Drained("8100", d)
		c.drain.WithLabelValues("8100").Observe(d.Seconds())
	}
	for range 3 {
		s.Restart()
		c.restarts.Inc()
	}
	s.GiveUp()
	c.giveUps.Inc()
	s.Rollback()
	c.rollbacks.Inc()
	s.FailedReload()
	c.failedReloads.Inc()
	s.Serving(7, 2, 3)
	c.generation.Set(7)
	c.draining.Set(2)
	c.socketsHeld.Set(3)
	s.Draining(1)
	c.draining.Set(1)
	if got, want := canonical(t, mustText(t, s)), canonical(t, c.text(t)); got != want {
		t.Errorf("after swaps (-client_golang +hand-written):\n%s", cmp.Diff(want, got))
	}
}

func mustText(t *testing.T, s *Set) []byte {
	t.Helper()
	b, err := s.Text()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestServe: GET /metrics answers the text format, which parses; HEAD the
// same head; another path 404, another method 405; a request that never
// ends is cut at the deadline without holding stop.
func TestServe(t *testing.T) {
	defer func(d time.Duration) { answerTimeout = d }(answerTimeout)
	answerTimeout = 500 * time.Millisecond
	s := New(Counts{})
	s.Swap("8100", "handoff", OK, time.Millisecond, time.Second, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := s.Serve(ln)
	defer stop()
	url := "http://" + ln.Addr().String()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ContentType || !strings.Contains(canonical(t, body), `takeover_swaps_total{result="ok",strategy="handoff",target="8100"} 1`) {
		t.Errorf("GET /metrics: %s, %q:\n%s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	for _, tc := range []struct {
		method, path string
		code         int
	}{{"HEAD", "/metrics", 200}, {"GET", "/", 404}, {"POST", "/metrics", 405}} {
		req, _ := http.NewRequest(tc.method, url+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code {
			t.Errorf("%s %s: %s, want %d", tc.method, tc.path, resp.Status, tc.code)
		}
	}
	half, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	io.WriteString(half, "GET /metrics HTTP/1.1\r\n") // and never the rest
	half.SetReadDeadline(time.Now().Add(answerTimeout + 5*time.Second))
	if n, err := half.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("half a request got an answer (%d bytes, %v), want the connection closed at the deadline", n, err)
	}
}
