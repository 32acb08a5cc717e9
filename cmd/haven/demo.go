package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/haven-ha/haven/internal/demo"
)

// runDemo is `haven demo`.
func runDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	duration := fs.Duration("duration", 0, "stop after this long (default: run until Ctrl-C)")
	level := fs.String("log-level", "warn", "agent log level shown during the demo")
	floating := fs.Bool("floating", true, "also play act 2, a floating address across two balancer nodes in network namespaces (needs root)")
	database := fs.Bool("database", true, "also play act 3, the application's data in a PostgreSQL cluster whose primary is killed (needs root and PostgreSQL)")
	traffic := fs.Bool("traffic", true, "also play act 4, two regions and the DNS traffic manager (needs root)")
	region := fs.Bool("region", true, "also play act 5, the database across two regions with region east lost: measured RTO and RPO (needs root, PostgreSQL and /dev/net/tun)")
	volume := fs.Bool("volume", true, "also play act 6, the application's files on a replicated GlusterFS volume, an application node killed (needs root and GlusterFS)")
	engine := fs.String("engine", "postgres", "act 3's database: postgres, or galera (MariaDB Galera; act 5 then skipped, it needs PostgreSQL)")
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	if *engine != "postgres" && *engine != "galera" {
		fmt.Fprintf(stderr, "haven demo: -engine %q: want postgres or galera\n", *engine)
		return errUsage
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return demo.Run(ctx, demo.Options{Out: stdout, Logger: newLogger(stderr, *level, false), Duration: *duration, Version: buildVersion(), Floating: *floating, Database: *database, Traffic: *traffic, Region: *region, Volume: *volume, Engine: *engine})
}
