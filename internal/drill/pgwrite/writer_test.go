package pgwrite

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestWriterCommitLatency runs the writer against a real PostgreSQL whose
// every INSERT sleeps 50 ms in a trigger: each acknowledged write's
// Commit must hold that wait, fit inside the write's own span, and leave
// out the connect that came before the first INSERT (the connector adds
// 300 ms to it).
func TestWriterCommitLatency(t *testing.T) {
	s := pgtest.Start(t, "writer", nil)
	pgtest.Exec(t, s, `CREATE TABLE writes (run int, seq int, PRIMARY KEY (run, seq));
CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(0.05); RETURN NEW; END $$;
CREATE TRIGGER slow BEFORE INSERT ON writes FOR EACH ROW EXECUTE FUNCTION slow()`)
	const connectDelay, sleep = 300 * ms, 50 * ms
	connect := func(ctx context.Context) (*pgx.Conn, error) {
		time.Sleep(connectDelay) // a slow connect, which Commit must leave out
		return s.Connect(ctx)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, done := Run(ctx, 7, 20*ms, 10*time.Second, 10*time.Second, connect)
	testenv.Poll(t, pgtest.Timeout, "5 writes acknowledged", func() (bool, string) {
		ws := w.Snapshot()
		return CountAcked(ws, 0) >= 5, fmt.Sprintf("%d writes, errors %v", len(ws), ErrorKinds(ws, 3))
	})
	cancel()
	<-done
	writes := w.Snapshot()
	lat := CommitLatencies(writes)
	if len(lat) < 5 {
		t.Fatalf("%d writes acknowledged, want 5: %v", len(lat), ErrorKinds(writes, 3))
	}
	for i, wr := range writes {
		if wr.Outcome != Acked {
			continue
		}
		if wr.Commit < sleep || wr.Commit > wr.End-wr.Start {
			t.Errorf("write %d: Commit %v; want at least the trigger's %v and at most the write's span %v", wr.Seq, wr.Commit, sleep, wr.End-wr.Start)
		}
		if i == 0 && wr.End-wr.Start-wr.Commit < connectDelay {
			t.Errorf("the first write's Commit %v of a span %v includes the %v connect", wr.Commit, wr.End-wr.Start, connectDelay)
		}
	}
	rows, err := ReadRows(context.Background(), func(ctx context.Context) (*pgx.Conn, error) { return s.Connect(ctx) }, 7)
	if err != nil {
		t.Fatal(err)
	}
	if r := Compare(writes, rows); len(r.Lost) > 0 {
		t.Errorf("acknowledged rows missing: %v", r.Lost)
	}
}
