package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/sdnotify"
)

// runAgent is `haven agent`: it runs the roles the file assigns to the node
// until SIGINT or SIGTERM, and reloads the file on SIGHUP.
func runAgent(args []string, stderr io.Writer) error {
	fs := newFlagSet("agent", stderr)
	cfgPath := configFlag(fs)
	node := fs.String("n", "", "this node's name in the configuration (required)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	jsonLogs := fs.Bool("log-json", false, "log in JSON")
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	if *node == "" {
		return fmt.Errorf("agent: -n NODE is required (the node's name in %s)", *cfgPath)
	}
	// Catch SIGHUP before anything else: its default action ends the
	// process, and a reload sent right after start must not kill the agent.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	log := newLogger(stderr, *level, *jsonLogs)
	// Under systemd (Type=notify) the agent says when it is up, reloading
	// and stopping, and keeps the watchdog fed while it is alive; outside
	// it every call is a no-op. Both are read, and unset, before anything
	// starts postgres, which must not notify systemd in the agent's name.
	sd := sdnotify.FromEnv()
	watchdog, err := sdnotify.WatchdogInterval()
	if err != nil {
		return err
	}
	// An agent executed again by its own restart keeps systemd's
	// watchdog fed from the start: systemd saw no stop, and its watchdog
	// runs on through the restart.
	restarted := os.Getenv(restartedEnv) != ""
	os.Unsetenv(restartedEnv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var a atomic.Pointer[agent.Agent]
	alive := func(ctx context.Context) error {
		if p := a.Load(); p != nil {
			return p.Alive(ctx)
		}
		return nil // still starting
	}
	if restarted {
		go sd.Watchdog(ctx, watchdog, alive, log)
	}
	started := func() {
		notify(log, sd.Ready())
		if !restarted {
			go sd.Watchdog(ctx, watchdog, alive, log)
		}
	}
	ag, err := agent.New(agent.Options{ConfigPath: *cfgPath, Node: *node, Logger: log, Version: buildVersion(), Started: started})
	if err != nil {
		return err
	}
	a.Store(ag)
	go onSignal(ctx, hup, func() {
		log.Info("SIGHUP: reloading configuration")
		notify(log, sd.Reloading())
		ag.Reload() // logs its own outcome; a bad file keeps the running config
		notify(log, sd.Ready())
	})
	go func() {
		<-ctx.Done()
		notify(log, sd.Stopping())
	}()
	log.Info("haven agent starting", "version", buildVersion(), "config", *cfgPath, "node", *node, "pid", os.Getpid(), "systemd", sd.Enabled(), "watchdog", watchdog, "restarted", restarted)
	err = ag.Run(ctx)
	if errors.Is(err, agent.ErrRestart) {
		return execAgain(log, sd, watchdog)
	}
	return err
}

// restartedEnv marks an agent executed again by its own restart.
const restartedEnv = "HAVEN_AGENT_RESTARTED"

// execAgain replaces the stopped agent with the binary now at its path,
// with the same arguments, in the same process: systemd sees a reload of
// the same main pid, not a stop. It returns only when the exec failed.
func execAgain(log *slog.Logger, sd *sdnotify.Notifier, watchdog time.Duration) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: find the agent's binary: %w", err)
	}
	notify(log, sd.Reloading())
	env := append(sd.ExecEnv(os.Environ(), watchdog), restartedEnv+"=1")
	log.Info("restart: executing the agent again", "executable", exe, "pid", os.Getpid())
	err = syscall.Exec(exe, os.Args, env)
	return fmt.Errorf("restart: execute %s: %w (the agent has stopped; start it again)", exe, err)
}

// notify logs a failure to tell systemd: the agent runs on without it.
func notify(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("systemd notification", "err", err)
	}
}
