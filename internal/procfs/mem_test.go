package procfs

// Tests of the readers of a process's memory.

import (
	"testing"
)

func FuzzParseFDSet(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0}, 7)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		for _, fd := range parseFDSet(b, n) {
			if fd >= n || fd < 0 {
				t.Fatalf("fd %d out of range %d", fd, n)
			}
		}
	})
}
