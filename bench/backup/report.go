package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

type report struct {
	start, end string // load averages
	full       []*result
	incr       []*incrResult
	delay      []*delayResult
}

func (b *bench) render(rep *report) string {
	var sb strings.Builder
	run := fmt.Sprintf("%d round(s), pgbench scale %d (data directory %.0f MiB without pg_wal), median of the rounds", b.opt.runs, b.opt.scale, mib(b.dataSize))
	sb.WriteString(harness.Header("Base backups, restores and the WAL archive: haven against pgBackRest and pg_basebackup", run, b.opt.quick,
		append(b.machine, "load average at start: "+rep.start), b.versions))
	sb.WriteString("Set-up: PostgreSQL 15 on a unix socket (shared_buffers 512MB, checksums off); the data is pgbench's, " +
		"in the page cache; repositories: `file`, a directory on the same disk; `s3`, versitygw 1.8's posix backend on the same disk, " +
		"over https on 127.0.0.1 (pgBackRest speaks only https to S3). haven runs in the bench's process (internal/backup/base, " +
		"its WAL archiver streaming into each repository); pgBackRest 2.45 runs as postgres, archive-push asynchronous (process-max 2); " +
		"pg_basebackup writes to a directory. Every tool takes a fast checkpoint and waits until the WAL the backup needs is archived. " +
		"MiB/s is the data directory's size (the same number for every tool) over the wall time.\n\n")
	if len(rep.full) > 0 {
		b.renderFull(&sb, rep.full)
	}
	if len(rep.incr) > 0 {
		b.renderIncr(&sb, rep.incr)
	}
	if len(rep.delay) > 0 {
		b.renderDelay(&sb, rep.delay)
	}
	sb.WriteString("Load average at the end: " + rep.end + ".\n")
	return sb.String()
}

func (b *bench) renderFull(sb *strings.Builder, res []*result) {
	sb.WriteString("### Full backup and restore\n\n")
	tab := harness.NewTable(sb, harness.Left("repository"), harness.Left("compression"), harness.Right("processes"), harness.Left("tool"),
		harness.Right("backup MiB/s"), harness.Right("× pgBackRest"), harness.Right("restore MiB/s"), harness.Right("× pgBackRest"),
		harness.Right("stored MiB"), harness.Left("backup s, restore s per round (load)"))
	find := func(c cell) *result {
		for _, r := range res {
			if r.cell == c {
				return r
			}
		}
		return nil
	}
	for _, r := range res {
		if r.err != nil {
			tab.Partial([]string{r.repo, r.comp, fmt.Sprint(r.procs), r.tool}, "failed: "+harness.Truncate(r.err.Error(), 300))
			continue
		}
		bk, rs := r.median(func(s sample) time.Duration { return s.Backup }), r.median(func(s sample) time.Duration { return s.Restore })
		xb, xr := "", ""
		if r.tool == "haven" {
			if p := find(cell{"pgbackrest", r.repo, r.comp, r.procs}); p != nil && p.err == nil && len(p.samples) > 0 {
				pb, pr := p.median(func(s sample) time.Duration { return s.Backup }), p.median(func(s sample) time.Duration { return s.Restore })
				xb = fmt.Sprintf("%.2f×", pb.Seconds()/bk.Seconds())
				if rs > 0 && pr > 0 {
					xr = fmt.Sprintf("%.2f×", pr.Seconds()/rs.Seconds())
				}
			}
		}
		var stored []int64
		var runs []string
		for _, s := range r.samples {
			stored = append(stored, s.Stored)
			x := fmt.Sprintf("%.1f", s.Backup.Seconds())
			if s.Restore > 0 {
				x += fmt.Sprintf(", %.1f", s.Restore.Seconds())
			}
			runs = append(runs, x+" ("+strings.Fields(s.Load)[0]+")")
		}
		restore := "—"
		if rs > 0 {
			restore = fmt.Sprintf("%.0f", rate(b.dataSize, rs))
		}
		tab.Row(r.repo, r.comp, fmt.Sprint(r.procs), r.tool, fmt.Sprintf("%.0f", rate(b.dataSize, bk)), xb, restore, xr,
			fmt.Sprintf("%.0f", mib(harness.Median(stored))), strings.Join(runs, "; "))
	}
	sb.WriteString("\n× pgBackRest: pgBackRest's median time over haven's at the same repository, compression and processes; above 1, haven is faster. " +
		fmt.Sprintf("pgBackRest's zstd runs at compress-level %s (haven's zstd is klauspost/compress's SpeedFastest, about level 1; pgBackRest's default is 3), lz4 at its default, level 1 (haven: pierrec/lz4's Fast). ", b.opt.pgbrLevel) +
		"Restores write and fsync every file (both tools do) into an empty directory, owned by postgres.\n\n")
}

