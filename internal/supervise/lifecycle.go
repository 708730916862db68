package supervise

import (
	"fmt"
	"log/slog"
	"syscall"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/takeover/takeover/internal/systemd"
)

// A launcher's life is a state machine: named states, named events, and
// every transition in lifecycle.handle. The lifecycle decides; a
// supervisor (the launcher, or a test's fake) carries its decisions out and
// turns what happens (signals, a generation ready or exited, timers) into
// events.

type lifeState int

const (
	starting   lifeState = iota // the first generation starts (the port locks are held)
	serving                     // a generation serves
	reloading                   // a generation serves while the next one starts (HUP)
	backingOff                  // the serving generation died: the sockets are held, a restart waits
	restarting                  // the next generation starts after a crash, the sockets held
	stopping                    // a stop signal was passed on: waiting for the command
	replaced                    // a newer takeover took the ports: waiting for the command, then exit 0
	// start_server's retries (restartPolicy.RetryEvery): a new generation
	// that died before it was ready is started again.
	retryingStart  // the first generation died before it was ready: its sockets are held, nothing runs, the next attempt waits
	retryingReload // a reload's generation died before it was ready: the running one serves, the next attempt waits
	// --probation (probation_linux.go): a new generation serves, and the
	// old server waits beside it, idle, to be rolled back to.
	onProbation
	rollingBack // the new generation failed its probation: the old server (another takeover's) serves again; waiting for the new one to exit
)

func (s lifeState) String() string {
	return [...]string{"starting", "serving", "reloading", "backing-off", "restarting", "stopping", "replaced", "retrying-start", "retrying-reload", "probation", "rolling-back"}[s]
}

type lifeEvent int

const (
	evStop        lifeEvent = iota // TERM, INT or QUIT to takeover
	evReplaced                     // a stop signal sent by a newer takeover of the ports
	evHUP                          // reload
	evSignal                       // any other signal: passed on to the command
	evReady                        // g is ready
	evTimedOut                     // g was not ready within --ready-timeout
	evExited                       // g's command exited
	evDelayDone                    // a reload's --kill-old-delay is over
	evSwapped                      // a swap completed: its old generation is gone
	evBackoffDone                  // the back-off before a restart is over
	evRetryDue                     // the wait before the next attempt at a failed start is over
	evProbation                    // g's swap put it on --probation
	evRolledBack                   // g failed its probation: the old server serves again (why)
)

func (e lifeEvent) String() string {
	return [...]string{"stop", "replaced", "hup", "signal", "ready", "timed-out", "exited", "delay-done", "swapped", "backoff-done", "retry-due", "probation", "rolled-back"}[e]
}

// An event is something that happened to the launcher.
type event struct {
	kind   lifeEvent
	g      *generation
	sig    syscall.Signal
	status syscall.WaitStatus // evExited
	seq    int                // evBackoffDone, evRetryDue: which wait
	by     int                // evReplaced: the newer takeover's pid
	why    string             // evRolledBack
}

// A supervisor carries out the lifecycle's decisions.
type supervisor interface {
	// start starts a generation of the command; prev is the one it
	// replaces (a reload) or whose held sockets it takes (a restart).
	start(prev *generation) (*generation, error)
	// signal passes sig to g's command.
	signal(g *generation, sig syscall.Signal)
	// stop signals g's command (0: with --signal) and SIGKILLs it after
	// --kill-timeout.
	stop(g *generation, sig syscall.Signal)
	// completeSwap records g, tells systemd, stops what g replaced and, with
	// unlock, releases the port locks; it reports evSwapped when done.
	completeSwap(g *generation, unlock bool)
	// release closes takeover's copies of g's sockets and lets go of what
	// its swaps held.
	release(g *generation)
	// after reports ev once d has passed.
	after(d time.Duration, ev event)
	// notify tells systemd, when takeover runs under it.
	notify(state string)
	// queued returns how many connections wait in g's accept queues.
	queued(g *generation) int
	// restarting records a crash the lifecycle will restart after.
	restarting(c crashInfo)
	// reloadFailed records a reload whose new generation (num; 0 if none
	// could be started) never served.
	reloadFailed(num int, why string)
	// gaveUp records a give-up after --max-restarts.
	gaveUp()
	// rolledBack records g, stopped for not being ready in time.
	rolledBack(g *generation)
	// cutProbation ends the probation under way, if any, as passed.
	cutProbation(why string)
	// probationOver records the end of g's probation: passed (why ""), or
	// rolled back, serving the generation that serves on (nil: another
	// takeover's).
	probationOver(g *generation, why string, serving *generation)
	// fallBack returns the old generation of a reload whose swap the new
	// one left unfinished (it died while the old one drained), still
	// serving, and gives up that swap; nil if there is none.
	fallBack() *generation
}

