package procfs

// Tests of the stat reader.

import (
	"testing"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		in   string
		want Stat
		ok   bool
	}{
		{"100 (srv) S 90 100 100", Stat{PPID: 90}, true},
		{"100 (my (odd) srv) S 7 100", Stat{PPID: 7}, true},
		{"100 (a) b) R 1 1", Stat{PPID: 1}, true},
		{"100 (srv) S 90 100 100 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 200 0 0", Stat{PPID: 90, Start: 200}, true},
		{"100 (srv) S 90 100 100 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 x 0 0", Stat{}, false},
		{"100 (srv", Stat{}, false},
		{"100 (srv) S", Stat{}, false},
		{"100 (srv) S x", Stat{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseStat([]byte(tt.in))
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("parseStat(%q) = %+v, %v; want %+v, ok=%v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("100 (srv) S 90 100"))
	f.Add([]byte("1 ((sd-pam)) S 0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if st, err := parseStat(b); err == nil && st.PPID < 0 {
			t.Fatalf("negative ppid %d from %q", st.PPID, b)
		}
	})
}
