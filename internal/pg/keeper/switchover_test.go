package keeper

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSwitchoversNeedNoRewind runs switchovers in a row (20, or
// HAVEN_SWITCHOVERS) under a writer, each to the node that led two
// switchovers before: no old primary needs pg_rewind to follow its
// successor (a planned handover leaves every WAL record of the old
// primary, its shutdown checkpoint included, on the new one), every old
// primary published where its WAL ends, and every acknowledged row is on
// the last primary. The lease is the default 2 s, so that a holder
// starved of CPU on a busy machine does not lose the record to a
// failover, whose rejoin may rightly need a rewind.
func TestSwitchoversNeedNoRewind(t *testing.T) {
	switchovers := 20
	if v := os.Getenv("HAVEN_SWITCHOVERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("HAVEN_SWITCHOVERS=%q: want a count of switchovers, 1 or more", v)
		}
		switchovers = n
	}
	nodes := []string{"db1", "db2", "db3"}
	etcd := startEtcd(t)
	var keepers []*testKeeper
	for _, n := range nodes {
		keepers = append(keepers, startKeeper(t, etcd, newNode(t, n), nodes, ModeSync, func(c *Config) { c.Lease = DefaultLease }))
	}
	primary, replicas := leaderOf(t, keepers...)
	waitCluster(t, primary, replicas...)
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	w := startWriter(t, 1, keepers...)
	var asks, elsewhere int
	for i := range switchovers {
		to, other := replicas[0], replicas[1]
		// The holder ignores a request to a node that is not eligible at
		// that moment: under a writer the two replicas' published
		// positions leapfrog, and the one a tick behind may not lead.
		// Ask again until a replica leads. The target may also hand the
		// lead on to the other replica, when that one does not answer its
		// question before promoting in time (a busy machine): a
		// switchover all the same, to another node.
		var asked time.Time
		var next *testKeeper
		waitFor(t, fmt.Sprintf("switchover %d: %s leads", i+1, to.cfg.Node), func() (string, bool) {
			for _, k := range replicas {
				if k.Leader() && k.State().Role == RolePrimary {
					next = k
					return "", true
				}
			}
			if !primary.Leader() || time.Since(asked) < time.Second {
				return to.State().NotPromotable, false
			}
			asked = time.Now()
			asks++
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := Switchover(ctx, other.client, "shop", "main", to.cfg.Node); err != nil {
				t.Fatal(err)
			}
			return to.State().NotPromotable, false
		})
		if next != to {
			elsewhere++
			t.Logf("switchover %d went to %s, not %s", i+1, next.cfg.Node, to.cfg.Node)
			to, other = other, to
		}
		waitCluster(t, to, other, primary)
		before := w.count()
		waitFor(t, "writes going on "+to.cfg.Node, func() (string, bool) {
			return fmt.Sprint(w.count()), w.count() >= before+5
		})
		primary, replicas = to, []*testKeeper{other, primary}
	}
	w.halt()
	mustHaveAll(t, primary, w.acked)
	rows, err := primary.node.tryQuery("SELECT count(*)::text FROM t")
	if err != nil {
		t.Fatal(err)
	}

	var promotions, allRewinds, waited, gaveUp int
	for _, k := range keepers {
		promotions += int(testutil.ToFloat64(k.metrics.promotions))
		rewinds := 0
		for _, v := range []string{"lost", "none", "unknown"} {
			rewinds += int(testutil.ToFloat64(k.metrics.rewinds.WithLabelValues(v)))
		}
		allRewinds += rewinds
		log := k.node.log.String()
		waited += strings.Count(log, "waiting to receive the old primary's shutdown checkpoint")
		gaveUp += strings.Count(log, "promoting without the old primary's shutdown checkpoint")
		var lines []string
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, "rewound:") || strings.Contains(line, "final WAL position unknown") || strings.Contains(line, "where the WAL ends is unknown") {
				lines = append(lines, line)
			}
		}
		if rewinds > 0 || len(lines) > 0 {
			t.Errorf("%s: %d rewinds in %d switchovers (haven_pg_rewinds_total), and logged:\n%s", k.cfg.Node, rewinds, switchovers, strings.Join(lines, "\n"))
		}
	}
	t.Logf("%d switchovers (%d requests, %d to the other replica) with a writer: %d promotions, %d rewinds; %d successors waited for the old primary's shutdown checkpoint, %d promoted without it",
		switchovers, asks, elsewhere, promotions, allRewinds, waited, gaveUp)
	t.Logf("%d rows acknowledged, all on %s, which holds %s rows; %d writes failed; longest pause between acknowledged writes %s",
		len(w.acked), primary.cfg.Node, rows, w.errs, w.longestGap().Round(time.Millisecond))
}
