package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestCountsCarriedOver: a Set started from another's Counts (a deploy's
// new takeover) counts on from them, and Add sums two takeovers' counts.
func TestCountsCarriedOver(t *testing.T) {
	old := New(Counts{})
	old.Swap("8100", "fresh", OK, time.Millisecond, time.Second, 0)
	old.Swap("8100", "handoff", OK, time.Millisecond, time.Second, 0)
	old.Swap("8100", "handoff", RolledBack, 0, 0, 0)
	old.Restart()
	old.FailedReload()
	old.Rollback()
	next := New(old.Counts())
	next.Swap("8100", "handoff", OK, time.Millisecond, time.Second, 0)
	next.GiveUp()
	want := Counts{
		Swaps: []SwapCount{
			{Target: "8100", Strategy: "fresh", Result: OK, N: 1},
			{Target: "8100", Strategy: "handoff", Result: OK, N: 2},
			{Target: "8100", Strategy: "handoff", Result: RolledBack, N: 1},
		},
		Restarts: 1, GiveUps: 1, Rollbacks: 1, FailedReloads: 1,
	}
	if diff := cmp.Diff(want, next.Counts()); diff != "" {
		t.Errorf("counts after the deploy (-want +got):\n%s", diff)
	}
	sum := Add(old.Counts(), Counts{Swaps: []SwapCount{{Target: "8100", Strategy: "fresh", Result: OK, N: 2}, {Target: "udp:8125", Strategy: "fresh", Result: OK, N: 1}}, Restarts: 2})
	if sum.Restarts != 3 || sum.Swaps[0].N != 3 || len(sum.Swaps) != 4 {
		t.Errorf("Add = %+v", sum)
	}
	text, err := next.Text()
	if err != nil || !strings.Contains(string(text), `takeover_swaps_total{result="ok",strategy="handoff",target="8100"} 2`) {
		t.Errorf("Text = %v:\n%s", err, text)
	}
	var none *Set
	none.Swap("8100", "fresh", OK, 0, 0, 0)
	none.Restart()
	if c := none.Counts(); c.Restarts != 0 {
		t.Errorf("a nil Set counted %+v", c)
	}
}

func TestParseAddr(t *testing.T) {
	for _, tt := range []struct{ in, network, addr, err string }{
		{"9101", "tcp", "127.0.0.1:9101", ""},
		{"127.0.0.1:9101", "tcp", "127.0.0.1:9101", ""},
		{"localhost:9101", "tcp", "127.0.0.1:9101", ""},
		{"[::1]:9101", "tcp", "[::1]:9101", ""},
		{"0.0.0.0:9101", "tcp", "0.0.0.0:9101", ""}, // named: taken as asked
		{"/run/takeover-metrics.sock", "unix", "/run/takeover-metrics.sock", ""},
		{":9101", "", "", "names no address"},
		{"127.0.0.1:0", "", "", "is not a port"},
		{"127.0.0.1:99999", "", "", "is not a port"},
		{"host.example:9101", "", "", "is not an IP address"},
		{"run/m.sock", "", "", "must be absolute"},
		{"nonsense", "", "", "want 127.0.0.1:9101"},
	} {
		network, addr, err := ParseAddr(tt.in)
		if network != tt.network || addr != tt.addr || (err == nil) != (tt.err == "") || err != nil && !strings.Contains(err.Error(), tt.err) {
			t.Errorf("ParseAddr(%q) = %q, %q, %v; want %q, %q, an error saying %q", tt.in, network, addr, err, tt.network, tt.addr, tt.err)
		}
	}
}

// BenchmarkScrape: what one scrape costs the launcher (the registry
// gathered and written in the text format), with two targets' swaps.
func BenchmarkScrape(b *testing.B) {
	s := New(Counts{})
	for _, target := range []string{"8100", "udp:8125"} {
		for range 10 {
			s.Swap(target, "handoff", OK, time.Millisecond, time.Second, 0)
			s.Drained(target, time.Second)
		}
	}
	s.Serving(3, 0, 2)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Text(); err != nil {
			b.Fatal(err)
		}
	}
}