func (b *bench) renderIncr(sb *strings.Builder, res []*incrResult) {
	c := b.incrCell("")
	fmt.Fprintf(sb, "### Incremental after 1 %% of pages changed (%s repository, %s, %d processes)\n\n", c.repo, c.comp, c.procs)
	tab := harness.NewTable(sb, harness.Left("tool"), harness.Right("full s"), harness.Right("incremental s"), harness.Right("incremental ÷ full"),
		harness.Right("copied MiB"), harness.Left("per round: full s, incremental s (load)"))
	for _, r := range res {
		if r.err != nil {
			tab.Partial([]string{r.tool}, "failed: "+harness.Truncate(r.err.Error(), 300))
			continue
		}
		var full, incr []time.Duration
		var copied []int64
		var runs []string
		for _, s := range r.samples {
			full, incr, copied = append(full, s.Full), append(incr, s.Incr), append(copied, s.Copied)
			runs = append(runs, fmt.Sprintf("%.1f, %.1f (%s)", s.Full.Seconds(), s.Incr.Seconds(), strings.Fields(s.Load)[0]))
		}
		f, i := harness.Median(full), harness.Median(incr)
		tab.Row(r.tool, fmt.Sprintf("%.1f", f.Seconds()), fmt.Sprintf("%.1f", i.Seconds()), fmt.Sprintf("%.0f %%", 100*i.Seconds()/f.Seconds()),
			fmt.Sprintf("%.0f", mib(harness.Median(copied))), strings.Join(runs, "; "))
	}
	sb.WriteString("\nBetween the full and the incremental: `UPDATE pgbench_accounts SET abalance = abalance + 1` of every row on 1 % of its heap pages " +
		"(block number ≡ round mod 100, spread over the whole table), then CHECKPOINT. Copied: bytes of data-directory files the incremental copied again.\n\n")
}

func (b *bench) renderDelay(sb *strings.Builder, res []*delayResult) {
	fmt.Fprintf(sb, "### WAL archive delay under pgbench's full write rate (file repository)\n\n")
	tab := harness.NewTable(sb, harness.Left("archiver"), harness.Right("probes"), harness.Right("p50"), harness.Right("p99"), harness.Right("max"),
		harness.Right("not archived"), harness.Right("pgbench tps"), harness.Right("WAL MiB/s"), harness.Left("per run: p99 (load)"))
	name := map[string]string{"haven": "haven (streaming, flush every 1 s)", "pgbackrest": "pgBackRest archive-push, archive-async, process-max 2"}
	for _, r := range res {
		if r.err != nil {
			tab.Partial([]string{name[r.tool]}, "failed: "+harness.Truncate(r.err.Error(), 300))
			continue
		}
		ds, un := r.all()
		var tps, wal []float64
		var runs []string
		for _, s := range r.samples {
			tps, wal = append(tps, s.TPS), append(wal, s.WALRate)
			runs = append(runs, fmt.Sprintf("%s (%s)", ms(harness.Percentile(s.Delays, 99)), strings.Fields(s.Load)[0]))
		}
		tab.Row(name[r.tool], fmt.Sprint(len(ds)), ms(harness.Percentile(ds, 50)), ms(harness.Percentile(ds, 99)), ms(harness.Percentile(ds, 100)),
			fmt.Sprint(un), fmt.Sprintf("%.0f", harness.Median(tps)), fmt.Sprintf("%.1f", harness.Median(wal)), strings.Join(runs, "; "))
	}
	fmt.Fprintf(sb, "\npgbench -n -c %d -j 2 -T %d (TPC-B-like) writes as fast as it can; a probe commits a row every %v on its own connection and "+
		"reads pg_current_wal_insert_lsn() right after the commit returned (an upper bound of the commit's end). A poller lists the repository's directory "+
		"every %v and works out from the names how far the archive reaches (haven: whole segments and pieces from offset 0 without a gap; "+
		"pgBackRest: whole segments, the only thing it archives). Delay: from the commit's acknowledgement to the first listing that reaches it. "+
		"Probes start %v into the load and stop %v before its end, so that the segment holding the last probes fills as under a steady load; "+
		"not archived: probes the archive did not reach within %v after the load ended.\n\n",
		b.opt.clients, int(b.opt.archiveD.Seconds()), probeEvery, pollEvery, probeWarmup, probeTail, settle)
}

func ms(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2f s", d.Seconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}
