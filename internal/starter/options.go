package starter

// start_server's command line, and the environment variables that stand
// for its options.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Version is the Server::Starter release whose command line this one
// follows.
const Version = "0.35"

// Usage is start_server's --help.
const Usage = `Usage:
      start_server [options] -- server-prog server-arg1 server-arg2 ...

      # start Plack using Starlet listening at TCP port 8000
      start_server --port=8000 -- plackup -s Starlet --max-workers=100 index.psgi

takeover's drop-in for Server::Starter's start_server (` + Version + `): the same
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

// Options are start_server's options. Parse fills in what the command line
// says; Check the rest, from the environment.
type Options struct {
	Ports, Paths              []string // --port and --path, as given
	Dir                       string
	SignalOnHUP, SignalOnTerm string // as given: "TERM" unless set
	PIDFile, StatusFile       string
	EnvDir                    string // --envdir, else ENVDIR (Check)
	LogFile                   string
	Backlog                   int // 0: SOMAXCONN
	MaxRestarts               int // 0: no end
	Daemonize, Restart, Stop  bool
	ShowVersion               bool     // --version
	Command                   []string // after the options

	// Set by Check.
	Interval     time.Duration // --interval
	KillTimeout  time.Duration // --kill-timeout; 0: not given, takeover's default
	KillOldDelay time.Duration // --kill-old-delay, or KILL_OLD_DELAY
	AutoRestart  time.Duration // --enable-auto-restart's interval; 0: no auto-restart

	interval, killTimeout int
	set                   map[string]string // the options given, by name
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// Parse reads start_server's command line. It prints nothing: it returns
// flag.ErrHelp for --help (and -h), and the flag package's error for a bad
// option, for the caller to say.
func Parse(args []string) (*Options, error) {
	fs := flag.NewFlagSet("start_server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	var o Options
	var ports, paths stringList
	fs.Var(&ports, "port", "")
	fs.Var(&paths, "path", "")
	fs.StringVar(&o.Dir, "dir", "", "")
	fs.IntVar(&o.interval, "interval", 1, "")
	fs.StringVar(&o.SignalOnHUP, "signal-on-hup", "TERM", "")
	fs.StringVar(&o.SignalOnTerm, "signal-on-term", "TERM", "")
	fs.StringVar(&o.PIDFile, "pid-file", "", "")
	fs.StringVar(&o.StatusFile, "status-file", "", "")
	envDir := fs.String("envdir", "", "")
	fs.StringVar(&o.LogFile, "log-file", "", "")
	fs.Bool("enable-auto-restart", false, "")
	fs.Int("auto-restart-interval", 360, "")
	fs.Int("kill-old-delay", 0, "")
	fs.IntVar(&o.Backlog, "backlog", 0, "")
	fs.IntVar(&o.killTimeout, "kill-timeout", 0, "")
	fs.IntVar(&o.MaxRestarts, "max-restarts", 0, "")
	fs.BoolVar(&o.Daemonize, "daemonize", false, "")
	fs.BoolVar(&o.Restart, "restart", false, "")
	fs.BoolVar(&o.Stop, "stop", false, "")
	help := fs.Bool("help", false, "")
	fs.BoolVar(&o.ShowVersion, "version", false, "")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *help {
		return nil, flag.ErrHelp
	}
	o.set = make(map[string]string)
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = f.Value.String() })
	o.Ports, o.Paths, o.EnvDir, o.Command = ports, paths, *envDir, fs.Args()
	return &o, nil
}

// Check checks the options of a start_server that is to run a server,
// and sets the environment variables that stand for them, which the
// workers see too, as start_server does; what the options leave unset, it
// takes from those variables.
func (o *Options) Check() error {
	_, killTimeoutSet := o.set["kill-timeout"]
	switch {
	case o.Daemonize && o.LogFile == "":
		return errors.New("Usage: --log-file option must be specified together with --daemonize")
	case len(o.Command) == 0:
		return errors.New("server program not specified: put it after --, like: start_server --port=8000 -- plackup -s Starlet app.psgi")
	case o.interval < 0 || o.Backlog < 0 || killTimeoutSet && o.killTimeout <= 0:
		return errors.New("--interval and --backlog must not be negative, --kill-timeout must be more than 0")
	case o.set["max-restarts"] != "" && (o.MaxRestarts < 1 || o.MaxRestarts > 1000):
		return fmt.Errorf("--max-restarts=%d: want 1 to 1000 (without it, a failed start is retried for ever, as start_server does)", o.MaxRestarts)
	case o.Backlog > math.MaxInt32:
		return fmt.Errorf("--backlog=%d: want at most %d (the kernel caps it at net.core.somaxconn anyway)", o.Backlog, math.MaxInt32)
	}
	for _, opt := range []struct {
		name string
		n    int
	}{{"interval", o.interval}, {"kill-timeout", o.killTimeout}} {
		if opt.n > MaxSeconds {
			return fmt.Errorf("--%s=%d: want at most %d seconds (a year)", opt.name, opt.n, MaxSeconds)
		}
	}
	for _, opt := range []string{"kill-old-delay", "auto-restart-interval"} {
		if v, ok := o.set[opt]; ok {
			if n, _ := strconv.Atoi(v); n < 0 || n > MaxSeconds {
				return fmt.Errorf("--%s=%s: want 0 to %d seconds (a year)", opt, v, MaxSeconds)
			}
		}
	}
	o.Interval = time.Duration(o.interval) * time.Second
	o.KillTimeout = time.Duration(o.killTimeout) * time.Second

	for opt, env := range map[string]string{"envdir": "ENVDIR", "enable-auto-restart": "ENABLE_AUTO_RESTART",
		"kill-old-delay": "KILL_OLD_DELAY", "auto-restart-interval": "AUTO_RESTART_INTERVAL"} {
		if v, ok := o.set[opt]; ok {
			if opt == "enable-auto-restart" {
				v = map[string]string{"true": "1", "false": "0"}[v]
			}
			os.Setenv(env, v)
		}
	}
	if o.EnvDir == "" {
		o.EnvDir = os.Getenv("ENVDIR")
	}
	autoRestart := os.Getenv("ENABLE_AUTO_RESTART") != "" && os.Getenv("ENABLE_AUTO_RESTART") != "0"
	killOldDelay := 0
	if autoRestart {
		killOldDelay = 5
		every, err := envSeconds("AUTO_RESTART_INTERVAL")
		if err != nil {
			return err
		}
		if every == 0 {
			every = 360
		}
		o.AutoRestart = time.Duration(every) * time.Second
	}
	if _, ok := os.LookupEnv("KILL_OLD_DELAY"); ok {
		d, err := envSeconds("KILL_OLD_DELAY")
		if err != nil {
			return err
		}
		killOldDelay = d
	}
	o.KillOldDelay = time.Duration(killOldDelay) * time.Second
	return nil
}

// MaxSeconds bounds every option and variable in seconds: a year, far
// from where a time.Duration overflows (292 years), so that no sum of them
// turns negative.
const MaxSeconds = 365 * 24 * 60 * 60

// envSeconds reads a whole number of seconds, at most MaxSeconds, from an
// environment variable; unset or empty is 0.
func envSeconds(name string) (int, error) {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > MaxSeconds {
		return 0, fmt.Errorf("%s=%q: want a whole number of seconds, at most %d (a year)", name, v, MaxSeconds)
	}
	return n, nil
}
