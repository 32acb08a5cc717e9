package drill

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/config"
)

// assess loads testdata/warm-standby.yaml with each of edits applied (old,
// new pairs) and assesses it.
func assess(t *testing.T, edits ...string) Assessment {
	t.Helper()
	return Assess(load(t, edits...))
}

// load loads testdata/warm-standby.yaml with each of edits applied (old,
// new pairs).
func load(t *testing.T, edits ...string) *config.Config {
	t.Helper()
	b, err := os.ReadFile("testdata/warm-standby.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(doc, edits[i]) {
			t.Fatalf("edit %q: not in the file", edits[i])
		}
		doc = strings.Replace(doc, edits[i], edits[i+1], 1)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pg-replication.password"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "haven.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("the edited file does not load: %v\n%s", err, doc)
	}
	return cfg
}

// has reports whether one of fs is about part and says want.
func has(fs []Finding, part, want string) bool {
	for _, f := range fs {
		if f.Part == part && strings.Contains(f.String(), want) {
			return true
		}
	}
	return false
}

func TestTiers(t *testing.T) {
	const dr = "  dr: {nodes: [wdb1, wdb2, wdb3], mode: async, failover: automatic}\n"
	for _, tc := range []struct {
		name  string
		edits []string
		tier  Tier
		part  string // a finding that keeps it from the next tier
		why   string
	}{
		{"warm standby", nil, WarmStandby, "database", "not multi-master"},
		{"warm standby, sync across regions", []string{"mode: async, failover", "mode: sync, failover"}, WarmStandby, "database", "fix: none in haven: warm standby with dr.mode: sync, as here, is the nearest"},
		{"standby region without routers", []string{"routers: [lb1, lb2, wlb1, wlb2]", "routers: [lb1, lb2]"}, Light, "region", "no database router in region west"},
		{"no balancer in the standby region", []string{"nodes: [wlb1, wlb2]\n    listen: \":80\"", "nodes: [lb1, lb2]\n    listen: \":81\"", "198.18.2.100/24", "198.18.1.101/24"}, Light, "web", "no balancer in region west"},
		{"one region's target following the data", []string{"follows: {database: true, region: west}", "check: web"}, WarmStandby, "database", "not multi-master"},
		{"manual region failover", []string{"failover: automatic", "failover: manual"}, BackupRestore, "region", "dr.failover is manual"},
		{"backups only", []string{dr, "", "routers: [lb1, lb2, wlb1, wlb2]", "routers: [lb1, lb2]",
			"follows: {database: true, region: east}", "check: web", "follows: {database: true, region: west}", "check: web"}, BackupRestore, "region", "database.dr is not set"},
		{"no backups", []string{"  backup: {target: \"file:///var/lib/haven/backups\", base_every: 24h}\n", ""}, NoTier, "backups", "no backups"},
		{"backups never scheduled", []string{", base_every: 24h}", "}"}, NoTier, "backups", "no backup is scheduled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := assess(t, tc.edits...)
			if a.Tier != tc.tier {
				t.Errorf("tier %s, want %s; findings: %v", a.Tier, tc.tier, a.Short)
			}
			if !has(a.Short, tc.part, tc.why) {
				t.Errorf("no finding of %s saying %q: %v", tc.part, tc.why, a.Short)
			}
			if out := a.Format(); !strings.HasPrefix(out, "tier: "+tc.tier.String()+"\n") {
				t.Errorf("Format:\n%s", out)
			}
		})
	}
}

// A traffic record without follows leaves warm standby by the traffic
// finding, whatever else holds.
func TestTrafficMustFollowTheData(t *testing.T) {
	a := assess(t, "follows: {database: true, region: east}", "check: web", "follows: {database: true, region: west}", "check: web")
	if a.Tier != Light || !has(a.Short, "traffic", "no traffic record follows the database") {
		t.Errorf("tier %s, findings %v; want light for want of traffic following the data", a.Tier, a.Short)
	}
}

