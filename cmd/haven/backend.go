package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/signal"
	"syscall"

	"github.com/haven-ha/haven/internal/demoapp"
)

// runBackend is `haven backend`: the demo web application.
func runBackend(args []string, stderr io.Writer) error {
	fs := newFlagSet("backend", stderr)
	listen := fs.String("listen", "127.0.0.1:8081", "address to listen on")
	name := fs.String("name", "", "the backend's name (default: the listen address)")
	database := fs.String("database", "", "the database: a PostgreSQL connection string, or mysql://USER:PASSWORD@HOST:PORT/DATABASE for MariaDB; POST /orders?id=N stores order N there")
	files := fs.String("files", "", "a directory for uploaded files (a volume's mount): PUT /files/NAME stores one, GET /files/NAME serves it")
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	if *name == "" {
		*name = *listen
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := newLogger(stderr, "info", false)
	log.Info("demo backend listening", "addr", ln.Addr().String(), "name", *name)
	app := demoapp.New(*name)
	if *database != "" {
		if err := app.UseDatabase(ctx, *database); err != nil {
			return err
		}
	}
	if *files != "" {
		if err := app.UseFiles(*files); err != nil {
			return err
		}
	}
	return app.Serve(ctx, ln, log)
}
