// Package pgwrite is the writer of the database drills and benchmarks
// (haven drill, bench/pg, bench/dr): it commits a numbered row at a fixed interval, one at a time,
// records what became of every write (acknowledged, certainly failed, or
// indeterminate), and compares that record with the rows a primary has
// afterwards: the write gap around a fault and the acknowledged writes
// lost.
//
// The table is writes (run int, seq int, PRIMARY KEY (run, seq)); a
// writer's rows are those of its run.
package pgwrite

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
)

// Outcome is what the writer knows of one write.
type Outcome int

const (
	// Acked: COMMIT returned OK. The row must survive any fault.
	Acked Outcome = iota
	// Failed: the row was certainly not written: no connection, the
	// INSERT was never sent, or the server refused it (read-only).
	Failed
	// Indeterminate: the INSERT was sent and no answer came back (a
	// timeout, a connection lost mid-commit, a shutdown while the commit
	// waited for its synchronous standby): it may or may not be there.
	Indeterminate
)

// Write is one attempt of the writer.
type Write struct {
	Seq     int           `json:"seq"`
	Start   time.Duration `json:"start_ns"` // from the writer's start
	End     time.Duration `json:"end_ns"`
	Outcome Outcome       `json:"outcome"` // 0 acked, 1 failed, 2 indeterminate
	// Commit is how long the INSERT took, from sending it to its answer
	// (the COMMIT's OK for an acknowledged write), without the connect
	// that may have come before it; 0 when it was never sent.
	Commit time.Duration `json:"commit_ns,omitempty"`
	Err    string        `json:"error,omitempty"`
}

// Connector opens a connection to the primary (through a router).
type Connector func(ctx context.Context) (*pgx.Conn, error)

// Writer inserts (run, seq) rows into the table writes every interval, one
// at a time, and records every outcome. It reconnects on any error.
type Writer struct {
	table       string
	run         int
	every       time.Duration
	connTimeout time.Duration
	opTimeout   time.Duration
	connect     Connector
	start       time.Time

	mu     sync.Mutex
	writes []Write
}

// Run starts a writer that writes until ctx ends; its record is complete
// once done is closed. Each connect has connTimeout, each INSERT opTimeout.
func Run(ctx context.Context, run int, every, connTimeout, opTimeout time.Duration, connect Connector) (w *Writer, done <-chan struct{}) {
	return RunOn(ctx, Table, run, every, connTimeout, opTimeout, connect)
}

// Table is the benchmarks' table: writes (run int, seq int, PRIMARY KEY
// (run, seq)).
const Table = "writes"

// RunOn is Run writing into table, of the same shape as Table.
func RunOn(ctx context.Context, table string, run int, every, connTimeout, opTimeout time.Duration, connect Connector) (w *Writer, done <-chan struct{}) {
	w = &Writer{table: pgx.Identifier{table}.Sanitize(), run: run, every: every, connTimeout: connTimeout, opTimeout: opTimeout, connect: connect, start: time.Now()}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		w.loop(ctx)
	}()
	return w, ch
}

func (w *Writer) loop(ctx context.Context) {
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
		wr := Write{Seq: seq, Start: start.Sub(w.start)}
		var err error
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, w.connTimeout)
			conn, err = w.connect(cctx)
			cancel()
			if err != nil {
				conn = nil
				wr.Outcome, wr.Err = Failed, "connect: "+err.Error()
			}
		}
		if conn != nil {
			ectx, cancel := context.WithTimeout(ctx, w.opTimeout)
			sent := time.Now()
			_, err = conn.Exec(ectx, "INSERT INTO "+w.table+" (run, seq) VALUES ($1, $2)", w.run, seq)
			wr.Commit = time.Since(sent)
			cancel()
			wr.Outcome = Classify(err)
			if err != nil {
				wr.Err = err.Error()
				conn.Close(context.Background())
				conn = nil
			}
		}
		if ctx.Err() != nil && wr.Outcome != Acked {
			return // stopped by the harness, not by the fault
		}
		wr.End = time.Since(w.start)
		w.mu.Lock()
		w.writes = append(w.writes, wr)
		w.mu.Unlock()
	}
}

// Classify tells from an INSERT's error what became of the row.
func Classify(err error) Outcome {
	if err == nil {
		return Acked
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Refused before anything was written: a read-only server
		// (class 25), a missing table or role (42), a failed login (28).
		switch pgErr.Code[:2] {
		case "25", "42", "28":
			return Failed
		}
		// An administrator's shutdown (57P01) while the commit waited for
		// its standby has committed locally: it may be there.
		return Indeterminate
	}
	if pgconn.SafeToRetry(err) {
		return Failed // nothing was sent
	}
	return Indeterminate
}

