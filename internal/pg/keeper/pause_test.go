package keeper

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPausedDatabaseDoesNotFailOver: the database is paused under a
// writer, then its primary is lost (keeper and postgres): for three leases
// no replica takes the lead, and each says it is paused; the metric says
// so. Once resumed, one takes it at once, with every acknowledged row.
func TestPausedDatabaseDoesNotFailOver(t *testing.T) {
	_, primary, replicas := startCluster(t, ModeSync, "db1", "db2", "db3")
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	all := append([]*testKeeper{primary}, replicas...)
	w := startWriter(t, 1, all...)
	waitFor(t, "writes going", func() (string, bool) { return fmt.Sprint(w.count()), w.count() >= 20 })

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cli := replicas[0].client
	if err := SetPause(ctx, cli, "shop", "main", Pause{Owner: "ops@test", Reason: "kernel upgrade", Set: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every keeper sees the pause; the replicas say they may not lead because of it", func() (string, bool) {
		var seen []string
		ok := true
		for _, k := range all {
			why := primary.Members()[k.cfg.Node].NotPromotable
			seen = append(seen, fmt.Sprintf("%s: paused %v, %q", k.cfg.Node, k.Paused() != nil, why))
			ok = ok && k.Paused() != nil && testutil.ToFloat64(k.metrics.paused) == 1
			if k != primary {
				ok = ok && strings.Contains(why, "paused by ops@test") && strings.Contains(why, "kernel upgrade")
			}
		}
		return strings.Join(seen, "; "), ok
	})
	if err := Switchover(ctx, cli, "shop", "main", ""); err == nil {
		// The record's handover is asked; no replica may take it: the
		// primary keeps it (the agent refuses the call outright).
		time.Sleep(2 * primary.cfg.Lease)
		if !primary.Leader() {
			t.Fatalf("a switchover while paused moved the lead away from %s", primary.cfg.Node)
		}
	}

	crash(t, primary)
	lost := time.Now()
	for time.Since(lost) < 3*primary.cfg.Lease {
		for _, r := range replicas {
			if r.Leader() {
				t.Fatalf("%s took the lead %s after the primary was lost, while the database is paused", r.cfg.Node, time.Since(lost).Round(time.Millisecond))
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := Resume(ctx, cli, "shop", "main"); err != nil {
		t.Fatal(err)
	}
	next, rest := leaderOf(t, replicas...)
	waitCluster(t, next, rest...)
	before := w.count()
	waitFor(t, "writes going on the new primary", func() (string, bool) { return fmt.Sprint(w.count()), w.count() >= before+10 })
	w.halt()
	mustHaveAll(t, next, w.acked)
	for _, k := range replicas {
		if k.Paused() != nil || testutil.ToFloat64(k.metrics.paused) != 0 {
			t.Errorf("%s still sees the database paused after the resume", k.cfg.Node)
		}
	}
	t.Logf("paused through the primary's loss, then resumed: %d rows acknowledged, all on %s", len(w.acked), next.cfg.Node)
}
