package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/backup/base"
)

// cell is one combination measured: a tool with its settings, into one
// repository.
type cell struct {
	tool  string // haven, pgbackrest, pg_basebackup
	repo  string // file, s3 (pg_basebackup: its own directory)
	comp  string // lz4, zstd; pg_basebackup: plain, server-lz4
	procs int
}

func (c cell) String() string {
	return fmt.Sprintf("%s %s %s ×%d", c.tool, c.repo, c.comp, c.procs)
}

// sample is one backup, with its restore.
type sample struct {
	Backup  time.Duration
	Restore time.Duration // zero: not restored
	Stored  int64         // bytes in the repository
	Load    string        // load average just before
}

// result is a cell's samples.
type result struct {
	cell
	samples []sample
	err     error
}

func (r *result) median(f func(sample) time.Duration) time.Duration {
	var v []time.Duration
	for _, s := range r.samples {
		if d := f(s); d > 0 {
			v = append(v, d)
		}
	}
	return harness.Median(v)
}

func (b *bench) cells() []cell {
	var cs []cell
	for _, rp := range b.opt.repos {
		for _, c := range b.opt.comps {
			for _, n := range b.opt.procs {
				for _, tool := range []string{"haven", "pgbackrest"} {
					cs = append(cs, cell{tool, rp, c, n})
				}
			}
		}
	}
	return append(cs, cell{"pg_basebackup", "file", "plain", 1}, cell{"pg_basebackup", "file", "server-lz4", 1})
}

// measureFull takes and restores a full backup in every cell, once per
// round, the cells in the same order in every round.
func (b *bench) measureFull(ctx context.Context) ([]*result, error) {
	var res []*result
	for _, c := range b.cells() {
		res = append(res, &result{cell: c})
	}
	for round := 1; round <= b.opt.runs; round++ {
		for _, r := range res {
			if r.err != nil {
				continue
			}
			load := harness.LoadAverage()
			s, err := b.fullOnce(ctx, r.cell, round)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				harness.Logf("%s: %v", r.cell, err)
				r.err = err
				continue
			}
			s.Load = load
			r.samples = append(r.samples, s)
			harness.Logf("round %d %-34s backup %6.1f s %6.0f MiB/s  restore %6.1f s %6.0f MiB/s  stored %5.0f MiB  load %s",
				round, r.cell, s.Backup.Seconds(), mib(b.dataSize)/s.Backup.Seconds(), s.Restore.Seconds(),
				rate(b.dataSize, s.Restore), mib(s.Stored), load)
			b.saveRaw("full", round, r.cell, s)
		}
	}
	return res, nil
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return mib(n) / d.Seconds()
}

func (b *bench) saveRaw(phase string, round int, c cell, v any) {
	data, _ := json.MarshalIndent(map[string]any{"phase": phase, "round": round, "cell": c.String(), "sample": v}, "", "  ")
	name := fmt.Sprintf("%s-%s-%s-%s-%d-r%d.json", phase, c.tool, c.repo, c.comp, c.procs, round)
	os.WriteFile(filepath.Join(b.dirs.Raw, name), data, 0o644)
}

func (b *bench) fullOnce(ctx context.Context, c cell, round int) (sample, error) {
	switch c.tool {
	case "haven":
		return b.havenOnce(ctx, c, round)
	case "pgbackrest":
		return b.pgbrOnce(ctx, c)
	default:
		return b.basebackupOnce(ctx, c)
	}
}

// profiled runs f, under a CPU profile written to the raw directory when
// -profile is set and this is the first round.
func (b *bench) profiled(round int, name string, f func() error) error {
	if !b.opt.profile || round != 1 {
		return f()
	}
	out, err := os.Create(filepath.Join(b.dirs.Raw, name+".pprof"))
	if err != nil {
		return err
	}
	defer out.Close()
	if err := pprof.StartCPUProfile(out); err != nil {
		return err
	}
	defer pprof.StopCPUProfile()
	return f()
}

func (b *bench) restoreDir() (string, error) {
	d := filepath.Join(b.dirs.Work, "restore")
	if err := os.RemoveAll(d); err != nil {
		return "", err
	}
	return d, b.mkdirPostgres(d)
}

