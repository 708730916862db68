package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/takeover/takeover/internal/ready"

	"github.com/takeover/takeover/internal/starter"
	"github.com/takeover/takeover/internal/supervise"
	"github.com/takeover/takeover/internal/target"
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

// starterSpec is the port takeover binds for a, TCP or UDP, at the address
// start_server binds.
func starterSpec(ctx context.Context, a starter.Port) (target.Spec, error) {
	port, err := target.ParsePort(a.Port)
	if err != nil {
		return target.Spec{}, err
	}
	p := target.Spec{Port: port}
	if a.UDP {
		p.Net = target.NetUDP
	}
	if p.Addr, err = a.Resolve(ctx); err != nil {
		return target.Spec{}, err
	}
	return p, nil
}

// starterTargets reads start_server's --port and --path options: the
// targets takeover binds (the ports, then the paths, as start_server binds
// them), their names in SERVER_STARTER_PORT (a path as it was given) and
// the fds the command gets them at.
func starterTargets(ctx context.Context, ports, paths []string) (specs []target.Spec, names []string, fds []int, err error) {
	var args []starter.Port
	add := func(spec target.Spec, a starter.Port, opt string) error {
		if slices.Contains(specs, spec) {
			return fmt.Errorf("%s: named twice", opt)
		}
		specs, names, args = append(specs, spec), append(names, a.Name), append(args, a)
		return nil
	}
	for _, p := range ports {
		a, err := starter.ParsePort(p)
		if err != nil {
			return nil, nil, nil, err
		}
		spec, err := starterSpec(ctx, a)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--port %s: %w", p, err)
		}
		if err := add(spec, a, "--port "+p); err != nil {
			return nil, nil, nil, err
		}
	}
	for _, p := range paths {
		spec, err := target.ParsePath(p)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := add(spec, starter.Port{FD: -1, Name: p}, "--path "+p); err != nil {
			return nil, nil, nil, err
		}
	}
	if fds, err = starter.AssignFDs(args); err != nil {
		return nil, nil, nil, err
	}
	return specs, names, fds, nil
}

// runStartServer implements start_server's command line: `start_server
// ARGS` (the binary run under that name) or `takeover start-server ARGS`.
func runStartServer(args []string, stdout, stderr io.Writer) int {
	o, err := starter.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, starter.Usage)
		return 0
	}
	if err != nil {
		cmd := "takeover start-server"
		if filepath.Base(os.Args[0]) == "start_server" {
			cmd = "start_server"
		}
		badUsage(stderr, cmd, flagError(err))
		return exitFailure // as start_server's Getopt::Long
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "start_server: "+format+"\n", a...)
		return code
	}
	switch {
	case o.ShowVersion:
		fmt.Fprintf(stdout, "%s (takeover %s)\n", starter.Version, version)
		return 0
	case o.Restart:
		if err := restartServer(o.PIDFile, o.StatusFile); err != nil {
			return fail(exitFailure, "%v", err)
		}
		return 0
	case o.Stop:
		if err := stopServer(o.PIDFile, stderr); err != nil {
			return fail(exitFailure, "%v", err)
		}
		return 0
	}
	if err := o.Check(); err != nil {
		return fail(exitUsage, "%v", err)
	}
	opts := &supervise.StartServerOpts{Dir: o.Dir, EnvDir: o.EnvDir, Backlog: o.Backlog, StatusFile: o.StatusFile, MaxRetries: o.MaxRestarts, AutoRestart: o.AutoRestart}
	killTimeout := o.KillTimeout
	if killTimeout == 0 {
		killTimeout = supervise.DefaultKillTimeout
	}

	cfg := supervise.Config{StartServer: opts, Sockets: supervise.SocketsServerStarter, Ready: ready.Interval, Restart: "always",
		Command: o.Command, KillOldDelay: o.KillOldDelay, KillTimeout: killTimeout,
		MaxRestarts: o.MaxRestarts}
	// --interval 0: ready at once (takeover's zero Interval means 1s).
	cfg.Interval = max(o.Interval, time.Nanosecond)
	cfg.BindTimeout = max(supervise.DefaultBindTimeout, cfg.KillTimeout+5*time.Second)
	cfg.ReadyTimeout = max(supervise.DefaultReadyTimeout, cfg.BindTimeout+30*time.Second, cfg.Interval+time.Minute)
	if cfg.Signal, err = parseSignal(o.SignalOnHUP); err != nil {
		return fail(exitUsage, "--signal-on-hup: %v", err)
	}
	if opts.SignalOnTerm, err = parseSignal(o.SignalOnTerm); err != nil {
		return fail(exitUsage, "--signal-on-term: %v", err)
	}
	if cfg.Ports, opts.Names, opts.FDs, err = starterTargets(context.Background(), o.Ports, o.Paths); err != nil {
		return fail(exitUsage, "%v", err)
	}

	ready, isDaemon := daemonReadyPipe()
	if !isDaemon {
		fmt.Fprintf(stderr, "start_server (pid:%d) starting now...\n", os.Getpid()) // before --log-file, as start_server
	}
	if o.Daemonize && !isDaemon {
		return runDaemon(cfg.EffectiveLockTimeout()+cfg.EffectiveBindTimeout()+10*time.Second, stderr)
	}
	var logOut *os.File
	if o.LogFile != "" {
		if logOut, err = openLog(o.LogFile); err != nil {
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
	var unixTargets []target.Spec
	for i, spec := range cfg.Ports {
		if spec.Net != target.NetUnix {
			continue
		}
		if err := clearPath(spec, opts.Names[i], stderr); err != nil {
			return fail(exitFailure, "%v", err)
		}
		unixTargets = append(unixTargets, spec)
	}
	defer removePaths(unixTargets)
	if o.PIDFile != "" {
		f, err := starter.LockPIDFile(o.PIDFile)
		if err != nil {
			return fail(exitFailure, "--pid-file: %v", err)
		}
		defer func() {
			os.Remove(o.PIDFile)
			f.Close()
		}()
	}
	cfg.Rebind = retryBind
	return supervise.Launch(cfg, stderr)
}
