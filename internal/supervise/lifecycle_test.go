package supervise

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/takeover/takeover/internal/swap"
)

// fakeSupervisor records what the lifecycle asks of it.
type fakeSupervisor struct {
	gens     []*generation
	calls    []string
	failNext bool // the next start fails

	fallBackTo int // the generation fallBack returns, or 0
}

func (f *fakeSupervisor) start(prev *generation) (*generation, error) {
	if f.failNext {
		f.failNext = false
		f.calls = append(f.calls, "start: fails")
		return nil, fmt.Errorf("cannot start")
	}
	g := &generation{num: len(f.gens) + 1, pid: 100 + len(f.gens) + 1, prev: prev, pidfd: -1, started: time.Unix(1000, 0),
		ready: make(chan struct{}), timedOut: make(chan struct{}), exited: make(chan struct{})}
	g.holdings = swap.NewHoldings(g.pid, false, g.exited)
	f.gens = append(f.gens, g)
	f.calls = append(f.calls, fmt.Sprintf("start %d", g.num))
	return g, nil
}
func (f *fakeSupervisor) signal(g *generation, sig syscall.Signal) {
	f.calls = append(f.calls, fmt.Sprintf("signal %d %v", g.num, sig))
	if g.sent == nil {
		g.sent = map[syscall.Signal]bool{}
	}
	g.sent[sig] = true
}
func (f *fakeSupervisor) stop(g *generation, sig syscall.Signal) {
	f.calls = append(f.calls, fmt.Sprintf("stop %d %d", g.num, sig))
}
func (f *fakeSupervisor) completeSwap(g *generation, unlock bool) {
	f.calls = append(f.calls, fmt.Sprintf("swap %d unlock=%v", g.num, unlock))
}
func (f *fakeSupervisor) release(g *generation) {
	f.calls = append(f.calls, fmt.Sprintf("release %d", g.num))
}
func (f *fakeSupervisor) after(d time.Duration, ev event) {
	f.calls = append(f.calls, fmt.Sprintf("after %v %v", d, ev.kind))
}
func (f *fakeSupervisor) notify(state string) {
	f.calls = append(f.calls, "notify "+strings.SplitN(state, "\n", 2)[0])
}
func (f *fakeSupervisor) queued(g *generation) int { return 3 }
func (f *fakeSupervisor) restarting(c crashInfo)   {}
func (f *fakeSupervisor) gaveUp()                  {}
func (f *fakeSupervisor) rolledBack(g *generation) {}
func (f *fakeSupervisor) reloadFailed(num int, why string) {
	f.calls = append(f.calls, fmt.Sprintf("reload %d failed", num))
}

func (f *fakeSupervisor) cutProbation(why string) {
	f.calls = append(f.calls, "cut probation: "+why)
}
func (f *fakeSupervisor) probationOver(g *generation, why string, serving *generation) {
	switch {
	case why == "":
		f.calls = append(f.calls, fmt.Sprintf("probation %d passed", g.num))
	case serving != nil:
		f.calls = append(f.calls, fmt.Sprintf("probation %d failed: %s; %d serves", g.num, why, serving.num))
	default:
		f.calls = append(f.calls, fmt.Sprintf("probation %d failed: %s", g.num, why))
	}
}

func (f *fakeSupervisor) fallBack() *generation {
	if f.fallBackTo == 0 {
		return nil
	}
	f.calls = append(f.calls, fmt.Sprintf("fall back to %d", f.fallBackTo))
	return f.gens[f.fallBackTo-1]
}

// step is one event given to the lifecycle: on generation gen (1-based),
// what the supervisor must have been asked, and where it must be then.
// ev -1 makes the next start fail, -2 gives the supervisor an unfinished
// reload to fall back to, and -3 makes the launcher one that passes
// sockets (--sockets).
type step struct {
	ev    lifeEvent
	gen   int
	sig   syscall.Signal
	exit  int  // evExited: the status, or -SIG for a death by signal
	hold  bool // gen holds sockets from this step on
	calls []string
	state lifeState
	done  bool
	code  int
}

