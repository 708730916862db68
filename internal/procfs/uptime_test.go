package procfs

// Tests of the uptime reader and a process's age.

import (
	"testing"
	"time"
)

func TestParseUptime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3600.25 7100.50\n", time.Hour + 250*time.Millisecond, true},
		{"0.00 0.00", 0, true},
		{"12", 12 * time.Second, true},
		{"", 0, false},
		{"-1.00 0.00", 0, false},
		{"NaN 0", 0, false},
		{"1e300 0", 0, false},
		{"x 0", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseUptime([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("parseUptime(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

func FuzzParseUptime(f *testing.F) {
	f.Add([]byte("3600.25 7100.50\n"))
	f.Add([]byte("NaN"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := parseUptime(b); err == nil && d < 0 {
			t.Errorf("parseUptime(%q) = %v, negative", b, d)
		}
	})
}

func TestAge(t *testing.T) {
	for _, tt := range []struct {
		start  uint64
		uptime time.Duration
		want   time.Duration
	}{
		{50000, 1000 * time.Second, 500 * time.Second},
		{150, 2 * time.Second, 500 * time.Millisecond},
		{300, 2 * time.Second, 0}, // a start after the uptime read: not negative
	} {
		if got := (Stat{Start: tt.start}).Age(tt.uptime); got != tt.want {
			t.Errorf("Stat{Start: %d}.Age(%v) = %v, want %v", tt.start, tt.uptime, got, tt.want)
		}
	}
}
