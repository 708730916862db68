package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/takeover/takeover/internal/metrics"
	"github.com/takeover/takeover/internal/ready"

	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/systemd"
	"github.com/takeover/takeover/internal/target"
	"golang.org/x/sys/unix"
)

// errUsage means parseArgs has already told the user what is wrong.
var errUsage = errors.New("usage")

const launcherUsage = `usage: takeover [flags] -- COMMAND [ARG...]
       takeover who [--json] PORTSPEC...     who holds a port, and whom takeover would stop
       takeover status [--json] [PORTSPEC...]  what each takeover of this user serves, and how its swaps went
       takeover reload [--json] PORTSPEC|PATH  HUP the takeover serving it, and wait for the outcome
       takeover deploy [--timeout D] [--log F] [flags] -- COMMAND  start a takeover detached, and wait until it serves
       takeover doctor [--json]              what takeover needs here, and what is missing
       takeover demo [--swaps N] [...]       swaps of a built-in server under load
       takeover probe [...]                  load against a port, counting refusals
       takeover demo-server [...]            the demo's built-in server
       takeover start-server [...]           a drop-in for Server::Starter's start_server
       takeover version

Starts COMMAND and, when it binds a --port target that an earlier instance
holds, takes the port over from it with no refused connections (handoff) or a
gap of milliseconds (rebind), then stops the earlier instance.

PORTSPEC is 8100 (every address, both families), 127.0.0.1:8100, [::1]:8100,
0.0.0.0:8100 or [::]:8100: TCP; udp:5353, udp:127.0.0.1:5353 for UDP.
PATH is a unix stream socket's path, like /run/app.sock.

Flags:
`

