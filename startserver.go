package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// start_server, a drop-in for Server::Starter's (0.35): the same command
// line, signals and files, run on takeover's socket passing (--sockets
// server-starter). takeover binds every --port (TCP, or UDP with a "u")
// and --path (a unix socket), passes the sockets as SERVER_STARTER_PORT,
// daemonizes on --daemonize once they are bound (startserver_daemon.go),
// starts a new generation on HUP and stops the old one
// with --signal-on-hup once the new one has lived --interval seconds;
// the status file holds start_server's GEN:PID lines; --restart and --stop
// talk to a running one through --pid-file as start_server's do. A worker
// that dies before it has lived --interval is started again every
// --interval, at the first start (on the sockets takeover holds) and after
// a HUP (the running generation serves meanwhile), for ever unless
// --max-restarts says otherwise; with no --port and no --path, the worker
// gets an empty SERVER_STARTER_PORT and is supervised all the same. What
// differs is takeover's: a crashed worker is restarted with back-off on the
// sockets takeover holds, and each swap logs one line.

// serverStarterVersion is the Server::Starter release whose command line
// this one follows.
const serverStarterVersion = "0.35"

// startServerOpts is what start_server's options ask of a launcher beyond
// config's own fields.
type startServerOpts struct {
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
func (c config) commandName() string {
	name := c.Command[0]
	if s := c.StartServer; s != nil && s.Dir != "" && strings.Contains(name, "/") && !filepath.IsAbs(name) {
		if abs, err := filepath.Abs(filepath.Join(s.Dir, name)); err == nil {
			return abs
		}
	}
	return name
}

// dir is the command's working directory; "" is takeover's.
func (c config) dir() string {
	if c.StartServer == nil {
		return ""
	}
	return c.StartServer.Dir
}

func (c config) backlog() int {
	if c.StartServer == nil || c.StartServer.Backlog <= 0 {
		return unix.SOMAXCONN
	}
	return c.StartServer.Backlog
}

// passedAs returns, for each --port, its name in SERVER_STARTER_PORT and
// the fd the command gets it at: the spec and 3, 4, ... unless start_server's
// --port says otherwise.
func (c config) passedAs() (names []string, fds []int) {
	if s := c.StartServer; s != nil && len(s.Names) == len(c.Ports) && len(s.FDs) == len(c.Ports) {
		return s.Names, s.FDs
	}
	for i, p := range c.Ports {
		names = append(names, p.starterName())
		fds = append(fds, 3+i)
	}
	return names, fds
}

// withEnvDir adds to env what --envdir holds now: start_server reads it
// again for each generation.
func (c config) withEnvDir(env []string) []string {
	if c.StartServer == nil || c.StartServer.EnvDir == "" {
		return env
	}
	for _, kv := range loadEnvDir(c.StartServer.EnvDir) {
		name, _, _ := strings.Cut(kv, "=")
		env = slices.DeleteFunc(env, func(e string) bool { return strings.HasPrefix(e, name+"=") })
		env = append(env, kv)
	}
	return env
}

// loadEnvDir reads an envdir as start_server does: each file not starting
// with a dot sets its name to its first line; an empty or unreadable file
// sets nothing.
func loadEnvDir(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var env []string
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || strings.ContainsAny(name, "=\x00") {
			continue
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		line, err := bufio.NewReader(f).ReadString('\n')
		f.Close()
		if line == "" && err != nil {
			continue
		}
		env = append(env, name+"="+strings.TrimSuffix(line, "\n"))
	}
	return env
}

// A starterPortArg is one start_server --port: "8100", "host:8100",
// "[v6]:8100", each with an optional "=FD" and a "u" before the port for
// UDP.
type starterPortArg struct {
	Host string // "" for a bare port: 0.0.0.0, as start_server binds it
	Port string
	FD   int // -1: none asked for
	UDP  bool
	Name string // as SERVER_STARTER_PORT names it
}

// parseStarterPort reads a --port the way start_server's patterns do.
func parseStarterPort(s string) (starterPortArg, error) {
	a := starterPortArg{FD: -1}
	bad := fmt.Errorf("--port %q: want PORT, HOST:PORT or [IPV6]:PORT (uPORT for UDP), each with an optional =FD", s)
	rest := strings.TrimSpace(s)
	if i := strings.LastIndexByte(rest, '='); i >= 0 {
		fd, err := strconv.Atoi(strings.TrimSpace(rest[i+1:]))
		if err != nil || fd < 0 || strings.ContainsAny(rest[i+1:], "+-") {
			return a, bad
		}
		a.FD, rest = fd, strings.TrimSpace(rest[:i])
	}
	v6 := false
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 || !strings.HasPrefix(strings.TrimLeft(rest[end+1:], " \t"), ":") {
			return a, bad
		}
		a.Host = strings.TrimSpace(rest[1:end])
		rest = strings.TrimLeft(rest[end+1:], " \t")[1:]
		v6 = true
	} else if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		a.Host, rest = strings.TrimSpace(rest[:i]), rest[i+1:]
		if a.Host == "" {
			return a, bad
		}
	}
	rest = strings.TrimSpace(rest)
	if after, ok := strings.CutPrefix(rest, "u"); ok {
		a.UDP, rest = true, after
	}
	if rest == "" || strings.Trim(rest, "0123456789") != "" || a.Host == "" && v6 {
		return a, bad
	}
	a.Port = rest
	switch {
	case a.Host == "":
		a.Name = a.Port
	case v6 || strings.Contains(a.Host, ":"):
		a.Name = "[" + a.Host + "]:" + a.Port
	default:
		a.Name = a.Host + ":" + a.Port
	}
	return a, nil
}

