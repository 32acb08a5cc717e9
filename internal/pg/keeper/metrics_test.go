package keeper

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestMetricsLint: every family the keeper exports passes promlint, and a
// second keeper of the same node (the agent reconnected to etcd) reports
// on the first one's series instead of failing to register.
func TestMetricsLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, err := newKeeperMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	first.primary.Set(1)
	first.promotions.Inc()
	second, err := newKeeperMetrics(reg)
	if err != nil {
		t.Fatalf("a second keeper's metrics on the same registry: %v", err)
	}
	if got := testutil.ToFloat64(second.primary); got != 1 {
		t.Errorf("the second keeper's haven_pg_primary reads %v; want the first one's series (1)", got)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 14 {
		t.Errorf("the registry holds %d series (%v); want 14", n, err)
	}
	testenv.LintMetrics(t, reg)
}