// restartPolicy is --restart, --max-restarts and --restart-window, and
// start_server's retries.
type restartPolicy struct {
	Mode   string // on-failure, always or never
	Max    int
	Window time.Duration
	Delay  time.Duration // the first back-off
	// RetryEvery is start_server's rule for a new generation that dies
	// before it is ready (before it has lived --interval): another is
	// started this long after the one before started, until one lives.
	// 0: none is; a failed first start ends takeover and a failed reload
	// leaves the running generation serving (takeover's own rule).
	RetryEvery time.Duration
	MaxRetries int // failed attempts in a row retried before giving up; 0: no end
}

const (
	RestartFirst    = 100 * time.Millisecond // pm2's exp_backoff_restart_delay: --restart-delay
	RestartMax      = 15 * time.Second
	restartStableUp = 30 * time.Second // up this long, a generation resets the back-off
)

// A lifecycle is the state of one launcher.
type lifecycle struct {
	sup          supervisor
	log          *slog.Logger
	policy       restartPolicy
	killOldDelay time.Duration
	now          func() time.Time

	state      lifeState
	cur        *generation // the one serving, or the one starting
	next       *generation // a reload's, while it starts
	dead       *generation // a crashed one, whose sockets are held
	old        *generation // a reload's old generation, until the swap that stops it completes
	locked     bool        // the port locks are held until the first swap completes
	swapping   bool        // a swap is completing
	swapOf     *generation // whose
	pendingHUP bool        // a HUP waits for the swap under way
	nextReady  bool        // the reload's generation is ready: it waits out --kill-old-delay
	status     int         // the exit status once the command is gone
	restarts   []time.Time // within --restart-window
	backoff    *backoff.ExponentialBackOff
	seq        int       // the current back-off's or retry wait's number
	crash      crashInfo // the last generation that died and is to be started again
	retries    int       // attempts at the start or reload under way that died before they were ready
	replacedBy int       // the pid of the newer takeover that replaced this one
	// probationExit is how the generation on probation exited, while its
	// swap decides between rolling back and keeping it (evRolledBack or
	// evSwapped).
	probationExit *syscall.WaitStatus
	// passesSockets: each generation gets its sockets passed as it starts
	// (--sockets), not taken at its binds.
	passesSockets bool
}

// crashInfo is what the restart log line says of the generation that died.
type crashInfo struct {
	pid, status, attempt int
	delay                time.Duration
	at                   time.Time
}

func newLifecycle(sup supervisor, log *slog.Logger, policy restartPolicy, killOldDelay time.Duration) *lifecycle {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.Multiplier, b.RandomizationFactor = policy.Delay, 1.5, 0
	b.MaxInterval, b.MaxElapsedTime = RestartMax, 0
	b.Reset()
	return &lifecycle{sup: sup, log: log, policy: policy, killOldDelay: killOldDelay, now: time.Now, backoff: b, status: -1}
}

