package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/pg"
)

// The archive delay: while pgbench writes as fast as it can, a probe
// commits a row every probeEvery on a connection of its own and reads the
// server's WAL insert position just after the commit returned, an upper
// bound of the commit record's end. A poller lists the repository every
// pollEvery and works out from the object names how far the archive
// reaches; a probe's delay is from its commit's acknowledgement to the
// first listing that reaches its position. The same poller, the same
// listing of a directory, for both archivers.
const (
	probeEvery = 20 * time.Millisecond
	pollEvery  = 10 * time.Millisecond
	// warm-up before the first probe, and writes after the last one: the
	// segment holding the last probes must fill up, as it does under a
	// steady load, for a segment-at-a-time archiver to ship it.
	probeWarmup = 3 * time.Second
	probeTail   = 5 * time.Second
	// settle is how long probes may stay unresolved after the load.
	settle = 15 * time.Second
)

type delaySample struct {
	Delays     []time.Duration // one per resolved probe
	Unresolved int             // probes not archived within settle after the load
	TPS        float64
	WALRate    float64 // MiB/s of WAL the server wrote
	Load       string
}

type delayResult struct {
	tool    string
	samples []delaySample
	err     error
}

func (r *delayResult) all() (ds []time.Duration, unresolved int) {
	for _, s := range r.samples {
		ds = append(ds, s.Delays...)
		unresolved += s.Unresolved
	}
	return ds, unresolved
}

func (b *bench) measureDelay(ctx context.Context) ([]*delayResult, error) {
	if err := b.sql(ctx, "CREATE TABLE IF NOT EXISTS bench_probe (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"); err != nil {
		return nil, err
	}
	// pgBackRest pushes to every repository it has: here only the
	// directory, as haven's archiver does.
	dir := filepath.Join(b.dirs.Work, "pgbackrest")
	delayConf := filepath.Join(dir, "delay.conf")
	if err := b.writeConf(delayConf, fmt.Sprintf(`[global]
repo1-path=%[1]s/repo
log-level-console=warn
log-level-file=off
lock-path=%[1]s/lock
spool-path=%[1]s/spool
archive-async=y
compress-type=lz4

[global:archive-push]
process-max=2

[%[2]s]
pg1-path=%[3]s
pg1-socket-path=%[4]s
pg1-port=%[5]d
`, dir, stanza, b.data, b.sock, b.port)); err != nil {
		return nil, err
	}
	res := []*delayResult{{tool: "haven"}, {tool: "pgbackrest"}}
	for round := 1; round <= b.opt.runs; round++ {
		for _, r := range res {
			if r.err != nil {
				continue
			}
			load := harness.LoadAverage()
			s, err := b.delayOnce(ctx, r.tool, round, delayConf)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				harness.Logf("archive delay %s: %v", r.tool, err)
				r.err = err
				continue
			}
			s.Load = load
			r.samples = append(r.samples, s)
			harness.Logf("round %d archive delay %-10s p50 %v p99 %v max %v over %d probes, %d unresolved; pgbench %.0f tps, WAL %.1f MiB/s; load %s",
				round, r.tool, harness.Percentile(s.Delays, 50).Round(time.Millisecond), harness.Percentile(s.Delays, 99).Round(time.Millisecond),
				harness.Percentile(s.Delays, 100).Round(time.Millisecond), len(s.Delays), s.Unresolved, s.TPS, s.WALRate, load)
			b.saveRaw("archive", round, cell{tool: r.tool, repo: "file"}, s)
		}
	}
	return res, nil
}

func (b *bench) setArchiveCommand(ctx context.Context, cmd string) error {
	if err := b.sql(ctx, "ALTER SYSTEM SET archive_command = "+quoteLit(cmd)); err != nil {
		return err
	}
	return b.sql(ctx, "SELECT pg_reload_conf()")
}

func (b *bench) delayOnce(ctx context.Context, tool string, round int, delayConf string) (delaySample, error) {
	var s delaySample
	var end func() (pg.LSN, error)
	switch tool {
	case "haven":
		if err := b.setArchiveCommand(ctx, "/bin/true"); err != nil {
			return s, err
		}
		name := fmt.Sprintf("delay%d", round)
		stop := b.startArchiver(ctx, "file", name, "haven_delay")
		defer stop()
		walDir := filepath.Join(b.repoDirs["file"], name, "wal")
		end = func() (pg.LSN, error) { return havenEnd(walDir) }
		// Wait until the archiver streams: its first piece is stored.
		if err := pollUntil(ctx, 30*time.Second, func() bool { l, _ := end(); return l > 0 }); err != nil {
			return s, fmt.Errorf("haven's archiver stored nothing within 30s")
		}
	default:
		if err := b.setArchiveCommand(ctx, b.archivePush(delayConf)); err != nil {
			return s, err
		}
		defer b.setArchiveCommand(context.Background(), "/bin/true")
		archive := filepath.Join(b.dirs.Work, "pgbackrest", "repo", "archive", stanza)
		end = func() (pg.LSN, error) { return pgbrEnd(archive) }
	}
	return b.probeUnderLoad(ctx, end)
}

func pollUntil(ctx context.Context, d time.Duration, f func() bool) error {
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out")
		}
		if !harness.Sleep(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return nil
}

