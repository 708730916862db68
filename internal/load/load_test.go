package load

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestWindowsIn(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms float64) time.Time { return t0.Add(time.Duration(ms * float64(time.Millisecond))) }
	r := &Result{
		// Swap 1: refused from 10 to 12 ms; client b got through at 12.5 ms
		// while client a, refused at 12 ms, was off the CPU until 30 ms.
		// Swap 2: nothing refused.
		Failures: []Failure{{At: at(10), Kind: "refused"}, {At: at(11), Kind: "refused"}, {At: at(12), Kind: "refused"}, {At: at(60), Kind: "reset"}},
		Starts:   []time.Time{at(5), at(30), at(12.5), at(55)},
	}
	got := r.WindowsIn([]time.Time{at(0), at(50), at(100)})
	want := []time.Duration{2500 * time.Microsecond, 0}
	if !cmp.Equal(want, got) {
		t.Errorf("WindowsIn = %v, want %v", got, want)
	}
	if got := r.LongestRefused(); got != 2500*time.Microsecond {
		t.Errorf("LongestRefused = %v, want 2.5ms", got)
	}

	// Three spans, the last with no success after it.
	r = &Result{
		Failures: []Failure{{At: at(1), Kind: "refused"}, {At: at(2), Kind: "refused"}, {At: at(20), Kind: "refused"}, {At: at(27), Kind: "refused"}},
		Starts:   []time.Time{at(0), at(2), at(3), at(19)},
	}
	// A success that starts at the same instant as a refusal ends its span.
	wantSpans := []refusedSpan{{at(1), at(2)}, {at(2), at(2)}, {at(20), at(27)}}
	if got := r.refusedSpans(); !cmp.Equal(wantSpans, got) {
		t.Errorf("refusedSpans = %v, want %v", got, wantSpans)
	}
	if got := r.LongestRefused(); got != 7*time.Millisecond {
		t.Errorf("LongestRefused = %v, want 7ms", got)
	}
}