// spec is the port takeover binds for a, TCP or UDP: a bare port on
// 0.0.0.0 (IPv4 only, as start_server binds it), a host name by its first
// IPv4 address (start_server's gethostbyname).
func (a starterPortArg) spec(ctx context.Context) (portSpec, error) {
	port, err := parsePort(a.Port)
	if err != nil {
		return portSpec{}, err
	}
	p := portSpec{Port: port}
	if a.UDP {
		p.Net = netUDP
	}
	switch addr, err := netip.ParseAddr(a.Host); {
	case a.Host == "":
		p.Addr = netip.IPv4Unspecified()
	case err == nil && addr.Zone() == "":
		p.Addr = addr.Unmap()
	case strings.Contains(a.Host, ":"):
		return portSpec{}, fmt.Errorf("%q is not an IPv6 address", a.Host)
	default:
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", a.Host)
		if err != nil || len(addrs) == 0 {
			return portSpec{}, fmt.Errorf("failed to resolve host %s: %v", a.Host, err)
		}
		p.Addr = addrs[0].Unmap()
	}
	return p, nil
}

// starterTargets reads start_server's --port and --path options: the
// targets takeover binds (the ports, then the paths, as start_server binds
// them), their names in SERVER_STARTER_PORT (a path as it was given) and
// the fds the command gets them at.
func starterTargets(ctx context.Context, ports, paths []string) (specs []portSpec, names []string, fds []int, err error) {
	var args []starterPortArg
	add := func(spec portSpec, a starterPortArg, opt string) error {
		if slices.Contains(specs, spec) {
			return fmt.Errorf("%s: named twice", opt)
		}
		specs, names, args = append(specs, spec), append(names, a.Name), append(args, a)
		return nil
	}
	for _, p := range ports {
		a, err := parseStarterPort(p)
		if err != nil {
			return nil, nil, nil, err
		}
		spec, err := a.spec(ctx)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--port %s: %w", p, err)
		}
		if err := add(spec, a, "--port "+p); err != nil {
			return nil, nil, nil, err
		}
	}
	for _, p := range paths {
		spec, err := parsePathSpec(p)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := add(spec, starterPortArg{FD: -1, Name: p}, "--path "+p); err != nil {
			return nil, nil, nil, err
		}
	}
	if fds, err = assignFDs(args); err != nil {
		return nil, nil, nil, err
	}
	return specs, names, fds, nil
}

