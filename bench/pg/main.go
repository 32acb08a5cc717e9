// Command pg is haven's side-by-side benchmark of database failover. It
// builds three database nodes and a client with network namespaces
// (internal/netlab), runs on them in turn Patroni 3.0.2 with etcd 3.4 (at
// its defaults, then at its fastest settings) and haven's agents, with
// HAProxy in the client's namespace routing to whichever node says it is
// the primary, breaks the primary (kill -9 of its postmaster, loss of the
// whole node, a planned switchover) at a random moment, and measures from
// a writer on the client, which commits a numbered row every 20 ms, how
// long the writes stopped and whether any acknowledged row was lost.
//
// Usage (as root, from the repository root):
//
//	go run ./bench/pg               # 5 runs of each fault per target (~25 min)
//	go run ./bench/pg -quick        # 1 run of each (~6 min)
//
// See bench/pg/README.md for what each column means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/netlab"
)

type options struct {
	quick       bool
	runs        int
	targets     []string
	scenarios   []string
	every       time.Duration // the writer's interval
	connTimeout time.Duration // one connect
	opTimeout   time.Duration // one INSERT
	pre         time.Duration // writes before the fault (plus a random part of one period)
	post        time.Duration // writes after the first acknowledged write after the fault
	maxOutage   time.Duration // how long the writer waits for writes to come back
	settle      time.Duration // how long a cluster may take to be healthy
	install     harness.Policy
	out         string
	keep        bool
	postgresBin string
	havenRev    string        // build haven from this commit instead of the working tree
	soak        time.Duration // haven drill soak for this long instead of the scenarios
	soakFaults  int           // ... or until this many faults
	soakSeed    uint64
}

// bench is one run of the harness.
type bench struct {
	opt    options
	ctx    context.Context
	root   string // repository root
	here   string // bench/pg
	dir    string // temporary directory: configs, data, the haven binary
	rawDir string // per-run results and daemon logs, under results/raw (gitignored)
	out    io.Writer

	havenBin string
	havenErr error // why haven cannot run

	machine  []string
	versions []string

	mu  sync.Mutex
	net *netlab.Net // the network of the cell that runs now
}

func (b *bench) setNet(n *netlab.Net) {
	b.mu.Lock()
	b.net = n
	b.mu.Unlock()
}

// closeNet removes the current network and every process in it.
func (b *bench) closeNet() {
	b.mu.Lock()
	n := b.net
	b.mu.Unlock()
	if n != nil {
		_ = n.Close()
	}
}

func main() {
	os.Exit(mainErr())
}

