package supervise

import (
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/takeover/takeover/internal/metrics"
	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/swap"
)

// The status record: what the launcher is doing, for people and scripts.
// Every launcher writes it into the run directory at every change (`takeover
// status` reads it there), and into --status-file when asked; the metrics
// (--metrics-file) are written with it.

// Status is the status record, and what --status-file holds.
type Status struct {
	TakeoverPID   int          `json:"takeover_pid"`
	TakeoverStart uint64       `json:"takeover_start"` // clock ticks after boot, to tell a reused pid
	State         string       `json:"state"`          // starting, serving, or backing-off after a crash
	Generation    int          `json:"generation"`
	ChildPID      int          `json:"child_pid"`              // 0 while backing off
	ServingSince  time.Time    `json:"serving_since,omitzero"` // the serving generation's start
	Command       []string     `json:"command"`
	ReadyBy       string       `json:"ready_by"`
	Ports         []string     `json:"ports"`
	Updated       time.Time    `json:"updated"`
	LastSwap      []swapStatus `json:"last_swap"`
	// Draining are the old servers that finish their connections before
	// they exit: this launcher's earlier generations, or those of the
	// takeover it replaced.
	Draining    []Draining   `json:"draining,omitempty"`
	Restarts    int          `json:"restarts"`
	LastRestart *restartInfo `json:"last_restart,omitempty"`
	// FailedReloads counts the reloads (HUP, systemctl reload) whose new
	// generation never served: it failed to start, exited before it was
	// ready, or was rolled back. A deploy that waits for a new generation
	// fails at once when this grows.
	FailedReloads    int           `json:"failed_reloads"`
	LastFailedReload *failedReload `json:"last_failed_reload,omitempty"`
	// Probation: the serving generation is on --probation, its old server
	// idle beside it to roll back to.
	Probation *ProbationStatus `json:"probation,omitempty"`
	// LastRollback: the last release rolled back after it took over (it
	// failed its probation).
	LastRollback *RollbackStatus `json:"last_rollback,omitempty"`
	// DetachedUntil: stopped by its supervisor with --detach-on-stop, the
	// launcher serves until then, unless a newer takeover replaces it.
	DetachedUntil *time.Time `json:"detached_until,omitempty"`
	// Counters are the metrics' counters, the next takeover's start.
	Counters metrics.Counts `json:"counters"`
}

// A Draining is an old server finishing its connections.
type Draining struct {
	PID         int       `json:"pid"`
	TakeoverPID int       `json:"takeover_pid,omitempty"` // the takeover it ran under, when that is another
	Target      string    `json:"target"`
	Since       time.Time `json:"since"`
}

// A ProbationStatus is a probation under way.
type ProbationStatus struct {
	Since   time.Time `json:"since"`
	Until   time.Time `json:"until"`
	OldPIDs []int     `json:"old_pids"`
	Canary  int       `json:"canary_percent,omitempty"`
}

// A RollbackStatus is a release rolled back after it took over.
type RollbackStatus struct {
	Generation int       `json:"generation"`
	PID        int       `json:"pid"`
	At         time.Time `json:"at"`
	Why        string    `json:"why"` // "rolled back after 2.1s: the new generation (pid 123) exited"
}

// restartInfo is the status record's account of the last crash.
type restartInfo struct {
	DeadPID    int       `json:"dead_pid"`
	DeadStatus int       `json:"dead_status"`
	Attempt    int       `json:"attempt"`
	BackoffMS  float64   `json:"backoff_ms"`
	At         time.Time `json:"at"`
}

type swapStatus struct {
	Port            string  `json:"port"`
	Address         string  `json:"address"`
	Strategy        string  `json:"strategy"`
	Why             string  `json:"why,omitempty"`
	Via             string  `json:"via,omitempty"`
	Fenced          bool    `json:"fenced,omitempty"`
	NotFenced       string  `json:"not_fenced,omitempty"`
	OldPID          int     `json:"old_pid,omitempty"`
	LookupMS        float64 `json:"lookup_ms"`
	ReadyWaitMS     float64 `json:"ready_wait_ms"`
	SignalToFreeMS  float64 `json:"signal_to_free_ms,omitempty"`
	RefusedWindowMS float64 `json:"refused_window_ms"`
	TotalMS         float64 `json:"total_ms"`
}

