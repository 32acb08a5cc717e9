// Command volume is haven's side-by-side benchmark of a replicated file
// volume. It builds three storage servers and two application nodes with
// network namespaces (internal/netlab) and runs on them in turn the
// guide's GlusterFS with its defaults (glusterd started by hand, a replica
// 3 volume, FUSE mounts naming every server) and haven's agents with a
// volume of the same shape. It measures:
//
//   - cut: a server's link cut for a minute while both application nodes
//     write 16 KiB files with fsync, 25 a second each: the longest write
//     (the stall), refused writes, how long until every brick's heal index
//     is empty, and whether every acknowledged file is on every brick;
//   - kill: the same with the server's GlusterFS processes killed (kill -9)
//     instead; the peer's glusterd is started again after 10 s, as its
//     systemd unit would, haven's by its agent;
//   - throughput: files created, written (16 KiB) and fsynced per second
//     through a mount, by 1 and by 4 writers, against the local disk.
//
// Bricks and the local disk's directory are on the same file system (the
// temporary directory's).
//
// Usage (as root, from the repository root):
//
//	go run ./bench/volume            # 3 runs of each fault per target (~30 min)
//	go run ./bench/volume -quick     # 1 run of each
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/netlab"
)

type options struct {
	quick     bool
	runs      int
	targets   []string
	scenarios []string
	cutFor    time.Duration
	healMax   time.Duration
	tputFor   time.Duration
	install   harness.Policy
	out       string
	keep      bool
}

var (
	allTargets   = []string{"glusterfs", "haven"}
	allScenarios = []string{"cut", "kill", "throughput"}
)

type bench struct {
	opt      options
	dirs     harness.Dirs
	dir      string
	havenBin string
	versions []string

	mu  sync.Mutex
	net *netlab.Net
}

func (b *bench) setNet(n *netlab.Net) {
	b.mu.Lock()
	b.net = n
	b.mu.Unlock()
}

func (b *bench) closeNet() {
	b.mu.Lock()
	n := b.net
	b.net = nil
	b.mu.Unlock()
	if n != nil {
		_ = n.Close()
	}
}

func main() { os.Exit(mainErr()) }

func mainErr() int {
	var opt options
	var targets, scenarios string
	flag.BoolVar(&opt.quick, "quick", false, "1 run of each fault per target, shorter throughput runs (development)")
	flag.IntVar(&opt.runs, "runs", 3, "runs of each fault per target")
	flag.StringVar(&targets, "targets", strings.Join(allTargets, ","), "targets, in the order they run")
	flag.StringVar(&scenarios, "scenarios", strings.Join(allScenarios, ","), "scenarios, in order")
	flag.DurationVar(&opt.cutFor, "cut-for", time.Minute, "how long a fault lasts (longer than GlusterFS's 42s ping timeout, to see it)")
	flag.DurationVar(&opt.healMax, "heal-max", 12*time.Minute, "how long to wait for the heal after a fault (GlusterFS's daemons crawl every 10 minutes by default)")
	flag.DurationVar(&opt.tputFor, "throughput-for", 15*time.Second, "how long each throughput run writes")
	flag.StringVar((*string)(&opt.install), "install", "auto", "auto (apt-get the missing packages), always, or never")
	flag.StringVar(&opt.out, "o", "", "markdown output (default bench/volume/results/latest.md; latest-quick.md with -quick)")
	flag.BoolVar(&opt.keep, "keep", false, "keep the temporary directory")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opt.quick {
		if !set["runs"] {
			opt.runs = 1
		}
		if !set["throughput-for"] {
			opt.tputFor = 5 * time.Second
		}
	}
	opt.targets = strings.Split(targets, ",")
	opt.scenarios = strings.Split(scenarios, ",")
	if err := validate(opt); err != nil {
		fmt.Fprintln(os.Stderr, "bench/volume:", err)
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{opt: opt}
	harness.OnInterrupt(cancel, 30*time.Second, func() {
		b.closeNet()
		if b.dir != "" && !opt.keep {
			harness.UnmountUnder(b.dir)
			os.RemoveAll(b.dir)
		}
	})
	err := b.run(ctx)
	b.closeNet()
	return harness.ExitCode(ctx, "bench/volume", err)
}

func validate(opt options) error {
	for _, t := range opt.targets {
		if !slices.Contains(allTargets, t) {
			return fmt.Errorf("-targets: %q is not one of %s", t, strings.Join(allTargets, ", "))
		}
	}
	for _, s := range opt.scenarios {
		if !slices.Contains(allScenarios, s) {
			return fmt.Errorf("-scenarios: %q is not one of %s", s, strings.Join(allScenarios, ", "))
		}
	}
	switch {
	case opt.runs < 1 || opt.runs > 20:
		return fmt.Errorf("-runs %d: must be 1 to 20", opt.runs)
	case opt.cutFor < 5*time.Second || opt.cutFor > 5*time.Minute:
		return fmt.Errorf("-cut-for %s: must be 5s to 5m", opt.cutFor)
	case opt.healMax < time.Minute || opt.healMax > time.Hour:
		return fmt.Errorf("-heal-max %s: must be 1m to 1h", opt.healMax)
	case opt.tputFor < 2*time.Second || opt.tputFor > 5*time.Minute:
		return fmt.Errorf("-throughput-for %s: must be 2s to 5m", opt.tputFor)
	}
	return opt.install.Check()
}

func (b *bench) run(ctx context.Context) error {
	var err error
	if b.dirs, err = harness.NewDirs("volume", true); err != nil {
		return err
	}
	b.dir = b.dirs.Work
	defer func() {
		b.closeNet()
		harness.UnmountUnder(b.dir)
		harness.RemoveWorkDir(b.dir, b.opt.keep)
	}()
	if err := b.opt.install.Ensure(ctx, "glusterfs-server", "glusterfs-client", "iproute2", "nftables"); err != nil {
		return err
	}
	if slices.Contains(b.opt.targets, "haven") {
		if b.havenBin, err = harness.BuildHaven(ctx, b.dirs.Root, b.dir); err != nil {
			return err
		}
	}
	gv, _ := harness.PackageVersion("glusterfs-server")
	b.versions = []string{"haven " + harness.HavenVersion(ctx, b.dirs.Root, true), "glusterfs-server " + gv}
	var results []result
	for _, sc := range b.opt.scenarios {
		for _, t := range b.opt.targets {
			rs, err := b.scenario(ctx, sc, t)
			if err != nil {
				return fmt.Errorf("%s on %s: %w", sc, t, err)
			}
			results = append(results, rs...)
		}
	}
	md := report(b.opt, results, b.versions)
	out, err := harness.WriteReport(os.Stdout, b.dirs.Here, b.opt.out, b.opt.quick, md)
	if err == nil {
		harness.Logf("report: %s", out)
	}
	return err
}
