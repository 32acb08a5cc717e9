package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/haven-ha/haven/internal/agent"
)

// runAgent is `haven agent`: it runs the roles the file assigns to the node
// until SIGINT or SIGTERM, and reloads the file on SIGHUP.
func runAgent(args []string, stderr io.Writer) error {
	fs := newFlagSet("agent", stderr)
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
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
	a, err := agent.New(agent.Options{ConfigPath: *cfgPath, Node: *node, Logger: log, Version: buildVersion()})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go onSignal(ctx, hup, func() {
		log.Info("SIGHUP: reloading configuration")
		a.Reload() // logs its own outcome; a bad file keeps the running config
	})
	log.Info("haven agent starting", "version", buildVersion(), "config", *cfgPath, "node", *node, "pid", os.Getpid())
	return a.Run(ctx)
}