func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// initStatus starts the status record and the metrics, whose counters
// start from those of the takeovers this one is to replace (what their
// status records say as it starts), so that a deploy does not reset them.
func (l *launcher) initStatus() {
	prior := metrics.Counts{}
	var seen []int
	for _, key := range l.keys() {
		r, ok := rundir.ReadRecord(l.dir, key)
		if !ok || r.Launcher == l.self || slices.Contains(seen, r.Launcher) {
			continue
		}
		seen = append(seen, r.Launcher)
		var old Status
		if b, ok := l.dir.ReadStatus(r.Launcher); ok && json.Unmarshal(b, &old) == nil && old.TakeoverStart == r.LauncherStart {
			prior = metrics.Add(prior, old.Counters)
		}
	}
	l.metrics = metrics.New(prior)
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.status
	st.TakeoverPID, st.TakeoverStart, st.State, st.Command, st.LastSwap = l.self, l.born, "starting", l.cfg.Command, []swapStatus{}
	for _, p := range l.cfg.Ports {
		st.Ports = append(st.Ports, p.String())
	}
	l.flushStatus()
}

// writeStatus records a completed swap, and counts it.
func (l *launcher) writeStatus(g *generation, swaps []*swap.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.status
	st.State, st.Generation, st.ChildPID, st.ServingSince = "serving", g.num, g.pid, g.started.UTC()
	if l.cfg.Probation > 0 {
		st.State = "probation" // until the swap says whether it is on probation, so that a deploy waits
	}
	st.LastSwap = []swapStatus{}
	by, readyAt := g.readiedBy()
	st.ReadyBy = by
	var counted []string
	for _, sw := range swaps {
		s := swapStatus{Port: sw.Spec.String(), Address: sw.Spec.BoundAt(sw.Addr), Strategy: sw.Strategy, Why: sw.Why, Via: sw.Via,
			Fenced: sw.Fence != nil, NotFenced: sw.NotFenced,
			LookupMS: Ms(sw.Lookup), SignalToFreeMS: Ms(sw.Free), RefusedWindowMS: Ms(sw.Window), TotalMS: Ms(readyAt.Sub(sw.Began)),
			ReadyWaitMS: Ms(readyAt.Sub(g.started))}
		if len(sw.Old) > 0 {
			s.OldPID = sw.Old[0].Holder.PID
		}
		st.LastSwap = append(st.LastSwap, s)
		// A bare port's swaps, one per socket, are one swap of the target.
		if !slices.Contains(counted, s.Port) {
			counted = append(counted, s.Port)
			l.metrics.Swap(s.Port, sw.Strategy, metrics.OK, readyAt.Sub(sw.Began), readyAt.Sub(g.started), sw.Window)
		}
	}
	l.metrics.Serving(g.num, len(st.Draining), len(swaps))
	l.flushStatus()
}