func waitStatus(exit int) syscall.WaitStatus {
	if exit < 0 {
		return syscall.WaitStatus(-exit) // killed by signal -exit
	}
	return syscall.WaitStatus(exit << 8)
}

func TestLifecycle(t *testing.T) {
	policy := restartPolicy{Mode: "on-failure", Max: 2, Window: time.Minute, Delay: RestartFirst}
	// start_server's: --interval 3s; the fake's generations have run 1s when they exit.
	retry := restartPolicy{Mode: "always", Max: 2, Window: time.Minute, Delay: RestartFirst, RetryEvery: 3 * time.Second}
	bounded := retry
	bounded.MaxRetries = 1
	tests := []struct {
		name   string
		policy restartPolicy
		steps  []step
	}{
		{"first generation ready, then stopped", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evStop, gen: 1, sig: syscall.SIGTERM, calls: []string{"stop 1 15"}, state: stopping},
			{ev: evExited, gen: 1, exit: 0, calls: []string{"release 1"}, state: stopping, done: true, code: 0},
		}},
		{"first generation exits before ready: a failed start, not retried", policy, []step{
			{ev: evExited, gen: 1, exit: 3, calls: []string{"release 1"}, state: starting, done: true, code: 3},
		}},
		{"first generation not ready in time: rolled back, exit 124", policy, []step{
			{ev: evTimedOut, gen: 1, calls: []string{"release 1", "stop 1 0"}, state: starting},
			{ev: evExited, gen: 1, exit: -15, calls: []string{"release 1"}, state: starting, done: true, code: ExitNotReady},
		}},
		{"HUP reloads; the new one takes over after --kill-old-delay", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evReady, gen: 2, calls: []string{"after 0s delay-done"}, state: reloading},
			{ev: evDelayDone, gen: 2, calls: []string{"swap 2 unlock=false"}, state: serving},
			{ev: evSwapped, gen: 2, state: serving},
			{ev: evExited, gen: 1, exit: 0, state: serving},
		}},
		// The next generation starts at once; its binds wait for the swap
		// (awaitPrevSwap, TestHUPDuringDrain).
		{"HUP during a swap starts the next generation", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evSwapped, gen: 1, state: reloading},
			{ev: evHUP, state: reloading},
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 2", "reload 2 failed", "notify READY=1", "notify RELOADING=1", "start 3"}, state: reloading},
		}},
		{"HUP during a swap waits for it where sockets are passed as a generation starts", policy, []step{
			{ev: -3},
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evHUP, state: serving},
			{ev: evSwapped, gen: 1, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
		}},
		{"a reload that cannot start leaves the old serving", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: -1},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start: fails", "reload 0 failed", "notify READY=1"}, state: serving},
		}},
		{"a reload not ready in time is rolled back; the old keeps serving", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evTimedOut, gen: 2, calls: []string{"release 2", "stop 2 0"}, state: reloading},
			{ev: evExited, gen: 2, exit: -15, calls: []string{"release 2", "reload 2 failed", "notify READY=1"}, state: serving},
		}},
		{"the serving generation dies during a reload (a rebind stopped it): the new one takes its place", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evExited, gen: 1, exit: 0, state: starting}, // its copies are kept for the new one
			{ev: evReady, gen: 2, calls: []string{"swap 2 unlock=false"}, state: serving},
		}},
		{"the serving generation dies during a reload, and the new one before it is ready: both let go", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evExited, gen: 1, exit: -9, state: starting},
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 2", "release 1"}, state: starting, done: true, code: 1},
		}},
		{"a reload's new generation dies while the old one drains and cannot come back: the old one serves on", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evReady, gen: 2, calls: []string{"after 0s delay-done"}, state: reloading},
			{ev: evDelayDone, gen: 2, calls: []string{"swap 2 unlock=false"}, state: serving},
			{ev: evExited, gen: 2, exit: 7, hold: true, calls: []string{"notify STATUS=restarting after pid 102 exited with status 7 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
			{ev: evBackoffDone, calls: []string{"start 3"}, state: restarting},
			{ev: evExited, gen: 3, exit: 7, calls: []string{"release 3", "notify STATUS=restarting after pid 103 exited with status 7 (attempt 2, back-off 150ms)", "after 150ms backoff-done"}, state: backingOff},
			{ev: -2}, // from now on, fallBack returns generation 1
			{ev: evBackoffDone, calls: []string{"start 4"}, state: restarting},
			{ev: evExited, gen: 4, exit: 7, calls: []string{"release 4", "release 2", "fall back to 1", "reload 4 failed", "notify READY=1"}, state: serving},
			{ev: evStop, sig: syscall.SIGTERM, calls: []string{"stop 1 15"}, state: stopping},
			{ev: evExited, gen: 1, exit: 0, calls: []string{"release 1"}, state: stopping, done: true, code: 0},
		}},
		{"a stop during a reload stops both and exits with the serving one's status", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evStop, sig: syscall.SIGTERM, calls: []string{"stop 1 15", "stop 2 15"}, state: stopping},
			{ev: evExited, gen: 1, exit: 0, calls: []string{"release 1"}, state: stopping},
			{ev: evExited, gen: 2, exit: -15, calls: []string{"release 2"}, state: stopping, done: true, code: 0},
		}},
		// The reload's swap records the new generation and then stops the
		// old one; a stop in between (a supervisor's down, a detached
		// launcher's --detach-on-stop running out) stopped the new one
		// alone, and takeover exited leaving the old one serving on the
		// port, unsupervised (issue 28, item 12).
		{"a stop while a reload's swap completes stops the old generation too, and waits for it", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evReady, gen: 2, calls: []string{"after 0s delay-done"}, state: reloading},
			{ev: evDelayDone, gen: 2, calls: []string{"swap 2 unlock=false"}, state: serving},
			{ev: evStop, sig: syscall.SIGTERM, calls: []string{"stop 2 15", "stop 1 15"}, state: stopping},
			{ev: evExited, gen: 2, exit: -15, calls: []string{"release 2"}, state: stopping},
			{ev: evExited, gen: 1, exit: 0, state: stopping, done: true, code: 143},
		}},
		// The swap before a HUP's reload ends late, after the reload's own
		// swap began: its evSwapped is that earlier swap's and leaves the
		// later one's state alone.
		{"an earlier swap's end does not end the later one", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evReady, gen: 2, calls: []string{"after 0s delay-done"}, state: reloading},
			{ev: evDelayDone, gen: 2, calls: []string{"swap 2 unlock=false"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evStop, sig: syscall.SIGTERM, calls: []string{"stop 2 15", "stop 1 15"}, state: stopping},
			{ev: evExited, gen: 2, exit: -15, calls: []string{"release 2"}, state: stopping},
			{ev: evExited, gen: 1, exit: 0, state: stopping, done: true, code: 143},
		}},
		{"replaced by a newer takeover: copies released, command stopped, exit 0", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evReplaced, sig: syscall.SIGQUIT, calls: []string{"release 1", "stop 1 3"}, state: replaced},
			{ev: evExited, gen: 1, exit: 0, calls: []string{"release 1"}, state: replaced, done: true, code: 0},
		}},
		{"other signals are passed on", policy, []step{
			{ev: evSignal, sig: syscall.SIGUSR1, calls: []string{"signal 1 user defined signal 1"}, state: starting},
		}},
		{"a crash after serving restarts it after a back-off, on the held sockets", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evExited, gen: 1, exit: -9, calls: []string{"notify STATUS=restarting after pid 101 exited with status 137 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
			{ev: evBackoffDone, calls: []string{"start 2"}, state: restarting},
			{ev: evReady, gen: 2, calls: []string{"swap 2 unlock=false"}, state: serving},
		}},
		{"a crash loop backs off longer each time and gives up after --max-restarts, closing the held sockets", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evExited, gen: 1, exit: 1, calls: []string{"notify STATUS=restarting after pid 101 exited with status 1 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
			{ev: evBackoffDone, calls: []string{"start 2"}, state: restarting},
			// It dies before it binds: the first one's copies stay held.
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 2", "notify STATUS=restarting after pid 102 exited with status 1 (attempt 2, back-off 150ms)", "after 150ms backoff-done"}, state: backingOff},
			{ev: evBackoffDone, calls: []string{"start 3"}, state: restarting},
			{ev: evExited, gen: 3, exit: 1, calls: []string{"release 3", "release 1"}, state: restarting, done: true, code: 1},
		}},
		{"a restarted generation that took the sockets over lets the dead one's copies go when it dies", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evExited, gen: 1, exit: 1, calls: []string{"notify STATUS=restarting after pid 101 exited with status 1 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
			{ev: evBackoffDone, calls: []string{"start 2"}, state: restarting},
			{ev: evReady, gen: 2, hold: true, calls: []string{"swap 2 unlock=false"}, state: serving},
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 1", "notify STATUS=restarting after pid 102 exited with status 1 (attempt 2, back-off 150ms)", "after 150ms backoff-done"}, state: backingOff},
		}},
		{"a clean exit is not restarted under on-failure", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evExited, gen: 1, exit: 0, calls: []string{"release 1"}, state: serving, done: true, code: 0},
		}},
		{"always restarts a clean exit", restartPolicy{Mode: "always", Max: 5, Window: time.Minute, Delay: RestartFirst}, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evExited, gen: 1, exit: 0, calls: []string{"notify STATUS=restarting after pid 101 exited with status 0 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
		}},
		{"never keeps today's behaviour", restartPolicy{Mode: "never", Max: 5, Window: time.Minute, Delay: RestartFirst}, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evExited, gen: 1, exit: 1, calls: []string{"release 1"}, state: serving, done: true, code: 1},
		}},
		{"a death by a signal takeover passed on is not a crash", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSignal, sig: syscall.SIGUSR2, calls: []string{"signal 1 user defined signal 2"}, state: serving},
			{ev: evExited, gen: 1, exit: -int(syscall.SIGUSR2), calls: []string{"release 1"}, state: serving, done: true, code: 128 + int(syscall.SIGUSR2)},
		}},
		{"a stop during a back-off ends takeover at once with the last status", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evExited, gen: 1, exit: 2, calls: []string{"notify STATUS=restarting after pid 101 exited with status 2 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
			{ev: evStop, sig: syscall.SIGTERM, calls: []string{"release 1"}, state: backingOff, done: true, code: 2},
		}},
		{"a HUP during a back-off restarts at once; the back-off's end is then ignored", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evExited, gen: 1, exit: 2, calls: []string{"notify STATUS=restarting after pid 101 exited with status 2 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
			{ev: evHUP, calls: []string{"start 2"}, state: restarting},
			{ev: evBackoffDone, state: restarting},
		}},
		{"a newer takeover during a back-off: exit 0", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evExited, gen: 1, exit: 2, calls: []string{"notify STATUS=restarting after pid 101 exited with status 2 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
			{ev: evReplaced, sig: syscall.SIGTERM, calls: []string{"release 1"}, state: backingOff, done: true, code: 0},
		}},
		{"start_server: a first start that dies before it is ready is retried every --interval on the held sockets", retry, []step{
			{ev: evExited, gen: 1, exit: 1, calls: []string{"after 2s retry-due"}, state: retryingStart},
			{ev: evSignal, sig: syscall.SIGUSR1, state: retryingStart}, // nothing runs to pass it to
			{ev: evRetryDue, calls: []string{"start 2"}, state: starting},
			{ev: evExited, gen: 2, exit: 1, hold: true, calls: []string{"after 2s retry-due", "release 1"}, state: retryingStart},
			{ev: evRetryDue, calls: []string{"start 3"}, state: starting},
			{ev: evReady, gen: 3, calls: []string{"swap 3 unlock=true"}, state: serving},
		}},
		{"start_server: a HUP while a failed first start waits starts the next attempt now", retry, []step{
			{ev: evExited, gen: 1, exit: 1, calls: []string{"after 2s retry-due"}, state: retryingStart},
			{ev: evHUP, calls: []string{"start 2"}, state: starting},
			{ev: evRetryDue, state: starting},
		}},
		{"start_server: a HUP during an attempt that then dies makes the next one come at once", retry, []step{
			{ev: evHUP, state: starting},
			{ev: evExited, gen: 1, exit: 1, calls: []string{"after 0s retry-due"}, state: retryingStart},
		}},
		{"start_server: a stop while a failed first start waits ends takeover at once", retry, []step{
			{ev: evExited, gen: 1, exit: 2, calls: []string{"after 2s retry-due"}, state: retryingStart},
			{ev: evStop, sig: syscall.SIGTERM, calls: []string{"release 1"}, state: retryingStart, done: true, code: 2},
		}},
		{"start_server: --max-restarts bounds the retries of a first start", bounded, []step{
			{ev: evExited, gen: 1, exit: 1, calls: []string{"after 2s retry-due"}, state: retryingStart},
			{ev: evRetryDue, calls: []string{"start 2"}, state: starting},
			{ev: evExited, gen: 2, exit: 4, calls: []string{"release 2", "release 1"}, state: starting, done: true, code: 4},
		}},
		{"start_server: a first start retried that cannot start gives up", retry, []step{
			{ev: evExited, gen: 1, exit: 1, calls: []string{"after 2s retry-due"}, state: retryingStart},
			{ev: -1},
			{ev: evRetryDue, calls: []string{"start: fails", "release 1"}, state: retryingStart, done: true, code: ExitLauncher},
		}},
		{"start_server: a reload that dies before it is ready is retried every --interval; the running one serves meanwhile", retry, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 2", "notify READY=1", "after 2s retry-due"}, state: retryingReload},
			{ev: evSignal, sig: syscall.SIGUSR1, calls: []string{"signal 1 user defined signal 1"}, state: retryingReload},
			{ev: evRetryDue, calls: []string{"notify RELOADING=1", "start 3"}, state: reloading},
			{ev: evExited, gen: 3, exit: 1, calls: []string{"release 3", "notify READY=1", "after 2s retry-due"}, state: retryingReload},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 4"}, state: reloading},
			{ev: evReady, gen: 4, calls: []string{"after 0s delay-done"}, state: reloading},
			{ev: evDelayDone, gen: 4, calls: []string{"swap 4 unlock=false"}, state: serving},
		}},
		{"start_server: a reload that dies during --kill-old-delay is retried too", retry, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evReady, gen: 2, calls: []string{"after 0s delay-done"}, state: reloading},
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 2", "notify READY=1", "after 2s retry-due"}, state: retryingReload},
		}},
		{"start_server: a stop while a reload waits for its retry stops the running one", retry, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 2", "notify READY=1", "after 2s retry-due"}, state: retryingReload},
			{ev: evStop, sig: syscall.SIGTERM, calls: []string{"stop 1 15"}, state: stopping},
			{ev: evRetryDue, state: stopping},
			{ev: evExited, gen: 1, exit: 0, calls: []string{"release 1"}, state: stopping, done: true, code: 0},
		}},
		{"start_server: the running one dies while a reload waits for its retry: a crash, restarted after a back-off", retry, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 2", "notify READY=1", "after 2s retry-due"}, state: retryingReload},
			{ev: evExited, gen: 1, exit: -9, calls: []string{"notify STATUS=restarting after pid 101 exited with status 137 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
			{ev: evRetryDue, state: backingOff},
			{ev: evBackoffDone, calls: []string{"start 3"}, state: restarting},
		}},
		{"start_server: --max-restarts bounds a reload's retries; the running one keeps serving", bounded, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 2", "notify READY=1", "after 2s retry-due"}, state: retryingReload},
			{ev: evRetryDue, calls: []string{"notify RELOADING=1", "start 3"}, state: reloading},
			{ev: evExited, gen: 3, exit: 1, calls: []string{"release 3", "reload 3 failed", "notify READY=1"}, state: serving},
			// The count starts again with the next HUP.
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 4"}, state: reloading},
			{ev: evExited, gen: 4, exit: 1, calls: []string{"release 4", "notify READY=1", "after 2s retry-due"}, state: retryingReload},
		}},
		{"start_server: a reload retried that cannot start leaves the running one serving", retry, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evExited, gen: 2, exit: 1, calls: []string{"release 2", "notify READY=1", "after 2s retry-due"}, state: retryingReload},
			{ev: -1},
			{ev: evRetryDue, calls: []string{"notify RELOADING=1", "start: fails", "reload 0 failed", "notify READY=1"}, state: serving},
		}},
		{"probation: a release that crashes is rolled back, and the takeover it replaced serves on", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evProbation, gen: 1, state: onProbation},
			{ev: evExited, gen: 1, exit: 1, state: onProbation}, // not restarted: its swap decides
			{ev: evRolledBack, gen: 1, calls: []string{"probation 1 failed: crashed", "release 1"}, state: onProbation, done: true, code: ExitRolledBack},
		}},
		{"probation: a release that fails its health check is stopped, then takeover exits", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evProbation, gen: 1, state: onProbation},
			{ev: evRolledBack, gen: 1, calls: []string{"probation 1 failed: crashed", "stop 1 0"}, state: rollingBack},
			{ev: evSwapped, gen: 1, state: rollingBack},
			{ev: evExited, gen: 1, exit: -15, calls: []string{"release 1"}, state: rollingBack, done: true, code: ExitRolledBack},
		}},
		{"probation: a reload rolled back leaves the old generation serving", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evSwapped, gen: 1, state: serving},
			{ev: evHUP, calls: []string{"notify RELOADING=1", "start 2"}, state: reloading},
			{ev: evReady, gen: 2, calls: []string{"after 0s delay-done"}, state: reloading},
			{ev: evDelayDone, gen: 2, calls: []string{"swap 2 unlock=false"}, state: serving},
			{ev: evProbation, gen: 2, state: onProbation},
			{ev: evRolledBack, gen: 2, calls: []string{"probation 2 failed: crashed; 1 serves", "reload 2 failed", "release 2", "stop 2 0", "notify READY=1"}, state: serving},
			{ev: evSwapped, gen: 2, state: serving},
			{ev: evExited, gen: 2, exit: -15, state: serving}, // the rolled-back one: nothing to do
			{ev: evExited, gen: 1, exit: 1, calls: []string{"notify STATUS=restarting after pid 101 exited with status 1 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
		}},
		{"probation: a HUP ends it as passed, then reloads", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evProbation, gen: 1, state: onProbation},
			{ev: evHUP, calls: []string{"cut probation: a HUP: a newer release is deployed"}, state: onProbation},
			{ev: evSwapped, gen: 1, calls: []string{"probation 1 passed", "notify RELOADING=1", "start 2"}, state: reloading},
		}},
		{"probation: a release that dies as it passes is restarted as after any swap", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evProbation, gen: 1, state: onProbation},
			{ev: evExited, gen: 1, exit: 2, state: onProbation},
			{ev: evSwapped, gen: 1, calls: []string{"probation 1 passed", "notify STATUS=restarting after pid 101 exited with status 2 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
		}},
		{"probation: a stop ends it, and stops the command", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evProbation, gen: 1, state: onProbation},
			{ev: evStop, sig: syscall.SIGTERM, calls: []string{"cut probation: takeover is stopped", "stop 1 15"}, state: stopping},
		}},
		{"a restart that cannot start gives up", policy, []step{
			{ev: evReady, gen: 1, calls: []string{"swap 1 unlock=true"}, state: serving},
			{ev: evExited, gen: 1, exit: 2, calls: []string{"notify STATUS=restarting after pid 101 exited with status 2 (attempt 1, back-off 100ms)", "after 100ms backoff-done"}, state: backingOff},
			{ev: -1}, // the next start fails
			{ev: evBackoffDone, calls: []string{"start: fails", "release 1"}, state: backingOff, done: true, code: ExitLauncher},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeSupervisor{}
			m := newLifecycle(f, slog.New(slog.NewTextHandler(io.Discard, nil)), tt.policy, 0)
			m.now = func() time.Time { return time.Unix(1001, 0) }
			if err := m.begin(); err != nil {
				t.Fatal(err)
			}
			f.calls = nil
			for i, s := range tt.steps {
				if s.ev == -1 {
					f.failNext = true
					continue
				}
				if s.ev == -2 {
					f.fallBackTo = 1
					continue
				}
				if s.ev == -3 {
					m.passesSockets = true
					continue
				}
				ev := event{kind: s.ev, sig: s.sig, seq: m.seq}
				if s.gen > 0 {
					ev.g = f.gens[s.gen-1]
				}
				if s.hold {
					ev.g.holdings.Add(swap.SockKey{Tgid: ev.g.pid, FD: 3}, &swap.Held{CopyFD: -1}, nil)
				}
				if s.ev == evRolledBack {
					ev.why = "crashed"
				}
				if s.ev == evExited {
					ev.status = waitStatus(s.exit)
					close(ev.g.exited)
				}
				code, done := m.handle(ev)
				if diff := cmp.Diff(s.calls, f.calls); diff != "" {
					t.Errorf("step %d (%v): calls (-want +got):\n%s", i, s.ev, diff)
				}
				if m.state != s.state || done != s.done || (done && code != s.code) {
					t.Errorf("step %d (%v): state %v, done %v, code %d; want %v, %v, %d", i, s.ev, m.state, done, code, s.state, s.done, s.code)
				}
				f.calls = nil
			}
		})
	}
}

