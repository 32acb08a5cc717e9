// Command galera is haven's side-by-side benchmark of a Galera cluster's
// failover. It builds three database nodes and a client with network
// namespaces (internal/netlab) and runs on them in turn the guide's own
// stack (MariaDB Galera started by hand, keepalived moving a database
// address; or HAProxy on the client with a clustercheck-style health
// check) and haven's agents with their router. It kills the node the
// writes go to (kill -9 of everything on it) or every node at once, at a
// random moment, and measures from a writer on the client, which commits
// a numbered row every 20 ms, how long the writes stopped, whether any
// acknowledged row was lost, and how the cluster came back.
//
// Usage (as root, from the repository root):
//
//	go run ./bench/galera            # 5 runs of each fault per target (~40 min)
//	go run ./bench/galera -quick     # 1 run of each (~10 min)
//
// See bench/galera/README.md for what each column means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"

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
	post        time.Duration // writes after the writes came back
	maxOutage   time.Duration // how long the writer waits for writes to come back
	personAfter time.Duration // when a person recovers a peer that did not recover by itself
	settle      time.Duration // how long a cluster may take to be healthy
	install     harness.Policy
	out         string
	keep        bool
}

// peerGivesUp is Galera's pc.wait_prim_timeout: a server started without
// a primary component to join exits after it. A -person-after of 30s
// raced it: in one run the recovery by hand met a server exiting by
// itself, and failed.
const peerGivesUp = 30 * time.Second

// bench is one run of the harness.
type bench struct {
	opt    options
	ctx    context.Context
	root   string // repository root
	here   string // bench/galera
	dir    string // temporary directory: configs, data, the haven binary
	rawDir string // per-run results and daemon logs, under results/raw (gitignored)
	out    io.Writer

	havenBin string
	havenErr error // why haven cannot run
	tools    tools

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
	flag.StringVar(&scenarios, "scenarios", "writer,stop,crash", "scenarios, in order")
	flag.DurationVar(&opt.every, "every", 20*time.Millisecond, "the writer's interval between two writes")
	flag.DurationVar(&opt.connTimeout, "connect-timeout", 500*time.Millisecond, "the writer's timeout for one connect")
	flag.DurationVar(&opt.opTimeout, "op-timeout", time.Second, "the writer's timeout for one INSERT")
	flag.DurationVar(&opt.pre, "pre", 2*time.Second, "writes before the fault, plus a random part of the target's period")
	flag.DurationVar(&opt.post, "post", 3*time.Second, "writes after the writes came back")
	flag.DurationVar(&opt.maxOutage, "max-outage", 3*time.Minute, "how long the writer waits for a write to be acknowledged after the fault")
	flag.DurationVar(&opt.personAfter, "person-after", time.Minute, "crash: when the peer's cluster is not writable this long after its servers started again, the bench does what a person would (galera_new_cluster on the most advanced node)")
	flag.DurationVar(&opt.settle, "settle", 4*time.Minute, "how long a cluster may take to be healthy (three synced nodes, writable through the router)")
	flag.StringVar((*string)(&opt.install), "install", "auto", "auto (apt-get the missing packages), always, or never")
	flag.StringVar(&opt.out, "o", "", "markdown output (default bench/galera/results/latest.md; latest-quick.md with -quick)")
	flag.BoolVar(&opt.keep, "keep", false, "keep the temporary directory (configurations, data directories)")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opt.quick && !set["runs"] {
		opt.runs = 1
	}
	opt.targets = strings.Split(targets, ",")
	opt.scenarios = strings.Split(scenarios, ",")
	if err := validate(opt); err != nil {
		fmt.Fprintln(os.Stderr, "bench/galera:", err)
		return 2
	}

	// The writer's errors are counted and reported; the driver's own log
	// of each broken connection would bury the progress lines.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{opt: opt, ctx: ctx, out: os.Stdout}
	// First Ctrl-C: stop at once and clean up (every wait watches ctx);
	// should that hang, or on a second Ctrl-C, remove the network and
	// leave.
	harness.OnInterrupt(cancel, 30*time.Second, func() {
		b.closeNet()
		if b.dir != "" && !opt.keep {
			os.RemoveAll(b.dir)
		}
	})
	err := b.run(ctx)
	if err != nil {
		b.closeNet()
	}
	return harness.ExitCode(ctx, "bench/galera", err)
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
	case opt.personAfter < peerGivesUp+5*time.Second || opt.personAfter >= opt.maxOutage:
		return fmt.Errorf("-person-after %s: must be %s or more (the peer's servers give up waiting for a primary component after %s and exit: the person comes after that) and less than -max-outage %s",
			opt.personAfter, peerGivesUp+5*time.Second, peerGivesUp, opt.maxOutage)
	case opt.settle < 30*time.Second || opt.settle > 15*time.Minute:
		return fmt.Errorf("-settle %s: must be 30s to 15m", opt.settle)
	}
	return nil
}

// run is the whole benchmark; everything it starts is gone when it returns.
func (b *bench) run(ctx context.Context) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("run as root: it installs packages, makes network namespaces and runs mariadbd as the mysql user")
	}
	dirs, err := harness.NewDirs("galera", false)
	if err != nil {
		return err
	}
	b.root, b.here, b.dir, b.rawDir = dirs.Root, dirs.Here, dirs.Work, dirs.Raw
	defer harness.RemoveWorkDir(b.dir, b.opt.keep)
	// mariadbd, as the mysql user, must reach its data directory below.
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
