package base

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/backuptest"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

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

	w := backuptest.StartWriter(t, p.Connect, pgtest.Timeout)
	w.WaitRows(t, 200)
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
	before := w.Count()
	m, err := Take(ctx, backupConfig(t, replica, r))
	if err != nil {
		t.Fatal(err)
	}
	if !m.FromReplica {
		t.Error("the manifest does not say the backup was taken from a replica")
	}
	t.Logf("backup %s from the replica: %d files, %d bytes, LSN %s to %s; the writer committed %d rows during it", m.Label, len(m.Files), m.Bytes, m.StartLSN, m.StopLSN, w.Count()-before)

	// Targets after the backup: three commit times, then a restore point.
	var times []int // indexes into acks
	for range 3 {
		w.WaitRows(t, 300)
		times = append(times, w.Count()-150)
	}
	w.WaitRows(t, 100)
	if !w.RestorePoint("before-mistake") {
		t.Fatal("the writer could not make the restore point")
	}
	w.WaitRows(t, 200)
	acks := w.Finish()
	if n := w.Errors(); n > 0 {
		t.Fatalf("the writer saw %d errors from a primary that never failed", n)
	}
	arch.waitArchived(t, p)
	arch.stop()
	pgtest.Chown(t, repoDir)
	fetch := fetchCommand(t, repoDir)

	check := func(name string, target Target, upTo int) {
		t.Helper()
		s := restoreAndStart(t, r, fetch, "", target)
		if res := backuptest.Check(t, s, name, acks, upTo); len(res.Unacked) > 0 {
			t.Errorf("restored to %s: rows %v were never tried or not acknowledged", name, res.Unacked)
		}
		ctx, cancel := context.WithTimeout(context.Background(), pgtest.Timeout)
		defer cancel()
		s.Stop(ctx, pg.StopImmediate)
	}
	for _, i := range times {
		i = backuptest.TimeTarget(acks, i) // a tie: move to a row with a clear boundary
		check(fmt.Sprintf("time %s (row %d's commit)", acks[i].TS.Format(time.RFC3339Nano), acks[i].ID), Target{Time: acks[i].TS}, acks[i].ID)
	}
	check("restore point before-mistake", Target{Name: "before-mistake"}, w.Point("before-mistake"))
	check("the end of the archive", Target{}, acks[len(acks)-1].ID)
}