// parseFlags reads the launcher's command line. (config{}, nil) with a nil
// Command means --help was asked for, and printed to stdout.
func parseFlags(args []string, stdout, stderr io.Writer) (supervise.Config, error) {
	var c supervise.Config
	fs := newFlagSet("takeover", launcherUsage)
	fs.Var(&c.Ports, "port", "`PORTSPEC` to take over (repeatable, required)")
	fs.Var(&c.Ports, "p", "short for --port `PORTSPEC`")
	fs.Var(target.PathFlag{List: &c.Ports}, "path", "`PATH` of a unix socket to take over (repeatable)")
	sig := fs.String("signal", "TERM", "signal that asks the old server to drain and stop")
	fs.DurationVar(&c.KillTimeout, "kill-timeout", supervise.DefaultKillTimeout, "SIGKILL the old server this long after the stop signal")
	fs.DurationVar(&c.BindTimeout, "bind-timeout", supervise.DefaultBindTimeout, "give up taking the port after this long (the command's bind fails with EADDRINUSE)")
	fs.BoolVar(&c.Force, "force", false, "replace the port's holder even if it is not an earlier instance of COMMAND nor managed by a takeover")
	fs.StringVar(&c.Strategy, "strategy", "auto", "auto, handoff or rebind")
	fs.DurationVar(&c.KillOldDelay, "kill-old-delay", 0, "wait this long after the new server is ready before stopping the old one")
	fs.StringVar(&c.Fence, "fence", "on", "on or off: in a TCP handoff, the new server gets a socket of its own beside the old one's, and once it is ready the old one gets no new connection and is stopped when it has finished those it accepted (for servers that do not drain)")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", supervise.DefaultDrainTimeout, "with --fence on: stop the fenced old server after this long even if it has not finished its connections (streams; idle keep-alive connections and request-after-request HTTP/1.x clients do not hold it)")
	fs.StringVar(&c.Ready, "ready", ready.Accept, "what makes the new server ready: accept (a process of it waits for connections on every --port, or it sends READY=1), listen (it listens), notify (it sends READY=1 to NOTIFY_SOCKET), interval (it has run for --interval) or http://HOST:PORT/PATH (as accept, and then that URL of the new server answers 2xx)")
	fs.StringVar(&c.ReadyExec, "ready-exec", "", "ready once this `CMD` (run by sh -c, with TAKEOVER_NEW_PID and TAKEOVER_PORT in its environment) exits 0, after --ready; retried until --ready-timeout")
	fs.DurationVar(&c.Probation, "probation", 0, "after a fenced swap, keep the old server idle and unsignalled this long, and roll back to it if the new one exits or fails --health; 0: off")
	health := fs.String("health", "", "during --probation: the new server's `URL` (http://HOST:PORT/PATH, as --ready's) must answer 2xx; --health-failures failures in a row roll it back")
	fs.DurationVar(&c.HealthInterval, "health-interval", supervise.DefaultHealthInterval, "during --probation: check --health this often")
	fs.IntVar(&c.HealthFailures, "health-failures", supervise.DefaultHealthFailures, "during --probation: roll back after this many failed --health checks in a row (1 to 100)")
	fs.IntVar(&c.Canary, "canary", 0, "during --probation: send this `PERCENT` (1 to 99) of new connections to the new server and the rest to the old one; 0: all to the new one")
	fs.DurationVar(&c.Interval, "interval", time.Second, "with --ready interval: how long the new server must run to be ready (start_server's rule)")
	fs.StringVar(&c.Sockets, "sockets", supervise.SocketsIntercept, "how the command gets its sockets: intercept (its bind(2) is taken over), systemd (passed as LISTEN_FDS) or server-starter (passed as SERVER_STARTER_PORT)")
	fs.DurationVar(&c.ReadyTimeout, "ready-timeout", 0, "roll the new server back if it is not ready this long after it starts (default 60s, or --bind-timeout + 30s if longer)")
	fs.StringVar(&c.Restart, "restart", "on-failure", "restart the command when it dies after it has served: on-failure (a non-zero exit, or a signal takeover did not send), always, or never; its sockets stay open meanwhile")
	fs.IntVar(&c.MaxRestarts, "max-restarts", supervise.DefaultMaxRestarts, "give up after this many restarts within --restart-window (1 to 1000)")
	fs.DurationVar(&c.RestartWindow, "restart-window", supervise.DefaultRestartWindow, "the window --max-restarts counts in")
	fs.DurationVar(&c.RestartDelay, "restart-delay", supervise.RestartFirst, "the first back-off before a restart; each next one is 1.5 times longer, up to 15s")
	fs.DurationVar(&c.LockTimeout, "lock-timeout", 0, "give up waiting for another takeover of the port after this long (default --ready-timeout + --kill-old-delay + --kill-timeout + 10s)")
	fs.DurationVar(&c.DetachOnStop, "detach-on-stop", 0, "on a stop signal, exit 0 at once and serve on, detached, until a newer takeover replaces this one or this long has passed (for runit, daemontools, s6, supervisord; not systemd); 0: a stop is a stop")
	fs.StringVar(&c.PIDFile, "pid-file", "", "write takeover's pid to this file")
	fs.StringVar(&c.StatusFile, "status-file", "", "write the generation, child pid, ports and last swap here (JSON, atomically)")
	fs.StringVar(&c.Metrics, "metrics", "", "serve Prometheus metrics on `ADDR`/metrics: a port (on 127.0.0.1), 127.0.0.1:9101, a unix socket's path, or another address named in full (0.0.0.0:9101)")
	fs.StringVar(&c.MetricsFile, "metrics-file", "", "write Prometheus metrics to this `PATH` (atomically, at every change and every 15s), for node_exporter's textfile collector")
	logFormat := fs.String("log-format", "text", "text or json")
	quiet := fs.Bool("q", false, "log errors only")
	verbose := fs.Bool("v", false, "log debug detail")
	if ok, code := parseArgs(fs, args, stdout, stderr); !ok {
		if code == 0 {
			return supervise.Config{}, nil
		}
		return supervise.Config{}, errUsage
	}
	c.Command = fs.Args()
	if len(c.Command) == 0 {
		return c, errors.New("no command: put it after --, like: takeover --port 8100 -- java -jar app.jar")
	}
	if len(c.Ports) == 0 {
		return c, errors.New("no --port nor --path: name the port the command binds, like --port 8100, or its unix socket, like --path /run/app.sock")
	}
	s, err := parseSignal(*sig)
	if err != nil {
		return c, err
	}
	c.Signal = s
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"kill-timeout", c.KillTimeout}, {"bind-timeout", c.BindTimeout}, {"kill-old-delay", c.KillOldDelay}, {"ready-timeout", c.ReadyTimeout},
		{"lock-timeout", c.LockTimeout}, {"interval", c.Interval}, {"restart-window", c.RestartWindow},
		{"probation", c.Probation}, {"health-interval", c.HealthInterval}} {
		if d.d > supervise.MaxFlagDuration {
			return c, fmt.Errorf("--%s %v: want at most %v (a year)", d.name, d.d, supervise.MaxFlagDuration)
		}
	}
	switch {
	case c.KillTimeout <= 0:
		return c, fmt.Errorf("--kill-timeout %v: must be more than 0", c.KillTimeout)
	case c.BindTimeout <= 0:
		return c, fmt.Errorf("--bind-timeout %v: must be more than 0", c.BindTimeout)
	case c.KillOldDelay < 0:
		return c, fmt.Errorf("--kill-old-delay %v: must not be negative", c.KillOldDelay)
	case c.ReadyTimeout < 0:
		return c, fmt.Errorf("--ready-timeout %v: must be more than 0", c.ReadyTimeout)
	case c.LockTimeout < 0:
		return c, fmt.Errorf("--lock-timeout %v: must be more than 0", c.LockTimeout)
	case c.DrainTimeout <= 0 || c.DrainTimeout > supervise.MaxDrain:
		return c, fmt.Errorf("--drain-timeout %v: want more than 0 and at most %v", c.DrainTimeout, supervise.MaxDrain)
	case c.DetachOnStop < 0 || c.DetachOnStop > supervise.MaxDetach:
		return c, fmt.Errorf("--detach-on-stop %v: want a duration from 0 (off) to %v", c.DetachOnStop, supervise.MaxDetach)
	}
	if c.Metrics != "" {
		if _, _, err := metrics.ParseAddr(c.Metrics); err != nil {
			return c, err
		}
	}
	switch c.Fence {
	case "on", "off":
	default:
		return c, fmt.Errorf("--fence %q: want on or off", c.Fence)
	}
	if ready.IsHealthURL(c.Ready) { // --ready http://HOST:PORT/PATH (internal/ready/health.go)
		h, err := ready.ParseHealth(c.Ready, c.Ports)
		if err != nil {
			return c, err
		}
		c.Health, c.Ready = &h, ready.Accept
	}
	if err := probationFlags(&c, *health); err != nil {
		return c, err
	}
	switch c.Ready {
	case ready.Accept, ready.Listen, ready.Notify, ready.Interval:
	default:
		return c, fmt.Errorf("--ready %q: want accept, listen, notify, interval or http://HOST:PORT/PATH", c.Ready)
	}
	switch c.Sockets {
	case supervise.SocketsIntercept, supervise.SocketsSystemd, supervise.SocketsServerStarter:
	default:
		return c, fmt.Errorf("--sockets %q: want intercept, systemd or server-starter", c.Sockets)
	}
	if set := strings.TrimSpace(c.ReadyExec); set == "" && c.ReadyExec != "" {
		return c, errors.New("--ready-exec: an empty command")
	}
	if c.Interval <= 0 {
		return c, fmt.Errorf("--interval %v: must be more than 0", c.Interval)
	}
	switch c.Restart {
	case "on-failure", "always", "never":
	default:
		return c, fmt.Errorf("--restart %q: want on-failure, always or never", c.Restart)
	}
	if c.MaxRestarts < 1 || c.MaxRestarts > 1000 {
		return c, fmt.Errorf("--max-restarts %d: want 1 to 1000", c.MaxRestarts)
	}
	if c.RestartWindow <= 0 {
		return c, fmt.Errorf("--restart-window %v: must be more than 0", c.RestartWindow)
	}
	if c.RestartDelay <= 0 || c.RestartDelay > supervise.RestartMax {
		return c, fmt.Errorf("--restart-delay %v: want more than 0 and at most %v", c.RestartDelay, supervise.RestartMax)
	}
	switch c.Strategy {
	case "auto", "handoff", "rebind":
	default:
		return c, fmt.Errorf("--strategy %q: want auto, handoff or rebind", c.Strategy)
	}
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["ready-timeout"] && c.ReadyTimeout <= 0 || set["lock-timeout"] && c.LockTimeout <= 0 {
		return c, errors.New("--ready-timeout and --lock-timeout must be more than 0")
	}
	// A rebind has signalled the old server: giving the port up before the
	// SIGKILL would leave nothing serving once the old one has drained.
	switch {
	case !set["bind-timeout"]:
		c.BindTimeout = max(supervise.DefaultBindTimeout, c.KillTimeout+5*time.Second)
	case c.Strategy != "handoff" && c.BindTimeout <= c.KillTimeout:
		return c, fmt.Errorf("--bind-timeout %v is not longer than --kill-timeout %v: a rebind would give the port up before the old server is killed, and nothing would serve once it has drained; make --bind-timeout longer", c.BindTimeout, c.KillTimeout)
	}
	if c.ReadyTimeout != 0 && c.ReadyTimeout <= c.BindTimeout {
		return c, fmt.Errorf("--ready-timeout %v is not longer than --bind-timeout %v: the new server could be rolled back while its bind still waits for the port; make --ready-timeout longer", c.ReadyTimeout, c.BindTimeout)
	}
	switch *logFormat {
	case "text", "json":
	default:
		return c, fmt.Errorf("--log-format %q: want text or json", *logFormat)
	}
	supervise.LogLevel.Set(slog.LevelInfo)
	if *quiet {
		supervise.LogLevel.Set(slog.LevelError)
	}
	if *verbose {
		supervise.LogLevel.Set(slog.LevelDebug)
	}
	supervise.LogJSON = *logFormat == "json"
	return c, nil
}

