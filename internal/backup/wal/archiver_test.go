package wal

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/repo/repotest"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
)

// TestMain lets the test binary serve as restore_command ("wal-fetch
// REPO CLUSTER %f %p") and as an archiver process that a test kills
// ("wal-archive REPO CLUSTER SOCKETDIR PORT").
func TestMain(m *testing.M) {
	pgtest.Main(m, map[string]func([]string) error{"wal-fetch": helperFetch, "wal-archive": helperArchive})
}

func helperFetch(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("usage: wal-fetch REPO CLUSTER %%f %%p")
	}
	r, err := repotest.Open(args[0])
	if err != nil {
		return err
	}
	return FetchFile(context.Background(), r, args[1], args[2], args[3])
}

func helperArchive(args []string) error {
	if len(args) != 4 {
		return fmt.Errorf("usage: wal-archive REPO CLUSTER SOCKETDIR PORT")
	}
	r, err := repotest.Open(args[0])
	if err != nil {
		return err
	}
	cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=%s port=%s user=postgres sslmode=disable", args[2], args[3]))
	if err != nil {
		return err
	}
	a, err := New(Config{Conn: cfg, Repo: r, Cluster: args[1], Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	a.Run(context.Background()) // until killed
	return nil
}

// startArchiver runs an Archiver of s until the test ends or stop is
// called, which waits for Run to return.
func startArchiver(t *testing.T, s *pg.Server, r repo.Repository, edit func(*Config)) (a *Archiver, reg *prometheus.Registry, stop func()) {
	t.Helper()
	cc, err := s.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	reg = prometheus.NewRegistry()
	cfg := Config{Conn: &cc.Config, Repo: r, Cluster: "shop", Registerer: reg,
		Logger: testenv.Logger(t)}
	if edit != nil {
		edit(&cfg)
	}
	a, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("archiver: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return a, reg, stop
}

// commit is one row the writer committed: when the commit was
// acknowledged and the server's WAL insert position just after.
type commit struct {
	id  int
	at  time.Time
	lsn pg.LSN
}

// writer commits numbered rows into t until stop, one per transaction.
type writer struct {
	mu      sync.Mutex
	commits []commit
	stop    chan struct{}
	done    chan error
}

func startWriter(t *testing.T, s *pg.Server, from int) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		ctx := context.Background()
		c, err := s.Connect(ctx)
		if err != nil {
			w.done <- err
			return
		}
		defer c.Close(ctx)
		for id := from; ; id++ {
			select {
			case <-w.stop:
				w.done <- nil
				return
			default:
			}
			if _, err := c.Exec(ctx, "INSERT INTO t VALUES ($1)", id); err != nil {
				w.done <- err
				return
			}
			at := time.Now()
			var l string
			if err := c.QueryRow(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&l); err != nil {
				w.done <- err
				return
			}
			lsn, _ := pg.ParseLSN(l)
			w.mu.Lock()
			w.commits = append(w.commits, commit{id, at, lsn})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *writer) finish(t *testing.T) []commit {
	t.Helper()
	close(w.stop)
	if err := <-w.done; err != nil {
		t.Fatalf("writer: %v", err)
	}
	return w.commits
}

// progress samples an Archiver's archived position every millisecond.
type progress struct {
	mu      sync.Mutex
	samples []sample
	stop    chan struct{}
	done    chan struct{}
}

type sample struct {
	at  time.Time
	pos pg.LSN
}

func watch(a *Archiver) *progress {
	p := &progress{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		var last pg.LSN
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			if _, pos := a.Archived(); pos != last {
				last = pos
				p.mu.Lock()
				p.samples = append(p.samples, sample{time.Now(), pos})
				p.mu.Unlock()
			}
		}
	}()
	return p
}

// delays returns, for each commit, how long after its acknowledgement the
// archive first held its WAL, sorted; commits never archived are left out.
func (p *progress) delays(cs []commit) []time.Duration {
	close(p.stop)
	<-p.done
	var ds []time.Duration
	for _, c := range cs {
		i, _ := slices.BinarySearchFunc(p.samples, c.lsn, func(s sample, l pg.LSN) int {
			if s.pos < l {
				return -1
			}
			return 1
		})
		if i < len(p.samples) {
			ds = append(ds, max(0, p.samples[i].at.Sub(c.at)))
		}
	}
	slices.Sort(ds)
	return ds
}

func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[min(len(ds)-1, int(q*float64(len(ds))))]
}

// baseBackup copies s's data directory with pg_basebackup, without WAL:
// a restore of it needs the archive from the backup's start on.
func baseBackup(t *testing.T, s *pg.Server) string {
	t.Helper()
	dst := filepath.Join(testenv.SearchableDir(t), "data")
	ctx, cancel := context.WithTimeout(context.Background(), pgtest.Timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, s.Binaries().Path("pg_basebackup"), "-h", s.SocketDir(), "-p", fmt.Sprint(s.Port()),
		"-U", "postgres", "-D", dst, "-X", "none", "-c", "fast").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_basebackup: %v: %s", err, out)
	}
	pgtest.Chown(t, dst)
	return dst
}

