package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/backup/base"
)

// incrSample is one full backup, 1 % of pgbench_accounts's pages changed,
// then an incremental backup.
type incrSample struct {
	Full, Incr time.Duration
	Copied     int64 // bytes of the data directory the incremental copied
	Load       string
}

type incrResult struct {
	tool    string
	samples []incrSample
	err     error
}

// incrCell is where the incremental is measured: the file repository,
// lz4, the most processes asked for.
func (b *bench) incrCell(tool string) cell {
	n := 0
	for _, p := range b.opt.procs {
		n = max(n, p)
	}
	return cell{tool, "file", "lz4", n}
}

// changePages updates every row of 1 % of pgbench_accounts's heap pages
// (those whose block number is round mod 100), spread over the whole
// table, then checkpoints, so that the backups find the pages written.
// pgbench_accounts is filled to 100 %, so the new row versions go to pages
// at the table's end and into the index: about 1 % more pages.
func (b *bench) changePages(ctx context.Context, round int) error {
	q := fmt.Sprintf("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE ((ctid::text::point)[0])::bigint %% 100 = %d", round%100)
	if err := b.sql(ctx, q); err != nil {
		return err
	}
	return b.sql(ctx, "CHECKPOINT")
}

func (b *bench) measureIncr(ctx context.Context) ([]*incrResult, error) {
	res := []*incrResult{{tool: "haven"}, {tool: "pgbackrest"}}
	step := 0
	for round := 1; round <= b.opt.runs; round++ {
		for _, r := range res {
			if r.err != nil {
				continue
			}
			step++
			load := harness.LoadAverage()
			s, err := b.incrOnce(ctx, b.incrCell(r.tool), step)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				harness.Logf("incremental %s: %v", r.tool, err)
				r.err = err
				continue
			}
			s.Load = load
			r.samples = append(r.samples, s)
			harness.Logf("round %d incremental %-10s full %5.1f s  incremental %5.1f s (%.0f %%), copied %.0f MiB  load %s",
				round, r.tool, s.Full.Seconds(), s.Incr.Seconds(), 100*s.Incr.Seconds()/s.Full.Seconds(), mib(s.Copied), load)
			b.saveRaw("incr", round, b.incrCell(r.tool), s)
		}
	}
	return res, nil
}

func (b *bench) incrOnce(ctx context.Context, c cell, step int) (incrSample, error) {
	var s incrSample
	switch c.tool {
	case "haven":
		cfg := base.Config{Conn: b.connConfig(), DataDir: b.data, Repo: b.repos[c.repo], Cluster: cluster,
			Compression: base.LZ4, Workers: c.procs}
		begin := time.Now()
		if _, err := base.Take(ctx, cfg); err != nil {
			return s, err
		}
		s.Full = time.Since(begin)
		if err := b.changePages(ctx, step); err != nil {
			return s, err
		}
		cfg.Incremental = true
		begin = time.Now()
		m, err := base.Take(ctx, cfg)
		if err != nil {
			return s, err
		}
		s.Incr, s.Copied = time.Since(begin), m.Copied
	default:
		args := []string{"--repo=1", "--process-max=" + strconv.Itoa(c.procs), "--compress-type=lz4"}
		begin := time.Now()
		if _, err := b.pgbackrest(ctx, 30*time.Minute, append(args, "--type=full", "backup")...); err != nil {
			return s, err
		}
		s.Full = time.Since(begin)
		if err := b.changePages(ctx, step); err != nil {
			return s, err
		}
		begin = time.Now()
		if _, err := b.pgbackrest(ctx, 30*time.Minute, append(args, "--type=incr", "backup")...); err != nil {
			return s, err
		}
		s.Incr = time.Since(begin)
		_, _, copied, err := b.pgbrLast(ctx, 1)
		if err != nil {
			return s, err
		}
		s.Copied = copied
	}
	return s, nil
}
