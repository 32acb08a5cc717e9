package pg

import (
	"errors"
	"fmt"
	"testing"
)

func TestWALRecordEnd(t *testing.T) {
	const page, seg = 8192, 16 << 20
	for _, tc := range []struct {
		name  string
		start LSN
		total uint64
		want  LSN
	}{
		{"a shutdown checkpoint within a page", 0x01D4A4C8, 114, 0x01D4A540},
		{"MAXALIGNed", 0x01D4A4C8, 113, 0x01D4A540},
		{"fills its page exactly: ends at the boundary", 0x2000 - 120, 114, 0x2000},
		{"spans a page: skips its header", 0x2000 - 16, 114, 0x2000 + walPageHeader + 104},
		{"spans a segment: skips the long header", seg - 16, 114, seg + walSegHeader + 104},
		// 8 bytes, then 8168 on each of two pages, then the last 40.
		{"spans four pages", 0x2000 - 8, 16384, 3*0x2000 + walPageHeader + 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := walRecordEnd(tc.start, tc.total, page, seg); got != tc.want {
				t.Errorf("walRecordEnd(%s, %d) = %s, want %s", tc.start, tc.total, got, tc.want)
			}
		})
	}
}

// pg_waldump's output (PostgreSQL 15) for an old primary's WAL past the
// point where its successor forked.
const waldumpOut = `rmgr: Heap        len (rec/tot):     59/    59, tx:        745, lsn: 0/0301A3F8, prev 0/0301A3C0, desc: INSERT+INIT off 1 flags 0x00, blkref #0: rel 1663/5/16384 blk 0
rmgr: Transaction len (rec/tot):     34/    34, tx:        745, lsn: 0/0301A438, prev 0/0301A3F8, desc: COMMIT 2025-01-02 10:00:00.000000 UTC
rmgr: Standby     len (rec/tot):     50/    50, tx:          0, lsn: 0/0301A460, prev 0/0301A438, desc: RUNNING_XACTS nextXid 746 latestCompletedXid 745 oldestRunningXid 746
rmgr: XLOG        len (rec/tot):    114/   114, tx:          0, lsn: 0/0301A498, prev 0/0301A460, desc: CHECKPOINT_SHUTDOWN redo 0/301A498; tli 1; prev tli 1; fpw true; xid 0:746; oid 24576; multi 1; offset 0; oldest xid 716 in DB 1; oldest multi 1 in DB 1; oldest/newest commit timestamp xid: 0/0; oldest running xid 0; shutdown
`

func TestParseWAL(t *testing.T) {
	recs, err := parseWAL(waldumpOut, 8192, 16<<20)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range recs {
		kinds = append(kinds, r.Kind())
	}
	if got := fmt.Sprint(kinds); got != "[Heap/INSERT+INIT Transaction/COMMIT Standby/RUNNING_XACTS XLOG/CHECKPOINT_SHUTDOWN]" {
		t.Errorf("kinds = %s", got)
	}
	if last := recs[len(recs)-1]; last.LSN != 0x0301A498 || last.End != 0x0301A510 || last.Xid != 0 {
		t.Errorf("checkpoint record = %+v, want at 0/301A498, ending at 0/301A510", last)
	}
	if recs[1].Xid != 745 || !recs[1].EndsTransaction() || recs[0].EndsTransaction() || recs[3].EndsTransaction() {
		t.Errorf("only the COMMIT ends a transaction: %+v", recs)
	}

	w := summarizeWAL(0x0301A3F8, recs)
	if w.Records != 4 || w.Transactions != 1 || w.To != 0x0301A510 || w.Bytes() != 0x118 {
		t.Errorf("summary = %+v (%d bytes)", w, w.Bytes())
	}
	if got := summarizeWAL(0x0301A498, recs[3:]); got.Transactions != 0 || got.Bytes() != 120 || got.String() != "XLOG/CHECKPOINT_SHUTDOWN" {
		t.Errorf("the checkpoint alone: %+v, %q", got, got.String())
	}
	if got := (WALSummary{Kinds: map[string]int{"XLOG/CHECKPOINT_SHUTDOWN": 2, "Standby/RUNNING_XACTS": 1}}).String(); got != "XLOG/CHECKPOINT_SHUTDOWN×2, Standby/RUNNING_XACTS" {
		t.Errorf("String = %q", got)
	}

	if _, err := parseWAL("pg_waldump: something else\n", 8192, 16<<20); err == nil {
		t.Error("parseWAL took a line that is not a record")
	}
}

// TestShutdownCheckpoint: after a fast shutdown, a replica that streamed
// from the primary has received exactly to the end of its shutdown
// checkpoint, which ShutdownCheckpoint reports. A replica that was stopped
// before the primary lacks only that record; promoted, it forks a
// timeline before the checkpoint, and the old primary's rewind says that
// what it discards is the checkpoint, not a transaction.
func TestShutdownCheckpoint(t *testing.T) {
	t.Parallel()
	p := newPrimary(t, "p")
	r := newNode(t, "r")
	ctx := testCtx(t)
	if _, _, err := p.ShutdownCheckpoint(ctx); !errors.Is(err, ErrNotShutDown) {
		t.Errorf("ShutdownCheckpoint of a running primary = %v, want %v", err, ErrNotShutDown)
	}
	if err := p.CreateSlot(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	p.exec(t, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	if err := r.Clone(ctx, p.upstream("r")); err != nil {
		t.Fatal(err)
	}
	waitRow(t, r, 1)

	p.stop(t) // r streams: it receives the shutdown checkpoint
	start, end, err := p.ShutdownCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pos, err := r.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("shutdown checkpoint %s to %s; the replica received to %s", start, end, pos.Received)
	if end <= start || pos.Received != end {
		t.Errorf("shutdown checkpoint from %s to %s, the replica received to %s: want the replica at its end", start, end, pos.Received)
	}

	// Again, with the replica stopped first: it lacks the checkpoint.
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the replica level with the primary", func() (string, bool) {
		pp, perr := p.Position(ctx)
		rp, rerr := r.Position(ctx)
		return fmt.Sprintf("primary %s %v, replica %s %v", pp.Current, perr, rp.Received, rerr), perr == nil && rerr == nil && rp.Received == pp.Current
	})
	r.stop(t)
	p.stop(t)
	start, end, err = p.ShutdownCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.CreateSlot(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	res, err := p.Rewind(ctx, r.upstream("p"))
	if err != nil {
		t.Fatal(err)
	}
	d := res.Discarded
	t.Logf("rewind: diverged at %s, discarded %d bytes: %s (%d transactions); the shutdown checkpoint was %s to %s", res.DivergedAt, d.Bytes(), d, d.Transactions, start, end)
	// Before the checkpoint there may be a standby snapshot written after
	// the replica stopped, never a transaction.
	if !res.Rewound || res.DiscardedErr != nil || res.DivergedAt > start || d.To != end || d.Transactions != 0 || d.Kinds["XLOG/CHECKPOINT_SHUTDOWN"] != 1 {
		t.Errorf("Rewind = %+v; want the shutdown checkpoint at %s, and no transaction, discarded", res, start)
	}
	r.exec(t, "INSERT INTO t VALUES (2)")
	waitRow(t, p, 2)
}
