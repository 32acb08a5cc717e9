package keeper

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestForcedFailover: strict mode under a writer, the primary and one
// synchronous standby lost together. The remaining standby may lack
// acknowledged commits, so the rules never promote it; it says why. A
// forced failover to it (haven pg failover --to db3 --yes) promotes it
// at once, and the force record is gone. Strict mode still holds commits
// until a standby streams: once the lost standby's node is back, as a
// replica of the forced primary, writes go on there.
func TestForcedFailover(t *testing.T) {
	etcd, primary, replicas := startCluster(t, ModeStrict, "db1", "db2", "db3")
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	waitSync(t, primary, 1, 2)
	all := append([]*testKeeper{primary}, replicas...)
	w := startWriter(t, 1, all...)
	waitFor(t, "writes going", func() (string, bool) { return fmt.Sprint(w.count()), w.count() >= 20 })
	lostStandby, left := replicas[0], replicas[1]
	crash(t, primary, lostStandby)
	waitFor(t, left.cfg.Node+" says why it is not promoted", func() (string, bool) {
		st := left.State()
		return st.NotPromotable, strings.Contains(st.NotPromotable, "synchronous standbys")
	})
	if left.Leader() {
		t.Fatalf("%s leads without the force", left.cfg.Node)
	}

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := SetForce(ctx, left.client, "shop", "main", Force{To: left.cfg.Node, Owner: "ops@test", Set: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, left.cfg.Node+" promoted by the force", func() (string, bool) {
		st := left.State()
		return st.Role, left.Leader() && st.Role == RolePrimary
	})
	back := startKeeper(t, etcd, lostStandby.node, []string{"db1", "db2", "db3"}, ModeStrict)
	waitCluster(t, left, back)
	before := w.count()
	waitFor(t, "writes going on the forced primary", func() (string, bool) {
		return fmt.Sprint(w.count()), w.count() >= before+10
	})
	w.halt()
	waitFor(t, "the force record removed", func() (string, bool) {
		resp, err := left.client.Get(ctx, ForceKey("shop", "main"))
		return fmt.Sprint(err), err == nil && len(resp.Kvs) == 0
	})
	if !strings.Contains(left.node.log.String(), "forced failover: promoting without the failover rules' checks") {
		t.Errorf("%s's log does not say it promoted on the force", left.cfg.Node)
	}
}
