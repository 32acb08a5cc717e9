package drill

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
)

// A workload is a drill's client: it works through the deployment the way
// users do and records each operation's outcome, so that the drill can
// say what users saw.
type workload interface {
	// part is the objectives' part the workload's outcomes are judged
	// against (a region scenario judges every workload as the region's).
	part() string
	describe() string
	// ops returns the operations so far, their times offsets from t0.
	ops(t0 time.Time) []pgwrite.Write
	// lost returns the acknowledged operations missing afterwards.
	lost(ctx context.Context) ([]int, error)
}

// dbLoad commits rows through the database's router (pgwrite).
type dbLoad struct {
	w       *pgwrite.Writer
	run     int
	connect pgwrite.Connector
}

// startDB makes the drill's table and starts a writer into it.
func startDB(ctx context.Context, dsn string, every time.Duration) (*dbLoad, <-chan struct{}, error) {
	connect := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }
	if err := makeTable(ctx, connect); err != nil {
		return nil, nil, err
	}
	run := int(time.Now().UnixNano() / 1e6 % 1_000_000_000)
	w, done := pgwrite.RunOn(ctx, Table, run, every, time.Second, 2*time.Second, connect)
	return &dbLoad{w: w, run: run, connect: connect}, done, nil
}

func (d *dbLoad) part() string     { return config.PartDatabase }
func (d *dbLoad) describe() string { return "database writes through the router (" + Table + ")" }

func (d *dbLoad) ops(t0 time.Time) []pgwrite.Write {
	return shift(d.w.Snapshot(), d.w.Started().Sub(t0))
}

func (d *dbLoad) lost(ctx context.Context) ([]int, error) {
	// The database may still be settling (a region that lost its record
	// coming back as the standby): try for a while before giving up.
	deadline := time.Now().Add(readBackFor)
	for {
		rows, err := pgwrite.ReadRowsOf(ctx, d.connect, Table, d.run)
		if err == nil {
			return pgwrite.Compare(d.w.Snapshot(), rows).Lost, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("drill: read back the writes (tried for %s): %w", readBackFor, err)
		}
		if err := Sleep(ctx, time.Second); err != nil {
			return nil, err
		}
	}
}

// readBackFor bounds the tries to read the writes back after a drill.
const readBackFor = time.Minute

// makeTable makes the drill's table if it is missing.
func makeTable(ctx context.Context, connect pgwrite.Connector) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := connect(cctx)
	if err != nil {
		return fmt.Errorf("drill: connect to the database through --dsn (check the router's address and port, the user and its password): %w", err)
	}
	defer conn.Close(context.Background())
	// A table made by an administrator needs no CREATE on the schema.
	var exists bool
	if err := conn.QueryRow(cctx, "SELECT to_regclass($1) IS NOT NULL", Table).Scan(&exists); err != nil {
		return fmt.Errorf("drill: look for the table %s: %w", Table, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(cctx, "CREATE TABLE IF NOT EXISTS "+Table+" (run int, seq int, PRIMARY KEY (run, seq))"); err != nil {
		return fmt.Errorf("drill: make the table %s (or make it yourself, with INSERT and SELECT for the drill's user): %w", Table, err)
	}
	return nil
}

// httpLoad asks for a URL every interval, one request at a time; an
// answer below 500 is a success (the service answered), a 5xx, a timeout
// or a refused connection a failure.
type httpLoad struct {
	url    string
	client *http.Client
	start  time.Time

	mu  sync.Mutex
	out []pgwrite.Write
}

// startHTTP checks that url answers and starts asking for it.
func startHTTP(ctx context.Context, url string, every time.Duration) (*httpLoad, <-chan struct{}, error) {
	h := &httpLoad{url: url, start: time.Now(), client: &http.Client{
		Timeout: time.Second,
		// A redirect is an answer: the service is up.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 5 * time.Second},
	}}
	if err := h.get(ctx); err != nil {
		return nil, nil, fmt.Errorf("drill: %s does not answer before the drill (check --url): %w", url, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.loop(ctx, every)
	}()
	return h, done, nil
}

func (h *httpLoad) part() string     { return config.PartWeb }
func (h *httpLoad) describe() string { return "HTTP GET " + h.url }

func (h *httpLoad) loop(ctx context.Context, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for seq := 1; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		op := pgwrite.Write{Seq: seq, Start: time.Since(h.start), Outcome: pgwrite.Acked}
		if err := h.get(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			op.Outcome, op.Err = pgwrite.Failed, err.Error()
			// A connection to a lost node must not be the next one.
			h.client.CloseIdleConnections()
		}
		op.End = time.Since(h.start)
		h.mu.Lock()
		h.out = append(h.out, op)
		h.mu.Unlock()
	}
}

// get asks for the URL once: nil for an answer below 500.
func (h *httpLoad) get(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return errors.New(resp.Status)
	}
	return nil
}

func (h *httpLoad) ops(t0 time.Time) []pgwrite.Write {
	h.mu.Lock()
	defer h.mu.Unlock()
	return shift(h.out, h.start.Sub(t0))
}

// lost: a GET loses nothing.
func (h *httpLoad) lost(context.Context) ([]int, error) { return nil, nil }

// shift returns a copy of ops with by added to their times.
func shift(ops []pgwrite.Write, by time.Duration) []pgwrite.Write {
	out := make([]pgwrite.Write, len(ops))
	for i, o := range ops {
		o.Start += by
		o.End += by
		out[i] = o
	}
	return out
}