// begin starts the first generation.
func (m *lifecycle) begin() error {
	g, err := m.sup.start(nil)
	if err != nil {
		return err
	}
	m.cur, m.state, m.locked = g, starting, true
	return nil
}

// handle moves the lifecycle on by one event. done says takeover exits
// now, with status code.
func (m *lifecycle) handle(ev event) (code int, done bool) {
	switch ev.kind {
	case evHUP:
		return m.onHUP()
	case evSignal:
		if m.cur != nil && m.state != backingOff {
			m.sup.signal(m.cur, ev.sig)
		}
	case evStop, evReplaced:
		return m.onStop(ev)
	case evReady:
		m.onReady(ev.g)
	case evTimedOut:
		m.onTimedOut(ev.g)
	case evDelayDone:
		if ev.g == m.next && m.state == reloading {
			m.old, m.cur, m.next = m.cur, m.next, nil
			m.completeSwap(m.cur)
		} else if ev.g == m.cur && m.state == starting {
			m.completeSwap(m.cur)
		}
	case evProbation:
		if ev.g == m.cur && m.state == serving {
			m.state = onProbation
		}
	case evRolledBack:
		return m.onRolledBack(ev.g, ev.why)
	case evSwapped:
		if ev.g != m.swapOf {
			// An earlier generation's swap, ended after the next one's
			// began (a HUP does not wait for a swap): the state is that
			// one's.
			break
		}
		m.swapping, m.old, m.swapOf = false, nil, nil
		if m.state == onProbation {
			m.sup.probationOver(ev.g, "", nil)
			m.state = serving
			if ws := m.probationExit; ws != nil {
				m.probationExit = nil // kept, and then it died: as a crash after any swap
				return m.onExited(ev.g, *ws)
			}
		}
		if m.state == serving && m.pendingHUP {
			m.pendingHUP = false
			m.startReload()
		}
	case evBackoffDone:
		if m.state == backingOff && ev.seq == m.seq {
			return m.startRestart()
		}
	case evRetryDue:
		if (m.state == retryingStart || m.state == retryingReload) && ev.seq == m.seq {
			return m.retryNow()
		}
	case evExited:
		return m.onExited(ev.g, ev.status)
	}
	return 0, false
}

func (m *lifecycle) onHUP() (int, bool) {
	switch m.state {
	case serving:
		// A swap under way (its old server draining) does not hold the
		// next generation back: it starts now, and its binds wait for that
		// swap to complete (awaitPrevSwap), so that one swap at a time
		// takes the sockets and one old generation drains at a time. A
		// generation that gets its sockets passed gets them as it starts:
		// it waits for the swap.
		if m.swapping && m.passesSockets {
			m.pendingHUP = true
			break
		}
		m.startReload()
	case starting, reloading, restarting:
		m.pendingHUP = true
	case onProbation:
		// The newest release wins: the one on probation is the old one to
		// it, and the old server before it is stopped as after a probation
		// passed (once: the swap stops it, the next one stops this one).
		m.pendingHUP = true
		m.sup.cutProbation("a HUP: a newer release is deployed")
	case backingOff:
		m.log.Info("HUP during the back-off: restarting now")
		return m.startRestart()
	case retryingStart, retryingReload:
		m.log.Info("HUP while a failed start waits for its retry: starting the next attempt now")
		return m.retryNow()
	}
	return 0, false
}

func (m *lifecycle) startReload() {
	m.sup.notify("RELOADING=1\nMONOTONIC_USEC=" + systemd.MonotonicUsec())
	g, err := m.sup.start(m.cur)
	if err != nil {
		m.log.Error("reload failed; the running generation keeps serving", "err", err)
		m.sup.reloadFailed(0, err.Error())
		m.sup.notify("READY=1")
		m.state = serving
		return
	}
	m.next, m.state, m.nextReady = g, reloading, false
}

