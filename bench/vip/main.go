// Command vip is haven's side-by-side benchmark of the floating address. It
// builds three nodes and a client on one bridge with network namespaces
// (internal/netlab), runs keepalived 2.2.7 (its defaults, then VRRPv3 with
// advert_int 0.1) and haven on the nodes in turn, breaks the holder in the
// ways issue 3 lists, and measures from the client, with probes every 5ms
// that every node hears (internal/drill), how long the address went
// unanswered and how long two nodes answered for it at once.
//
// Usage (as root, from the repository root):
//
//	go run ./bench/vip                  # 10 runs of each fault per target (~30 min)
//	go run ./bench/vip -quick           # 3 runs of three faults (~5 min)
//
// See bench/vip/README.md for what each column means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/netlab"
)

type options struct {
	quick      bool
	runs       int
	lossRuns   int
	targets    []string
	scenarios  []string
	hold       time.Duration
	down       time.Duration
	post       time.Duration
	lossDur    time.Duration
	lossPct    int
	probeEvery time.Duration
	install    harness.Policy
	out        string
	keep       bool
}

// bench is one run of the harness.
type bench struct {
	opt    options
	ctx    context.Context
	root   string // repository root
	here   string // bench/vip
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

// closeNet removes the current network and everything in it.
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
	flag.BoolVar(&opt.quick, "quick", false, "3 runs each of kill, linkcut and handover (development)")
	flag.IntVar(&opt.runs, "runs", 10, "runs of each fault per target")
	flag.IntVar(&opt.lossRuns, "loss-runs", 1, "runs of the loss scenario per target")
	flag.StringVar(&targets, "targets", "keepalived,keepalived-fast,haven,haven-fast", "targets, in the order they run within each scenario")
	flag.StringVar(&scenarios, "scenarios", "kill,stop,linkcut,partition,handover,loss", "scenarios, in order")
	flag.DurationVar(&opt.hold, "hold", 3*time.Second, "how long each fault lasts before it is healed")
	flag.DurationVar(&opt.down, "down", 6*time.Second, "how long a killed daemon (kill) or a stopped keepalived (handover) stays down before it is started again")
	flag.DurationVar(&opt.post, "post", 5*time.Second, "how long the probes go on after the heal")
	flag.DurationVar(&opt.lossDur, "loss-d", time.Minute, "duration of the loss scenario")
	flag.IntVar(&opt.lossPct, "loss-pct", 5, "loss between the nodes in the loss scenario, percent")
	flag.DurationVar(&opt.probeEvery, "probe", 5*time.Millisecond, "probe interval")
	flag.StringVar((*string)(&opt.install), "install", "auto", "auto (apt-get keepalived when it is missing), always, or never")
	flag.StringVar(&opt.out, "o", "", "markdown output (default bench/vip/results/latest.md; latest-quick.md with -quick)")
	flag.BoolVar(&opt.keep, "keep", false, "keep the temporary directory (configs, etcd data)")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opt.quick {
		if !set["runs"] {
			opt.runs = 3
		}
		if !set["scenarios"] {
			scenarios = "kill,linkcut,handover"
		}
	}
	opt.targets = strings.Split(targets, ",")
	opt.scenarios = strings.Split(scenarios, ",")
	if err := validate(opt); err != nil {
		fmt.Fprintln(os.Stderr, "bench/vip:", err)
		return 2
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{opt: opt, ctx: ctx, out: os.Stdout}

	// First Ctrl-C: stop at once and clean up (every wait watches ctx);
	// should that hang, or on a second Ctrl-C, remove the network and
	// leave.
	harness.OnInterrupt(cancel, 20*time.Second, func() {
		b.closeNet()
		if b.dir != "" && !opt.keep {
			os.RemoveAll(b.dir)
		}
	})

	err := b.run(ctx)
	if err != nil {
		b.closeNet()
	}
	return harness.ExitCode(ctx, "bench/vip", err)
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
	case opt.runs < 1 || opt.runs > 100:
		return fmt.Errorf("-runs %d: must be 1 to 100", opt.runs)
	case opt.lossRuns < 1 || opt.lossRuns > 10:
		return fmt.Errorf("-loss-runs %d: must be 1 to 10", opt.lossRuns)
	case opt.hold < 100*time.Millisecond || opt.hold > time.Minute:
		return fmt.Errorf("-hold %s: must be 100ms to 1m", opt.hold)
	case opt.down < 100*time.Millisecond || opt.down > time.Minute:
		return fmt.Errorf("-down %s: must be 100ms to 1m", opt.down)
	case opt.post < time.Second || opt.post > time.Minute:
		return fmt.Errorf("-post %s: must be 1s to 1m", opt.post)
	case opt.lossDur < time.Second || opt.lossDur > 10*time.Minute:
		return fmt.Errorf("-loss-d %s: must be 1s to 10m", opt.lossDur)
	case opt.lossPct < 1 || opt.lossPct > 99:
		return fmt.Errorf("-loss-pct %d: must be 1 to 99", opt.lossPct)
	case opt.probeEvery < time.Millisecond || opt.probeEvery > 100*time.Millisecond:
		return fmt.Errorf("-probe %s: must be 1ms to 100ms", opt.probeEvery)
	}
	return nil
}

// run is the whole benchmark; everything it starts is gone when it returns.
func (b *bench) run(ctx context.Context) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: it installs packages and makes network namespaces")
	}
	// A killed run's processes died with it (Pdeathsig) and netlab.New
	// sweeps its namespaces: only its directory is left.
	dirs, err := harness.NewDirs("vip", false)
	if err != nil {
		return err
	}
	b.root, b.here, b.dir, b.rawDir = dirs.Root, dirs.Here, dirs.Work, dirs.Raw
	defer harness.RemoveWorkDir(b.dir, b.opt.keep)
	if err := b.setup(ctx); err != nil {
		return err
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
