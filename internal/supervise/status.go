package supervise

import (
	"encoding/json"
	"time"

	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/swap"
)

// --status-file: what the launcher is doing, for people and scripts.

// Status is what --status-file holds.
type Status struct {
	TakeoverPID int          `json:"takeover_pid"`
	State       string       `json:"state"` // serving, or backing-off after a crash
	Generation  int          `json:"generation"`
	ChildPID    int          `json:"child_pid"` // 0 while backing off
	ReadyBy     string       `json:"ready_by"`
	Ports       []string     `json:"ports"`
	Updated     time.Time    `json:"updated"`
	LastSwap    []swapStatus `json:"last_swap"`
	Restarts    int          `json:"restarts"`
	LastRestart *restartInfo `json:"last_restart,omitempty"`
	// FailedReloads counts the reloads (HUP, systemctl reload) whose new
	// generation never served: it failed to start, exited before it was
	// ready, or was rolled back. A deploy that waits for a new generation
	// fails at once when this grows.
	FailedReloads    int           `json:"failed_reloads"`
	LastFailedReload *failedReload `json:"last_failed_reload,omitempty"`
	// DetachedUntil: stopped by its supervisor with --detach-on-stop, the
	// launcher serves until then, unless a newer takeover replaces it.
	DetachedUntil *time.Time `json:"detached_until,omitempty"`
}

// restartInfo is the status file's account of the last crash.
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
	SignalToFreeMS  float64 `json:"signal_to_free_ms,omitempty"`
	RefusedWindowMS float64 `json:"refused_window_ms"`
	TotalMS         float64 `json:"total_ms"`
}

func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// writeStatus records a swap in --status-file.
func (l *launcher) writeStatus(g *generation, swaps []*swap.Record) {
	if l.cfg.StatusFile == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := &l.status
	st.TakeoverPID, st.State, st.Generation, st.ChildPID = l.self, "serving", g.num, g.pid
	st.Ports, st.LastSwap = nil, []swapStatus{}
	for _, p := range l.cfg.Ports {
		st.Ports = append(st.Ports, p.String())
	}
	by, readyAt := g.readiedBy()
	st.ReadyBy = by
	for _, sw := range swaps {
		s := swapStatus{Port: sw.Spec.String(), Address: sw.Spec.BoundAt(sw.Addr), Strategy: sw.Strategy, Why: sw.Why, Via: sw.Via,
			Fenced: sw.Fence != nil, NotFenced: sw.NotFenced,
			LookupMS: Ms(sw.Lookup), SignalToFreeMS: Ms(sw.Free), RefusedWindowMS: Ms(sw.Window), TotalMS: Ms(readyAt.Sub(sw.Began))}
		if len(sw.Old) > 0 {
			s.OldPID = sw.Old[0].Holder.PID
		}
		st.LastSwap = append(st.LastSwap, s)
	}
	l.flushStatus()
}

// restarting records a crash in --status-file: takeover backs off, the
// sockets held, before it starts the command again.
func (l *launcher) restarting(c crashInfo) {
	if l.cfg.StatusFile == "" {
		return
	}
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
	if l.cfg.StatusFile == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.status.FailedReloads++
	l.status.LastFailedReload = &failedReload{Generation: num, Why: why, At: time.Now().UTC()}
	l.flushStatus()
}

// flushStatus writes l.status; l.mu is held.
func (l *launcher) flushStatus() {
	l.status.Updated = time.Now().UTC()
	b, _ := json.MarshalIndent(l.status, "", "  ")
	if err := rundir.WriteFileAtomic(l.cfg.StatusFile, append(b, '\n')); err != nil {
		l.log.Warn("cannot write --status-file", "err", err)
	}
}