func (m *lifecycle) onStop(ev event) (int, bool) {
	if m.state == onProbation {
		// Stopped: the swap completes as a passed probation does, and its
		// old servers are stopped with it; nothing outlives takeover.
		m.sup.cutProbation("takeover is stopped")
		m.state = serving
	}
	if m.state == backingOff || m.state == retryingStart {
		// Nothing runs: end now. The held sockets close with takeover.
		m.sup.release(m.dead)
		if ev.kind == evReplaced {
			m.log.Info("replaced by a newer takeover while nothing ran", "takeover_pid", ev.by, "state", m.state)
			return 0, true
		}
		m.log.Info("stopped while nothing ran", "state", m.state, "status", m.crash.status)
		return m.crash.status, true
	}
	if ev.kind == evReplaced {
		// The newer takeover holds the sockets now: takeover's copies must
		// not keep the port once the command lets go of it.
		m.state, m.replacedBy = replaced, ev.by
		if m.dead != nil {
			m.sup.release(m.dead)
		}
		if m.cur != nil {
			m.sup.release(m.cur)
			m.sup.stop(m.cur, ev.sig)
		}
	} else {
		if m.state != replaced {
			m.state = stopping
		}
		if m.cur != nil {
			// Passed on, and bounded by --kill-timeout: a supervisor's own
			// stop timeout (TimeoutStopSec=, docker stop -t), if longer,
			// then never has to kill takeover.
			m.sup.stop(m.cur, ev.sig)
		}
	}
	if m.next != nil {
		// A stop during a reload stops the generation being started too:
		// nothing may outlive takeover.
		m.sup.stop(m.next, ev.sig)
	}
	if m.old != nil {
		// And during a reload's swap, the old generation the swap has yet
		// to stop: takeover exits once it has gone, not with it still
		// serving on the sockets.
		m.sup.stop(m.old, ev.sig)
	}
	return 0, false
}

func (m *lifecycle) onReady(g *generation) {
	switch {
	case g == m.cur && (m.state == starting || m.state == restarting):
		if m.state == restarting {
			m.log.Info("restarted", "dead_pid", m.crash.pid, "dead_status", m.crash.status, "attempt", m.crash.attempt,
				"backoff", m.crash.delay, "new_pid", g.pid, "ready_after", m.now().Sub(m.crash.at).Round(time.Millisecond), "queued", m.sup.queued(g))
		}
		if d := m.oldStopDelay(g); d > 0 && m.state == starting {
			// The old server is stopped once the new one has outlived
			// --kill-old-delay; until then it is not serving for takeover.
			m.sup.after(d, event{kind: evDelayDone, g: g})
			return
		}
		m.completeSwap(g)
	case g == m.next && m.state == reloading:
		// The running generation stays the one takeover lives for until
		// the new one has outlived --kill-old-delay.
		m.nextReady = true
		m.sup.after(m.oldStopDelay(g), event{kind: evDelayDone, g: g})
	}
}

// oldStopDelay is --kill-old-delay when g handed a socket over from a
// server still running; a rebind stopped the old server at the bind.
func (m *lifecycle) oldStopDelay(g *generation) time.Duration {
	if g.handedOverFromRunning() {
		return m.killOldDelay
	}
	return 0
}

func (m *lifecycle) completeSwap(g *generation) {
	m.swapping, m.swapOf, m.state, m.retries = true, g, serving, 0
	m.sup.completeSwap(g, m.locked)
	m.locked = false
}

func (m *lifecycle) onTimedOut(g *generation) {
	if g != m.cur && g != m.next || m.state == stopping || m.state == replaced {
		return
	}
	if !g.rollbackable() {
		m.log.Warn("the new generation was not ready within --ready-timeout, but its rebind has stopped the old server already: it stays, and the swap completes",
			"generation", g.num, "pid", g.pid, "it", g.missingNow())
		g.setReadyBy("timeout")
		m.onReady(g)
		return
	}
	m.log.Error("rolling back: the new generation was not ready within --ready-timeout; stopping it, and the running server keeps serving",
		"generation", g.num, "pid", g.pid, "it", g.missingNow(),
		"hint", g.rollbackHint())
	g.markRolledBack()
	m.sup.rolledBack(g)
	m.sup.release(g)
	m.sup.stop(g, 0)
}

