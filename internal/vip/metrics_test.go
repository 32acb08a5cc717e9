package vip

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestMetrics: a takeover, a failure and a release leave the series an
// operator alerts on, and every family passes promlint.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.set("web", StateBackup, 0)
	m.set("web", StateHolder, 7)
	m.failed("web")
	m.set("web", StateFault, 0)

	want := `
# HELP haven_vip_epoch Fencing epoch under which this node holds the floating address; 0 when it does not.
# TYPE haven_vip_epoch gauge
haven_vip_epoch{vip="web"} 0
# HELP haven_vip_errors_total Failures to configure a floating address (fence, interface address).
# TYPE haven_vip_errors_total counter
haven_vip_errors_total{vip="web"} 1
# HELP haven_vip_state 1 for this node's current state of each floating address (holder, backup or fault), 0 for the others.
# TYPE haven_vip_state gauge
haven_vip_state{state="backup",vip="web"} 0
haven_vip_state{state="fault",vip="web"} 1
haven_vip_state{state="holder",vip="web"} 0
# HELP haven_vip_transitions_total State changes of each floating address on this node, by the state entered.
# TYPE haven_vip_transitions_total counter
haven_vip_transitions_total{state="backup",vip="web"} 1
haven_vip_transitions_total{state="fault",vip="web"} 1
haven_vip_transitions_total{state="holder",vip="web"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	testenv.LintMetrics(t, reg)

	var none *Metrics // a Manager without metrics
	none.set("web", StateHolder, 1)
	none.failed("web")
}
