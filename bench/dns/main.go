// Command dns is haven's side-by-side benchmark of the DNS traffic
// manager. It serves one zone from PowerDNS 4.7 (Debian bookworm's
// package, bind backend, Lua records in the default and the shared mode)
// and from haven's traffic manager, each pinned to CPU 0, and measures with
// dnsperf on CPU 1 how many answers per second each gives for a static
// record and for a health-checked one, and haven's with EDNS Client Subnet
// on every query. Then it kills a health-checked target and measures how
// long each server takes to stop answering with it.
//
// Usage (as root, from the repository root):
//
//	go run ./bench/dns           # 5 runs of 10 s per cell, 5 change runs (~12 min)
//	go run ./bench/dns -quick    # 1 run of 3 s per cell, 2 change runs (~2 min)
//
// See bench/dns/README.md for what each column means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

type options struct {
	quick      bool
	runs       int
	duration   time.Duration
	cells      []string
	changeRuns int
	install    harness.Policy
	out        string
	keep       bool
}

// bench is one run of the harness.
type bench struct {
	opt    options
	root   string // repository root
	here   string // bench/dns
	dir    string // temporary directory: configurations, logs, the haven binary
	rawDir string // dnsperf's output and the daemons' logs (gitignored)
	out    io.Writer

	havenBin string
	havenErr error // why haven cannot run

	machine  []string
	versions []string

	procs           procs
	ports           ports
	primary, backup *backend
	servers         map[string]*proc
	serverErr       map[string]string // why a server did not start
}

func main() {
	os.Exit(mainErr())
}

func mainErr() int {
	var opt options
	var cells string
	flag.BoolVar(&opt.quick, "quick", false, "1 run of 3 s per cell and 2 change runs (development)")
	flag.IntVar(&opt.runs, "runs", 5, "dnsperf runs per cell")
	flag.DurationVar(&opt.duration, "d", 10*time.Second, "duration of one dnsperf run")
	flag.StringVar(&cells, "targets", defaultCells, "cells (server and name), in the order they run within each round")
	flag.IntVar(&opt.changeRuns, "change-runs", 5, "runs of the answer-change measurement (0: none)")
	flag.StringVar((*string)(&opt.install), "install", "auto", "auto (apt-get dnsperf, pdns-server, pdns-backend-bind when missing), always, or never")
	flag.StringVar(&opt.out, "o", "", "markdown output (default bench/dns/results/latest.md; latest-quick.md with -quick)")
	flag.BoolVar(&opt.keep, "keep", false, "keep the temporary directory (configurations)")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if opt.quick {
		if !set["runs"] {
			opt.runs = 1
		}
		if !set["d"] {
			opt.duration = 3 * time.Second
		}
		if !set["change-runs"] {
			opt.changeRuns = 2
		}
	}
	opt.cells = strings.Split(cells, ",")
	if err := validate(opt); err != nil {
		fmt.Fprintln(os.Stderr, "bench/dns:", err)
		return 2
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{opt: opt, out: os.Stdout, servers: map[string]*proc{}, serverErr: map[string]string{}}

	harness.OnInterrupt(cancel, 20*time.Second, func() {
		b.procs.killAll()
		if b.dir != "" && !opt.keep {
			os.RemoveAll(b.dir)
		}
	})

	err := b.run(ctx)
	return harness.ExitCode(ctx, "bench/dns", err)
}

func validate(opt options) error {
	var known []string
	for _, c := range allCells {
		known = append(known, c.name)
	}
	for _, c := range opt.cells {
		if _, ok := findCell(c); !ok {
			return fmt.Errorf("-targets: %q is not one of %s", c, strings.Join(known, ", "))
		}
	}
	if err := opt.install.Check(); err != nil {
		return err
	}
	switch {
	case opt.runs < 1 || opt.runs > 50:
		return fmt.Errorf("-runs %d: must be 1 to 50", opt.runs)
	case opt.duration < time.Second || opt.duration > 5*time.Minute:
		return fmt.Errorf("-d %s: must be 1s to 5m", opt.duration)
	case opt.changeRuns < 0 || opt.changeRuns > 50:
		return fmt.Errorf("-change-runs %d: must be 0 to 50", opt.changeRuns)
	}
	return nil
}

// run is the whole benchmark; everything it starts is gone when it returns.
func (b *bench) run(ctx context.Context) error {
	if runtime.NumCPU() < 2 {
		return errors.New("needs 2 CPUs: the server runs on CPU 0, dnsperf on CPU 1")
	}
	dirs, err := harness.NewDirs("dns", false)
	if err != nil {
		return err
	}
	b.root, b.here, b.dir, b.rawDir = dirs.Root, dirs.Here, dirs.Work, dirs.Raw
	defer harness.RemoveWorkDir(b.dir, b.opt.keep)
	b.procs.dir = b.rawDir
	if err := b.setup(ctx); err != nil {
		return err
	}
	defer b.procs.stopAll()
	if err := b.startAll(ctx); err != nil {
		return err
	}
	defer b.primary.down()
	defer b.backup.down()

	results := map[string][]perfResult{}
	for r := 1; r <= b.opt.runs; r++ {
		for _, name := range b.opt.cells {
			c, _ := findCell(name)
			if b.serverErr[c.server] != "" {
				continue
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			port := b.ports.dns[c.server]
			var res perfResult
			if err := checkAnswer(ctx, port, c); err != nil {
				res = perfResult{Err: "before the run: " + err.Error()}
			} else {
				res = b.dnsperf(ctx, c, port, r)
			}
			if err := b.alive(c.server); err != nil && res.Err == "" {
				res.Err = err.Error()
			}
			harness.Logf("run %d/%d · %s: %s", r, b.opt.runs, c.name, fmtResult(res))
			results[c.name] = append(results[c.name], res)
		}
	}

	var changes []map[string]time.Duration
	var changeErrs []string
	cs := b.changeServers()
	for r := 1; r <= b.opt.changeRuns && len(cs) > 0; r++ {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		got, err := b.changeRun(ctx, cs)
		if err != nil {
			harness.Logf("change run %d/%d: %v", r, b.opt.changeRuns, err)
			changeErrs = append(changeErrs, err.Error())
			continue
		}
		var parts []string
		for _, s := range cs {
			parts = append(parts, s+" "+fmtChange(got[s]))
		}
		harness.Logf("change run %d/%d: %s", r, b.opt.changeRuns, strings.Join(parts, ", "))
		changes = append(changes, got)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	md := b.report(results, cs, changes, changeErrs)
	out, err := harness.WriteReport(b.out, b.here, b.opt.out, b.opt.quick, md)
	if err != nil {
		return err
	}
	harness.Logf("wrote %s (dnsperf's output and the daemons' logs in %s)", out, b.rawDir)
	return nil
}

// alive says whether server's process still runs.
func (b *bench) alive(server string) error {
	p := b.servers[server]
	if p == nil {
		return fmt.Errorf("%s: %w", server, errNoServer)
	}
	if p.exited() {
		return fmt.Errorf("%s exited: %s", server, p.tail(3))
	}
	return nil
}

// changeServers are the servers of the change runs that started.
func (b *bench) changeServers() []string {
	var out []string
	for _, s := range changeServers {
		if b.servers[s] != nil {
			out = append(out, s)
		}
	}
	return out
}
