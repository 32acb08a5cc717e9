package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// setup checks the tools, installs the targets' packages, and records the
// machine and the versions for the report.
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
	var need []string
	for _, n := range b.opt.targets {
		mk, _ := findTarget(n)
		for _, p := range mk().Packages() {
			if !slices.Contains(need, p) {
				need = append(need, p)
			}
		}
	}
	if len(need) > 0 {
		if err := b.opt.install.Ensure(ctx, need...); err != nil {
			return err
		}
	}
	if slices.ContainsFunc(b.opt.targets, isHaven) {
		b.havenBin, b.havenErr = harness.BuildHaven(ctx, b.root, b.dir)
		if b.havenErr != nil {
			harness.Logf("haven: %v", b.havenErr)
		}
	}
	b.machine = append(harness.Machine(), "load average at start: "+harness.LoadAverage())
	version := func(pkg string, argv ...string) string {
		out, _ := harness.Run(ctx, 20*time.Second, nil, argv...)
		s := harness.FirstLine(out)
		if v, err := harness.PackageVersion(pkg); err == nil {
			s += " (Debian package " + v + ")"
		}
		return s
	}
	b.versions = []string{harness.HavenVersion(ctx, b.root, true), version("postgresql-15", filepath.Join(b.opt.postgresBin, "postgres"), "--version")}
	if slices.Contains(need, "patroni") {
		b.versions = append(b.versions, version("patroni", "patroni", "--version"), version("etcd-server", "etcd", "--version"))
	}
	if slices.Contains(need, "haproxy") {
		b.versions = append(b.versions, version("haproxy", "haproxy", "-v"))
	}
	gover, _ := harness.Run(ctx, 10*time.Second, nil, "go", "version")
	b.versions = append(b.versions, harness.FirstLine(gover))
	for _, l := range append(append([]string{}, b.machine...), b.versions...) {
		harness.Logf("%s", l)
	}
	return nil
}