func mainErr() int {
	var opt options
	var targets, scenarios string
	flag.BoolVar(&opt.quick, "quick", false, "1 run of each fault per target (development)")
	flag.IntVar(&opt.runs, "runs", 5, "runs of each fault per target")
	flag.StringVar(&targets, "targets", defaultTargets, "targets, in the order they run within each scenario")
	flag.StringVar(&scenarios, "scenarios", "postmaster,node,switchover", "scenarios, in order")
	flag.DurationVar(&opt.every, "every", 20*time.Millisecond, "the writer's interval between two writes")
	flag.DurationVar(&opt.connTimeout, "connect-timeout", 500*time.Millisecond, "the writer's timeout for one connect (through HAProxy, with the password exchange)")
	flag.DurationVar(&opt.opTimeout, "op-timeout", time.Second, "the writer's timeout for one INSERT")
	flag.DurationVar(&opt.pre, "pre", 2*time.Second, "writes before the fault, plus a random part of the target's period")
	flag.DurationVar(&opt.post, "post", 3*time.Second, "writes after the first write acknowledged after the fault")
	flag.DurationVar(&opt.maxOutage, "max-outage", 2*time.Minute, "how long the writer waits for a write to be acknowledged after the fault")
	flag.DurationVar(&opt.settle, "settle", 3*time.Minute, "how long a cluster may take to be healthy (one primary, two streaming replicas, one synchronous)")
	flag.StringVar((*string)(&opt.install), "install", "auto", "auto (apt-get patroni, etcd-server, haproxy when missing), always, or never")
	flag.StringVar(&opt.out, "o", "", "markdown output (default bench/pg/results/latest.md; latest-quick.md with -quick)")
	flag.BoolVar(&opt.keep, "keep", false, "keep the temporary directory (configurations, data directories)")
	flag.StringVar(&opt.havenRev, "haven-rev", "", "build haven from this git commit (git archive) instead of the working tree")
	flag.StringVar(&opt.postgresBin, "bindir", "/usr/lib/postgresql/15/bin", "PostgreSQL's binary directory")
	flag.DurationVar(&opt.soak, "soak", 0, "run haven drill soak against the haven target for this long instead of the scenarios (docs/drills.md)")
	flag.IntVar(&opt.soakFaults, "soak-faults", 0, "with -soak: stop after this many faults")
	flag.Uint64Var(&opt.soakSeed, "soak-seed", 0, "with -soak: the random draw's seed")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opt.quick && !set["runs"] {
		opt.runs = 1
	}
	opt.targets = strings.Split(targets, ",")
	opt.scenarios = strings.Split(scenarios, ",")
	if err := validate(opt); err != nil {
		fmt.Fprintln(os.Stderr, "bench/pg:", err)
		return 2
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{opt: opt, ctx: ctx, out: os.Stdout}

	// First Ctrl-C: stop at once and clean up (every wait watches ctx);
	// should that hang, or on a second Ctrl-C, remove the network and
	// leave.
	harness.OnInterrupt(cancel, 30*time.Second, func() {
		b.closeNet()
		if b.dir != "" && !opt.keep {
			harness.UnmountUnder(b.dir) // the soak's tmpfs
			os.RemoveAll(b.dir)
		}
	})

	err := b.run(ctx)
	if err != nil {
		b.closeNet()
	}
	return harness.ExitCode(ctx, "bench/pg", err)
}

func validate(opt options) error {
	var known []string
	for _, t := range allTargets {
		known = append(known, t.name)
	}
	for _, t := range opt.targets {
		if _, ok := findTarget(t); !ok {
			return fmt.Errorf("-targets: %q is not one of %s", t, strings.Join(known, ", "))
		}
	}
	var names []string
	for _, s := range allScenarios {
		names = append(names, s.name)
	}
	for _, s := range opt.scenarios {
		if !slices.Contains(names, s) {
			return fmt.Errorf("-scenarios: %q is not one of %s", s, strings.Join(names, ", "))
		}
	}
	if err := opt.install.Check(); err != nil {
		return err
	}
	switch {
	case opt.runs < 1 || opt.runs > 50:
		return fmt.Errorf("-runs %d: must be 1 to 50", opt.runs)
	case opt.every < 5*time.Millisecond || opt.every > time.Second:
		return fmt.Errorf("-every %s: must be 5ms to 1s", opt.every)
	case opt.connTimeout < 50*time.Millisecond || opt.connTimeout > 30*time.Second:
		return fmt.Errorf("-connect-timeout %s: must be 50ms to 30s", opt.connTimeout)
	case opt.opTimeout < 100*time.Millisecond || opt.opTimeout > 30*time.Second:
		return fmt.Errorf("-op-timeout %s: must be 100ms to 30s", opt.opTimeout)
	case opt.pre < 500*time.Millisecond || opt.pre > time.Minute:
		return fmt.Errorf("-pre %s: must be 500ms to 1m", opt.pre)
	case opt.post < 500*time.Millisecond || opt.post > time.Minute:
		return fmt.Errorf("-post %s: must be 500ms to 1m", opt.post)
	case opt.maxOutage < 10*time.Second || opt.maxOutage > 10*time.Minute:
		return fmt.Errorf("-max-outage %s: must be 10s to 10m", opt.maxOutage)
	case opt.settle < 30*time.Second || opt.settle > 15*time.Minute:
		return fmt.Errorf("-settle %s: must be 30s to 15m", opt.settle)
	case !filepath.IsAbs(opt.postgresBin):
		return fmt.Errorf("-bindir %q: must be an absolute path", opt.postgresBin)
	}
	return nil
}

// run is the whole benchmark; everything it starts is gone when it returns.
func (b *bench) run(ctx context.Context) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: it installs packages, makes network namespaces and runs PostgreSQL as the postgres user")
	}
	// A killed run's daemons died with it (Pdeathsig) or are swept with
	// its namespaces by netlab.New (postgres started by Patroni is in its
	// own session): only its directory is left.
	dirs, err := harness.NewDirs("pg", false)
	if err != nil {
		return err
	}
	b.root, b.here, b.dir, b.rawDir = dirs.Root, dirs.Here, dirs.Work, dirs.Raw
	defer harness.RemoveWorkDir(b.dir, b.opt.keep)
	// postgres, as its own user, must reach its data directory below.
	if err := os.Chmod(b.dir, 0o711); err != nil {
		return err
	}
	if err := b.setup(ctx); err != nil {
		return err
	}
	if b.opt.soak > 0 {
		return b.runSoak(ctx)
	}

	var cells []cell
	for _, sn := range b.opt.scenarios {
		sc, _ := findScenario(sn)
		for _, tn := range b.opt.targets {
			t, _ := findTarget(tn)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			harness.Logf("%s · %s: starting", sc.name, t.name)
			cells = append(cells, b.runCell(ctx, t, sc))
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	md := b.report(cells)
	out, err := harness.WriteReport(b.out, b.here, b.opt.out, b.opt.quick, md)
	if err != nil {
		return err
	}
	harness.Logf("wrote %s (per-run results and daemon logs in %s)", out, b.rawDir)
	return nil
}
