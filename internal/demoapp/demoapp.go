// Package demoapp is a small web application used by `haven demo`, the
// tests and the benchmarks as a backend: a page, /healthz, a counter, slow
// and failing endpoints, and a switch that makes it fail or hang on demand.
package demoapp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Mode is how the app answers.
type Mode int32

// Modes. Fail answers 500; Hang accepts requests and never answers them
// (until shutdown); Wrong answers 200 with a body no check expects.
const (
	OK Mode = iota
	Fail
	Hang
	Wrong
)

// App is one demo backend.
type App struct {
	Name    string
	db      *pgxpool.Pool // nil: no /orders
	served  atomic.Uint64
	counter atomic.Uint64
	mode    atomic.Int32
	stop    chan struct{}
}

// New returns an app called name.
func New(name string) *App { return &App{Name: name, stop: make(chan struct{})} }

// SetMode switches how the app answers.
func (a *App) SetMode(m Mode) { a.mode.Store(int32(m)) }

// Served returns how many requests the app answered.
func (a *App) Served() uint64 { return a.served.Load() }

// Handler returns the app's HTTP handler.
func (a *App) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/counter", func(w http.ResponseWriter, r *http.Request) {
		n := a.counter.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"backend\":%q,\"count\":%d}\n", a.Name, n)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(min(ms, 60000)) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, "%s slept %dms\n", a.Name, ms)
	})
	mux.HandleFunc("POST /orders", a.order)
	mux.HandleFunc("POST /_demo/mode/{mode}", func(w http.ResponseWriter, r *http.Request) {
		switch r.PathValue("mode") {
		case "ok":
			a.SetMode(OK)
		case "fail":
			a.SetMode(Fail)
		case "hang":
			a.SetMode(Hang)
		case "wrong":
			a.SetMode(Wrong)
		default:
			http.Error(w, "mode is one of ok, fail, hang, wrong", http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "mode", r.PathValue("mode"))
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><title>haven demo</title><h1>Hello from %s</h1>\n", a.Name)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch Mode(a.mode.Load()) {
		case Hang:
			if r.URL.Path != "/_demo/mode/ok" {
				select {
				case <-r.Context().Done():
				case <-a.stop:
				}
				return
			}
		case Fail:
			if r.URL.Path != "/_demo/mode/ok" {
				http.Error(w, a.Name+" is failing on purpose", http.StatusInternalServerError)
				return
			}
		case Wrong:
			if r.URL.Path != "/_demo/mode/ok" {
				fmt.Fprintf(w, "%s answers something else on purpose\n", a.Name)
				return
			}
		}
		a.served.Add(1)
		w.Header().Set("X-Backend", a.Name)
		mux.ServeHTTP(w, r)
	})
}

// UseDatabase keeps the app's orders in PostgreSQL at dsn (haven's
// database router, in the demo), in a table orders that it creates if
// needed.
func (a *App) UseDatabase(ctx context.Context, dsn string) error {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("demoapp: database: %w", err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("demoapp: database: %w", err)
	}
	a.db = pool
	return nil
}

// order stores order ?id=N and answers 200 only once its COMMIT returned,
// with the address of the server that took it; 503 when the database did
// not take it (or may have: the client cannot know).
func (a *App) order(w http.ResponseWriter, r *http.Request) {
	if a.db == nil {
		http.Error(w, a.Name+" has no database (haven backend --database DSN)", http.StatusNotFound)
		return
	}
	id, err := strconv.ParseInt(r.URL.Query().Get("id"), 10, 64)
	if err != nil {
		http.Error(w, "want ?id=NUMBER", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var server string
	err = a.db.QueryRow(ctx, `INSERT INTO orders (id, server) VALUES ($1, host(inet_server_addr()))
		ON CONFLICT (id) DO UPDATE SET server = orders.server RETURNING server`, id).Scan(&server)
	if err != nil {
		http.Error(w, "database: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintf(w, "{\"id\":%d,\"server\":%q}\n", id, server)
}

// Serve answers on ln until ctx ends.
func (a *App) Serve(ctx context.Context, ln net.Listener, log *slog.Logger) error {
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	close(a.stop)
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if a.db != nil {
		a.db.Close()
	}
	return nil
}
