// Package doctor checks a machine against what haven.yaml asks of one of
// its nodes, before the node's agent starts there or when it will not:
// the capabilities and kernel features its roles use, PostgreSQL's
// binaries, the ports it will listen on, the clock, the peers it must
// reach and the room on its disks. Each finding says what was seen and,
// when something is wrong, how to fix it (`haven doctor -n NODE`).
//
// Doctor only looks: it binds a port and closes it at once, dials a peer
// and hangs up, and builds and deletes a scratch nftables table; it never
// touches what an agent runs.
package doctor

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/config"
)

// Severity says how much a finding matters.
type Severity string

const (
	// OK: as the node needs it.
	OK Severity = "ok"
	// Warn: the node may run, but something will not work as configured
	// until it is fixed (a peer not up yet, a clock not synchronised).
	Warn Severity = "warn"
	// Fail: the node's agent will not start, or a role of it will not work.
	Fail Severity = "fail"
)

// Finding is one thing doctor looked at.
type Finding struct {
	Check    string   `json:"check"`
	Severity Severity `json:"severity"`
	// What is what doctor saw; Fix, when Severity is not OK, how to fix it.
	What string `json:"what"`
	Fix  string `json:"fix,omitempty"`
}

// Options tune the checks.
type Options struct {
	// Timeout bounds each network probe (default 2s).
	Timeout time.Duration
	// Probes replace the checks that need the kernel or the machine's
	// state, for tests; nil: the real ones.
	Probes *Probes
}

// Probes are the checks' view of the machine.
type Probes struct {
	// Capabilities returns the process's effective capabilities.
	Capabilities func() (uint64, error)
	// Nftables builds and deletes a table like the fences' (deadman.Probe).
	Nftables func() error
	// ClockSynced says whether the kernel thinks the clock is synchronised.
	ClockSynced func() (bool, error)
}

// Node checks this machine for node's roles in cfg. The findings come in
// a fixed order of checks, each check's sorted by what it saw.
func Node(ctx context.Context, cfg *config.Config, node string, opt Options) []Finding {
	if opt.Timeout == 0 {
		opt.Timeout = 2 * time.Second
	}
	if opt.Probes == nil {
		opt.Probes = realProbes()
	}
	n, ok := cfg.Node(node)
	if !ok {
		return []Finding{{Check: "node", Severity: Fail, What: fmt.Sprintf("node %q is not in the configuration", node),
			Fix: fmt.Sprintf("run doctor with one of the nodes the file names: %s", strings.Join(cfg.NodeNames(), ", "))}}
	}
	needs := needsOf(cfg, n)
	checks := []func() []Finding{
		func() []Finding { return checkCapabilities(needs, opt.Probes) },
		func() []Finding { return checkNftables(needs, opt.Probes) },
		func() []Finding { return checkPostgres(ctx, cfg, node) },
		func() []Finding { return checkPorts(ctx, needs) },
		func() []Finding { return checkClock(opt.Probes) },
		func() []Finding { return checkPeers(ctx, needs, opt.Timeout) },
		func() []Finding { return checkDisks(needs) },
		func() []Finding { return checkVolumes(needs) },
	}
	// The checks are independent; the peers' dials take the longest.
	out := make([][]Finding, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = c()
		}()
	}
	wg.Wait()
	return slices.Concat(out...)
}

// Failed says whether any finding is a failure.
func Failed(fs []Finding) bool {
	return slices.ContainsFunc(fs, func(f Finding) bool { return f.Severity == Fail })
}

// Format writes the findings as doctor prints them: one line each, the
// fix indented below.
func Format(fs []Finding) string {
	var b strings.Builder
	for _, f := range fs {
		fmt.Fprintf(&b, "%-4s  %-12s  %s\n", strings.ToUpper(string(f.Severity)), f.Check, f.What)
		if f.Fix != "" {
			fmt.Fprintf(&b, "      %-12s  fix: %s\n", "", f.Fix)
		}
	}
	return b.String()
}

// freeSpace is the least room doctor accepts on a disk the node writes:
// below either, PostgreSQL or etcd stops at the next burst of writes.
const (
	minFreeBytes   = 1 << 30
	minFreePercent = 10
)

func statPath(p string) (string, error) {
	// The directory may not exist yet: the agent makes it. Its nearest
	// existing parent is on the file system it will be on.
	for {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := parentDir(p)
		if parent == p {
			return "", fmt.Errorf("no part of %s exists", p)
		}
		p = parent
	}
}

func parentDir(p string) string {
	i := strings.LastIndexByte(strings.TrimRight(p, "/"), '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}