// logReplaced says, as a replaced takeover exits 0, which takeover replaced
// it and whether its server g drained: exited by itself with status 0, or
// not, and how it ended.
func (m *lifecycle) logReplaced(g *generation, ws syscall.WaitStatus) {
	attrs := []any{"takeover_pid", m.replacedBy, "generation", g.num, "pid", g.pid}
	switch {
	case ws.Exited() && ws.ExitStatus() == 0:
		m.log.Info("replaced by a newer takeover; the server drained and exited 0", attrs...)
	case ws.Exited():
		m.log.Warn(fmt.Sprintf("replaced by a newer takeover; the server did not drain cleanly: it exited with status %d", ws.ExitStatus()), attrs...)
	case ws.Signal() == syscall.SIGKILL:
		m.log.Warn("replaced by a newer takeover; the server did not drain: it was killed by SIGKILL, as when --kill-timeout or --drain-timeout runs out", attrs...)
	default:
		m.log.Warn(fmt.Sprintf("replaced by a newer takeover; the server did not drain: it was killed by signal %d (%v)", ws.Signal(), ws.Signal()), attrs...)
	}
}

func (m *lifecycle) onExited(g *generation, ws syscall.WaitStatus) (int, bool) {
	code := exitStatus(ws)
	switch {
	case g == m.next:
		m.sup.release(g)
		m.next = nil
		if m.state == stopping || m.state == replaced {
			return m.status, m.cur == nil && m.old == nil
		}
		if !g.isRolledBack() && m.retryFailed(g, code, retryingReload) {
			return 0, false
		}
		if g.isRolledBack() {
			m.sup.reloadFailed(g.num, "rolled back: not ready within --ready-timeout: it "+g.missingNow())
		} else {
			when := "before it was ready"
			if m.nextReady {
				when = "during --kill-old-delay"
			}
			m.log.Error("reload failed: the new generation exited "+when+"; the running one keeps serving",
				"generation", g.num, "pid", g.pid, "status", code)
			m.sup.reloadFailed(g.num, fmt.Sprintf("exited %s with status %d", when, code))
		}
		m.sup.notify("READY=1")
		m.state = serving
		if m.pendingHUP && !m.swapping {
			m.pendingHUP = false
			m.startReload()
		}
		return 0, false
	case g == m.old:
		m.old = nil
		return m.status, (m.state == stopping || m.state == replaced) && m.cur == nil && m.next == nil
	case g != m.cur:
		return 0, false // an old generation, or an orphan
	}
	switch m.state {
	case onProbation:
		// Its swap sees it too, and rolls back: the old server serves on.
		m.probationExit = &ws
		m.log.Warn("the new generation exited during its probation", "generation", g.num, "pid", g.pid, "status", code)
		return 0, false
	case rollingBack:
		m.sup.release(g)
		m.cur = nil
		return ExitRolledBack, true
	case stopping, replaced:
		m.sup.release(g)
		m.cur, m.status = nil, code
		if m.state == replaced {
			m.status = 0
			m.logReplaced(g, ws)
		} else {
			m.log.Info("command exited", "pid", g.pid, "status", code)
		}
		return m.status, m.next == nil && m.old == nil
	case reloading:
		// The serving generation died during a reload (a rebind stops it at
		// the new one's bind). The new one takes its place, and its sockets,
		// with the connections waiting in them: they are kept for it, as
		// for a restart, not closed with their queues.
		m.log.Debug("the running generation exited during a reload", "generation", g.num, "pid", g.pid, "status", code)
		m.holdSocketsOf(g)
		m.cur, m.next, m.state = m.next, nil, starting
		return 0, false
	case starting:
		if !g.isRolledBack() && m.retryFailed(g, code, retryingStart) {
			m.holdSocketsOf(g)
			return 0, false
		}
		m.sup.release(g)
		if m.dead != nil {
			m.sup.release(m.dead) // an earlier attempt's
		}
		if g.isRolledBack() {
			return ExitNotReady, true
		}
		m.log.Warn("command exited before it was ready on every --port; no earlier instance was stopped for it", "pid", g.pid, "status", code)
		return code, true
	case restarting:
		return m.crashed(g, code)
	}
	// serving
	if !m.restartFor(g, ws) {
		m.sup.release(g)
		if m.servesOn(g) {
			return 0, false
		}
		m.log.Info("command exited", "pid", g.pid, "status", code)
		return code, true
	}
	return m.crashed(g, code)
}