// rolledBack counts a generation stopped for not being ready in time, and
// the swaps it had begun.
func (l *launcher) rolledBack(g *generation) {
	l.metrics.Rollback()
	var counted []string
	for _, sw := range g.holdings.Swaps() {
		if t := sw.Spec.String(); !slices.Contains(counted, t) {
			counted = append(counted, t)
			l.metrics.Swap(t, sw.Strategy, metrics.RolledBack, 0, 0, 0)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushStatus()
}

// setProbation records g's probation, p, begun.
func (l *launcher) setProbation(g *generation, p *ProbationStatus) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.State, l.status.Probation = "probation", p
	l.flushStatus()
}

// probationOver records the end of g's probation: passed (why ""), or
// rolled back, with serving the generation that serves on (nil: another
// takeover's).
func (l *launcher) probationOver(g *generation, why string, serving *generation) {
	if why != "" {
		l.rolledBack(g)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.status
	st.Probation, st.State = nil, "serving"
	if why != "" {
		st.LastRollback = &RollbackStatus{Generation: g.num, PID: g.pid, At: time.Now().UTC(), Why: why}
		st.State = "rolled-back"
		if serving != nil {
			st.State, st.Generation, st.ChildPID, st.ServingSince = "serving", serving.num, serving.pid, serving.started.UTC()
		}
	}
	l.flushStatus()
}

// gaveUp counts a give-up after --max-restarts.
func (l *launcher) gaveUp() {
	l.metrics.GiveUp()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushStatus()
}

// draining records the old servers of stop as draining from now until the
// returned function is called (exited: they have exited, and their drain
// is observed).
func (l *launcher) draining(stop swap.Stops) func(exited bool) {
	began := time.Now()
	var pids []int
	l.mu.Lock()
	for _, st := range stop {
		for _, o := range st.Record.Old {
			if !slices.Contains(pids, o.Holder.PID) {
				pids = append(pids, o.Holder.PID)
				d := Draining{PID: o.Holder.PID, Target: st.Record.Spec.String(), Since: began.UTC()}
				if o.Launcher {
					d.TakeoverPID = o.PID
				}
				l.status.Draining = append(l.status.Draining, d)
			}
		}
	}
	if len(pids) > 0 {
		l.metrics.Draining(len(l.status.Draining))
		l.flushStatus()
	}
	l.mu.Unlock()
	var once sync.Once
	return func(exited bool) {
		once.Do(func() {
			if len(pids) == 0 {
				return
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			var targets []string
			l.status.Draining = slices.DeleteFunc(l.status.Draining, func(d Draining) bool {
				if slices.Contains(pids, d.PID) && !slices.Contains(targets, d.Target) {
					targets = append(targets, d.Target)
				}
				return slices.Contains(pids, d.PID)
			})
			if exited {
				for _, t := range targets {
					l.metrics.Drained(t, time.Since(began))
				}
			}
			l.metrics.Draining(len(l.status.Draining))
			l.flushStatus()
		})
	}
}

// restarting records a crash: takeover backs off, the sockets held, before
// it starts the command again.
func (l *launcher) restarting(c crashInfo) {
	l.metrics.Restart()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.State, l.status.ChildPID = "backing-off", 0
	l.status.Restarts++
	l.status.LastRestart = &restartInfo{DeadPID: c.pid, DeadStatus: c.status, Attempt: c.attempt, BackoffMS: Ms(c.delay), At: c.at.UTC()}
	l.flushStatus()
}

// failedReload is the status file's account of the last failed reload.
type failedReload struct {
	Generation int       `json:"generation"` // 0: it could not be started
	Why        string    `json:"why"`
	At         time.Time `json:"at"`
}

// reloadFailed records in --status-file a reload whose new generation
// never served (num 0: none could be started).
func (l *launcher) reloadFailed(num int, why string) {
	l.metrics.FailedReload()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.FailedReloads++
	l.status.LastFailedReload = &failedReload{Generation: num, Why: why, At: time.Now().UTC()}
	l.flushStatus()
}

// flushStatus writes l.status into the run directory and --status-file,
// and the metrics into --metrics-file; l.mu is held.
func (l *launcher) flushStatus() {
	l.status.Updated = time.Now().UTC()
	l.status.Counters = l.metrics.Counts()
	b, _ := json.MarshalIndent(l.status, "", "  ")
	b = append(b, '\n')
	if err := l.dir.WriteStatus(l.self, b); err != nil {
		l.log.Warn("cannot write the status record in the run directory", "err", err)
	}
	if l.cfg.StatusFile != "" {
		if err := rundir.WriteFileAtomic(l.cfg.StatusFile, b); err != nil {
			l.log.Warn("cannot write --status-file", "err", err)
		}
	}
	l.writeMetricsFile()
}

// writeMetricsFile writes the metrics into --metrics-file, atomically, for
// node_exporter's textfile collector.
func (l *launcher) writeMetricsFile() {
	if l.cfg.MetricsFile == "" || l.metricsStopped.Load() {
		return
	}
	b, err := l.metrics.Text()
	if err == nil {
		err = rundir.WriteFileAtomic(l.cfg.MetricsFile, b)
	}
	if err != nil {
		l.log.Warn("cannot write --metrics-file", "err", err)
	}
}

// metricsFileEvery is how often --metrics-file is written when nothing
// changes, so that its age tells a live takeover from a gone one.
const metricsFileEvery = 15 * time.Second

// serveMetrics serves --metrics and writes --metrics-file every
// metricsFileEvery, until l.stopMetrics: as takeover exits, or once a newer
// takeover has replaced it, whose counters go on from these. Until it
// exits, a replaced takeover would otherwise serve its own, lower, counts
// beside the newer one's (the same port, SO_REUSEPORT) or write them over
// the newer one's file: a counter that goes down, a reset to Prometheus.
func (l *launcher) serveMetrics() error {
	var stops []func()
	l.stopMetrics = sync.OnceFunc(func() {
		l.metricsStopped.Store(true)
		for _, f := range stops {
			f()
		}
	})
	if l.cfg.Metrics != "" {
		network, addr, err := metrics.ParseAddr(l.cfg.Metrics)
		if err == nil {
			var ln net.Listener
			if ln, err = metrics.Listen(network, addr); err == nil {
				stops = append(stops, l.metrics.Serve(ln))
			}
		}
		if err != nil {
			return fmt.Errorf("cannot serve --metrics: %w", err)
		}
	}
	if l.cfg.MetricsFile != "" {
		done := make(chan struct{})
		go func() {
			tick := time.NewTicker(metricsFileEvery)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					l.writeMetricsFile()
				}
			}
		}()
		stops = append(stops, func() { close(done) })
	}
	return nil
}
