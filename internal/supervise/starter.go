package supervise

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/takeover/takeover/internal/rundir"
	"github.com/takeover/takeover/internal/starter"
	"golang.org/x/sys/unix"
)

// StartServerOpts is what start_server's options ask of a launcher beyond
// config's own fields.
type StartServerOpts struct {
	Dir          string        // --dir: the command's working directory
	EnvDir       string        // --envdir or ENVDIR: NAME files read for each generation
	Backlog      int           // --backlog; SOMAXCONN
	Names        []string      // each --port as SERVER_STARTER_PORT names it
	FDs          []int         // the fd the command gets each --port at
	SignalOnTerm unix.Signal   // --signal-on-term: passed to the command for a TERM to takeover
	StatusFile   string        // --status-file: GEN:PID lines of the live generations
	AutoRestart  time.Duration // --enable-auto-restart: reload a generation this old; 0: never
	MaxRetries   int           // --max-restarts: failed starts in a row retried before giving up; 0: no end
	// SetUp runs once the first generation's sockets are bound, where
	// start_server's set-up ends; nil: nothing to do then.
	SetUp func() error
}

// commandName is the command to look up: with --dir, a relative path is
// taken from there, as start_server execs it after its chdir.
func (c Config) commandName() string {
	name := c.Command[0]
	if s := c.StartServer; s != nil && s.Dir != "" && strings.Contains(name, "/") && !filepath.IsAbs(name) {
		if abs, err := filepath.Abs(filepath.Join(s.Dir, name)); err == nil {
			return abs
		}
	}
	return name
}

// dir is the command's working directory; "" is takeover's.
func (c Config) dir() string {
	if c.StartServer == nil {
		return ""
	}
	return c.StartServer.Dir
}

func (c Config) backlog() int {
	if c.StartServer == nil || c.StartServer.Backlog <= 0 {
		return unix.SOMAXCONN
	}
	return c.StartServer.Backlog
}

// passedAs returns, for each --port, its name in SERVER_STARTER_PORT and
// the fd the command gets it at: the spec and 3, 4, ... unless start_server's
// --port says otherwise.
func (c Config) passedAs() (names []string, fds []int) {
	if s := c.StartServer; s != nil && len(s.Names) == len(c.Ports) && len(s.FDs) == len(c.Ports) {
		return s.Names, s.FDs
	}
	for i, p := range c.Ports {
		names = append(names, p.StarterName())
		fds = append(fds, 3+i)
	}
	return names, fds
}

// withEnvDir adds to env what --envdir holds now: start_server reads it
// again for each generation.
func (c Config) withEnvDir(env []string) []string {
	if c.StartServer == nil || c.StartServer.EnvDir == "" {
		return env
	}
	for _, kv := range starter.ReadEnvDir(c.StartServer.EnvDir) {
		name, _, _ := strings.Cut(kv, "=")
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, name+"=") })
		env = append(env, kv)
	}
	return env
}

// socketFileMode is the mode of a --path socket file takeover binds to
// pass on: start_server binds under umask(0), so 0777; 0 (takeover's
// umask) otherwise.
func (c Config) socketFileMode() uint32 {
	if c.StartServer != nil {
		return 0o777
	}
	return 0
}

// starterState is a launcher's start_server part: the status file, the
// auto-restart and the exit status. Its methods do nothing on a nil
// receiver, a launcher not run as start_server.
type starterState struct {
	opts *StartServerOpts
	log  *slog.Logger
	self int

	mu        sync.Mutex
	live      map[int]int // generation -> pid, of those that started and still run
	wrote     bool        // the status file exists
	lastStart time.Time   // when the serving generation started
	stopped   bool        // a stop signal came: start_server exits 0 then

	setUp sync.Once
}

func newStarterState(l *launcher) *starterState {
	if l.cfg.StartServer == nil {
		return nil
	}
	s := &starterState{opts: l.cfg.StartServer, log: l.log, self: l.self, live: make(map[int]int)}
	if s.opts.AutoRestart > 0 {
		go s.autoRestart(s.opts.AutoRestart)
	}
	return s
}

// bound ends start_server's set-up, once the first generation's sockets
// are bound (opts.SetUp).
func (s *starterState) bound() {
	if s == nil || s.opts.SetUp == nil {
		return
	}
	s.setUp.Do(func() {
		if err := s.opts.SetUp(); err != nil {
			s.log.Warn("start_server set-up", "err", err)
		}
	})
}

// started records g as started: start_server writes its status file once
// a worker has lived --interval, before --kill-old-delay.
func (s *starterState) started(g *generation) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastStart = time.Now()
	if g.hasExited() { // it is gone already; exited has run
		return
	}
	s.live[g.num] = g.pid
	s.writeStatus()
}

// exited drops g from the status file once its command has exited.
func (s *starterState) exited(g *generation) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if pid, ok := s.live[g.num]; ok && pid == g.pid {
		delete(s.live, g.num)
		s.writeStatus()
	}
}

// writeStatus writes start_server's status file. s.mu is held.
func (s *starterState) writeStatus() {
	if s.opts.StatusFile == "" {
		return
	}
	if err := rundir.WriteFileAtomic(s.opts.StatusFile, starter.FormatStatus(s.live)); err != nil {
		s.log.Warn("cannot write --status-file", "err", err)
		return
	}
	s.wrote = true
}

// stopSignal is the signal a stop signal to takeover is passed on as:
// --signal-on-term for TERM, TERM for INT, as start_server sends them.
func (s *starterState) stopSignal(sig unix.Signal) unix.Signal {
	if s == nil {
		return sig
	}
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	switch sig {
	case unix.SIGTERM:
		if s.opts.SignalOnTerm != 0 {
			return s.opts.SignalOnTerm
		}
	case unix.SIGINT:
		return unix.SIGTERM
	}
	return sig
}

// exit removes the status file, as start_server does when it exits, and
// maps takeover's exit status to start_server's: 0 after a stop signal.
func (s *starterState) exit(code int) int {
	if s == nil {
		return code
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wrote {
		os.Remove(s.opts.StatusFile)
	}
	if s.stopped {
		return 0
	}
	return code
}

// autoRestart reloads (a HUP to takeover itself) once the serving
// generation has run for every, as --enable-auto-restart does.
func (s *starterState) autoRestart(every time.Duration) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range tick.C {
		s.mu.Lock()
		due := !s.lastStart.IsZero() && time.Since(s.lastStart) >= every && !s.stopped
		if due {
			s.lastStart = time.Now() // once per interval, even if the reload fails
		}
		s.mu.Unlock()
		if due {
			s.log.Info("auto-restart: reloading", "interval", every)
			unix.Kill(s.self, unix.SIGHUP)
		}
	}
}
