package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// vegetaModule is the load generator for the fixed-rate latency runs,
// installed with `go install` into bench/lb/bin (gitignored).
const vegetaModule = "github.com/tsenart/vegeta/v12@v12.13.0"

// packages are the Debian packages the benchmark needs. Caddy is added when
// the archive has it.
var packages = []string{"haproxy", "nginx", "libnginx-mod-stream", "wrk", "util-linux"}

// setup installs what is missing, builds haven, and records the machine and
// the versions for the report.
func (b *bench) setup(ctx context.Context) error {
	if err := b.installPackages(ctx); err != nil {
		return err
	}
	if err := b.installVegeta(ctx); err != nil {
		return err
	}
	b.buildHaven(ctx)
	b.machine = harness.Machine()
	b.describeVersions(ctx)
	for _, l := range append(append([]string{}, b.machine...), b.versions...) {
		harness.Logf("%s", l)
	}
	return nil
}

func (b *bench) installPackages(ctx context.Context) error {
	want := append([]string{}, packages...)
	wantCaddy := slices.Contains(b.opt.targets, "caddy")
	if wantCaddy {
		want = append(want, "caddy")
	}
	missing := harness.Missing(want...)
	if !b.opt.install.RunApt(len(missing)) {
		// Caddy is optional (reported as n/a); the rest is needed.
		if needed := slices.DeleteFunc(slices.Clone(missing), func(p string) bool { return p == "caddy" }); len(needed) > 0 {
			return fmt.Errorf("%s not installed and -install is never", strings.Join(needed, ", "))
		}
		if wantCaddy && !harness.Installed("caddy") {
			b.caddyNote = "caddy not installed (-install never)"
		}
		return nil
	}
	if err := harness.AptUpdate(ctx); err != nil {
		return err
	}
	install := slices.Clone(packages)
	if b.opt.install == harness.Auto {
		install = nil
		for _, p := range missing {
			if p != "caddy" {
				install = append(install, p)
			}
		}
	}
	if wantCaddy && (b.opt.install == harness.Always || !harness.Installed("caddy")) {
		out, _ := harness.Run(ctx, time.Minute, nil, "apt-cache", "policy", "caddy")
		if m := regexp.MustCompile(`Candidate:\s*(\S+)`).FindStringSubmatch(out); m != nil && m[1] != "(none)" {
			install = append(install, "caddy")
		} else {
			b.caddyNote = "caddy is not in this system's apt sources"
			harness.Logf("%s: Caddy will be reported as n/a", b.caddyNote)
		}
	}
	if len(install) == 0 {
		return nil
	}
	if b.opt.install == harness.Always {
		install = append(install, "--reinstall")
	}
	return harness.AptInstall(ctx, install...)
}

// installVegeta installs vegeta into bench/lb/bin unless that version is
// already there.
func (b *bench) installVegeta(ctx context.Context) error {
	bin := filepath.Join(b.here, "bin")
	b.vegetaBin = filepath.Join(bin, "vegeta")
	want := strings.TrimPrefix(vegetaModule[strings.Index(vegetaModule, "@"):], "@")
	if out, err := harness.Run(ctx, time.Minute, nil, "go", "version", "-m", b.vegetaBin); err == nil && strings.Contains(out, want) && b.opt.install != harness.Always {
		return nil
	}
	if b.opt.install == harness.Never {
		return fmt.Errorf("vegeta %s is not in %s and -install is never", want, bin)
	}
	harness.Logf("GOBIN=%s go install %s", bin, vegetaModule)
	// Outside the module, so that the main module's go.mod is not involved.
	if out, err := harness.Run(ctx, 10*time.Minute, []string{"GOBIN=" + bin, "GOFLAGS="}, "sh", "-c", "cd "+harness.ShellQuote(b.dir)+" && exec go install "+vegetaModule); err != nil {
		return fmt.Errorf("install vegeta: %w: %s", err, harness.LastLines(out, 5))
	}
	return nil
}

// buildHaven builds the agent from the working tree. A failure is not fatal:
// haven is then reported as "failed to start" and the others still run.
func (b *bench) buildHaven(ctx context.Context) {
	if !slices.Contains(b.opt.targets, "haven") && !slices.Contains(b.opt.targets, "haven-epoll") {
		return
	}
	b.havenBin, b.havenBuildErr = harness.BuildHaven(ctx, b.root, b.dir)
	if b.havenBuildErr != nil {
		harness.Logf("haven: %v", b.havenBuildErr)
	}
}

// describeVersions records the version of every tool in the run.
func (b *bench) describeVersions(ctx context.Context) {
	first := func(argv ...string) string {
		out, _ := harness.Run(ctx, 30*time.Second, nil, argv...) // wrk -v exits 1
		return harness.FirstLine(out)
	}
	vegeta := "(unknown)"
	if out, err := harness.Run(ctx, 30*time.Second, nil, "go", "version", "-m", b.vegetaBin); err == nil {
		if m := regexp.MustCompile(`mod\s+github.com/tsenart/vegeta/v12\s+(\S+)`).FindStringSubmatch(out); m != nil {
			vegeta = "vegeta " + m[1]
		}
	}
	haven := harness.HavenVersion(ctx, b.root, true)
	if b.havenBuildErr != nil {
		haven += " (build failed)"
	}
	b.versions = []string{
		haven,
		first("haproxy", "-v"),
		first("nginx", "-v"),
		"caddy " + first("caddy", "version"),
		first("wrk", "-v"),
		vegeta,
		first("go", "version"),
	}
	if b.caddyNote != "" {
		b.versions[3] = "caddy: " + b.caddyNote
	}
}
