// Package backuptest has what the tests of backups and restores share: a
// writer that records every acknowledged row with its transaction id,
// commit timestamp and commit latency; the restore_command and archiver
// commands a test binary serves (Commands, for pgtest.Main); starting a
// restored data directory; and the check that a restore holds exactly
// the acknowledged rows up to its target, none missing and none later.
//
// The rows go into a table t (id int PRIMARY KEY, ...) that the test
// creates; ids grow by one per attempt, and an id whose commit was not
// acknowledged is never reused, so that a row is either acknowledged,
// or an attempt that may or may not have committed.
package backuptest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/repo/repotest"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// Ack is a row whose commit was acknowledged: its id, transaction id,
// commit timestamp (track_commit_timestamp: the time recovery_target_time
// compares with; zero when it could not be read after the commit) and
// how long the commit took, and when it was acknowledged (the client's
// clock).
type Ack struct {
	ID      int
	XID     string
	TS      time.Time
	Latency time.Duration
	At      time.Time
}

// Writer commits numbered rows into t, one per transaction, through
// whatever connection Connect gives (the primary of the moment), and
// makes restore points between two rows when asked.
type Writer struct {
	connect func(context.Context) (*pgx.Conn, error)
	timeout time.Duration

	mu     sync.Mutex
	acks   []Ack
	errs   int
	last   int            // the last id tried
	points map[string]int // restore point -> the last id tried before it
	mark   chan string
	stop   chan struct{}
	done   chan struct{}
}