// onRolledBack makes what served before g serve again: g failed its
// probation (why), and its swap has steered new connections back to the
// old servers. g is stopped. A reload's old generation is the serving one
// again; where the old server is another takeover's, this takeover exits
// with ExitRolledBack once g has.
func (m *lifecycle) onRolledBack(g *generation, why string) (int, bool) {
	if g != m.cur || m.state != onProbation {
		return 0, false
	}
	ws := m.probationExit
	m.probationExit = nil
	if p := g.prev; p != nil && !p.hasExited() {
		m.sup.probationOver(g, why, p)
		m.sup.reloadFailed(g.num, why)
		m.sup.release(g)
		if ws == nil {
			m.sup.stop(g, 0)
		}
		m.cur, m.state, m.old = p, serving, nil
		m.sup.notify("READY=1")
		return 0, false
	}
	m.sup.probationOver(g, why, nil)
	if ws != nil {
		m.sup.release(g)
		m.cur = nil
		return ExitRolledBack, true
	}
	m.state = rollingBack
	m.sup.stop(g, 0)
	return 0, false
}

// servesOn makes the old generation of an unfinished reload the serving
// one again, when g, which replaced it, has died for good: takeover lives
// on for it rather than leave it running unsupervised.
func (m *lifecycle) servesOn(g *generation) bool {
	old := m.sup.fallBack()
	if old == nil {
		return false
	}
	m.log.Warn("the reload's new generation died before its swap completed and does not come back: the old generation serves on", "generation", old.num, "pid", old.pid, "dead_pid", g.pid)
	m.sup.reloadFailed(g.num, "died while the old generation drained")
	m.sup.notify("READY=1")
	m.cur, m.state, m.old = old, serving, nil
	return true
}

// restartFor reports whether --restart asks for a generation that served
// and then exited with ws to be started again.
func (m *lifecycle) restartFor(g *generation, ws syscall.WaitStatus) bool {
	switch {
	case m.policy.Mode == "never":
		return false
	case ws.Signaled() && g.wasSentSignal(ws.Signal()):
		return false // takeover passed that signal on: a stop, not a crash
	case m.policy.Mode == "always":
		return true
	}
	return exitStatus(ws) != 0
}