// webBalancers is testdata/warm-standby.yaml's balancers section.
const webBalancers = `balancers:
  web:
    nodes: [lb1, lb2]
    listen: ":80"
    vip: 198.18.1.100/24
    check: web
    backends:
      - {address: 198.18.1.31:8080}
      - {address: 198.18.1.32:8080}
  webwest:
    nodes: [wlb1, wlb2]
    listen: ":80"
    vip: 198.18.2.100/24
    check: web
    backends:
      - {address: 198.18.2.31:8080}
      - {address: 198.18.2.32:8080}
`

func TestObjectives(t *testing.T) {
	for _, tc := range []struct {
		name       string
		objectives string
		edits      []string
		part, want string // "" part: every objective kept
	}{
		{"kept", "{rto: 30s, rpo: 5s}", nil, "", ""},
		{"an RPO of 0 with async DR", "{rto: 30s, rpo: 0s}", nil, "region", "RPO 0s: up to 5s may be lost"},
		{"an RPO of 0 with sync DR", "{rto: 30s, rpo: 0s}", []string{"mode: async, failover", "mode: sync, failover"}, "", ""},
		{"max_lag above the RPO", "{rto: 30s, rpo: 2s}", []string{"failover: automatic}", "failover: automatic, max_lag: 10s}"}, "region", "RPO 2s: up to 10s may be lost"},
		{"a region RTO under the lease", "{rto: 30s, rpo: 5s, region: {rto: 8s}}", nil, "region", "RTO 8s: recovery takes up to 15s"},
		{"manual region failover", "{rto: 30s, rpo: 5s}", []string{"failover: automatic", "failover: manual"}, "region", "a person promotes"},
		{"async replication in the region", "{rto: 30s, rpo: 5s}", []string{"replication: {mode: sync,", "replication: {mode: async,"}, "database", "nothing bounds the loss in time"},
		{"a web RTO on one balancer node", "{rto: 30s, rpo: 5s}", []string{"nodes: [wlb1, wlb2]", "nodes: [wlb1]"}, "web", "runs on one node"},
		// The guide's light tier: the data fails over by itself, the
		// service waits for someone to build the rest in the standby region.
		{"a standby region without routers", "{rto: 30s, rpo: 5s}", []string{"routers: [lb1, lb2, wlb1, wlb2]", "routers: [lb1, lb2]"},
			"region", "RTO 30s: the data fails over by itself but no database router in region west: its applications have no way to the data once it is active; fix: add a node of west to database.routers"},
		{"a standby region without a balancer", "{rto: 30s, rpo: 5s}", []string{"nodes: [wlb1, wlb2]\n    listen: \":80\"", "nodes: [lb1, lb2]\n    listen: \":81\"", "198.18.2.100/24", "198.18.1.101/24"},
			"region", "the data fails over by itself but no balancer in region west"},
		{"users left on the lost region's address", "{rto: 30s, rpo: 5s}", []string{"follows: {database: true, region: east}", "check: web", "follows: {database: true, region: west}", "check: web"},
			"region", "no traffic record follows the database: users stay on the lost region's address; fix: give each region's target follows"},
		{"a region's loss restored from the backups", "{rto: 30s, rpo: 5s, region: {rto: 1h}}", []string{"  dr: {nodes: [wdb1, wdb2, wdb3], mode: async, failover: automatic}\n", ""},
			"region", "RTO 1h: a restore from the backups, by hand; fix: add a standby region that takes over by itself"},
		{"no balancers: the way to the data is enough", "{rto: 30s, rpo: 5s}", []string{webBalancers, "", "follows: {database: true, region: east}", "check: web", "follows: {database: true, region: west}", "check: web"}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := assess(t, append([]string{"objectives: {rto: 30s, rpo: 5s}", "objectives: " + tc.objectives}, tc.edits...)...)
			if tc.part == "" {
				if len(a.Missed) > 0 {
					t.Errorf("objectives reported missed: %v", a.Missed)
				}
				return
			}
			if !has(a.Missed, tc.part, tc.want) {
				t.Errorf("no missed objective of %s saying %q: %v", tc.part, tc.want, a.Missed)
			}
			if out := a.Format(); !strings.Contains(out, "objective not kept: "+tc.part+": ") {
				t.Errorf("Format does not list it:\n%s", out)
			}
		})
	}
}
