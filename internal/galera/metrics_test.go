package galera

import (
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestMetrics: every family passes promlint and is listed in
// docs/galera.md; a second Node of the same agent (after etcd came back)
// reports on the first one's series; the gauges say what the state says.
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	first, err := newMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	first.bootstraps.Inc()
	second, err := newMetrics(reg)
	if err != nil {
		t.Fatalf("a second Node's metrics on the same registry: %v", err)
	}
	if got := testutil.ToFloat64(second.bootstraps); got != 1 {
		t.Errorf("the second Node's bootstraps read %v, want the first one's 1", got)
	}
	second.set(MemberState{Server: ServerRunning, Serving: true,
		Status: Status{ClusterStatus: "Primary", LocalState: StateSynced, ClusterSize: 3, FlowControlPausedNs: 1_500_000_000}}, true)
	for name, want := range map[string]float64{"serving": 1, "primary": 1, "writer": 1, "size": 3, "state": 4, "flow": 1.5} {
		g := map[string]prometheus.Gauge{"serving": first.serving, "primary": first.primary, "writer": first.writer,
			"size": first.size, "state": first.state, "flow": first.flowPaused}[name]
		if got := testutil.ToFloat64(g); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	testenv.LintMetrics(t, reg)
	doc, err := os.ReadFile("../../docs/galera.md")
	if err != nil {
		t.Fatal(err)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if !strings.Contains(string(doc), "`"+f.GetName()+"`") {
			t.Errorf("docs/galera.md does not list %s", f.GetName())
		}
	}
}
