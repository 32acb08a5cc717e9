package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill"
)

// soakRTO is the objective a soak's every outage is judged by: the
// lease's failover with room for a frozen node's detection and a loaded
// machine.
const soakRTO = "15s"

// runSoak runs haven drill soak from the client against the haven target
// (three database nodes, the router on the client) for -soak, and writes
// its verdict and numbers to bench/pg/results/soak.md, the JSON beside
// the raw results.
func (b *bench) runSoak(ctx context.Context) error {
	t, _ := findTarget("haven")
	c, err := b.startCluster(ctx, t, "soak")
	if err != nil {
		return err
	}
	defer c.close()
	dsn := fmt.Sprintf("postgres://%s:%s@%s/postgres?sslmode=disable&connect_timeout=1", appUser, appPassword, t.routerAddr())
	args := []string{"drill", "soak", "-c", filepath.Join(c.dir, "haven.yaml"), "--dsn", dsn, "--for", b.opt.soak.String(), "-o", "json",
		"--html", filepath.Join(b.rawDir, "soak.html")}
	if b.opt.soakFaults > 0 {
		args = append(args, "--faults", fmt.Sprint(b.opt.soakFaults))
	}
	// Every class of fault the database lab has (no backend process or
	// unit runs there); fills fill each node's own tmpfs (mountNodeDisk).
	args = append(args, "--kinds", "kill,pause,drop,loss,pause-agent,fill")
	if b.opt.soakSeed > 0 {
		args = append(args, "--seed", fmt.Sprint(b.opt.soakSeed))
	}
	// The soak's own bound: its time, the last heal, and the writes' check.
	sctx, cancel := context.WithTimeout(ctx, b.opt.soak+10*time.Minute)
	defer cancel()
	cmd := c.net.Host("client").Command(sctx, b.havenBin, args...)
	var out bytes.Buffer
	logf, err := os.Create(filepath.Join(b.rawDir, "soak-progress.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = &out, io.MultiWriter(logf, os.Stderr)
	harness.Logf("soak: haven drill soak for %s against %s (progress in %s)", b.opt.soak, t.name, logf.Name())
	runErr := cmd.Run()
	c.saveLogs()
	raw := filepath.Join(b.rawDir, "soak.json")
	if err := os.WriteFile(raw, out.Bytes(), 0o644); err != nil {
		return err
	}
	var r drill.SoakResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return fmt.Errorf("haven drill soak: %v (%v); its output is in %s", runErr, err, raw)
	}
	md := soakReport(r, b.opt.soak)
	if _, err := harness.WriteReport(b.out, b.here, filepath.Join(b.here, "results", "soak.md"), false, md); err != nil {
		return err
	}
	harness.Logf("soak: %s; wrote bench/pg/results/soak.md (JSON in %s)", map[bool]string{true: "objectives kept", false: "objectives NOT kept"}[r.Met], raw)
	return nil
}

// soakReport is the soak's markdown: the verdict, faults by class, and
// the outages' distribution per workload.
func soakReport(r drill.SoakResult, asked time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# bench/pg soak: %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "`go run ./bench/pg -soak %s` (seed %d): haven drill soak against the `haven` target (three database nodes, sync mode with one synchronous standby, lease 2s, haven's router on the client), objectives rto %s, rpo 0s.\n\n", asked, r.Seed, soakRTO)
	fmt.Fprintf(&b, "Verdict: **%s** after %s, %d faults.\n\n", map[bool]string{true: "MET", false: "NOT MET"}[r.Met], config.Duration(r.Length.Round(time.Second)), len(r.Faults))
	for _, why := range r.Reasons {
		fmt.Fprintf(&b, "- not met: %s\n", why)
	}
	b.WriteString("\n| fault class | count | outage median | p99 | worst |\n|---|---|---|---|---|\n")
	for _, k := range slices.Sorted(maps.Keys(r.ByKind)) {
		var out []time.Duration
		for _, f := range r.Faults {
			if f.Class == k {
				out = append(out, f.Outages["database"])
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %s |\n", k, r.ByKind[k], quantiles(out))
	}
	var all []time.Duration
	for _, f := range r.Faults {
		all = append(all, f.Outages["database"])
	}
	fmt.Fprintf(&b, "| all | %d | %s |\n\n", len(r.Faults), quantiles(all))
	for _, p := range r.Parts {
		fmt.Fprintf(&b, "%s: %d acknowledged, %d failed, %d unknown; %d acknowledged writes lost.\n", p.Workload, p.OK, p.Failed, p.Indeterminate, len(p.Lost))
	}
	return b.String()
}

func quantiles(ds []time.Duration) string {
	if len(ds) == 0 {
		return "- | - | -"
	}
	slices.Sort(ds)
	q := func(p int) string { return fmt.Sprintf("%.2f s", ds[min(len(ds)-1, len(ds)*p/100)].Seconds()) }
	return q(50) + " | " + q(99) + " | " + fmt.Sprintf("%.2f s", ds[len(ds)-1].Seconds())
}
