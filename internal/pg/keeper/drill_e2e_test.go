package keeper_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/drill"
)

// TestDrillRun plays haven drill run primary-pause against a database of
// three nodes in namespaces, from the client's host, through the router:
// with the file's objectives (RTO 30s, RPO 0, replication sync) a freeze of
// the primary's postgres for 12s must be failed over before it ends (the
// keeper gives up the lead of a postgres silent for 5 leases), with no
// acknowledged write lost, and the drill pass; judged against an RTO no
// failover keeps (a copy of the file), the same drill must fail and say why.
func TestDrillRun(t *testing.T) {
	c := startDBCluster(t)
	primary := c.waitHealthy("bootstrap")
	setup := exec.Command("ip", "netns", "exec", c.net.Host(primary).Namespace,
		"runuser", "-u", "postgres", "--", c.psql, "-v", "ON_ERROR_STOP=1", "-h", filepath.Join(c.dir, primary, "run"), "-p", "5432", "-d", "postgres",
		"-c", "CREATE ROLE app LOGIN PASSWORD 'e2e-app'",
		"-c", "GRANT CREATE ON SCHEMA public TO app")
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("the drill's role on %s: %v\n%s", primary, err, out)
	}
	dsn := "postgres://app:e2e-app@" + c.net.Host("client").Addr.String() + ":6432/postgres?sslmode=disable&connect_timeout=2"

	out, err := c.tryHaven("client", "drill", "run", "primary-pause", "--dsn", dsn, "--for", "12s", "-o", "json")
	if err != nil {
		t.Fatalf("haven drill run primary-pause: %v\n%s", err, out)
	}
	var r drill.Result
	if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &r); err != nil {
		t.Fatalf("the drill's JSON: %v\n%s", err, out)
	}
	if len(r.Parts) != 1 || len(r.Faults) != 1 {
		t.Fatalf("the drill: %+v; want one part (the database's writes) and one fault", r)
	}
	p, f := r.Parts[0], r.Faults[0]
	t.Logf("primary-pause: RTO %v, %d of %d acknowledged writes lost, fault %q on %s", p.RTO, len(p.Lost), p.OK, f.Fault.Detail, f.Node)
	if !r.Met || len(p.Lost) > 0 || f.Node != primary || p.Unbounded || p.Part != "database" {
		t.Errorf("the drill: %+v; want it met, on %s, nothing lost", r, primary)
	}
	if !slices.ContainsFunc(r.Events, func(e drill.Event) bool { return strings.HasPrefix(e.What, "the primary is ") }) {
		t.Errorf("the drill's events %+v do not show the failover", r.Events)
	}
	// Failed over, not waited out: another node is the primary.
	if p := c.waitHealthy("after the drill"); p == primary {
		t.Errorf("%s, frozen for 12s, is still the primary", p)
	}

	// The same drill judged against an RTO no failover keeps.
	b, err := os.ReadFile(filepath.Join(c.dir, "haven.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	strict := filepath.Join(c.dir, "strict.yaml")
	if err := os.WriteFile(strict, []byte(strings.Replace(string(b), "objectives: {rto: 30s, rpo: 0s}", "objectives: {rto: 100ms, rpo: 0s}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = c.tryHavenWith("client", strict, "drill", "run", "primary-pause", "--dsn", dsn, "--for", "4s")
	if err == nil || !strings.Contains(out, "drill primary-pause: NOT MET") || !strings.Contains(out, "not met: RTO 100ms: database writes through the router (haven_drill_writes) stopped for") {
		t.Errorf("a drill against an RTO of 100ms: %v\n%s", err, out)
	}
	t.Logf("against an RTO of 100ms:\n%s", out)
}
