package procfs

// Tests of the stat reader.

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/google/go-cmp/cmp"
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

func TestStatFixtures(t *testing.T) {
	tests := []struct {
		name    string
		proc    FS
		pid     int
		want    Stat
		wantErr error
	}{
		{"a ')' in the name", fixtures, 100, Stat{PPID: 90, Start: 200}, nil},
		{"worker", fixtures, 101, Stat{PPID: 100, Start: 300}, nil},
		{"a name that reads like fields", broken, 401, Stat{PPID: 1, Start: 700}, nil},
		{"cut after the ppid", broken, 402, Stat{PPID: 90}, nil},
		{"truncated in the name", broken, 400, Stat{}, errMalformed},
		{"a starttime that is no number", broken, 403, Stat{}, errMalformed},
		{"no such process", fixtures, 999, Stat{}, fs.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.proc.Stat(tt.pid)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Stat(%d) error = %v, want %v", tt.pid, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Stat(%d) (-want +got):\n%s", tt.pid, diff)
			}
			ppid, err := tt.proc.PPID(tt.pid)
			if ppid != tt.want.PPID || !errors.Is(err, tt.wantErr) {
				t.Errorf("PPID(%d) = %d, %v; want %d, %v", tt.pid, ppid, err, tt.want.PPID, tt.wantErr)
			}
			// Its start time names the process: another (a later one
			// with the pid) started at another time, and none where no
			// stat reads.
			if got, want := tt.proc.StartedAt(tt.pid, tt.want.Start), tt.wantErr == nil; got != want {
				t.Errorf("StartedAt(%d, %d) = %v, want %v", tt.pid, tt.want.Start, got, want)
			}
			if tt.proc.StartedAt(tt.pid, tt.want.Start+1) {
				t.Errorf("StartedAt(%d, %d) = true for a start it did not have", tt.pid, tt.want.Start+1)
			}
		})
	}
}