// socketFileMode is the mode of a --path socket file takeover binds to
// pass on: start_server binds under umask(0), so 0777; 0 (takeover's
// umask) otherwise.
func (c config) socketFileMode() uint32 {
	if c.StartServer != nil {
		return 0o777
	}
	return 0
}

// assignFDs gives each --port its fd: the one it asks for, else the lowest
// free one from 3.
func assignFDs(args []starterPortArg) ([]int, error) {
	used := make(map[int]string)
	for _, a := range args {
		if a.FD < 0 {
			continue
		}
		if other, ok := used[a.FD]; ok {
			return nil, fmt.Errorf("--port %s and --port %s both ask for fd %d", other, a.Name, a.FD)
		}
		used[a.FD] = a.Name
	}
	fds := make([]int, len(args))
	next := 3
	for i, a := range args {
		if a.FD >= 0 {
			fds[i] = a.FD
			continue
		}
		for used[next] != "" {
			next++
		}
		fds[i], used[next] = next, a.Name
	}
	return fds, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

const startServerUsage = `Usage:
      start_server [options] -- server-prog server-arg1 server-arg2 ...

      # start Plack using Starlet listening at TCP port 8000
      start_server --port=8000 -- plackup -s Starlet --max-workers=100 index.psgi

takeover's drop-in for Server::Starter's start_server (` + serverStarterVersion + `): the same
options, signals and files; a worker that dies before it has lived --interval
is started again every --interval, for ever; takeover holds the sockets,
restarts a crashed worker on them with back-off, and logs one line per swap.

Options:
  --port=(port|host:port|port=fd|host:port=fd)   TCP port to listen to (repeatable);
        a bare port binds 0.0.0.0, [v6]:port an IPv6 address; =fd passes it at that fd;
        u before the port (u5353, 127.0.0.1:u5353) binds a UDP port instead
  --path=path               unix socket to listen to (repeatable), passed after the ports;
        its file is made srwxrwxrwx, a stale one there is removed first, and it is
        removed when start_server exits; one a live server listens on is taken over
        (with no --port and no --path the worker gets an empty SERVER_STARTER_PORT)
  --dir=path                working directory of the server program
  --interval=seconds        a new worker is started once it has lived this long, and one that
                            dies before is started again every this long (default: 1)
  --signal-on-hup=Signal    sent to the old worker once the new one started (default: TERM)
  --signal-on-term=Signal   sent to the worker when start_server gets TERM (default: TERM)
  --pid-file=filename       start_server's pid, locked while it runs
  --status-file=filename    "generation:pid" lines of the live workers
  --envdir=Envdir           NAME files that set the workers' environment, read for each
                            generation (or ENVDIR)
  --log-file=file | --log-file="| cmd args..."   append STDOUT and STDERR to file or cmd
  --enable-auto-restart     restart the worker every --auto-restart-interval (or ENABLE_AUTO_RESTART)
  --auto-restart-interval=seconds   (default 360, or AUTO_RESTART_INTERVAL)
  --kill-old-delay=seconds  wait this long before signalling the old worker (default 0, or 5
                            with --enable-auto-restart, or KILL_OLD_DELAY)
  --backlog=size            listen backlog (default SOMAXCONN)
  --kill-timeout=seconds    takeover's: SIGKILL an old worker this long after --signal-on-hup
                            (default 10)
  --max-restarts=N          takeover's: give up after N failed starts in a row (default: never;
                            at the first start takeover then exits, after a HUP the running
                            worker keeps serving), and after N restarts of a crashed worker
                            within 60s (default 5)
  --restart                 HUP the start_server named by --pid-file and wait until only the
                            new generation is left in --status-file
  --stop                    TERM the start_server named by --pid-file and wait for it to exit
  --daemonize               run in the background, in a new session, once the sockets
                            are bound (needs --log-file); the pid file names the daemon
  --help, --version
`

// runStartServer implements start_server's command line: `start_server
// ARGS` (the binary run under that name) or `takeover start-server ARGS`.
func runStartServer(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("start_server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, startServerUsage) }
	var ports, paths stringList
	fs.Var(&ports, "port", "")
	fs.Var(&paths, "path", "")
	dir := fs.String("dir", "", "")
	interval := fs.Int("interval", 1, "")
	onHUP := fs.String("signal-on-hup", "TERM", "")
	onTerm := fs.String("signal-on-term", "TERM", "")
	pidFile := fs.String("pid-file", "", "")
	statusFile := fs.String("status-file", "", "")
	envDir := fs.String("envdir", "", "")
	logFile := fs.String("log-file", "", "")
	fs.Bool("enable-auto-restart", false, "")
	fs.Int("auto-restart-interval", 360, "")
	fs.Int("kill-old-delay", 0, "")
	backlog := fs.Int("backlog", 0, "")
	killTimeout := fs.Int("kill-timeout", int(defaultKillTimeout/time.Second), "")
	maxRestarts := fs.Int("max-restarts", 0, "")
	daemonize := fs.Bool("daemonize", false, "")
	restart := fs.Bool("restart", false, "")
	stop := fs.Bool("stop", false, "")
	help := fs.Bool("help", false, "")
	showVersion := fs.Bool("version", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, startServerUsage)
			return 0
		}
		return exitFailure // as start_server's Getopt::Long
	}
	set := make(map[string]string)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "start_server: "+format+"\n", a...)
		return code
	}
	switch {
	case *help:
		fmt.Fprint(stdout, startServerUsage)
		return 0
	case *showVersion:
		fmt.Fprintf(stdout, "%s (takeover %s)\n", serverStarterVersion, version)
		return 0
	case *restart:
		if err := restartServer(*pidFile, *statusFile); err != nil {
			return fail(exitFailure, "%v", err)
		}
		return 0
	case *stop:
		if err := stopServer(*pidFile, stderr); err != nil {
			return fail(exitFailure, "%v", err)
		}
		return 0
	case *daemonize && *logFile == "":
		return fail(exitUsage, "Usage: --log-file option must be specified together with --daemonize")
	case len(fs.Args()) == 0:
		return fail(exitUsage, "server program not specified: put it after --, like: start_server --port=8000 -- plackup -s Starlet app.psgi")
	case *interval < 0 || *backlog < 0 || *killTimeout <= 0:
		return fail(exitUsage, "--interval and --backlog must not be negative, --kill-timeout must be more than 0")
	case set["max-restarts"] != "" && (*maxRestarts < 1 || *maxRestarts > 1000):
		return fail(exitUsage, "--max-restarts=%d: want 1 to 1000 (without it, a failed start is retried for ever, as start_server does)", *maxRestarts)
	}

	// The options set the environment variables that stand for them, which
	// the workers see too, as start_server does.
	for opt, env := range map[string]string{"envdir": "ENVDIR", "enable-auto-restart": "ENABLE_AUTO_RESTART",
		"kill-old-delay": "KILL_OLD_DELAY", "auto-restart-interval": "AUTO_RESTART_INTERVAL"} {
		if v, ok := set[opt]; ok {
			if opt == "enable-auto-restart" {
				v = map[string]string{"true": "1", "false": "0"}[v]
			}
			os.Setenv(env, v)
		}
	}
	opts := &startServerOpts{Dir: *dir, EnvDir: os.Getenv("ENVDIR"), Backlog: *backlog, StatusFile: *statusFile, MaxRetries: *maxRestarts}
	if *envDir != "" {
		opts.EnvDir = *envDir
	}
	autoRestart := os.Getenv("ENABLE_AUTO_RESTART") != "" && os.Getenv("ENABLE_AUTO_RESTART") != "0"
	killOldDelay := 0
	if autoRestart {
		killOldDelay = 5
		every, err := envSeconds("AUTO_RESTART_INTERVAL")
		if err != nil {
			return fail(exitUsage, "%v", err)
		}
		if every == 0 {
			every = 360
		}
		opts.AutoRestart = time.Duration(every) * time.Second
	}
	if _, ok := os.LookupEnv("KILL_OLD_DELAY"); ok {
		d, err := envSeconds("KILL_OLD_DELAY")
		if err != nil {
			return fail(exitUsage, "%v", err)
		}
		killOldDelay = d
	}

	cfg := config{StartServer: opts, Sockets: socketsServerStarter, Ready: readyInterval, Restart: "always",
		Command: fs.Args(), KillOldDelay: time.Duration(killOldDelay) * time.Second, KillTimeout: time.Duration(*killTimeout) * time.Second,
		MaxRestarts: *maxRestarts}
	// --interval 0: ready at once (takeover's zero Interval means 1s).
	cfg.Interval = max(time.Duration(*interval)*time.Second, time.Nanosecond)
	cfg.BindTimeout = max(defaultBindTimeout, cfg.KillTimeout+5*time.Second)
	cfg.ReadyTimeout = max(defaultReadyTimeout, cfg.BindTimeout+30*time.Second, cfg.Interval+time.Minute)
	var err error
	if cfg.Signal, err = parseSignal(*onHUP); err != nil {
		return fail(exitUsage, "--signal-on-hup: %v", err)
	}
	if opts.SignalOnTerm, err = parseSignal(*onTerm); err != nil {
		return fail(exitUsage, "--signal-on-term: %v", err)
	}
	if cfg.Ports, opts.Names, opts.FDs, err = starterTargets(context.Background(), ports, paths); err != nil {
		return fail(exitUsage, "%v", err)
	}

	ready, isDaemon := daemonReadyPipe()
	if !isDaemon {
		fmt.Fprintf(stderr, "start_server (pid:%d) starting now...\n", os.Getpid()) // before --log-file, as start_server
	}
	if *daemonize && !isDaemon {
		return runDaemon(cfg.lockTimeout()+cfg.bindTimeout()+10*time.Second, stderr)
	}
	var logOut *os.File
	if *logFile != "" {
		if logOut, err = openLog(*logFile); err != nil {
			return fail(exitFailure, "--log-file: %v", err)
		}
		defer logOut.Close()
	}
	// Set-up ends once the sockets are bound: from then on output goes to
	// --log-file, and a --daemonize parent exits, as start_server's do.
	opts.SetUp = func() error {
		var err error
		if logOut != nil {
			if err = redirectOutput(logOut); err != nil {
				err = fmt.Errorf("--log-file: %w", err)
			}
		}
		// The daemon runs on, logging where it can: its parent must not
		// wait for it in vain.
		return errors.Join(err, signalReady(ready))
	}
	var unixTargets []portSpec
	for i, spec := range cfg.Ports {
		if spec.Net != netUnix {
			continue
		}
		if err := clearPath(spec, opts.Names[i], stderr); err != nil {
			return fail(exitFailure, "%v", err)
		}
		unixTargets = append(unixTargets, spec)
	}
	defer removePaths(unixTargets)
	if *pidFile != "" {
		f, err := lockPIDFile(*pidFile)
		if err != nil {
			return fail(exitFailure, "--pid-file: %v", err)
		}
		defer func() {
			os.Remove(*pidFile)
			f.Close()
		}()
	}
	return launch(cfg, stderr)
}

// envSeconds reads a whole number of seconds from an environment variable;
// unset or empty is 0.
func envSeconds(name string) (int, error) {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q: want a whole number of seconds", name, v)
	}
	return n, nil
}