// A replaced takeover exits 0 with one line that names the takeover that
// replaced it and says whether its server drained, and if not how it ended.
func TestReplacedSaysByWhom(t *testing.T) {
	for _, tt := range []struct {
		exit  int // -SIG: killed by SIG
		level string
		want  string
	}{
		{0, "INFO", `msg="replaced by a newer takeover; the server drained and exited 0" takeover_pid=4711 generation=1 pid=101`},
		{3, "WARN", `msg="replaced by a newer takeover; the server did not drain cleanly: it exited with status 3" takeover_pid=4711 generation=1 pid=101`},
		{-9, "WARN", `msg="replaced by a newer takeover; the server did not drain: it was killed by SIGKILL, as when --kill-timeout or --drain-timeout runs out" takeover_pid=4711`},
		{-15, "WARN", `msg="replaced by a newer takeover; the server did not drain: it was killed by signal 15 (terminated)" takeover_pid=4711`},
	} {
		var out strings.Builder
		f := &fakeSupervisor{}
		m := newLifecycle(f, slog.New(slog.NewTextHandler(&out, nil)), restartPolicy{Mode: "on-failure", Max: 2, Window: time.Minute, Delay: RestartFirst}, 0)
		if err := m.begin(); err != nil {
			t.Fatal(err)
		}
		g := f.gens[0]
		m.handle(event{kind: evReady, g: g})
		m.handle(event{kind: evSwapped, g: g})
		m.handle(event{kind: evReplaced, sig: syscall.SIGTERM, by: 4711})
		close(g.exited)
		code, done := m.handle(event{kind: evExited, g: g, status: waitStatus(tt.exit)})
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		last := lines[len(lines)-1]
		if !done || code != 0 || !strings.Contains(last, "level="+tt.level+" "+tt.want) {
			t.Errorf("server exit %d: done %v, code %d, last line:\n%s\nwant exit 0 and level=%s %s", tt.exit, done, code, last, tt.level, tt.want)
		}
	}
}