type probe struct {
	ack time.Time
	lsn pg.LSN
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+)`)

// probeUnderLoad runs pgbench for -archive-duration and the probes within
// it, and measures each probe's delay with end.
func (b *bench) probeUnderLoad(ctx context.Context, end func() (pg.LSN, error)) (delaySample, error) {
	var s delaySample
	c, err := b.connect(ctx)
	if err != nil {
		return s, err
	}
	defer c.Close(context.Background())
	var walStart string
	c.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&walStart)

	var mu sync.Mutex
	var probes []probe
	var delays []time.Duration
	next := 0
	pollCtx, stopPoll := context.WithCancel(ctx)
	defer stopPoll()
	polled := make(chan struct{})
	go func() { // the poller
		defer close(polled)
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		for {
			select {
			case <-pollCtx.Done():
				return
			case <-t.C:
			}
			reach, err := end()
			now := time.Now()
			if err != nil {
				continue
			}
			mu.Lock()
			for next < len(probes) && probes[next].lsn <= reach {
				delays = append(delays, now.Sub(probes[next].ack))
				next++
			}
			mu.Unlock()
		}
	}()

	var pgbenchOut string
	var pgbenchErr error
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		pgbenchOut, pgbenchErr = harness.Run(ctx, b.opt.archiveD+time.Minute, nil, filepath.Join(b.opt.bindir, "pgbench"), "-n",
			"-c", strconv.Itoa(b.opt.clients), "-j", "2", "-T", strconv.Itoa(int(b.opt.archiveD.Seconds())),
			"-h", b.sock, "-p", strconv.Itoa(b.port), "-U", "postgres", "postgres")
	}()
	began := time.Now()
	harness.Sleep(ctx, probeWarmup)
	for time.Since(began) < b.opt.archiveD-probeTail && ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.Exec(pctx, "INSERT INTO bench_probe DEFAULT VALUES")
		ack := time.Now()
		var lsn string
		if err == nil {
			err = c.QueryRow(pctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&lsn)
		}
		cancel()
		if err != nil {
			stopPoll()
			<-loadDone
			return s, fmt.Errorf("probe: %w", err)
		}
		l, err := pg.ParseLSN(lsn)
		if err != nil {
			return s, err
		}
		mu.Lock()
		probes = append(probes, probe{ack, l})
		mu.Unlock()
		harness.Sleep(ctx, probeEvery-time.Since(ack))
	}
	<-loadDone
	loadEnd := time.Now()
	var walEnd string
	c.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&walEnd)
	pollUntil(ctx, settle, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return next == len(probes)
	})
	stopPoll()
	<-polled
	if pgbenchErr != nil {
		return s, fmt.Errorf("pgbench: %w", pgbenchErr)
	}
	if m := tpsRE.FindStringSubmatch(pgbenchOut); m != nil {
		s.TPS, _ = strconv.ParseFloat(m[1], 64)
	}
	if a, err := pg.ParseLSN(walStart); err == nil {
		if z, err := pg.ParseLSN(walEnd); err == nil {
			s.WALRate = mib(int64(z-a)) / loadEnd.Sub(began).Seconds()
		}
	}
	mu.Lock()
	defer mu.Unlock()
	s.Delays, s.Unresolved = delays, len(probes)-next
	return s, nil
}

const segSize = 16 << 20

// havenEnd is how far haven's archive in walDir reaches: the end of the
// last whole segment, or of the pieces of a segment from offset 0 without
// a gap, whichever is further. The archiver stores in order, so what is
// before it is there.
func havenEnd(walDir string) (pg.LSN, error) {
	es, err := os.ReadDir(walDir)
	if err != nil {
		return 0, err
	}
	var reach pg.LSN
	type piece struct{ off, size int64 }
	pieces := map[uint64][]piece{}
	for _, e := range es {
		name := e.Name()
		if strings.Contains(name, ".haven-tmp") {
			continue
		}
		seg, rest, _ := strings.Cut(name, ".")
		no, ok := segNo(seg)
		if !ok {
			continue
		}
		if rest == "" {
			reach = max(reach, pg.LSN((no+1)*segSize))
			continue
		}
		offHex, ok := strings.CutSuffix(rest, ".partial")
		if !ok {
			continue
		}
		off, err := strconv.ParseInt(offHex, 16, 64)
		if err != nil {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		pieces[no] = append(pieces[no], piece{off, fi.Size()})
	}
	for no, ps := range pieces {
		sort.Slice(ps, func(i, j int) bool { return ps[i].off < ps[j].off })
		var at int64
		for _, p := range ps {
			if p.off > at {
				break
			}
			at = max(at, p.off+p.size)
		}
		reach = max(reach, pg.LSN(no*segSize+uint64(at)))
	}
	return reach, nil
}

// pgbrEnd is how far pgBackRest's archive of the stanza in dir reaches:
// the end of the last segment pushed (archive/STANZA/15-1/TTTTTTTTXXXXXXXX/
// SEGMENT-SHA1[.EXT]; pgBackRest writes a temporary name first).
func pgbrEnd(dir string) (pg.LSN, error) {
	var reach pg.LSN
	ids, err := filepath.Glob(filepath.Join(dir, "*", "[0-9A-F]*"))
	if err != nil {
		return 0, err
	}
	for _, d := range ids {
		es, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range es {
			reach = max(reach, pgbrSegEnd(e.Name()))
		}
	}
	return reach, nil
}

// pgbrSegEnd is the end of the segment an archived file of pgBackRest
// holds, 0 for other names.
func pgbrSegEnd(name string) pg.LSN {
	if strings.HasSuffix(name, ".tmp") || len(name) < 24+1+40 || name[24] != '-' {
		return 0
	}
	no, ok := segNo(name[:24])
	if !ok {
		return 0
	}
	return pg.LSN((no + 1) * segSize)
}

// segNo parses a WAL segment name of timeline 1.
func segNo(name string) (uint64, bool) {
	if len(name) != 24 || !strings.HasPrefix(name, "00000001") {
		return 0, false
	}
	log, err1 := strconv.ParseUint(name[8:16], 16, 32)
	seg, err2 := strconv.ParseUint(name[16:24], 16, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return log*0x100 + seg, true
}
