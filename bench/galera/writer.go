package main

import (
	"context"
	"database/sql/driver"
	"errors"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/haven-ha/haven/internal/drill/pgwrite"
)

// The writer's record and its analysis are pgwrite's (shared with bench/pg
// and bench/dr); the writer itself speaks MySQL's protocol.
type (
	write      = pgwrite.Write
	lossReport = pgwrite.LossReport
)

const (
	acked         = pgwrite.Acked
	failed        = pgwrite.Failed
	indeterminate = pgwrite.Indeterminate
	never         = pgwrite.Never
)

var (
	gapAround  = pgwrite.GapAround
	longestGap = pgwrite.LongestGap
	tally      = pgwrite.Tally
	compare    = pgwrite.Compare
	errorKinds = pgwrite.ErrorKinds
)

// writer inserts (run, seq) rows into bench.writes every interval, one at
// a time, on one connection through the router, and records every
// outcome. It reconnects after any error.
type writer struct {
	run       int
	every     time.Duration
	opTimeout time.Duration
	connector driver.Connector
	start     time.Time
	mu        sync.Mutex
	writes    []write
}

// runWriter starts a writer that writes until ctx ends; its record is
// complete once done is closed.
func runWriter(ctx context.Context, run int, every, connTimeout, opTimeout time.Duration, dialer, addr string) (*writer, <-chan struct{}, error) {
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName = dialer, addr, appUser, appPassword, database
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = connTimeout, opTimeout, opTimeout
	cfg.InterpolateParams = true
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, nil, err
	}
	w := &writer{run: run, every: every, opTimeout: opTimeout, connector: conn, start: time.Now()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.loop(ctx)
	}()
	return w, done, nil
}

func (w *writer) loop(ctx context.Context) {
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	var conn driver.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for seq := 1; ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		start := time.Now()
		wr := write{Seq: seq, Start: start.Sub(w.start)}
		if conn == nil {
			c, err := w.connector.Connect(ctx)
			if err != nil {
				wr.Outcome, wr.Err = failed, "connect: "+err.Error()
			} else {
				conn = c
			}
		}
		if conn != nil {
			ectx, cancel := context.WithTimeout(ctx, w.opTimeout)
			sent := time.Now()
			_, err := conn.(driver.ExecerContext).ExecContext(ectx, "INSERT INTO writes (run, seq) VALUES (?, ?)",
				[]driver.NamedValue{{Ordinal: 1, Value: int64(w.run)}, {Ordinal: 2, Value: int64(seq)}})
			wr.Commit = time.Since(sent)
			cancel()
			wr.Outcome = classify(err)
			if err != nil {
				wr.Err = err.Error()
				conn.Close()
				conn = nil
			}
		}
		if ctx.Err() != nil && wr.Outcome != acked {
			return // stopped by the harness, not by the fault
		}
		wr.End = time.Since(w.start)
		w.mu.Lock()
		w.writes = append(w.writes, wr)
		w.mu.Unlock()
	}
}

// classify says what an INSERT's error means for its row. The driver's
// ErrBadConn comes only when nothing was sent, and the server's refusals
// below come before anything is replicated: the row was not written.
// Anything else (a timeout, a connection lost after the INSERT went out,
// a server error during the commit's replication or a shutdown) leaves it
// unknown.
func classify(err error) pgwrite.Outcome {
	var myErr *mysql.MySQLError
	switch {
	case err == nil:
		return acked
	case errors.Is(err, driver.ErrBadConn):
		return failed
	case errors.As(err, &myErr) && refusedBefore[myErr.Number]:
		return failed
	default:
		return indeterminate
	}
}

// refusedBefore are the server errors that leave nothing written: the
// node is not ready (1047), the login was refused (1045), the write set
// failed certification and was rolled back (1213), the server is read-only
// (1290, 1836).
var refusedBefore = map[uint16]bool{1047: true, 1045: true, 1213: true, 1290: true, 1836: true}

func (w *writer) snapshot() []write {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]write(nil), w.writes...)
}

func (w *writer) since(t time.Time) time.Duration { return t.Sub(w.start) }

// ackedSince counts acknowledged writes that started at t or later.
func (w *writer) ackedSince(t time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return pgwrite.CountAcked(w.writes, t)
}

// firstAckedSince is when the first write started at t or later was
// acknowledged, or -1.
func firstAckedSince(writes []write, t time.Duration) time.Duration {
	for _, wr := range writes {
		if wr.Start >= t && wr.Outcome == acked {
			return wr.End
		}
	}
	return -1
}
