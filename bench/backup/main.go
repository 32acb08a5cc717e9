// Command backup is haven's side-by-side benchmark of base backups,
// restores and the WAL archive against pgBackRest 2.45 (Debian's package)
// and pg_basebackup, on the same PostgreSQL 15 server and the same data
// (pgbench at -scale), with the same compression and the same number of
// processes, into a file system repository and an S3 repository (versitygw
// over TLS on 127.0.0.1).
//
// Usage (as root, from the repository root):
//
//	go run ./bench/backup                 # 3 rounds, scale 60 (~30 min)
//	go run ./bench/backup -quick          # 1 round, scale 10
//
// See bench/backup/README.md for what is measured and how.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

type options struct {
	quick     bool
	scale     int
	runs      int
	repos     []string // file, s3
	comps     []string // lz4, zstd
	procs     []int
	phases    []string // full, incr, archive
	archiveD  time.Duration
	clients   int
	install   harness.Policy
	out       string
	keep      bool
	bindir    string
	profile   bool
	pgbrLevel string // pgBackRest's compress-level for zstd
}

func main() {
	var o options
	var repos, comps, procs, phases, install string
	flag.BoolVar(&o.quick, "quick", false, "development run: 1 round at scale 10, 15s of archive load")
	flag.IntVar(&o.scale, "scale", 60, "pgbench scale of the data (60: about 920 MiB)")
	flag.IntVar(&o.runs, "runs", 3, "rounds: each cell is measured once per round, the rounds interleave the targets")
	flag.StringVar(&repos, "repos", "file,s3", "repositories: file, s3")
	flag.StringVar(&comps, "compression", "lz4,zstd", "compressions")
	flag.StringVar(&procs, "procs", "1,2", "processes (haven: workers; pgBackRest: process-max)")
	flag.StringVar(&phases, "phases", "full,incr,archive", "what to measure: full (backup and restore), incr (incremental after 1% of pages changed), archive (WAL archive delay)")
	flag.DurationVar(&o.archiveD, "archive-duration", 40*time.Second, "pgbench's run for each archive delay measurement")
	flag.IntVar(&o.clients, "clients", 4, "pgbench clients during the archive delay measurement")
	flag.StringVar(&install, "install", "auto", "apt-get pgbackrest: auto (when missing), always, never")
	flag.StringVar(&o.out, "o", "", "report file (default bench/backup/results/latest.md)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory")
	flag.StringVar(&o.bindir, "bindir", "/usr/lib/postgresql/15/bin", "PostgreSQL 15's programs")
	flag.BoolVar(&o.profile, "profile", false, "write a CPU profile of each of haven's backups and restores in the first round to the raw directory")
	flag.StringVar(&o.pgbrLevel, "pgbackrest-zst-level", "1", "pgBackRest's compress-level for zstd (haven's zstd is klauspost's SpeedFastest, about level 1; pgBackRest's default is 3)")
	flag.Parse()
	o.repos, o.comps, o.phases = split(repos), split(comps), split(phases)
	for _, p := range split(procs) {
		var n int
		if _, err := fmt.Sscan(p, &n); err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "backup: -procs %q: want numbers ≥ 1\n", procs)
			os.Exit(2)
		}
		o.procs = append(o.procs, n)
	}
	o.install = harness.Policy(install)
	if err := o.install.Check(); err != nil {
		fmt.Fprintln(os.Stderr, "backup:", err)
		os.Exit(2)
	}
	if o.quick {
		if !flagSet("scale") {
			o.scale = 10
		}
		if !flagSet("runs") {
			o.runs = 1
		}
		if !flagSet("archive-duration") {
			o.archiveD = 15 * time.Second
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{opt: o}
	harness.OnInterrupt(cancel, 2*time.Minute, func() { b.stopPostgres(); b.kill() })
	err := b.run(ctx)
	os.Exit(harness.ExitCode(ctx, "backup", err))
}

func split(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

func (o options) has(phase string) bool {
	for _, p := range o.phases {
		if p == phase {
			return true
		}
	}
	return false
}
