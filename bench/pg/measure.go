package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// outcome is what the writer knows of one write.
type outcome int

const (
	// acked: COMMIT returned OK. The row must survive any fault.
	acked outcome = iota
	// failed: the row was certainly not written: no connection, the
	// INSERT was never sent, or the server refused it (read-only).
	failed
	// indeterminate: the INSERT was sent and no answer came back (a
	// timeout, a connection lost mid-commit, a shutdown while the commit
	// waited for its synchronous standby): it may or may not be there.
	indeterminate
)

// write is one attempt of the writer.
type write struct {
	Seq     int           `json:"seq"`
	Start   time.Duration `json:"start_ns"` // from the writer's start
	End     time.Duration `json:"end_ns"`
	Outcome outcome       `json:"outcome"` // 0 acked, 1 failed, 2 indeterminate
	Err     string        `json:"error,omitempty"`
}

// connector opens a connection to the primary through the router.
type connector func(ctx context.Context) (*pgx.Conn, error)

// writer inserts (run, seq) rows every interval through the router, one at
// a time, and records every outcome. It reconnects on any error.
type writer struct {
	run         int
	every       time.Duration
	connTimeout time.Duration
	opTimeout   time.Duration
	connect     connector
	start       time.Time

	mu     sync.Mutex
	writes []write
}

// runWriter writes until ctx ends; the result is complete once done is
// closed.
func runWriter(ctx context.Context, run int, every, connTimeout, opTimeout time.Duration, connect connector) (*writer, <-chan struct{}) {
	w := &writer{run: run, every: every, connTimeout: connTimeout, opTimeout: opTimeout, connect: connect, start: time.Now()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.loop(ctx)
	}()
	return w, done
}

func (w *writer) loop(ctx context.Context) {
	tick := time.NewTicker(w.every)
	defer tick.Stop()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
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
		var err error
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, w.connTimeout)
			conn, err = w.connect(cctx)
			cancel()
			if err != nil {
				conn = nil
				wr.Outcome, wr.Err = failed, "connect: "+err.Error()
			}
		}
		if conn != nil {
			ectx, cancel := context.WithTimeout(ctx, w.opTimeout)
			_, err = conn.Exec(ectx, "INSERT INTO writes (run, seq) VALUES ($1, $2)", w.run, seq)
			cancel()
			wr.Outcome = classify(err)
			if err != nil {
				wr.Err = err.Error()
				conn.Close(context.Background())
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

// classify tells from an INSERT's error what became of the row.
func classify(err error) outcome {
	if err == nil {
		return acked
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Refused before anything was written: a read-only server
		// (class 25), a missing table or role (42), a failed login (28).
		switch pgErr.Code[:2] {
		case "25", "42", "28":
			return failed
		}
		// An administrator's shutdown (57P01) while the commit waited for
		// its standby has committed locally: it may be there.
		return indeterminate
	}
	if pgconn.SafeToRetry(err) {
		return failed // nothing was sent
	}
	return indeterminate
}

// snapshot returns a copy of the writes so far.
func (w *writer) snapshot() []write {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

// ackedSince counts the acknowledged writes that started at or after t
// (from the writer's start).
func (w *writer) ackedSince(t time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return countAcked(w.writes, t)
}

func countAcked(writes []write, t time.Duration) int {
	n := 0
	for _, wr := range writes {
		if wr.Outcome == acked && wr.Start >= t {
			n++
		}
	}
	return n
}

// never stands for a gap that had not ended when the writer stopped.
const never = time.Duration(math.MaxInt64)

// gapAround is the write gap of a fault at offset fault: the longest time
// between two consecutive acknowledged writes (by when their COMMIT
// returned), from the last write acknowledged before the fault to the end.
// With no write acknowledged after the fault, it is never.
func gapAround(writes []write, fault time.Duration) (longest time.Duration) {
	var acks []time.Duration
	for _, w := range writes {
		if w.Outcome == acked {
			acks = append(acks, w.End)
		}
	}
	slices.Sort(acks)
	// The last acknowledgement before the fault; the writes before it are
	// the steady state.
	from := 0
	for i, a := range acks {
		if a < fault {
			from = i
		}
	}
	if len(acks) == 0 || acks[len(acks)-1] < fault {
		return never
	}
	for i := from + 1; i < len(acks); i++ {
		longest = max(longest, acks[i]-acks[i-1])
	}
	return longest
}

// longestGap is the longest time between two consecutive acknowledged
// writes from t0 to t1 (offsets; the steady state before a fault).
func longestGap(writes []write, t0, t1 time.Duration) time.Duration {
	var last, longest time.Duration = -1, 0
	for _, w := range writes {
		if w.Outcome != acked || w.End < t0 || w.End > t1 {
			continue
		}
		if last >= 0 {
			longest = max(longest, w.End-last)
		}
		last = w.End
	}
	return longest
}

// tally counts the writes by outcome.
func tally(writes []write) (ack, fail, indet int) {
	for _, w := range writes {
		switch w.Outcome {
		case acked:
			ack++
		case failed:
			fail++
		default:
			indet++
		}
	}
	return ack, fail, indet
}

// lossReport compares what the writer knew with the rows the primary has.
type lossReport struct {
	// Lost are acknowledged rows missing on the primary.
	Lost []int `json:"lost,omitempty"`
	// IndeterminateFound counts indeterminate writes whose row is there.
	IndeterminateFound int `json:"indeterminate_found"`
	// FailedFound are writes the writer took as certainly failed whose
	// row is there: a misclassified error.
	FailedFound []int `json:"failed_found,omitempty"`
	// Unknown are rows on the primary the writer never tried.
	Unknown []int `json:"unknown,omitempty"`
}

// compare matches the writes with the rows (the seqs) on the primary.
func compare(writes []write, rows []int) lossReport {
	have := map[int]bool{}
	for _, s := range rows {
		have[s] = true
	}
	var r lossReport
	tried := map[int]bool{}
	for _, w := range writes {
		tried[w.Seq] = true
		switch {
		case w.Outcome == acked && !have[w.Seq]:
			r.Lost = append(r.Lost, w.Seq)
		case w.Outcome == indeterminate && have[w.Seq]:
			r.IndeterminateFound++
		case w.Outcome == failed && have[w.Seq]:
			r.FailedFound = append(r.FailedFound, w.Seq)
		}
	}
	for _, s := range rows {
		if !tried[s] {
			r.Unknown = append(r.Unknown, s)
		}
	}
	slices.Sort(r.Unknown)
	return r
}

// readRows reads the seqs of run from the primary, through the router,
// checking that the server it reached is not in recovery.
func readRows(ctx context.Context, connect connector, run int) ([]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	var recovery bool
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&recovery); err != nil {
		return nil, err
	}
	if recovery {
		return nil, errors.New("the router reached a replica")
	}
	rows, err := conn.Query(ctx, "SELECT seq FROM writes WHERE run = $1", run)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// errorKinds summarises the errors of the writes that were not
// acknowledged: each distinct message (numbers and addresses kept) with
// its count, the most frequent first, at most n.
func errorKinds(writes []write, n int) []string {
	count := map[string]int{}
	for _, w := range writes {
		if w.Outcome != acked {
			count[harness.Truncate(w.Err, 120)]++
		}
	}
	var keys []string
	for k := range count {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if count[a] != count[b] {
			return count[b] - count[a]
		}
		return strings.Compare(a, b)
	})
	var out []string
	for _, k := range keys[:min(n, len(keys))] {
		out = append(out, fmt.Sprintf("%s ×%d", k, count[k]))
	}
	return out
}
