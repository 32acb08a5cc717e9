package deploy

import (
	"embed"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The alert rules (prometheus/haven-alerts.yml, unit-tested by
// prometheus/haven-alerts.test.yml) and the Grafana dashboard
// (grafana/haven.json) for the tools people already run; see
// docs/console.md.
//
//go:embed prometheus/haven-alerts.yml prometheus/haven-alerts.test.yml grafana/haven.json
var observability embed.FS

// metricName finds the metric names in a PromQL expression: haven's own
// and the etcd families the agent serves.
var metricName = regexp.MustCompile(`\b(?:haven|etcd)_[a-z0-9_]+\b`)

// MetricNames returns every metric family the alert rules and the
// dashboard name, each with where (the alert or the panel's title). A
// histogram's _bucket, _sum and _count series name its family.
func MetricNames() (map[string][]string, error) {
	out := map[string][]string{}
	add := func(where, expr string) {
		for _, m := range metricName.FindAllString(expr, -1) {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				m = strings.TrimSuffix(m, suffix)
			}
			if !slices.Contains(out[m], where) {
				out[m] = append(out[m], where)
			}
		}
	}
	rules, err := AlertRules()
	if err != nil {
		return nil, err
	}
	for _, r := range rules {
		add("alert "+r.Alert, r.Expr)
	}
	b, err := observability.ReadFile("grafana/haven.json")
	if err != nil {
		return nil, err
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		return nil, fmt.Errorf("grafana/haven.json: %w", err)
	}
	for _, p := range dash.Panels {
		for _, t := range p.Targets {
			add("panel "+p.Title, t.Expr)
		}
	}
	return out, nil
}

// Rule is one alerting rule.
type Rule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

// AlertRules returns the alerting rules, in file order.
func AlertRules() ([]Rule, error) {
	b, err := observability.ReadFile("prometheus/haven-alerts.yml")
	if err != nil {
		return nil, err
	}
	var f struct {
		Groups []struct {
			Rules []Rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("prometheus/haven-alerts.yml: %w", err)
	}
	var out []Rule
	for _, g := range f.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}

// SortedNames returns MetricNames' keys, sorted.
func SortedNames(m map[string][]string) []string { return slices.Sorted(maps.Keys(m)) }
