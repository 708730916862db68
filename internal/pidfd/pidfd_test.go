package pidfd

import (
	"errors"
	"os"
	"testing"
)

// startedAt stands for /proc: pid started at start, or no process did.
type startedAt map[int]uint64

func (s startedAt) StartedAt(pid int, start uint64) bool {
	st, ok := s[pid]
	return ok && st == start
}

// TestOpenStarted: the pidfd is kept only while the pid is the process
// that started when the record says.
func TestOpenStarted(t *testing.T) {
	me := os.Getpid()
	p, err := OpenStarted(startedAt{me: 42}, me, 42)
	if err != nil {
		t.Fatalf("OpenStarted of this process = %v", err)
	}
	defer p.Close()
	if p.PID != me || p.Signal(0) != nil {
		t.Errorf("OpenStarted holds pid %d (signal 0: %v), want %d", p.PID, p.Signal(0), me)
	}
	if p, err := OpenStarted(startedAt{me: 43}, me, 42); !errors.Is(err, ErrGone) || p != nil {
		t.Errorf("OpenStarted of a pid another process started at = %v, %v; want nil, ErrGone", p, err)
	}
}