// StartWriter runs a Writer until Finish (or the test's end). connect
// opens a connection to the primary; it is called again after any
// error. Each commit may take up to timeout; one that takes longer
// counts as not acknowledged.
func StartWriter(t testing.TB, connect func(context.Context) (*pgx.Conn, error), timeout time.Duration) *Writer {
	w := &Writer{connect: connect, timeout: timeout, points: map[string]int{}, mark: make(chan string),
		stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	t.Cleanup(w.halt)
	return w
}

func (w *Writer) run() {
	defer close(w.done)
	var c *pgx.Conn
	defer func() {
		if c != nil {
			c.Close(context.Background())
		}
	}()
	drop := func() {
		c.Close(context.Background())
		c = nil
		w.mu.Lock()
		w.errs++
		w.mu.Unlock()
	}
	for id := 1; ; {
		select {
		case <-w.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
		if c == nil {
			var err error
			if c, err = w.connect(ctx); err != nil {
				cancel()
				c = nil
				select {
				case <-w.stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
		}
		select {
		case name := <-w.mark:
			_, err := c.Exec(ctx, "SELECT pg_create_restore_point($1)", name)
			if err == nil {
				w.mu.Lock()
				w.points[name] = id - 1
				w.mu.Unlock()
			} else {
				drop()
				name = ""
			}
			cancel()
			w.mark <- name
			continue
		default:
		}
		w.mu.Lock()
		w.last = id
		w.mu.Unlock()
		start := time.Now()
		var xid string
		err := c.QueryRow(ctx, "INSERT INTO t (id) VALUES ($1) RETURNING xmin::text", id).Scan(&xid)
		took := time.Since(start)
		id++ // an id not acknowledged may or may not be there: never reused
		if err != nil {
			cancel()
			drop()
			continue
		}
		a := Ack{ID: id - 1, XID: xid, Latency: took, At: start.Add(took)}
		if err := c.QueryRow(ctx, "SELECT pg_xact_commit_timestamp($1::xid)", xid).Scan(&a.TS); err != nil {
			a.TS = time.Time{}
			drop()
		}
		cancel()
		w.mu.Lock()
		w.acks = append(w.acks, a)
		w.mu.Unlock()
	}
}

func (w *Writer) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// RestorePoint makes a restore point between two of the writer's rows
// and reports whether it did.
func (w *Writer) RestorePoint(name string) bool {
	w.mark <- name
	return <-w.mark != ""
}

// Point returns the last id tried before restore point name.
func (w *Writer) Point(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.points[name]
}

// Count returns how many rows were acknowledged so far.
func (w *Writer) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// Errors returns how many attempts failed so far (a commit not
// acknowledged, or its timestamp not read).
func (w *Writer) Errors() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.errs
}

// Acks returns the rows acknowledged so far, in order.
func (w *Writer) Acks() []Ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acks)
}

// Last returns the last id tried.
func (w *Writer) Last() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// WaitRows waits until the writer has acknowledged n more rows.
func (w *Writer) WaitRows(t testing.TB, n int) {
	t.Helper()
	want := w.Count() + n
	testenv.Poll(t, pgtest.Timeout, fmt.Sprintf("the writer commits %d rows", want), func() (bool, string) {
		return w.Count() >= want, fmt.Sprintf("%d acknowledged, %d errors", w.Count(), w.Errors())
	})
}

// Finish stops the writer and returns the rows it acknowledged.
func (w *Writer) Finish() []Ack {
	w.halt()
	return w.Acks()
}

// TimeTarget returns the index of the first ack at or after i that makes
// an exact time target: its commit timestamp is known, and the next id
// was acknowledged with a later one (so the boundary falls between the
// two; a tie, or an attempt not acknowledged in between, would make it
// ambiguous). -1 when there is none.
func TimeTarget(acks []Ack, i int) int {
	for ; i >= 0 && i+1 < len(acks); i++ {
		a, next := acks[i], acks[i+1]
		if !a.TS.IsZero() && next.ID == a.ID+1 && next.TS.After(a.TS) {
			return i
		}
	}
	return -1
}

// Latency returns the median, the 99th percentile and the longest commit
// latency of acks.
func Latency(acks []Ack) (p50, p99, longest time.Duration) {
	if len(acks) == 0 {
		return 0, 0, 0
	}
	ls := make([]time.Duration, len(acks))
	for i, a := range acks {
		ls[i] = a.Latency
	}
	slices.Sort(ls)
	return ls[len(ls)/2], ls[len(ls)*99/100], ls[len(ls)-1]
}

// LongestGap returns the longest time between two acknowledgements of
// acks, and when it ended.
func LongestGap(acks []Ack) (gap time.Duration, end time.Time) {
	for i := 1; i < len(acks); i++ {
		if d := acks[i].At.Sub(acks[i-1].At); d > gap {
			gap, end = d, acks[i].At
		}
	}
	return gap, end
}

// Result is what a restore held of the writer's rows.
type Result struct {
	Rows int // rows restored
	// Missing are acknowledged ids up to the target that the restore
	// lacks; Later are restored ids past the target; Unacked are restored
	// ids up to the target whose commit was not acknowledged (they may or
	// may not be there).
	Missing, Later, Unacked []int
}

// Compare reads the ids of t on s and compares them with the
// acknowledged rows up to id upTo; it returns what it found and how many
// rows were acknowledged up to upTo.
func Compare(t testing.TB, s *pg.Server, acks []Ack, upTo int) (Result, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), pgtest.Timeout)
	defer cancel()
	c, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SELECT id FROM t ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	have := make(map[int]bool, len(ids))
	for _, id := range ids {
		have[id] = true
	}
	acked := make(map[int]bool, len(acks))
	r := Result{Rows: len(ids)}
	for _, a := range acks {
		if a.ID > upTo {
			continue
		}
		acked[a.ID] = true
		if !have[a.ID] {
			r.Missing = append(r.Missing, a.ID)
		}
	}
	for _, id := range ids {
		switch {
		case id > upTo:
			r.Later = append(r.Later, id)
		case !acked[id]:
			r.Unacked = append(r.Unacked, id)
		}
	}
	return r, len(acked)
}