// crashed holds g's sockets and restarts the command after a back-off, or
// gives up after --max-restarts within --restart-window.
func (m *lifecycle) crashed(g *generation, code int) (int, bool) {
	now := m.now()
	m.holdSocketsOf(g)
	for len(m.restarts) > 0 && now.Sub(m.restarts[0]) > m.policy.Window {
		m.restarts = m.restarts[1:]
	}
	if len(m.restarts) >= m.policy.Max {
		m.log.Error("the command keeps dying: giving up, and closing the sockets so that clients are refused rather than left waiting",
			"pid", g.pid, "status", code, "restarts", len(m.restarts), "within", m.policy.Window)
		m.sup.gaveUp()
		m.sup.release(m.dead)
		if m.servesOn(g) {
			m.dead = nil
			return 0, false
		}
		return code, true
	}
	if up := g.upFor(now); up >= restartStableUp {
		m.backoff.Reset()
	}
	delay := m.backoff.NextBackOff()
	m.restarts = append(m.restarts, now)
	m.crash = crashInfo{pid: g.pid, status: code, attempt: len(m.restarts), delay: delay, at: now}
	m.log.Warn("the command died; takeover holds its sockets and restarts it", "pid", g.pid, "status", code,
		"attempt", m.crash.attempt, "max_restarts", m.policy.Max, "backoff", delay)
	m.sup.restarting(m.crash)
	m.sup.notify(fmt.Sprintf("STATUS=restarting after pid %d exited with status %d (attempt %d, back-off %v)", g.pid, code, m.crash.attempt, delay))
	m.state, m.cur = backingOff, nil
	m.seq++
	m.sup.after(delay, event{kind: evBackoffDone, seq: m.seq})
	return 0, false
}

// holdSocketsOf keeps the sockets of g, which died, for the generation
// started after it: g's, or an older dead one's that g never took over.
func (m *lifecycle) holdSocketsOf(g *generation) {
	switch {
	case m.dead == nil || m.dead == g:
		m.dead = g
	case g.holdings.HoldsSockets():
		m.sup.release(m.dead) // its sockets were handed to g, which holds them now
		m.dead = g
	default:
		m.sup.release(g) // it died before it took the sockets over: the older copies stay
	}
}

// retryFailed applies start_server's rule to g, a new generation that
// exited with code before it was ready: unless the policy has no retries,
// or they are used up (false), the lifecycle waits in state waiting until
// --interval after g's start, and then starts another attempt (retryNow).
func (m *lifecycle) retryFailed(g *generation, code int, waiting lifeState) bool {
	if m.policy.RetryEvery == 0 {
		return false
	}
	if m.policy.MaxRetries > 0 && m.retries >= m.policy.MaxRetries {
		m.log.Error("the command keeps failing to start: giving up", "generation", g.num, "pid", g.pid, "status", code,
			"retries", m.retries, "max_restarts", m.policy.MaxRetries)
		m.retries = 0
		return false
	}
	now := m.now()
	delay := max(0, m.policy.RetryEvery-g.upFor(now))
	if m.pendingHUP {
		m.pendingHUP, delay = false, 0 // the HUP asked for a new generation: this is it
	}
	m.retries++
	m.crash = crashInfo{pid: g.pid, status: code, attempt: m.retries, delay: delay, at: now}
	msg := "the command exited before it was ready; takeover starts it again, as start_server does"
	if waiting == retryingReload {
		msg = "the new generation exited before it was ready; the running one keeps serving, and it is started again, as start_server does"
	}
	m.log.Warn(msg, "generation", g.num, "pid", g.pid, "status", code, "attempt", m.retries, "next_in", delay)
	if waiting == retryingReload {
		m.sup.notify("READY=1")
	} else {
		m.cur = nil
	}
	m.state = waiting
	m.seq++
	m.sup.after(delay, event{kind: evRetryDue, seq: m.seq})
	return true
}

// retryNow starts the next attempt at a failed start: the first
// generation on the held sockets, or the reload's.
func (m *lifecycle) retryNow() (int, bool) {
	m.seq++ // a retry wait still pending is void
	if m.state == retryingReload {
		m.startReload()
		return 0, false
	}
	return m.startAgain(starting)
}

func (m *lifecycle) startRestart() (int, bool) { return m.startAgain(restarting) }

// startAgain starts the command on the sockets m.dead holds, and goes to
// state then; a command that cannot start ends takeover.
func (m *lifecycle) startAgain(then lifeState) (int, bool) {
	g, err := m.sup.start(m.dead)
	if err != nil {
		m.log.Error("cannot start the command again", "err", err)
		m.sup.release(m.dead)
		return ExitLauncher, true
	}
	m.cur, m.state = g, then
	return 0, false
}
