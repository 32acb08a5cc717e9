package base

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// ack is a row the writer's commit of which was acknowledged: its id,
// transaction id and commit timestamp (track_commit_timestamp), which is
// the time recovery_target_time compares with.
type ack struct {
	id  int
	xid string
	ts  time.Time
}

// writer commits numbered rows into t, one per transaction, and makes
// restore points between two rows when asked.
type writer struct {
	mu     sync.Mutex
	acks   []ack
	points map[string]int // restore point -> the last row before it
	mark   chan string
	stop   chan struct{}
	done   chan error
}

func startWriter(t *testing.T, s *pg.Server) *writer {
	w := &writer{points: map[string]int{}, mark: make(chan string), stop: make(chan struct{}), done: make(chan error, 1)}
	go func() { w.done <- w.run(s) }()
	t.Cleanup(func() {
		select {
		case <-w.stop:
		default:
			close(w.stop)
		}
	})
	return w
}

func (w *writer) run(s *pg.Server) error {
	ctx := context.Background()
	c, err := s.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	for id := 1; ; id++ {
		select {
		case <-w.stop:
			return nil
		case name := <-w.mark:
			if _, err := c.Exec(ctx, "SELECT pg_create_restore_point($1)", name); err != nil {
				return err
			}
			w.mu.Lock()
			w.points[name] = id - 1
			w.mu.Unlock()
			w.mark <- name
		default:
		}
		var xid string
		if err := c.QueryRow(ctx, "INSERT INTO t (id) VALUES ($1) RETURNING xmin::text", id).Scan(&xid); err != nil {
			return err
		}
		var ts time.Time
		if err := c.QueryRow(ctx, "SELECT pg_xact_commit_timestamp($1::xid)", xid).Scan(&ts); err != nil {
			return err
		}
		w.mu.Lock()
		w.acks = append(w.acks, ack{id, xid, ts})
		w.mu.Unlock()
	}
}

// restorePoint makes a restore point between two of the writer's rows.
func (w *writer) restorePoint(name string) {
	w.mark <- name
	<-w.mark
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

func (w *writer) finish(t *testing.T) []ack {
	t.Helper()
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Fatalf("writer: %v", err)
	}
	return w.acks
}

// waitRows waits until the writer has n more rows.
func (w *writer) waitRows(t *testing.T, n int) {
	t.Helper()
	want := w.count() + n
	testenv.Poll(t, pgtest.Timeout, fmt.Sprintf("the writer commits %d rows", want), func() (bool, string) {
		return w.count() >= want, fmt.Sprint(w.count())
	})
}

// TestRestoreToPoints is the first proof. A writer commits
// numbered rows on the primary while a base backup is taken from its
// replica and after it, with the WAL archiver running. Restores to three
// times between the writes, to a named restore point, and to the end of
// the archive each hold exactly the acknowledged rows up to that point:
// none missing, none later.
//
// The time targets are exact because they are commit timestamps: the
// writer reads each row's with pg_xact_commit_timestamp, which is the
// time in the commit record that recovery_target_time compares with, and
// recovery_target_inclusive (the default) keeps every commit at or before
// the target and stops before the first one after it. A target is the
// timestamp of a row whose successor committed later (one writer, so
// timestamps only grow; a tie would make the boundary ambiguous, and the
// test picks a row without one). The restore point is exact as well: the
// writer makes it on its own session between two commits.
func TestRestoreToPoints(t *testing.T) {
	ctx := pgtest.Context(t)
	p := pgtest.Start(t, "db1", func(c *pg.Config) { c.Settings["track_commit_timestamp"] = "on" })
	if err := p.EnsureReplicationUser(ctx, pg.DefaultReplicationUser, "s3cret"); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateSlot(ctx, "db2"); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, p, "CREATE TABLE t (id int PRIMARY KEY, pad text DEFAULT repeat('x', 100))")
	pgtest.Exec(t, p, "CREATE TABLE filler AS SELECT g AS id, repeat('y', 200) AS pad FROM generate_series(1, 100000) g")
	replica := pgtest.New(t, "db2", func(c *pg.Config) { c.Settings["track_commit_timestamp"] = "on" })
	if err := replica.Clone(ctx, pg.Upstream{Host: "127.0.0.1", Port: p.Port(), Password: "s3cret", Slot: "db2"}); err != nil {
		t.Fatal(err)
	}
	r, repoDir := newRepo(t)
	arch := startArchiver(t, p, r)

	w := startWriter(t, p)
	w.waitRows(t, 200)
	// A replica's backup starts at its last restartpoint, which follows
	// the primary's last checkpoint: make it recent.
	pgtest.Exec(t, p, "CHECKPOINT")
	target := pgtest.InsertLSN(t, p)
	testenv.Poll(t, pgtest.Timeout, "the replica replays the checkpoint", func() (bool, string) {
		var lsn string
		c, err := replica.Connect(ctx)
		if err == nil {
			err = c.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text").Scan(&lsn)
			c.Close(ctx)
		}
		replayed, _ := pg.ParseLSN(lsn)
		return err == nil && replayed >= target, lsn
	})
	before := w.count()
	m, err := Take(ctx, backupConfig(t, replica, r))
	if err != nil {
		t.Fatal(err)
	}
	if !m.FromReplica {
		t.Error("the manifest does not say the backup was taken from a replica")
	}
	t.Logf("backup %s from the replica: %d files, %d bytes, LSN %s to %s; the writer committed %d rows during it", m.Label, len(m.Files), m.Bytes, m.StartLSN, m.StopLSN, w.count()-before)

	// Targets after the backup: three commit times, then a restore point.
	var times []int // indexes into acks
	for range 3 {
		w.waitRows(t, 300)
		times = append(times, w.count()-150)
	}
	w.waitRows(t, 100)
	w.restorePoint("before-mistake")
	w.waitRows(t, 200)
	acks := w.finish(t)
	arch.waitArchived(t, p)
	arch.stop()
	pgtest.Chown(t, repoDir)
	fetch := fetchCommand(t, repoDir)

	check := func(name string, target Target, want int) {
		t.Helper()
		s := restoreAndStart(t, r, fetch, "", target)
		got := pgtest.Query(t, s, "SELECT count(*)::text || ' ' || coalesce(min(id), 0)::text || ' ' || coalesce(max(id), 0)::text FROM t")
		if w := fmt.Sprintf("%d 1 %d", want, want); got != w {
			t.Errorf("restored to %s: count, min and max id %s, want %s (rows 1 to %d, no more, no less)", name, got, w, want)
		} else {
			t.Logf("restored to %s: rows 1 to %d, as acknowledged", name, want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), pgtest.Timeout)
		defer cancel()
		s.Stop(ctx, pg.StopImmediate)
	}
	for _, i := range times {
		for acks[i+1].ts.Equal(acks[i].ts) { // a tie: move to a row with a clear boundary
			i++
		}
		check(fmt.Sprintf("time %s (row %d's commit)", acks[i].ts.Format(time.RFC3339Nano), acks[i].id), Target{Time: acks[i].ts}, acks[i].id)
	}
	check("restore point before-mistake", Target{Name: "before-mistake"}, w.points["before-mistake"])
	check("the end of the archive", Target{}, len(acks))
}
