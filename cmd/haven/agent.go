package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var a *agent.Agent
	started := func() {
		notify(log, sd.Ready())
		go sd.Watchdog(ctx, watchdog, a.Alive, log)
	}
	a, err = agent.New(agent.Options{ConfigPath: *cfgPath, Node: *node, Logger: log, Version: buildVersion(), Started: started})
	if err != nil {
		return err
	}
	go onSignal(ctx, hup, func() {
		log.Info("SIGHUP: reloading configuration")
		notify(log, sd.Reloading())
		a.Reload() // logs its own outcome; a bad file keeps the running config
		notify(log, sd.Ready())
	})
	go func() {
		<-ctx.Done()
		notify(log, sd.Stopping())
	}()
	log.Info("haven agent starting", "version", buildVersion(), "config", *cfgPath, "node", *node, "pid", os.Getpid(), "systemd", sd.Enabled(), "watchdog", watchdog)
	return a.Run(ctx)
}

// notify logs a failure to tell systemd: the agent runs on without it.
func notify(log *slog.Logger, err error) {
	if err != nil {
		log.Warn("systemd notification", "err", err)
	}
}
