package keeper_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestDrillRun plays haven drill run primary-pause against a database of
// three nodes in namespaces, from the client's host, through the router:
// with the file's objectives (RTO 30s, RPO 0, replication sync) a freeze of
// the primary's postgres for 16s must be failed over before it ends (the
// keeper gives up the lead of a postgres silent for 5 leases), with no
// acknowledged write lost, and the drill pass; judged against an RTO no
// failover keeps (a copy of the file), the same drill must fail and say why.
func TestDrillRun(t *testing.T) {
	c := startDBCluster(t, "drills: {enabled: true, dsn_file: drill.dsn, schedule: [{scenario: primary-kill, every: 10m, for: 5s}]}")
	primary := c.waitHealthy("bootstrap")
	setup := exec.Command("ip", "netns", "exec", c.net.Host(primary).Namespace,
		"runuser", "-u", "postgres", "--", c.psql, "-v", "ON_ERROR_STOP=1", "-h", filepath.Join(c.dir, primary, "run"), "-p", "5432", "-d", "postgres",
		"-c", "CREATE ROLE app LOGIN PASSWORD 'e2e-app'",
		"-c", "GRANT CREATE ON SCHEMA public TO app")
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("the drill's role on %s: %v\n%s", primary, err, out)
	}
	dsn := "postgres://app:e2e-app@" + c.net.Host("client").Addr.String() + ":6432/postgres?sslmode=disable&connect_timeout=2"

	// The scheduled drill: the router's agent (no fault aims at its node)
	// takes it at its first check and records the verdict, which haven
	// status shows. A first attempt that came before the role is retried.
	scheduled := regexp.MustCompile(`(?m)^primary-kill +10m +.+ on \S+ +met `)
	testenv.Poll(t, 5*time.Minute, "haven status to show the scheduled primary-kill met", func() (bool, string) {
		out, _ := c.tryHaven("client", "status")
		return scheduled.MatchString(out), out
	})
	primary = c.waitHealthy("after the scheduled drill")

	out, err := c.tryHaven("client", "drill", "run", "primary-pause", "--dsn", dsn, "--for", "16s", "-o", "json")
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
		t.Errorf("%s, frozen for 16s, is still the primary", p)
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
	page := filepath.Join(c.dir, "strict.html")
	out, err = c.tryHavenWith("client", strict, "drill", "run", "primary-pause", "--dsn", dsn, "--for", "4s", "--html", page)
	if err == nil || !strings.Contains(out, "drill primary-pause: NOT MET") || !strings.Contains(out, "not met: RTO 100ms: database writes through the router (haven_drill_writes) stopped for") {
		t.Errorf("a drill against an RTO of 100ms: %v\n%s", err, out)
	}
	t.Logf("against an RTO of 100ms:\n%s", out)
	// The report is written although the drill failed.
	html, err := os.ReadFile(page)
	if err != nil {
		t.Fatalf("the drill's --html report: %v", err)
	}
	for _, want := range []string{`id="verdict" class="verdict" data-met="false">NOT MET<`, `class="part" data-part="database" data-met="false"`, `class="fault"`} {
		if !strings.Contains(string(html), want) {
			t.Errorf("the report %s has no %s", page, want)
		}
	}
}

