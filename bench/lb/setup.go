package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
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
	b.describeMachine()
	b.describeVersions(ctx)
	for _, l := range append(append([]string{}, b.machine...), b.versions...) {
		b.logf("%s", l)
	}
	return nil
}

func installed(pkg string) bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkg).Output()
	return err == nil && strings.TrimSpace(string(out)) == "install ok installed"
}

func (b *bench) installPackages(ctx context.Context) error {
	want := append([]string{}, packages...)
	wantCaddy := slices.Contains(b.opt.targets, "caddy")
	if wantCaddy {
		want = append(want, "caddy")
	}
	var missing []string
	for _, p := range want {
		if !installed(p) {
			missing = append(missing, p)
		}
	}
	if b.opt.install == "never" || (b.opt.install == "auto" && len(missing) == 0) {
		if len(missing) > 0 {
			b.logf("-install never: not installing %s", strings.Join(missing, " "))
		}
		if wantCaddy && !installed("caddy") {
			b.caddyNote = "caddy not installed (-install never)"
		}
		return nil
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	b.logf("apt-get update")
	if _, err := run(ctx, 10*time.Minute, env, "apt-get", "update", "-q"); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	install := packages
	if b.opt.install == "auto" {
		install = nil
		for _, p := range missing {
			if p != "caddy" {
				install = append(install, p)
			}
		}
	}
	if wantCaddy && (b.opt.install == "always" || !installed("caddy")) {
		out, _ := run(ctx, time.Minute, nil, "apt-cache", "policy", "caddy")
		if m := regexp.MustCompile(`Candidate:\s*(\S+)`).FindStringSubmatch(out); m != nil && m[1] != "(none)" {
			install = append(install, "caddy")
		} else {
			b.caddyNote = "caddy is not in this system's apt sources"
			b.logf("%s: Caddy will be reported as n/a", b.caddyNote)
		}
	}
	if len(install) == 0 {
		return nil
	}
	b.logf("apt-get install -y %s", strings.Join(install, " "))
	args := append([]string{"apt-get", "install", "-y", "-q"}, install...)
	if out, err := run(ctx, 15*time.Minute, env, args...); err != nil {
		return fmt.Errorf("apt-get install: %w: %s", err, lastLines(out, 5))
	}
	return nil
}

// installVegeta installs vegeta into bench/lb/bin unless that version is
// already there.
func (b *bench) installVegeta(ctx context.Context) error {
	bin := filepath.Join(b.here, "bin")
	b.vegetaBin = filepath.Join(bin, "vegeta")
	want := strings.TrimPrefix(vegetaModule[strings.Index(vegetaModule, "@"):], "@")
	if out, err := run(ctx, time.Minute, nil, "go", "version", "-m", b.vegetaBin); err == nil && strings.Contains(out, want) && b.opt.install != "always" {
		return nil
	}
	if b.opt.install == "never" {
		return fmt.Errorf("vegeta %s is not in %s and -install is never", want, bin)
	}
	b.logf("GOBIN=%s go install %s", bin, vegetaModule)
	// Outside the module, so that the main module's go.mod is not involved.
	if out, err := run(ctx, 10*time.Minute, []string{"GOBIN=" + bin, "GOFLAGS="}, "sh", "-c", "cd "+shellQuote(b.dir)+" && exec go install "+vegetaModule); err != nil {
		return fmt.Errorf("install vegeta: %w: %s", err, lastLines(out, 5))
	}
	return nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// buildHaven builds the agent from the working tree. A failure is not fatal:
// haven is then reported as "failed to start" and the others still run.
func (b *bench) buildHaven(ctx context.Context) {
	if !slices.Contains(b.opt.targets, "haven") {
		return
	}
	b.havenBin = filepath.Join(b.dir, "haven")
	b.logf("go build -o %s ./cmd/haven", b.havenBin)
	cmd := []string{"sh", "-c", "cd " + shellQuote(b.root) + " && exec go build -o " + shellQuote(b.havenBin) + " ./cmd/haven"}
	if out, err := run(ctx, 10*time.Minute, nil, cmd...); err != nil {
		b.havenBuildErr = fmt.Errorf("go build ./cmd/haven failed: %s", lastLines(out, 6))
		b.logf("haven: %v", b.havenBuildErr)
	}
}

// describeMachine records what the report says about the machine.
func (b *bench) describeMachine() {
	cpuinfo, _ := os.ReadFile("/proc/cpuinfo")
	model, n := "", 0
	for _, l := range strings.Split(string(cpuinfo), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "processor":
			n++
		case "model name":
			if model == "" {
				model = strings.TrimSpace(v)
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	debian, _ := os.ReadFile("/etc/debian_version")
	mem := ""
	if mi, err := os.ReadFile("/proc/meminfo"); err == nil {
		if m := regexp.MustCompile(`MemTotal:\s+(\d+) kB`).FindStringSubmatch(string(mi)); m != nil {
			var kb int64
			fmt.Sscan(m[1], &kb)
			mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	b.machine = []string{
		"date: " + time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		fmt.Sprintf("nproc: %d", n),
		"CPU: " + model,
		"memory: " + mem,
		"kernel: " + strings.TrimSpace(string(kernel)),
		"Debian: " + strings.TrimSpace(string(debian)),
	}
}

// describeVersions records the version of every tool in the run.
func (b *bench) describeVersions(ctx context.Context) {
	first := func(argv ...string) string {
		out, _ := run(ctx, 30*time.Second, nil, argv...) // wrk -v exits 1
		for _, l := range strings.Split(out, "\n") {
			if l = strings.TrimSpace(l); l != "" {
				return l
			}
		}
		return "(unknown)"
	}
	vegeta := "(unknown)"
	if out, err := run(ctx, 30*time.Second, nil, "go", "version", "-m", b.vegetaBin); err == nil {
		if m := regexp.MustCompile(`mod\s+github.com/tsenart/vegeta/v12\s+(\S+)`).FindStringSubmatch(out); m != nil {
			vegeta = "vegeta " + m[1]
		}
	}
	haven := "haven: working tree"
	if out, err := run(ctx, 10*time.Second, nil, "git", "-C", b.root, "rev-parse", "--short", "HEAD"); err == nil {
		haven += " at " + strings.TrimSpace(out)
	}
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