// restore starts a server on the base backup in dir that recovers from
// the archive in repoDir to its end, and returns it once promoted.
func restore(t *testing.T, dir, repoDir string) *pg.Server {
	t.Helper()
	bin := pgtest.Executable(t)
	pgtest.Chown(t, repoDir) // restore_command runs as postgres
	if err := os.WriteFile(filepath.Join(dir, "recovery.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	pgtest.Chown(t, dir)
	s := pgtest.Start(t, "restored", func(c *pg.Config) {
		c.DataDir = dir
		c.Settings["restore_command"] = fmt.Sprintf("%s wal-fetch %s shop %%f %%p", bin, repoDir)
	})
	ctx, cancel := context.WithTimeout(context.Background(), pgtest.Timeout)
	defer cancel()
	testenv.Poll(t, pgtest.Timeout, "the restored server ends recovery", func() (bool, string) {
		in, err := s.IsInRecovery(ctx)
		return err == nil && !in, fmt.Sprintf("in recovery %v, %v", in, err)
	})
	return s
}

// listArchive returns the archive's object names, without the directory.
func listArchive(t *testing.T, r repo.Repository) []string {
	t.Helper()
	var names []string
	err := r.List(context.Background(), "shop/wal/", func(i repo.Info) error {
		names = append(names, strings.TrimPrefix(i.Name, "shop/wal/"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// checkContiguous fails the test unless the archive's segments of
// timeline tli follow each other with none missing, and returns how many
// whole segments and pieces it holds.
func checkContiguous(t *testing.T, names []string, tli uint32) (segments, pieces int) {
	t.Helper()
	var prev uint64
	for _, n := range names {
		seg, isPiece := n, false
		if s, _, err := parsePieceName(n); err == nil {
			seg, isPiece = s, true
		}
		st, no, err := ParseSegmentName(seg)
		if err != nil || st != tli {
			continue
		}
		if isPiece {
			pieces++
		} else {
			segments++
		}
		if prev != 0 && no != prev && no != prev+1 {
			t.Errorf("archive: segment %s follows %s: segments missing between", seg, SegmentName(tli, prev))
		}
		prev = no
	}
	return segments, pieces
}

// waitArchived waits until the archive holds s's WAL up to now.
func waitArchived(t *testing.T, a *Archiver, s *pg.Server) {
	t.Helper()
	waitArchivedAt(t, a, pgtest.InsertLSN(t, s))
}

// TestArchiveKillAndRestore archives a primary under a writer with an
// archiver that is killed (SIGKILL) midway and one that takes over, then
// restores a base backup taken at the start from the archive alone, and
// finds every committed row.
func TestArchiveKillAndRestore(t *testing.T) {
	p := pgtest.Start(t, "db1", nil)
	pgtest.Exec(t, p, "CREATE TABLE t (id int PRIMARY KEY, pad text DEFAULT repeat('x', 200))")
	repoDir := testenv.SearchableDir(t)
	r, err := repotest.Open(repoDir)
	if err != nil {
		t.Fatal(err)
	}

	// The first archiver is a process of its own, to be killed.
	self, _ := os.Executable()
	cmd := exec.Command(self, "wal-archive", repoDir, "shop", p.SocketDir(), fmt.Sprint(p.Port()))
	var killedLog testenv.Buffer
	cmd.Stderr = &killedLog
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("the killed archiver's log:\n%s", killedLog.String())
		}
	})
	testenv.Poll(t, pgtest.Timeout, "the first archiver stores a piece", func() (bool, string) {
		names := listArchive(t, r)
		return len(names) > 0, fmt.Sprint(names)
	})
	backup := baseBackup(t, p)

	w := startWriter(t, p, 1)
	before := len(listArchive(t, r))
	testenv.Poll(t, pgtest.Timeout, "the first archiver stores the writer's WAL", func() (bool, string) {
		names := listArchive(t, r)
		return len(names) > before+1, fmt.Sprintf("%d objects, %d before the writer started", len(names), before)
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killedAt := len(listArchive(t, r))
	time.Sleep(time.Second) // the writer goes on while no archiver runs: the slot keeps the WAL
	backlog := pgtest.InsertLSN(t, p)
	a, reg, stop := startArchiver(t, p, r, nil)
	prog := watch(a)
	testenv.Poll(t, pgtest.Timeout, "the second archiver stores the backlog", func() (bool, string) {
		_, pos := a.Archived()
		return pos >= backlog, pos.String()
	})
	caughtUp := time.Now()
	time.Sleep(3 * time.Second) // the writer writes, for the second archiver to archive
	commits := w.finish(t)
	waitArchived(t, a, p)
	var steady []commit // committed once the second archiver had caught up
	for _, c := range commits {
		if c.at.After(caughtUp) {
			steady = append(steady, c)
		}
	}
	delays := prog.delays(steady)
	stop()
	testenv.LintMetrics(t, reg)

	names := listArchive(t, r)
	segs, pieces := checkContiguous(t, names, 1)
	t.Logf("%d rows committed; archive: %d objects when the first archiver was killed, now %d whole segments, %d pieces", len(commits), killedAt, segs, pieces)
	t.Logf("archive delay (commit acknowledged -> durable in the repository), second archiver, flush every 1s: p50 %v, p99 %v, max %v over %d commits",
		pct(delays, 0.5), pct(delays, 0.99), pct(delays, 1), len(delays))

	s := restore(t, backup, repoDir)
	got := pgtest.Query(t, s, "SELECT count(*)::text || ' ' || coalesce(max(id), 0)::text FROM t")
	want := fmt.Sprintf("%d %d", len(commits), len(commits))
	if got != want {
		t.Errorf("restored table: count and max id %s, want %s (every committed row)", got, want)
	}
	t.Logf("restored: %s rows", got)
}

// TestArchiveFollowsPromotion archives a standby, promotes it, and finds
// the new timeline's history file and WAL in the archive; a base backup
// of the old primary, restored from the archive, holds the rows of both
// timelines.
func TestArchiveFollowsPromotion(t *testing.T) {
	ctx := pgtest.Context(t)
	p := pgtest.Start(t, "db1", nil)
	if err := p.EnsureReplicationUser(ctx, pg.DefaultReplicationUser, "s3cret"); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateSlot(ctx, "db2"); err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, p, "CREATE TABLE t (id int PRIMARY KEY, pad text DEFAULT repeat('x', 200))")
	replica := pgtest.New(t, "db2", nil)
	if err := replica.Clone(ctx, pg.Upstream{Host: "127.0.0.1", Port: p.Port(), Password: "s3cret", Slot: "db2"}); err != nil {
		t.Fatal(err)
	}
	repoDir := testenv.SearchableDir(t)
	r, err := repotest.Open(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	a, _, stop := startArchiver(t, replica, r, nil)
	testenv.Poll(t, pgtest.Timeout, "the archiver stores a piece", func() (bool, string) {
		names := listArchive(t, r)
		return len(names) > 0, fmt.Sprint(names)
	})
	backup := baseBackup(t, p)

	w := startWriter(t, p, 1)
	time.Sleep(time.Second) // the writer writes on timeline 1
	first := w.finish(t)
	waitArchivedAt(t, a, pgtest.InsertLSN(t, p))
	if err := p.Stop(ctx, pg.StopFast); err != nil {
		t.Fatal(err)
	}
	tli, err := replica.Promote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	w = startWriter(t, replica, len(first)+1)
	time.Sleep(time.Second) // the writer writes on the new timeline
	second := w.finish(t)
	waitArchived(t, a, replica)
	if got, _ := a.Archived(); got != tli {
		t.Errorf("the archiver streams timeline %d, want %d", got, tli)
	}
	stop()

	names := listArchive(t, r)
	if !slices.Contains(names, HistoryName(tli)) {
		t.Errorf("archive: no %s in %v", HistoryName(tli), names)
	}
	s1, p1 := checkContiguous(t, names, 1)
	s2, p2 := checkContiguous(t, names, tli)
	t.Logf("%d rows on timeline 1, %d on timeline %d; archive: %d objects, %d whole segments and %d pieces on timeline 1, %d and %d on timeline %d",
		len(first), len(second), tli, len(names), s1, p1, s2, p2, tli)

	s := restore(t, backup, repoDir)
	got := pgtest.Query(t, s, "SELECT count(*)::text || ' ' || coalesce(max(id), 0)::text FROM t")
	n := len(first) + len(second)
	if want := fmt.Sprintf("%d %d", n, n); got != want {
		t.Errorf("restored table: count and max id %s, want %s (every committed row of both timelines)", got, want)
	}
	t.Logf("restored: %s rows, on timeline %s", got, pgtest.Query(t, s, "SELECT timeline_id::text FROM pg_control_checkpoint()"))
}

// waitArchivedAt waits until the archive holds the WAL up to target.
func waitArchivedAt(t *testing.T, a *Archiver, target pg.LSN) {
	t.Helper()
	testenv.Poll(t, pgtest.Timeout, "the archive reaches "+target.String(), func() (bool, string) {
		_, pos := a.Archived()
		return pos >= target, pos.String()
	})
}

// TestArchiveSynchronous makes the archiver a synchronous standby: every
// commit is acknowledged only once the repository holds its WAL.
func TestArchiveSynchronous(t *testing.T) {
	ctx := pgtest.Context(t)
	p := pgtest.Start(t, "db1", nil)
	pgtest.Exec(t, p, "CREATE TABLE t (id int PRIMARY KEY, pad text DEFAULT repeat('x', 200))")
	r, err := repotest.Open(testenv.SearchableDir(t))
	if err != nil {
		t.Fatal(err)
	}
	a, _, stop := startArchiver(t, p, r, func(c *Config) { c.Synchronous = true })
	if _, err := p.SetSynchronousStandbys(ctx, 1, []string{a.ApplicationName()}); err != nil {
		t.Fatal(err)
	}
	// Each commit's WAL must be archived when it is acknowledged: the
	// writer reads the insert position inside the transaction, before
	// its commit record, and the archive must be past it at the ack.
	c, err := p.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var latencies []time.Duration
	late := 0
	for id := 1; id <= 2000; id++ {
		began := time.Now()
		var l string
		if err := c.QueryRow(ctx, "INSERT INTO t (id) VALUES ($1) RETURNING pg_current_wal_insert_lsn()::text", id).Scan(&l); err != nil {
			t.Fatal(err)
		}
		latencies = append(latencies, time.Since(began))
		_, archived := a.Archived()
		lsn, _ := pg.ParseLSN(l)
		if archived <= lsn {
			late++
		}
	}
	stop()
	if late > 0 {
		t.Errorf("%d of %d commits were acknowledged before the archive held them", late, len(latencies))
	}
	slices.Sort(latencies)
	t.Logf("synchronous: %d commits, none acknowledged before archived; commit latency (durable in the repository) p50 %v, p99 %v",
		len(latencies), pct(latencies, 0.5), pct(latencies, 0.99))
}
