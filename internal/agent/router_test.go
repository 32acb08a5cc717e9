package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

// In a database across two regions, the standby region's router refuses
// writes at once (no primary, no hold) and serves the standby cluster's
// reads only with dr.read_only_pool; the active region's router holds and
// routes as ever.
func TestPoolConfigInAStandbyRegion(t *testing.T) {
	bc := &config.Balancer{Name: "database-primary", Mode: "tcp", Hold: config.Duration(5 * time.Second)}
	active := keeper.Routes{Primary: "e1", PrimaryAddr: "198.18.1.11:5432", Replicas: []string{"e2"}, Addrs: []string{"198.18.1.12:5432"}}
	standby := keeper.Routes{Replicas: []string{"w1", "w2"}, Addrs: []string{"198.18.2.11:5432", "198.18.2.12:5432"}, Standby: true}
	for _, tc := range []struct {
		name     string
		pool     string
		rt       keeper.Routes
		dr       *config.DR
		backends int
		hold     time.Duration
	}{
		{"active primary", "primary", active, &config.DR{}, 1, 5 * time.Second},
		{"active replicas", "replicas", active, &config.DR{}, 1, 5 * time.Second},
		{"standby primary", "primary", standby, &config.DR{ReadOnlyPool: true}, 0, 0},
		{"standby replicas without read_only_pool", "replicas", standby, &config.DR{}, 0, 0},
		{"standby replicas with read_only_pool", "replicas", standby, &config.DR{ReadOnlyPool: true}, 2, 0},
	} {
		c := poolConfig(tc.pool, bc, tc.rt, tc.dr)
		if len(c.Backends) != tc.backends || c.Hold.D() != tc.hold {
			t.Errorf("%s: %d backends, hold %v; want %d, %v", tc.name, len(c.Backends), c.Hold.D(), tc.backends, tc.hold)
		}
	}
	if bc.Backends != nil || bc.Hold.D() != 5*time.Second {
		t.Error("poolConfig changed the pool's own configuration")
	}
}

// TestRouterMetrics: the router says which node its primary pool sends
// clients to, how many replicas the other pool has, and how often the
// primary changed; with no primary, no node is named.
func TestRouterMetrics(t *testing.T) {
	r := &dbRouter{routes: keeper.Routes{Primary: "db2", PrimaryAddr: "198.18.1.12:5432", Replicas: []string{"db1", "db3"}}}
	r.primaryChanges.Add(2)
	c := newRouterCollector(r)
	want := `# HELP haven_router_primary 1 for the node the database router's primary pool sends clients to now; absent while it has none (clients are held, then refused).
# TYPE haven_router_primary gauge
haven_router_primary{node="db2"} 1
# HELP haven_router_primary_changes_total Times the database router's primary pool changed its node (failovers and switchovers as this router saw them).
# TYPE haven_router_primary_changes_total counter
haven_router_primary_changes_total 2
# HELP haven_router_replicas Replicas the database router's replicas pool sends clients to now (running, within database.replica_max_lag).
# TYPE haven_router_replicas gauge
haven_router_replicas 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	r.routes = keeper.Routes{}
	if n := testutil.CollectAndCount(c, "haven_router_primary"); n != 0 {
		t.Errorf("with no primary, %d haven_router_primary series", n)
	}
}
