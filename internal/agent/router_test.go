package agent

import (
	"testing"
	"time"

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
