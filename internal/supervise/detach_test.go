package supervise

import (
	"context"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/takeover/takeover/internal/procfs"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/target"
	"github.com/takeover/takeover/internal/testutil"
)

// TestDetachedRecordLeftToNewer: the detached launcher notes in its
// record until when it serves, but never while another takeover holds the
// port's lock: that one writes its own record before it signals the
// detached launcher (how it tells "replaced" from "stopped"), and a read
// and write of the old record around it would put the old launcher back.
// Here the lock file is held through a file of its own, as the newer
// takeover holds it, with the record still naming the detached launcher.
func TestDetachedRecordLeftToNewer(t *testing.T) {
	dir := testutil.RunDir(t)
	spec, err := target.Parse("127.0.0.1:8100")
	if err != nil {
		t.Fatal(err)
	}
	st, err := procfs.FS("/proc").Stat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	l := &launcher{ctx: context.Background(), cfg: Config{Ports: []target.Spec{spec}}, dir: dir, self: os.Getpid(), born: st.Start, log: slog.New(slog.DiscardHandler)}
	key := spec.Key()
	mine := rundir.Record{Launcher: l.self, LauncherStart: l.born, Child: 1}
	if err := rundir.WriteRecord(dir, key, mine); err != nil {
		t.Fatal(err)
	}
	newer, err := rundir.Lock(context.Background(), dir, []string{key}, rundir.Owner{PID: 2, Start: 1}, func(string, rundir.Owner, time.Duration) {})
	if err != nil {
		t.Fatal(err)
	}
	l.setDetached(time.Now().Add(time.Minute))
	if r, ok := rundir.ReadRecord(dir, key); !ok || r.DetachedUntil != nil {
		t.Errorf("the detached launcher wrote its record while another takeover held the port's lock: %+v (found: %v)", r, ok)
	}
	rundir.ReleaseLocks(newer)
	until := time.Now().Add(time.Minute)
	l.setDetached(until)
	if r, ok := rundir.ReadRecord(dir, key); !ok || r.DetachedUntil == nil || !r.DetachedUntil.Equal(until) {
		t.Errorf("with the lock free, the record is %+v (found: %v), want detached until %v", r, ok, until)
	}
}