// Check is Compare that fails the test when an acknowledged row up to
// upTo is missing or a row past it is there, and logs the numbers under
// name.
func Check(t testing.TB, s *pg.Server, name string, acks []Ack, upTo int) Result {
	t.Helper()
	r, n := Compare(t, s, acks, upTo)
	if len(r.Missing) > 0 || len(r.Later) > 0 {
		t.Errorf("restored to %s: %d rows; of %d acknowledged up to id %d, %d missing (%v); %d past it (%v)",
			name, r.Rows, n, upTo, len(r.Missing), head(r.Missing), len(r.Later), head(r.Later))
	} else {
		t.Logf("restored to %s: %d rows: all %d acknowledged up to id %d, none missing, none later (%d committed without an acknowledgement)",
			name, r.Rows, n, upTo, len(r.Unacked))
	}
	return r
}

func head(ids []int) []int { return ids[:min(len(ids), 10)] }

// Commands are the commands a test binary serves for PostgreSQL and for
// the tests (pgtest.Main, pgtest.RunCommand):
//
//	wal-fetch REPO CLUSTER %f %p                       restore_command
//	wal-archive REPO CLUSTER SOCKETDIR PORT [sync]     an archiver a test kills
var Commands = map[string]func(args []string) error{"wal-fetch": WALFetch, "wal-archive": Archive}

// WALFetch is restore_command from the file repository REPO, as
// `haven backup wal-fetch` is: wal-fetch REPO CLUSTER %f %p.
func WALFetch(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("usage: wal-fetch REPO CLUSTER %%f %%p")
	}
	r, err := repotest.Open(args[0])
	if err != nil {
		return err
	}
	return wal.FetchFile(context.Background(), r, args[1], args[2], args[3])
}

// Archive runs a WAL archiver of the server at SOCKETDIR and PORT into
// the file repository REPO, synchronous when the last argument is
// "sync", until it is killed (SIGKILL, as a node dies) or stopped
// (SIGTERM: it stores what it received first).
func Archive(args []string) error {
	if len(args) < 4 || len(args) > 5 {
		return fmt.Errorf("usage: wal-archive REPO CLUSTER SOCKETDIR PORT [sync]")
	}
	r, err := repotest.Open(args[0])
	if err != nil {
		return err
	}
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s user=postgres sslmode=disable", args[2], args[3]))
	if err != nil {
		return err
	}
	a, err := wal.New(wal.Config{Conn: cfg, Repo: r, Cluster: args[1], Synchronous: len(args) == 5 && args[4] == "sync",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}

// FetchCommand returns a restore_command that fetches cluster's WAL
// from the file repository in repoDir with the test binary (which must
// serve Commands).
func FetchCommand(t testing.TB, repoDir, cluster string) string {
	t.Helper()
	return fmt.Sprintf("%s wal-fetch %s %s %%f %%p", pgtest.Executable(t), repoDir, cluster)
}

// StartRestored starts PostgreSQL on the restored data directory dir and
// waits until it has ended recovery (promoted at its target).
func StartRestored(t testing.TB, dir string) *pg.Server {
	t.Helper()
	s := pgtest.Start(t, "restored", func(c *pg.Config) { c.DataDir = dir })
	ctx, cancel := context.WithTimeout(context.Background(), pgtest.Timeout)
	defer cancel()
	testenv.Poll(t, pgtest.Timeout, "the restored server ends recovery", func() (bool, string) {
		in, err := s.IsInRecovery(ctx)
		return err == nil && !in, fmt.Sprintf("in recovery %v, %v", in, err)
	})
	return s
}

// StartArchiver runs a WAL archiver of s's cluster "shop" into r until
// the test ends; stop ends it once the archive holds s's WAL up to now
// and reports how Run returned.
func StartArchiver(t testing.TB, s *pg.Server, r repo.Repository) (stop func() error) {
	t.Helper()
	cc, err := s.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	a, err := wal.New(wal.Config{Conn: &cc.Config, Repo: r, Cluster: "shop", Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	return func() error {
		end := pgtest.InsertLSN(t, s)
		testenv.Poll(t, pgtest.Timeout, "the archive reaches "+end.String(), func() (bool, string) {
			_, pos := a.Archived()
			return pos >= end, pos.String()
		})
		cancel()
		return <-done
	}
}
