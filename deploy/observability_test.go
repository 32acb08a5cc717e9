package deploy

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestAlertRules checks the rules as Prometheus will load them (promtool
// check rules) and runs their unit tests (promtool test rules), and
// checks that every alert has a test that expects it to fire.
func TestAlertRules(t *testing.T) {
	promtool := testenv.NeedCommand(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", "haven-alerts.yml"}, {"test", "rules", "haven-alerts.test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rules, err := AlertRules()
	if err != nil {
		t.Fatal(err)
	}
	tests, err := observability.ReadFile("prometheus/haven-alerts.test.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		// An expectation that it fires: its name, then a non-empty
		// exp_alerts list.
		fires := regexp.MustCompile(`alertname: ` + r.Alert + `\n\s+exp_alerts:\n\s+- exp_labels`)
		if !fires.Match(tests) {
			t.Errorf("alert %s has no test that expects it to fire in haven-alerts.test.yml", r.Alert)
		}
	}
	if len(rules) < 10 {
		t.Errorf("%d rules: the file lost some", len(rules))
	}
}

// TestDashboardNamesKnownMetrics: the dashboard and the rules name
// metrics (TestDashboardInABrowser, in internal/console, checks each
// against a running cluster's /metrics); here, that the files parse and
// name haven's metrics at all.
func TestDashboardNamesKnownMetrics(t *testing.T) {
	names, err := MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"haven_pg_primary", "haven_lb_request_duration_seconds", "haven_vip_state", "etcd_server_has_leader"} {
		if _, ok := names[want]; !ok {
			t.Errorf("no rule or panel names %s (names: %v)", want, SortedNames(names))
		}
	}
}
