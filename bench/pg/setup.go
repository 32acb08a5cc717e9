package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// packages are the Debian packages the Patroni targets need; haproxy is
// the router of every target.
var packages = []string{"patroni", "etcd-server", "haproxy"}

// setup installs what is missing, builds haven, and records the machine
// and the versions for the report.
func (b *bench) setup(ctx context.Context) error {
	for _, tool := range []string{"ip", "nft", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("needs %s (iproute2, nftables, util-linux): %w", tool, err)
		}
	}
	for _, bin := range []string{"postgres", "initdb", "psql", "pg_basebackup", "pg_rewind", "pg_controldata"} {
		if _, err := os.Stat(filepath.Join(b.opt.postgresBin, bin)); err != nil {
			return fmt.Errorf("needs PostgreSQL 15 in %s (apt-get install postgresql-15, or -bindir): %w", b.opt.postgresBin, err)
		}
	}
	if err := b.install(ctx); err != nil {
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

// install runs apt-get update once and apt-get install -y of the missing
// packages (all of them with -install always). The packages' own services
// are not used: the bench starts every daemon itself, in the namespaces.
func (b *bench) install(ctx context.Context) error {
	var need []string
	for _, n := range b.opt.targets {
		if t, _ := findTarget(n); t.haproxy && !slices.Contains(need, "haproxy") {
			need = append(need, "haproxy")
		}
	}
	if b.wants("patroni") {
		need = packages
	}
	if len(need) == 0 {
		return nil
	}
	return b.opt.install.Ensure(ctx, need...)
}

// buildHaven builds the agent from the working tree. A failure is not fatal:
// haven's rows then say why and the others still run.
func (b *bench) buildHaven(ctx context.Context) {
	if !b.wants("haven") {
		return
	}
	root := b.root
	if b.opt.havenRev != "" {
		// A clean tree of that commit, not the working tree with whatever
		// is being edited in it.
		root = filepath.Join(b.dir, "src")
		if err := os.MkdirAll(root, 0o755); err != nil {
			b.havenErr = err
			return
		}
		cmd := "git -C " + harness.ShellQuote(b.root) + " archive --format=tar " + harness.ShellQuote(b.opt.havenRev) + " | tar -x -C " + harness.ShellQuote(root)
		if out, err := harness.Run(ctx, time.Minute, nil, "sh", "-c", cmd); err != nil {
			b.havenErr = fmt.Errorf("git archive %s: %w: %s", b.opt.havenRev, err, harness.LastLines(out, 3))
			harness.Logf("haven: %v", b.havenErr)
			return
		}
	}
	b.havenBin, b.havenErr = harness.BuildHaven(ctx, root, b.dir)
	if b.havenErr != nil {
		harness.Logf("haven: %v", b.havenErr)
	}
}

// describeVersions records the version of every tool in the run.
func (b *bench) describeVersions(ctx context.Context) {
	haven := harness.HavenVersion(ctx, b.root, true)
	if b.opt.havenRev != "" {
		out, _ := harness.Run(ctx, 10*time.Second, nil, "git", "-C", b.root, "rev-parse", "--short", b.opt.havenRev)
		haven = "haven: commit " + strings.TrimSpace(out) + " (git archive of -haven-rev " + b.opt.havenRev + ")"
	}
	if b.havenErr != nil {
		haven += " (build failed)"
	}
	version := func(pkg string, argv ...string) string {
		out, _ := harness.Run(ctx, 20*time.Second, nil, argv...)
		s := harness.FirstLine(out)
		if v, err := harness.PackageVersion(pkg); err == nil {
			s += " (Debian package " + v + ")"
		}
		return s
	}
	b.versions = []string{haven, version("postgresql-15", filepath.Join(b.opt.postgresBin, "postgres"), "--version")}
	if b.wants("patroni") {
		b.versions = append(b.versions, version("patroni", "patroni", "--version"), version("etcd-server", "etcd", "--version"))
	}
	b.versions = append(b.versions, version("haproxy", "haproxy", "-v"))
	gover, _ := harness.Run(ctx, 10*time.Second, nil, "go", "version")
	b.versions = append(b.versions, harness.FirstLine(gover))
}
