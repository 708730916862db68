package swap

import (
	"fmt"
	"os"
	"testing"

	"github.com/takeover/takeover/internal/owner"
	"github.com/takeover/takeover/internal/pidfd"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
)

// TestCheckOldAfterOpen (issue 28, low: pidfds opened after the identity
// checks): takePort now opens the old processes' pidfds first and checks
// them after. A pid the lookup saw holding the port that, by the time its
// pidfd is open, names a process holding nothing (its pid reused) is let
// go of, never signalled; the real holder is kept.
func TestCheckOldAfterOpen(t *testing.T) {
	self, _ := os.Executable()
	srv := testutil.StartHelper(t, "serve", "127.0.0.1:0")
	other := testutil.StartHelper(t, "serve", "127.0.0.1:0") // a process of the same program holding another port
	spec, err := target.Parse(srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := owner.Listeners("/proc", spec, nil, false)
	if err != nil || len(ls) != 1 {
		t.Fatalf("%d listeners on %s (%v)", len(ls), srv.Addr, err)
	}
	real, reused := srv.Cmd.Process.Pid, other.Cmd.Process.Pid
	sw := &Record{Inodes: []uint64{ls[0].Inode}}
	for _, pid := range []int{real, reused} {
		sw.Old = append(sw.Old, owner.StopTarget{PID: pid, Holder: owner.Holder{PID: pid}})
	}
	sw.OldProcs, sw.Holders = pidfd.OpenAll([]int{real, reused}), pidfd.OpenAll([]int{real, reused})
	defer sw.releaseOld()
	tk := NewTaker(Options{})
	if err := tk.checkOld(sw, owner.Child{UID: os.Getuid(), Exe: self}, srv.Addr); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(pidfd.PIDsOf(sw.OldProcs), pidfd.PIDsOf(sw.Holders)); got != fmt.Sprint([]int{real}, []int{real}) {
		t.Errorf("kept targets and holders %s, want only the holder %d", got, real)
	}
}