// parseSignal reads TERM, SIGTERM or 15.
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n >= 65 {
			return 0, fmt.Errorf("--signal %s: not a signal number", s)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, fmt.Errorf("--signal %q: not a signal name (TERM, INT, QUIT, HUP, USR1, USR2, ...)", s)
	}
	return sig, nil
}

// runLauncher implements `takeover [flags] -- COMMAND [ARG...]`.
func runLauncher(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stdout, stderr)
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintf(stderr, "takeover: %v\n", err)
		}
		return supervise.ExitLauncher
	}
	if cfg.Command == nil {
		return 0 // --help
	}
	if cfg.DetachOnStop > 0 && os.Getenv(supervise.FrontEnv) == "" {
		if systemd.UnderSystemd() {
			fmt.Fprintln(stderr, "takeover: --detach-on-stop does not work under systemd: KillMode=mixed or control-group SIGKILLs the detached launcher with the rest of the unit; use the unit's file descriptor store (FileDescriptorStoreMax=8) instead, see docs/systemd.md")
			return supervise.ExitLauncher
		}
		return supervise.RunFront(args, stderr)
	}
	cfg.Rebind = retryBind
	return supervise.Launch(cfg, stderr)
}

// probationFlags checks --probation, --health, --health-interval,
// --health-failures and --canary, and parses --health into c.Probe.
func probationFlags(c *supervise.Config, health string) error {
	switch {
	case c.Probation < 0:
		return fmt.Errorf("--probation %v: must not be negative (0: off)", c.Probation)
	case c.HealthInterval <= 0:
		return fmt.Errorf("--health-interval %v: must be more than 0", c.HealthInterval)
	case c.HealthFailures < 1 || c.HealthFailures > 100:
		return fmt.Errorf("--health-failures %d: want 1 to 100", c.HealthFailures)
	case c.Canary < 0 || c.Canary > 99:
		return fmt.Errorf("--canary %d: want a percentage from 1 to 99 (0: off)", c.Canary)
	case c.Probation == 0 && (health != "" || c.Canary > 0):
		return errors.New("--health and --canary act during --probation: give --probation a duration, like --probation 30s")
	}
	if health != "" {
		h, err := ready.ParseHealthFlag("--health", health, c.Ports)
		if err != nil {
			return err
		}
		c.Probe = &h
	}
	return nil
}
