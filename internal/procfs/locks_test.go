package procfs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestLocks(t *testing.T) {
	for _, tt := range []struct {
		name, text string
		want       []Lock
		err        error
	}{
		{"held and waited for", "1: FLOCK  ADVISORY  WRITE 23551 fe:00:9982684 0 EOF\n2: FLOCK  ADVISORY  READ 11556 08:11:42 0 EOF\n2: -> FLOCK  ADVISORY  WRITE 12518 08:11:42 0 EOF\n3: OFDLCK ADVISORY  WRITE -1 fe:00:7 0 EOF\n",
			[]Lock{{"FLOCK", true, 23551, 0xfe, 0, 9982684}, {"FLOCK", false, 11556, 8, 0x11, 42}, {"OFDLCK", true, -1, 0xfe, 0, 7}}, nil},
		{"POSIX range", "4: POSIX  ADVISORY  WRITE 77 00:2e:1234 0 100\n", []Lock{{"POSIX", true, 77, 0, 0x2e, 1234}}, nil},
		{"empty", "", nil, nil},
		{"truncated", "1: FLOCK  ADVISORY  WRITE 23551\n", nil, errMalformed},
		{"bad pid", "1: FLOCK  ADVISORY  WRITE x fe:00:1 0 EOF\n", nil, errMalformed},
		{"bad device", "1: FLOCK  ADVISORY  WRITE 1 fe:1 0 EOF\n", nil, errMalformed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLocks(tt.text)
			if !errors.Is(err, tt.err) || !slices.Equal(got, tt.want) {
				t.Errorf("parseLocks (-want +got):\n-%v %v\n+%v %v", tt.want, tt.err, got, err)
			}
		})
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "locks"), []byte("1: FLOCK  ADVISORY  WRITE 5 fe:00:9 0 EOF\n"), 0o644)
	if got, err := FS(dir).Locks(); err != nil || len(got) != 1 || got[0].PID != 5 {
		t.Errorf("Locks() = %v, %v", got, err)
	}
	if _, err := FS(filepath.Join(dir, "none")).Locks(); err == nil {
		t.Error("Locks() of a missing file: no error")
	}
}

// FuzzParseLocks: the parser never panics, and every lock it returns has a
// kind.
func FuzzParseLocks(f *testing.F) {
	f.Add("1: FLOCK  ADVISORY  WRITE 23551 fe:00:9982684 0 EOF\n2: -> FLOCK  ADVISORY  WRITE 1 08:11:42 0 EOF\n")
	f.Add("1: x y z 1 a:b:c")
	f.Fuzz(func(t *testing.T, s string) {
		locks, err := parseLocks(s)
		for _, l := range locks {
			if err == nil && l.Kind == "" {
				t.Errorf("%q: a lock of no kind: %+v", s, l)
			}
		}
	})
}