// TestDrillRegionScenarios plays the database's and the region's built-in
// scenarios with haven drill run against the disaster-recovery lab (two
// regions of three database nodes and a router each, a witness, a WAN
// between them: the database half of examples/warm-standby.yaml), from
// the witness, which sees both regions, writing through both routers.
// The loss of the active region (async DR, max_lag 5s) must be met
// against a region RPO of 10s, and the loss of the next active region,
// judged against an RPO of 0, must fail, saying the design cannot promise
// it; then inside the active region (replication sync) a primary's kill,
// partition and node's loss must be met with nothing lost.
func TestDrillRegionScenarios(t *testing.T) {
	c := startDRCluster(t, "drills: {enabled: true}\nobjectives: {rto: 30s, rpo: 0s, region: {rto: 90s, rpo: 10s}}\n")
	c.waitWhole(t, drEast, drWest)
	primary := c.regionPrimary(drEast)
	if _, err := c.sql(primary, "CREATE ROLE app LOGIN PASSWORD 'dr-app'; CREATE TABLE haven_drill_writes (run int, seq int, PRIMARY KEY (run, seq)); GRANT SELECT, INSERT ON haven_drill_writes TO app"); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(c.dir, "haven.yaml")
	dsn := "postgres://app:dr-app@198.18.1.14:6432,198.18.2.14:6432/postgres?sslmode=disable&connect_timeout=2&target_session_attrs=read-write"
	play := func(cfg, scenario, d string) (drill.Result, string, error) {
		t.Helper()
		out, err := c.tryHavenWith("wit", cfg, "drill", "run", scenario, "--dsn", dsn, "--for", d, "-o", "json")
		var r drill.Result
		// The JSON, then (combined output) the exit's message.
		if i := strings.Index(out, "\n{"); i < 0 || json.NewDecoder(strings.NewReader(out[i+1:])).Decode(&r) != nil {
			t.Fatalf("haven drill run %s: %v\n%s", scenario, err, out)
		}
		return r, out, err
	}
	// check wants the drill met, with its faults; nothing lost inside a
	// region (sync), what the region's RPO allows across regions (async).
	check := func(r drill.Result, out string, err error, scenario string, faults int) {
		t.Helper()
		t.Logf("%s: %s", scenario, summary(r))
		if err != nil || !r.Met || len(r.Faults) != faults || len(r.Parts) != 1 || r.Parts[0].Unbounded ||
			(r.Parts[0].Part != "region" && len(r.Parts[0].Lost) > 0) {
			t.Errorf("%s: %v; want met, %d faults, nothing lost inside the region\n%s", scenario, err, faults, out)
		}
	}

	// The region's loss first, on a standby cluster that has streamed
	// steadily since it started: west takes over.
	r, out, err := play(cfg, "region-loss", "12s")
	check(r, out, err, "region-loss", 4)
	if p := r.Parts[0]; p.Part != "region" || !slices.ContainsFunc(r.Events, func(e drill.Event) bool { return e.What == "the active region is west (was east)" }) {
		t.Errorf("region-loss: part %s, events %v: want the region part and west taking over", p.Part, r.Events)
	}
	c.waitWhole(t, drWest, drEast)

	// West's loss, judged against a region RPO of 0 that async DR cannot
	// promise, fails and says why, whatever it lost and wherever the
	// writes went on.
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	strict := filepath.Join(c.dir, "strict.yaml")
	if err := os.WriteFile(strict, []byte(strings.Replace(string(b), "region: {rto: 90s, rpo: 10s}", "region: {rto: 90s, rpo: 0s}", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	r, out, err = play(strict, "region-loss", "12s")
	t.Logf("region-loss against RPO 0: %s", summary(r))
	if err == nil || r.Met || !strings.Contains(strings.Join(r.Reasons, "\n"), "region: the design cannot promise it: region: RPO 0s") {
		t.Errorf("region-loss against a region RPO of 0 with async DR: %v, reasons %q\n%s", err, r.Reasons, out)
	}

	// Inside whichever region is active now (replication sync).
	for _, tc := range []struct {
		scenario, d string
		faults      int
	}{
		{"primary-kill", "5s", 1},
		{"primary-partition", "8s", 1},
		{"node-loss", "8s", 1},
	} {
		active, standby := c.activeRegion(t)
		c.waitWhole(t, active, standby)
		r, out, err := play(cfg, tc.scenario, tc.d)
		check(r, out, err, tc.scenario, tc.faults)
	}
}

// activeRegion waits until one region has a primary and returns its nodes
// and the other region's.
func (c *dbCluster) activeRegion(t *testing.T) (active, standby []string) {
	t.Helper()
	testenv.Poll(t, 3*time.Minute, "a region with a primary", func() (bool, string) {
		switch {
		case c.regionPrimary(drEast) != "":
			active, standby = drEast, drWest
		case c.regionPrimary(drWest) != "":
			active, standby = drWest, drEast
		}
		return active != nil, "no primary in east or west"
	})
	return active, standby
}

// summary is a drill's result in a line, for the test's log.
func summary(r drill.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "met %v", r.Met)
	for _, p := range r.Parts {
		fmt.Fprintf(&b, "; %s: RTO %v, %d of %d acknowledged lost (RPO %v)", p.Part, p.RTO.Round(time.Millisecond), len(p.Lost), p.OK, p.RPO.Round(time.Millisecond))
	}
	for _, e := range r.Events {
		fmt.Fprintf(&b, "; %.1fs %s", e.At.Seconds(), e.What)
	}
	return b.String()
}

// waitWhole waits until active's region has a primary and its other nodes
// stream, and every node of standby streams (the standby cluster), all of
// them on one timeline: a node still streaming the timeline it is about
// to leave (a rewind coming) is not whole yet.
func (c *dbCluster) waitWhole(t *testing.T, active, standby []string) {
	t.Helper()
	testenv.Poll(t, 3*time.Minute, "the database whole again", func() (bool, string) {
		p := c.regionPrimary(active)
		n, seen := c.streaming(active)
		m, seen2 := c.streaming(standby)
		tlis := map[string]bool{}
		for _, node := range slices.Concat(active, standby) {
			if node == p {
				continue
			}
			tli, err := c.sql(node, "SELECT received_tli FROM pg_stat_wal_receiver")
			tlis[tli+fmt.Sprint(err != nil)] = true
		}
		return p != "" && n == len(active)-1 && m == len(standby) && len(tlis) == 1,
			fmt.Sprintf("primary %s; %s; %s; timelines received %v", p, seen, seen2, slices.Collect(maps.Keys(tlis)))
	})
}
