// Command dr is haven's side-by-side benchmark of a second region: a
// standby cluster that replicates from the active region, the region's
// loss, and a planned switchover between the regions. It builds two
// regions with network namespaces (internal/netlab: east on one segment,
// west on another, a router between them), each with three database nodes
// and a client, runs a target on them (haven's database.dr with a witness
// on a third segment, async or sync; Patroni 3.0.2's standby_cluster, each
// region with its own etcd), and
// measures with writers that commit a numbered row every 20 ms:
//
//   - lag: how far west's standby leader is behind east's primary under
//     the writer, in bytes and seconds, sampled every 100 ms;
//   - loss: every link of east cut (its processes keep running): whether
//     west becomes writable by itself, how long after the operator's
//     command (or the cut, for a target that acts alone) a write is
//     acknowledged in west, and how many writes acknowledged in east are
//     not in west;
//   - switchover: the target's planned procedure from one region to the
//     other, the write pause a writer that follows the active region sees,
//     and the acknowledged writes lost.
//
// Usage (as root, from the repository root):
//
//	go run ./bench/dr            # 5 runs of each scenario per target
//	go run ./bench/dr -quick     # 1 run of each
//
// See bench/dr/README.md for what each column means.
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
	every       time.Duration // the writers' interval
	connTimeout time.Duration
	opTimeout   time.Duration
	lagFor      time.Duration // one lag window
	sampleEvery time.Duration // lag sampling interval
	pre         time.Duration // writes before a fault (plus up to 1s at random)
	post        time.Duration // writes after the writes came back
	observe     time.Duration // how long the bench waits for a target to promote by itself
	maxOutage   time.Duration
	settle      time.Duration
	wanDelay    time.Duration
	install     harness.Policy
	out         string
	keep        bool
	postgresBin string
}

// bench is one run of the harness.
type bench struct {
	opt    options
	root   string
	here   string
	dir    string
	rawDir string
	out    io.Writer

	machine  []string
	versions []string

	havenBin string // built when a haven target runs
	havenErr error

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
	b.net = nil
	b.mu.Unlock()
	if n != nil {
		if err := n.Close(); err != nil {
			harness.Logf("warning: %v", err)
		}
	}
}

func main() {
	os.Exit(mainErr())
}

func mainErr() int {
	var opt options
	var targets, scenarios string
	flag.BoolVar(&opt.quick, "quick", false, "1 run of each scenario per target, shorter lag window and observation (development)")
	flag.IntVar(&opt.runs, "runs", 5, "runs of each scenario per target")
	flag.StringVar(&targets, "targets", defaultTargets, "targets, in the order they run within each scenario")
	flag.StringVar(&scenarios, "scenarios", "lag,loss,switchover", "scenarios, in order")
	flag.DurationVar(&opt.every, "every", 20*time.Millisecond, "the writers' interval between two writes")
	flag.DurationVar(&opt.connTimeout, "connect-timeout", 500*time.Millisecond, "a writer's timeout for one connect")
	flag.DurationVar(&opt.opTimeout, "op-timeout", time.Second, "a writer's timeout for one INSERT")
	flag.DurationVar(&opt.lagFor, "lag-for", 30*time.Second, "one lag window (-quick: 10s)")
	flag.DurationVar(&opt.sampleEvery, "sample-every", 100*time.Millisecond, "the lag sampling interval")
	flag.DurationVar(&opt.pre, "pre", 3*time.Second, "writes before a fault, plus up to 1s at random")
	flag.DurationVar(&opt.post, "post", 3*time.Second, "writes after the writes came back")
	flag.DurationVar(&opt.observe, "observe", 30*time.Second, "how long after the region's loss the bench waits for a target that does not promote by itself before it acts as the operator (-quick: 15s)")
	flag.DurationVar(&opt.maxOutage, "max-outage", 2*time.Minute, "how long the bench waits for writes to come back")
	flag.DurationVar(&opt.settle, "settle", 4*time.Minute, "how long a target may take to start and to be ready")
	flag.DurationVar(&opt.wanDelay, "wan-delay", 20*time.Millisecond, "one-way delay the router adds between the regions (netlab's WANDelay; 0: none)")
	flag.DurationVar(&havenLease, "haven-lease", defaultHavenLease, "haven's database.dr.lease (the active-region record's lease)")
	flag.StringVar((*string)(&opt.install), "install", "auto", "auto (apt-get the targets' packages when missing), always, or never")
	flag.StringVar(&opt.out, "o", "", "markdown output (default bench/dr/results/latest.md; latest-quick.md with -quick)")
	flag.BoolVar(&opt.keep, "keep", false, "keep the temporary directory (configurations, data directories)")
	flag.StringVar(&opt.postgresBin, "bindir", "/usr/lib/postgresql/15/bin", "PostgreSQL's binary directory")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opt.quick {
		if !set["runs"] {
			opt.runs = 1
		}
		if !set["lag-for"] {
			opt.lagFor = 10 * time.Second
		}
		if !set["observe"] {
			opt.observe = 15 * time.Second
		}
	}
	opt.targets = strings.Split(targets, ",")
	opt.scenarios = strings.Split(scenarios, ",")
	if err := validate(opt); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dr:", err)
		return 2
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{opt: opt, out: os.Stdout}
	harness.OnInterrupt(cancel, 30*time.Second, func() {
		b.closeNet()
		if b.dir != "" && !opt.keep {
			os.RemoveAll(b.dir)
		}
	})
	err := b.run(ctx)
	b.closeNet()
	return harness.ExitCode(ctx, "bench/dr", err)
}

