// Package demoapp is a small web application used by `haven demo`, the
// tests and the benchmarks as a backend: a page, /healthz, a counter, slow
// and failing endpoints, a switch that makes it fail or hang on demand,
// orders kept in a database, and uploaded files kept in a directory.
package demoapp

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-sql-driver/mysql"
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
	db      store  // nil: no /orders
	files   string // "": no /files
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
	mux.HandleFunc("PUT /files/{name}", a.putFile)
	mux.HandleFunc("GET /files/{name}", a.getFile)
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

// UseDatabase keeps the app's orders at dsn (haven's database router, in
// the demo), in a table orders (id, server) made beforehand: PostgreSQL
// for a connection string or postgres:// URL, MariaDB (a Galera node: the
// order records its wsrep_node_name) for a
// mysql://USER:PASSWORD@HOST:PORT/DATABASE URL.
func (a *App) UseDatabase(ctx context.Context, dsn string) error {
	var err error
	if strings.HasPrefix(dsn, "mysql://") {
		a.db, err = openMySQL(dsn)
	} else {
		a.db, err = openPostgres(ctx, dsn)
	}
	if err != nil {
		return fmt.Errorf("demoapp: database: %w", err)
	}
	return nil
}

// store is where the app keeps its orders.
type store interface {
	// order stores order id, once, and returns the server that took it.
	order(ctx context.Context, id int64) (server string, err error)
	close()
}

type pgStore struct{ pool *pgxpool.Pool }

func openPostgres(ctx context.Context, dsn string) (store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return pgStore{pool}, nil
}

func (s pgStore) order(ctx context.Context, id int64) (server string, err error) {
	err = s.pool.QueryRow(ctx, `INSERT INTO orders (id, server) VALUES ($1, host(inet_server_addr()))
		ON CONFLICT (id) DO UPDATE SET server = orders.server RETURNING server`, id).Scan(&server)
	return server, err
}

func (s pgStore) close() { s.pool.Close() }

type mysqlStore struct{ db *sql.DB }

// openMySQL opens a pool for mysql://USER:PASSWORD@HOST:PORT/DATABASE.
func openMySQL(dsn string) (store, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, err
	}
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.DBName = "tcp", u.Host, strings.TrimPrefix(u.Path, "/")
	cfg.User = u.User.Username()
	cfg.Passwd, _ = u.User.Password()
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 2*time.Second, 5*time.Second, 5*time.Second
	if cfg.Addr == "" || cfg.DBName == "" || cfg.User == "" {
		return nil, fmt.Errorf("%s: want mysql://USER:PASSWORD@HOST:PORT/DATABASE", u.Redacted())
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(8)
	return mysqlStore{db}, nil
}

// order inserts the order with the name of the Galera node that took it
// (MariaDB's wsrep_node_name, its host name without Galera), and reads
// that name back on the same connection.
func (s mysqlStore) order(ctx context.Context, id int64) (server string, err error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "INSERT INTO orders (id, server) VALUES (?, @@wsrep_node_name) ON DUPLICATE KEY UPDATE id = id", id); err != nil {
		return "", err
	}
	err = conn.QueryRowContext(ctx, "SELECT server FROM orders WHERE id = ?", id).Scan(&server)
	return server, err
}

func (s mysqlStore) close() { s.db.Close() }

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
	server, err := a.db.order(ctx, id)
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
		a.db.close()
	}
	return nil
}
