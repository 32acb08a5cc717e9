package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"
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
	b.describeMachine()
	b.describeVersions(ctx)
	for _, l := range append(append([]string{}, b.machine...), b.versions...) {
		b.logf("%s", l)
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

func installed(pkg string) bool {
	out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", pkg).Output()
	return err == nil && strings.TrimSpace(string(out)) == "install ok installed"
}

// installKeepalived runs apt-get update once and apt-get install -y
// keepalived when keepalived is not installed (or with -install always).
func (b *bench) installKeepalived(ctx context.Context) error {
	if !b.wants("keepalived") {
		return nil
	}
	have := installed("keepalived")
	if b.opt.install == "never" || (b.opt.install == "auto" && have) {
		if !have {
			return errors.New("keepalived is not installed and -install is never")
		}
		return nil
	}
	env := []string{"DEBIAN_FRONTEND=noninteractive"}
	b.logf("apt-get update")
	if _, err := run(ctx, 10*time.Minute, env, "apt-get", "update", "-q"); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	args := []string{"apt-get", "install", "-y", "-q", "keepalived"}
	if b.opt.install == "always" {
		args = append(args, "--reinstall")
	}
	b.logf("%s", strings.Join(args, " "))
	if out, err := run(ctx, 15*time.Minute, env, args...); err != nil {
		return fmt.Errorf("apt-get install: %w: %s", err, lastLines(out, 5))
	}
	return nil
}

// buildHaven builds the agent from the working tree. A failure is not fatal:
// haven's rows then say why and the others still run.
func (b *bench) buildHaven(ctx context.Context) {
	if !slices.ContainsFunc(b.opt.targets, func(name string) bool { t, _ := findTarget(name); return t.kind == "haven" }) {
		return
	}
	b.havenBin = filepath.Join(b.dir, "haven")
	b.logf("go build -o %s ./cmd/haven", b.havenBin)
	cmd := []string{"sh", "-c", "cd " + shellQuote(b.root) + " && exec go build -o " + shellQuote(b.havenBin) + " ./cmd/haven"}
	if out, err := run(ctx, 10*time.Minute, nil, cmd...); err != nil {
		b.havenErr = fmt.Errorf("go build ./cmd/haven failed: %s", lastLines(out, 6))
		b.logf("haven: %v", b.havenErr)
	}
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

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
	load, _ := os.ReadFile("/proc/loadavg")
	b.machine = []string{
		"date: " + time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		fmt.Sprintf("nproc: %d", n),
		"CPU: " + model,
		"memory: " + mem,
		"kernel: " + strings.TrimSpace(string(kernel)),
		"Debian: " + strings.TrimSpace(string(debian)),
		"load average at start: " + strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "),
	}
}

// describeVersions records the version of every tool in the run.
func (b *bench) describeVersions(ctx context.Context) {
	haven := "haven: working tree"
	if out, err := run(ctx, 10*time.Second, nil, "git", "-C", b.root, "rev-parse", "--short", "HEAD"); err == nil {
		haven += " at " + strings.TrimSpace(out)
	}
	if out, err := run(ctx, 10*time.Second, nil, "git", "-C", b.root, "status", "--porcelain"); err == nil && strings.TrimSpace(out) != "" {
		haven += " (with uncommitted changes)"
	}
	if b.havenErr != nil {
		haven += " (build failed)"
	}
	keepalived := "keepalived: not used"
	if b.wants("keepalived") {
		out, _ := run(ctx, 10*time.Second, nil, "keepalived", "--version")
		keepalived = firstLine(out)
		if v, err := exec.Command("dpkg-query", "-W", "-f=${Version}", "keepalived").Output(); err == nil {
			keepalived += " (Debian package " + strings.TrimSpace(string(v)) + ")"
		}
	}
	gover, _ := run(ctx, 10*time.Second, nil, "go", "version")
	b.versions = []string{haven, keepalived, firstLine(gover)}
}

func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return "(unknown)"
}

// run runs argv to completion within timeout, in a process group of its
// own that is killed with the harness, and returns its combined output.
func run(ctx context.Context, timeout time.Duration, env []string, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil && err != nil {
		err = fmt.Errorf("%s: %w (after %s)", argv[0], ctx.Err(), timeout)
	} else if err != nil {
		err = fmt.Errorf("%s: %w: %s", argv[0], err, lastLines(out.String(), 5))
	}
	return out.String(), err
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, " | ")
	if len(out) > 600 {
		out = "…" + out[len(out)-600:]
	}
	return out
}

func dedupe(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