func (b *bench) havenOnce(ctx context.Context, c cell, round int) (sample, error) {
	var s sample
	comp, err := base.ParseCompression(c.comp)
	if err != nil {
		return s, err
	}
	r := b.repos[c.repo]
	var m *base.Manifest
	name := fmt.Sprintf("haven-%s-%s-%d", c.repo, c.comp, c.procs)
	begin := time.Now()
	err = b.profiled(round, name+"-backup", func() error {
		var err error
		m, err = base.Take(ctx, base.Config{Conn: b.connConfig(), DataDir: b.data, Repo: r, Cluster: cluster,
			Compression: comp, Workers: c.procs})
		return err
	})
	if err != nil {
		return s, err
	}
	s.Backup, s.Stored = time.Since(begin), m.Stored
	dir, err := b.restoreDir()
	if err != nil {
		return s, err
	}
	begin = time.Now()
	err = b.profiled(round, name+"-restore", func() error {
		_, _, err := base.Restore(ctx, base.RestoreConfig{Repo: r, Cluster: cluster, Label: m.Label, DataDir: dir,
			Workers: c.procs, RestoreCommand: "/bin/false", Owner: "postgres"})
		return err
	})
	if err != nil {
		return s, err
	}
	s.Restore = time.Since(begin)
	return s, os.RemoveAll(dir)
}

// pgbrLast returns the label, the stored size and the bytes copied (of the
// data directory) of pgBackRest's newest backup in repository n.
func (b *bench) pgbrLast(ctx context.Context, n int) (label string, stored, copied int64, err error) {
	out, err := b.pgbackrest(ctx, time.Minute, "--repo="+strconv.Itoa(n), "--output=json", "info")
	if err != nil {
		return "", 0, 0, err
	}
	var info []struct {
		Backup []struct {
			Label string `json:"label"`
			Info  struct {
				Delta      int64 `json:"delta"`
				Repository struct {
					Delta int64 `json:"delta"`
				} `json:"repository"`
			} `json:"info"`
		} `json:"backup"`
	}
	if err := json.Unmarshal([]byte(out[strings.Index(out, "["):]), &info); err != nil || len(info) == 0 || len(info[0].Backup) == 0 {
		return "", 0, 0, fmt.Errorf("pgbackrest info: no backup in %s (%v)", harness.Truncate(out, 200), err)
	}
	last := info[0].Backup[len(info[0].Backup)-1]
	return last.Label, last.Info.Repository.Delta, last.Info.Delta, nil
}

func pgbrRepo(kind string) int {
	if kind == "s3" {
		return 2
	}
	return 1
}

func pgbrCompress(c string) []string {
	if c == "zstd" {
		return []string{"--compress-type=zst"}
	}
	return []string{"--compress-type=" + c}
}

func (b *bench) pgbrOnce(ctx context.Context, c cell) (sample, error) {
	var s sample
	n := pgbrRepo(c.repo)
	args := append([]string{"--repo=" + strconv.Itoa(n), "--type=full", "--process-max=" + strconv.Itoa(c.procs)}, pgbrCompress(c.comp)...)
	if c.comp == "zstd" {
		args = append(args, "--compress-level="+b.opt.pgbrLevel)
	}
	begin := time.Now()
	if _, err := b.pgbackrest(ctx, 30*time.Minute, append(args, "backup")...); err != nil {
		return s, err
	}
	s.Backup = time.Since(begin)
	label, stored, _, err := b.pgbrLast(ctx, n)
	if err != nil {
		return s, err
	}
	s.Stored = stored
	dir, err := b.restoreDir()
	if err != nil {
		return s, err
	}
	begin = time.Now()
	if _, err := b.pgbackrest(ctx, 30*time.Minute, "--repo="+strconv.Itoa(n), "--set="+label, "--pg1-path="+dir,
		"--process-max="+strconv.Itoa(c.procs), "restore"); err != nil {
		return s, err
	}
	s.Restore = time.Since(begin)
	return s, os.RemoveAll(dir)
}

// basebackupOnce runs pg_basebackup: plain format, or tar with the
// server compressing with lz4; WAL left out (-X none), as haven and
// pgBackRest take it from their archive; a fast checkpoint, as they do.
func (b *bench) basebackupOnce(ctx context.Context, c cell) (sample, error) {
	var s sample
	dst := filepath.Join(b.dirs.Work, "pg_basebackup")
	os.RemoveAll(dst)
	argv := []string{filepath.Join(b.opt.bindir, "pg_basebackup"), "-h", b.sock, "-p", strconv.Itoa(b.port), "-U", "postgres",
		"-D", dst, "-X", "none", "-c", "fast"}
	if c.comp == "server-lz4" {
		argv = append(argv, "-Ft", "--compress=server-lz4")
	}
	begin := time.Now()
	if out, err := harness.Run(ctx, 30*time.Minute, nil, argv...); err != nil {
		return s, fmt.Errorf("pg_basebackup: %w: %s", err, harness.LastLines(out, 3))
	}
	s.Backup = time.Since(begin)
	s.Stored = dirSize(dst)
	return s, os.RemoveAll(dst)
}
