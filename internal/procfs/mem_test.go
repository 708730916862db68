package procfs

// Tests of the readers of a process's memory.

import (
	"testing"

	"github.com/google/go-cmp/cmp"
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

func TestPollFDs(t *testing.T) {
	// 302 waits in poll(2) on the 2 pollfds at 0x10 (its syscall file).
	got, err := waiting.PollFDs(302, 0x10, 2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]PollFD{{FD: 9, Events: 1}, {FD: 3, Events: 1}}, got); diff != "" {
		t.Errorf("PollFDs (-want +got):\n%s", diff)
	}
	if got, err := waiting.PollFDs(302, 0x10, 4); err == nil {
		t.Errorf("PollFDs past the end of memory = %v, want an error", got)
	}
	if got, err := waiting.PollFDs(305, 0x1000, 4); err == nil { // an empty mem
		t.Errorf("PollFDs of unreadable memory = %v, want an error", got)
	}
}

func TestFDSet(t *testing.T) {
	// 303 waits in select(2) on fds below 7 in the fd_set at 0x20.
	got, err := waiting.FDSet(303, 0x20, 7)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{6}, got); diff != "" {
		t.Errorf("FDSet (-want +got):\n%s", diff)
	}
	if got, err := waiting.FDSet(303, 0x28, 7); err == nil {
		t.Errorf("FDSet past the end of memory = %v, want an error", got)
	}
	if got, err := waiting.FDSet(399, 0x20, 7); err == nil {
		t.Errorf("FDSet of no process = %v, want an error", got)
	}
}