// Snapshot returns a copy of the writes so far.
func (w *Writer) Snapshot() []Write {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.writes)
}

// Since is the offset of t from the writer's start, the clock of every
// Write's Start and End.
func (w *Writer) Since(t time.Time) time.Duration { return t.Sub(w.start) }

// Started is when the writer started: offset 0.
func (w *Writer) Started() time.Time { return w.start }

// AckedSince counts the acknowledged writes that started at or after t
// (from the writer's start).
func (w *Writer) AckedSince(t time.Duration) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return CountAcked(w.writes, t)
}

// CountAcked counts the acknowledged writes that started at or after t.
func CountAcked(writes []Write, t time.Duration) int {
	n := 0
	for _, wr := range writes {
		if wr.Outcome == Acked && wr.Start >= t {
			n++
		}
	}
	return n
}

// Never stands for a gap that had not ended when the writer stopped.
const Never = time.Duration(math.MaxInt64)

// GapAround is the write gap of a fault at offset fault: the longest time
// between two consecutive acknowledged writes (by when their COMMIT
// returned), from the last write acknowledged before the fault to the end.
// With no write acknowledged after the fault, it is Never.
func GapAround(writes []Write, fault time.Duration) (longest time.Duration) {
	var acks []time.Duration
	for _, w := range writes {
		if w.Outcome == Acked {
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
		return Never
	}
	for i := from + 1; i < len(acks); i++ {
		longest = max(longest, acks[i]-acks[i-1])
	}
	return longest
}

// LongestGap is the longest time between two consecutive acknowledged
// writes from t0 to t1 (offsets; the steady state before a fault).
func LongestGap(writes []Write, t0, t1 time.Duration) time.Duration {
	var last, longest time.Duration = -1, 0
	for _, w := range writes {
		if w.Outcome != Acked || w.End < t0 || w.End > t1 {
			continue
		}
		if last >= 0 {
			longest = max(longest, w.End-last)
		}
		last = w.End
	}
	return longest
}

// CommitLatencies returns the commit latency (Write.Commit) of every
// acknowledged write, in the order of the writes: what a client waits for
// each commit the target accepts.
func CommitLatencies(writes []Write) []time.Duration {
	var out []time.Duration
	for _, w := range writes {
		if w.Outcome == Acked {
			out = append(out, w.Commit)
		}
	}
	return out
}

// Tally counts the writes by outcome.
func Tally(writes []Write) (ack, fail, indet int) {
	for _, w := range writes {
		switch w.Outcome {
		case Acked:
			ack++
		case Failed:
			fail++
		default:
			indet++
		}
	}
	return ack, fail, indet
}

// LossReport compares what the writer knew with the rows the primary has.
type LossReport struct {
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

// Compare matches the writes with the rows (the seqs) on the primary.
func Compare(writes []Write, rows []int) LossReport {
	have := map[int]bool{}
	for _, s := range rows {
		have[s] = true
	}
	var r LossReport
	tried := map[int]bool{}
	for _, w := range writes {
		tried[w.Seq] = true
		switch {
		case w.Outcome == Acked && !have[w.Seq]:
			r.Lost = append(r.Lost, w.Seq)
		case w.Outcome == Indeterminate && have[w.Seq]:
			r.IndeterminateFound++
		case w.Outcome == Failed && have[w.Seq]:
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

// ReadRows reads the seqs of run from the primary, through connect,
// checking that the server it reached is not in recovery.
func ReadRows(ctx context.Context, connect Connector, run int) ([]int, error) {
	return ReadRowsOf(ctx, connect, Table, run)
}

// ReadRowsOf is ReadRows from table.
func ReadRowsOf(ctx context.Context, connect Connector, table string, run int) ([]int, error) {
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
	rows, err := conn.Query(ctx, "SELECT seq FROM "+pgx.Identifier{table}.Sanitize()+" WHERE run = $1", run)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int])
}

// ErrorKinds summarises the errors of the writes that were not
// acknowledged: each distinct message (numbers and addresses kept) with
// its count, the most frequent first, at most n.
func ErrorKinds(writes []Write, n int) []string {
	count := map[string]int{}
	for _, w := range writes {
		if w.Outcome != Acked {
			count[truncate(w.Err, 120)]++
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

// truncate shortens s to n bytes and an ellipsis.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
