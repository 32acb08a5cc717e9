package main

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// setup installs keepalived when it is missing, builds haven, and records
// the machine and the versions for the report.
func (b *bench) setup(ctx context.Context) error {
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s (iproute2, nftables): %w", tool, err)
		}
	}
	if err := b.installKeepalived(ctx); err != nil {
		return err
	}
	b.buildHaven(ctx)
	b.machine = append(harness.Machine(), "load average at start: "+harness.LoadAverage())
	b.describeVersions(ctx)
	for _, l := range append(append([]string{}, b.machine...), b.versions...) {
		harness.Logf("%s", l)
	}
	return nil
}

func (b *bench) wants(kind string) bool {
	for _, n := range b.opt.targets {
		if t, _ := findTarget(n); t.kind == kind {
			return true
		}
	}
	return false
}

// installKeepalived runs apt-get update once and apt-get install -y
// keepalived when keepalived is not installed (or with -install always).
func (b *bench) installKeepalived(ctx context.Context) error {
	if !b.wants("keepalived") {
		return nil
	}
	return b.opt.install.Ensure(ctx, "keepalived")
}

// buildHaven builds the agent from the working tree. A failure is not fatal:
// haven's rows then say why and the others still run.
func (b *bench) buildHaven(ctx context.Context) {
	if !b.wants("haven") {
		return
	}
	b.havenBin, b.havenErr = harness.BuildHaven(ctx, b.root, b.dir)
	if b.havenErr != nil {
		harness.Logf("haven: %v", b.havenErr)
	}
}

// describeVersions records the version of every tool in the run.
func (b *bench) describeVersions(ctx context.Context) {
	haven := harness.HavenVersion(ctx, b.root, true)
	if b.havenErr != nil {
		haven += " (build failed)"
	}
	keepalived := "keepalived: not used"
	if b.wants("keepalived") {
		out, _ := harness.Run(ctx, 10*time.Second, nil, "keepalived", "--version")
		keepalived = harness.FirstLine(out)
		if v, err := harness.PackageVersion("keepalived"); err == nil {
			keepalived += " (Debian package " + v + ")"
		}
	}
	gover, _ := harness.Run(ctx, 10*time.Second, nil, "go", "version")
	b.versions = []string{haven, keepalived, harness.FirstLine(gover)}
}
