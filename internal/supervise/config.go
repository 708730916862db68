package supervise

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/takeover/takeover/internal/ready"

	"github.com/takeover/takeover/internal/swap"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// A Config is what one takeover is asked to do. Zero values mean the
// documented defaults.
type Config struct {
	Ports        target.List
	Signal       unix.Signal   // to stop the old server; SIGTERM
	KillTimeout  time.Duration // from the stop signal to SIGKILL; 10s
	BindTimeout  time.Duration // from the command's bind to giving up; 15s, or --kill-timeout + 5s if longer
	Force        bool          // replace a holder that is not an earlier instance
	Strategy     string        // auto, handoff or rebind; auto
	KillOldDelay time.Duration // between the new server's readiness and the old one's stop
	Fence        string        // on or off: a TCP handoff gives the new server a socket beside the old one's; on
	DrainTimeout time.Duration // how long a fenced old server may take to finish its connections; 5s
	Ready        string        // accept, listen, notify or interval: what makes a generation ready; accept
	Interval     time.Duration // --ready interval: ready once the command has run this long; 1s
	Health       *ready.Health // --ready http://...: then that URL must answer 2xx (health_linux.go)
	ReadyExec    string        // --ready-exec: then this must exit 0 (health_linux.go)
	// Probation (probation_linux.go): after a fenced swap, the old server
	// is kept, idle, this long (0: not at all), and the swap is rolled back
	// if the new one exits or fails HealthFailures checks of Probe in a row
	// (every HealthInterval); Canary is the share of new connections, in
	// percent, the new server gets meanwhile (0: all of them).
	Probation      time.Duration
	Probe          *ready.Health // --health http://...
	HealthInterval time.Duration // 1s
	HealthFailures int           // 3
	Canary         int
	Sockets        string        // intercept, systemd or server-starter; intercept
	ReadyTimeout   time.Duration // from a generation's start to ready, else rolled back; 60s, or --bind-timeout + 30s if longer
	LockTimeout    time.Duration // how long to wait for another takeover of the port; see lockTimeout
	DetachOnStop   time.Duration // 0: a stop is a stop; else serve on, detached, this long (detach_linux.go)
	Restart        string        // on-failure, always or never; on-failure
	MaxRestarts    int           // restarts within RestartWindow before giving up; 5
	RestartWindow  time.Duration // 60s
	RestartDelay   time.Duration // the first back-off before a restart; 100ms
	PIDFile        string
	StatusFile     string
	Metrics        string           // --metrics: where to serve /metrics (metrics.ParseAddr), or ""
	MetricsFile    string           // --metrics-file: where to write them for node_exporter, or ""
	StartServer    *StartServerOpts // run as start_server: its conventions (startserver.go)
	Command        []string
	Rebind         swap.Rebinder // the rebind strategy: retryBind (retrybind.go)
}

// maxFlagDuration bounds every duration flag: far from where a
// time.Duration overflows (292 years), so that lockTimeout's sum of them
// cannot turn negative.
const MaxFlagDuration = 365 * 24 * time.Hour

const (
	DefaultKillTimeout = 10 * time.Second
	DefaultBindTimeout = 15 * time.Second
)

func (c Config) killTimeout() time.Duration {
	if c.KillTimeout == 0 {
		return DefaultKillTimeout
	}
	return c.KillTimeout
}

const (
	DefaultDrainTimeout = 5 * time.Second
	MaxDrain            = time.Hour
)

func (c Config) fence() bool { return c.Fence != "off" }

func (c Config) drainTimeout() time.Duration {
	if c.DrainTimeout == 0 {
		return DefaultDrainTimeout
	}
	return c.DrainTimeout
}

func (c Config) EffectiveBindTimeout() time.Duration {
	if c.BindTimeout == 0 {
		return DefaultBindTimeout
	}
	return c.BindTimeout
}

func (c Config) sockets() string {
	if c.Sockets == "" {
		return SocketsIntercept
	}
	return c.Sockets
}

func (c Config) interval() time.Duration {
	if c.Interval == 0 {
		return time.Second
	}
	return c.Interval
}

func (c Config) ready() string {
	if c.Ready == "" {
		return ready.Accept
	}
	return c.Ready
}

const DefaultReadyTimeout = 60 * time.Second

func (c Config) readyTimeout() time.Duration {
	if c.ReadyTimeout == 0 {
		return max(DefaultReadyTimeout, c.EffectiveBindTimeout()+30*time.Second)
	}
	return c.ReadyTimeout
}

// lockTimeout bounds the wait for another takeover of the port: by default
// the longest a swap with the same flags can hold the lock (the new
// generation's --ready-timeout, then --kill-old-delay, then the old one's
// --kill-timeout), and 10 s more.
func (c Config) EffectiveLockTimeout() time.Duration {
	if c.LockTimeout == 0 {
		return c.readyTimeout() + c.KillOldDelay + c.drainTimeout() + c.Probation + c.killTimeout() + 10*time.Second
	}
	return c.LockTimeout
}

const (
	DefaultHealthInterval = time.Second
	DefaultHealthFailures = 3
)

const (
	DefaultMaxRestarts   = 5
	DefaultRestartWindow = time.Minute
)

func (c Config) restartPolicy() restartPolicy {
	p := restartPolicy{Mode: c.Restart, Max: c.MaxRestarts, Window: c.RestartWindow, Delay: c.RestartDelay}
	if p.Delay == 0 {
		p.Delay = RestartFirst
	}
	if p.Mode == "" {
		p.Mode = "on-failure"
	}
	if p.Max == 0 {
		p.Max = DefaultMaxRestarts
	}
	if p.Window == 0 {
		p.Window = DefaultRestartWindow
	}
	if c.StartServer != nil {
		// start_server's rule: a worker that dies before it has lived
		// --interval is started again every --interval.
		p.RetryEvery, p.MaxRetries = c.interval(), c.StartServer.MaxRetries
	}
	return p
}

func (c Config) signal() unix.Signal {
	if c.Signal == 0 {
		return unix.SIGTERM
	}
	return c.Signal
}

var (
	LogLevel slog.LevelVar
	LogJSON  bool
)

func newLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: &LogLevel}
	if LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// resolveCommand finds the command's executable as a shell would, and maps
// failures to the exit statuses of env and docker run.
func resolveCommand(name string) (string, int, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return "", exitNotFound, fmt.Errorf("command not found: %s", name)
		}
		return "", exitNotExecutable, fmt.Errorf("command not executable: %s: %v", name, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return "", exitNotExecutable, fmt.Errorf("command not executable: %s is a directory", name)
	}
	return path, 0, nil
}

// exitStatus maps a wait status to the launcher's own exit status.
func exitStatus(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// Exit statuses of the launcher, as env, nohup, timeout and docker run use
// them.
const (
	ExitRolledBack    = 123 // the new server failed its --probation and was rolled back: the old one serves on
	ExitNotReady      = 124 // the new server was not ready in time and was rolled back, as timeout(1) exits
	ExitLauncher      = 125 // takeover itself failed
	exitNotExecutable = 126
	exitNotFound      = 127
)