func validate(opt options) error {
	var known []string
	for _, k := range targetKinds {
		known = append(known, k.name)
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
	case opt.lagFor < 2*time.Second || opt.lagFor > 10*time.Minute:
		return fmt.Errorf("-lag-for %s: must be 2s to 10m", opt.lagFor)
	case opt.sampleEvery < 10*time.Millisecond || opt.sampleEvery > 10*time.Second:
		return fmt.Errorf("-sample-every %s: must be 10ms to 10s", opt.sampleEvery)
	case opt.pre < 500*time.Millisecond || opt.pre > time.Minute:
		return fmt.Errorf("-pre %s: must be 500ms to 1m", opt.pre)
	case opt.post < 500*time.Millisecond || opt.post > time.Minute:
		return fmt.Errorf("-post %s: must be 500ms to 1m", opt.post)
	case opt.observe < time.Second || opt.observe > 10*time.Minute:
		return fmt.Errorf("-observe %s: must be 1s to 10m", opt.observe)
	case opt.maxOutage < 10*time.Second || opt.maxOutage > 10*time.Minute:
		return fmt.Errorf("-max-outage %s: must be 10s to 10m", opt.maxOutage)
	case opt.settle < 30*time.Second || opt.settle > 15*time.Minute:
		return fmt.Errorf("-settle %s: must be 30s to 15m", opt.settle)
	case opt.wanDelay < 0 || opt.wanDelay > time.Second:
		return fmt.Errorf("-wan-delay %s: must be 0 to 1s", opt.wanDelay)
	case havenLease < 2*time.Second || havenLease > time.Minute:
		return fmt.Errorf("-haven-lease %s: must be 2s to 1m (database.dr.lease's range)", havenLease)
	case !filepath.IsAbs(opt.postgresBin):
		return fmt.Errorf("-bindir %q: must be an absolute path", opt.postgresBin)
	}
	return nil
}

// run is the whole benchmark; everything it starts is gone when it returns.
func (b *bench) run(ctx context.Context) error {
	if os.Geteuid() != 0 {
		return errors.New("run as root: it installs packages, makes network namespaces and runs PostgreSQL as the postgres user")
	}
	dirs, err := harness.NewDirs("dr", false)
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
	var cells []cell
	for _, sn := range b.opt.scenarios {
		sc, _ := findScenario(sn)
		for _, tn := range b.opt.targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			harness.Logf("%s · %s: starting", sc.name, tn)
			cells = append(cells, b.runCell(ctx, tn, sc))
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	out, err := harness.WriteReport(b.out, b.here, b.opt.out, b.opt.quick, b.report(cells))
	if err != nil {
		return err
	}
	harness.Logf("wrote %s (per-run results and daemon logs in %s)", out, b.rawDir)
	return nil
}
