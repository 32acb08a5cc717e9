package keeper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/backup/backuptest"
	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// The restore proofs that need the whole keeper: a WAL archiver that
// follows the primary from node to node, as the agent runs it
// (internal/agent/archive.go), here a process of the test binary
// (backuptest.Archive) so that it can be killed with SIGKILL like the
// node it runs on, and a writer that commits numbered rows through
// whichever node leads.

// archiveFollower runs an archiver process on the node that leads and
// publishes itself the primary, and kills it (SIGKILL) when that node
// stops leading: the agent stops its archiver then, and a node that dies
// takes its archiver with it.
type archiveFollower struct {
	t       *testing.T
	repoDir string
	sync    bool
	keepers []*testKeeper
	out     *testenv.Buffer

	mu     sync.Mutex
	node   *testKeeper
	proc   *exec.Cmd
	starts map[string]time.Time // when an archiver started on each node, last
	stop   chan struct{}
	done   chan struct{}
}

func followArchive(t *testing.T, repoDir string, sync bool, keepers ...*testKeeper) *archiveFollower {
	f := &archiveFollower{t: t, repoDir: repoDir, sync: sync, keepers: keepers, out: &testenv.Buffer{},
		starts: map[string]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go f.run()
	t.Cleanup(func() {
		f.kill()
		if t.Failed() {
			t.Logf("the archivers' log:\n%s", f.out.String())
		}
	})
	return f
}

func (f *archiveFollower) run() {
	defer close(f.done)
	for {
		f.mu.Lock()
		if f.node != nil && !f.node.Leader() {
			f.killLocked()
		}
		if f.node == nil {
			for _, k := range f.keepers {
				if k.Leader() && k.Members()[k.cfg.Node].Role == RolePrimary {
					f.startLocked(k)
					break
				}
			}
		}
		f.mu.Unlock()
		select {
		case <-f.stop:
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (f *archiveFollower) startLocked(k *testKeeper) {
	cc, err := k.srv.ConnConfig()
	if err != nil {
		f.t.Error(err)
		return
	}
	args := []string{"wal-archive", f.repoDir, "shop", cc.Host, strconv.Itoa(int(cc.Port))}
	if f.sync {
		args = append(args, "sync")
	}
	self, err := os.Executable()
	if err != nil {
		f.t.Error(err)
		return
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = f.out, f.out
	if err := cmd.Start(); err != nil {
		f.t.Errorf("start the archiver on %s: %v", k.cfg.Node, err)
		return
	}
	f.node, f.proc = k, cmd
	f.starts[k.cfg.Node] = time.Now()
	fmt.Fprintf(f.out, "--- archiver started on %s (pid %d)\n", k.cfg.Node, cmd.Process.Pid)
}

func (f *archiveFollower) killLocked() {
	if f.proc == nil {
		return
	}
	_ = f.proc.Process.Kill()
	_ = f.proc.Wait()
	fmt.Fprintf(f.out, "--- archiver on %s killed\n", f.node.cfg.Node)
	f.node, f.proc = nil, nil
}

// kill stops following and kills the archiver (SIGKILL).
func (f *archiveFollower) kill() {
	select {
	case <-f.stop:
	default:
		close(f.stop)
	}
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	f.killLocked()
}

// started returns when the archiver last started on node.
func (f *archiveFollower) started(node string) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts[node]
}

// connectLeader connects to the node that leads now.
func connectLeader(ks ...*testKeeper) func(context.Context) (*pgx.Conn, error) {
	return func(ctx context.Context) (*pgx.Conn, error) {
		for _, k := range ks {
			if k.Leader() {
				return k.srv.Connect(ctx)
			}
		}
		return nil, errors.New("no node leads")
	}
}

// trackCommitTS turns track_commit_timestamp on: the writer reads each
// commit's time, which recovery_target_time compares with.
func trackCommitTS(c *pg.Config) { c.Settings["track_commit_timestamp"] = "on" }

// archiveCluster starts keepers for db1 to db3 in sync mode, with every
// commit waiting for the archive when sync, and an archiver following
// the primary into a file repository; the table t exists.
func archiveCluster(t *testing.T, syncArchive bool) (ks []*testKeeper, f *archiveFollower, r *repo.File, repoDir string) {
	t.Helper()
	nodes := []string{"db1", "db2", "db3"}
	etcd := startEtcd(t)
	repoDir = testenv.SearchableDir(t)
	r, err := repo.OpenFile(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		ks = append(ks, startKeeper(t, etcd, newNode(t, n, trackCommitTS), nodes, ModeSync, func(c *Config) {
			// The base backup runs in the test's process, beside etcd and
			// the keepers, under the race detector: on two busy cores it
			// starved the keepers past a 1s lease, and the primary failed
			// over in the middle of every backup. These tests are about
			// the archive, not about how fast a failover is.
			c.Lease = 3 * time.Second
			if syncArchive {
				c.SyncArchive = wal.DefaultApplicationName
			}
		}))
	}
	primary, replicas := leaderOf(t, ks...)
	waitCluster(t, primary, replicas...)
	f = followArchive(t, repoDir, syncArchive, ks...)
	waitFor(t, "commits wait for a replica (and the archive when synchronous)", func() (string, bool) {
		s := primary.Sync()
		return fmt.Sprintf("%+v", s), s.Leader == primary.cfg.Node && s.K == 1 && (s.Archive != "") == syncArchive
	})
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY, pad text DEFAULT repeat('x', 100))")
	return ks, f, r, repoDir
}

// backUpReplica takes a base backup from replica after a checkpoint of
// primary (its backup starts at its last restartpoint).
func backUpReplica(t *testing.T, primary, replica *testKeeper, r repo.Repository) *base.Manifest {
	t.Helper()
	primary.exec(t, "CHECKPOINT")
	v, err := primary.node.tryQuery("SELECT pg_current_wal_insert_lsn()::text")
	if err != nil {
		t.Fatal(err)
	}
	target, _ := pg.ParseLSN(v)
	waitFor(t, "the replica replays the checkpoint", func() (string, bool) {
		v, err := replica.node.tryQuery("SELECT pg_last_wal_replay_lsn()::text")
		l, _ := pg.ParseLSN(v)
		return fmt.Sprint(v, err), err == nil && l >= target
	})
	cc, err := replica.srv.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	m, err := base.Take(pgtest.Context(t), base.Config{Conn: cc, DataDir: replica.srv.DataDir(), Repo: r, Cluster: "shop", Workers: 2, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("base backup %s from %s: LSN %s to %s", m.Label, replica.cfg.Node, m.StartLSN, m.StopLSN)
	return m
}

// restore restores the newest backup of r to target into a new
// directory, starts it and returns it once it has promoted.
func restore(t *testing.T, r repo.Repository, repoDir string, target base.Target) *pg.Server {
	t.Helper()
	pgtest.Chown(t, repoDir) // the archivers ran as root; restore_command runs as postgres
	dir := filepath.Join(testenv.SearchableDir(t), "data")
	_, st, err := base.Restore(pgtest.Context(t), base.RestoreConfig{Repo: r, Cluster: "shop", DataDir: dir,
		RestoreCommand: backuptest.FetchCommand(t, repoDir, "shop"), Target: target, Owner: "postgres", Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored %d files, %d bytes", st.Files, st.Bytes)
	return backuptest.StartRestored(t, dir)
}

// TestSyncArchiveLosesNoCommitWithEveryNode is the second proof
// (archive: synchronous): under a writer, every database node is lost at
// once (its postgres and its archiver killed with SIGKILL, its data
// directory moved out of reach); a cluster restored from the repository,
// from a base backup taken before and the WAL archive to its end, holds
// every acknowledged write.
func TestSyncArchiveLosesNoCommitWithEveryNode(t *testing.T) {
	loseEveryNode(t, true)
}

// TestAsyncArchiveLosingEveryNode is the same with the archive async, for
// comparison (HAVEN_ARCHIVE_COMPARE=1): it reports how many acknowledged
// writes the restore lacks (up to a second of them) and the commit
// latency without the archive in the quorum; it asserts nothing of the
// missing writes, which async mode allows.
func TestAsyncArchiveLosingEveryNode(t *testing.T) {
	if os.Getenv("HAVEN_ARCHIVE_COMPARE") == "" {
		t.Skip("a measurement for comparison: HAVEN_ARCHIVE_COMPARE=1 runs it")
	}
	loseEveryNode(t, false)
}

func loseEveryNode(t *testing.T, syncArchive bool) {
	ks, f, r, repoDir := archiveCluster(t, syncArchive)
	primary, replicas := leaderOf(t, ks...)
	w := backuptest.StartWriter(t, connectLeader(ks...), 10*time.Second)
	w.WaitRows(t, 200)
	backUpReplica(t, primary, replicas[0], r)
	w.WaitRows(t, 2000)

	// Every node at once, under the writer: the archiver and every
	// postgres killed, then the data directories moved away.
	var lost sync.WaitGroup
	lost.Go(f.kill)
	lost.Go(func() { crash(t, ks...) })
	lost.Wait()
	acks := w.Finish()
	for _, k := range ks {
		dir := k.srv.DataDir()
		if err := os.Rename(dir, dir+".lost"); err != nil {
			t.Fatal(err)
		}
	}

	s := restore(t, r, repoDir, base.Target{})
	p50, p99, longest := backuptest.Latency(acks)
	mode := map[bool]string{true: "synchronous", false: "async"}[syncArchive]
	if syncArchive {
		res := backuptest.Check(t, s, "the end of the archive", acks, w.Last())
		t.Logf("archive %s: %d writes acknowledged, %d rows restored, %d missing; commit latency p50 %v p99 %v max %v",
			mode, len(acks), res.Rows, len(res.Missing), p50, p99, longest)
		return
	}
	res, _ := backuptest.Compare(t, s, acks, w.Last())
	t.Logf("archive %s: %d writes acknowledged, %d rows restored, %d missing; commit latency p50 %v p99 %v max %v",
		mode, len(acks), res.Rows, len(res.Missing), p50, p99, longest)
}

// TestRestoreToPointsAcrossAFailover is the second half of the issue's
// first proof: a writer commits numbered rows on the primary; a base
// backup is taken from a replica; the primary's node is lost (postgres
// and its archiver killed with SIGKILL) in the middle of archiving; the
// new primary's archiver carries the archive on from where it ended,
// across the timeline switch, while the writer goes on. Restores to a
// commit time before the failover, one after it and to the end of the
// archive each hold exactly the acknowledged rows up to that point: none
// missing, none later. With the archive async and synchronous; the
// writer's pause over the failover is logged for both (with a
// synchronous archive commits on the new primary also wait until its
// archiver streams).
func TestRestoreToPointsAcrossAFailover(t *testing.T) {
	for _, syncArchive := range []bool{false, true} {
		t.Run(map[bool]string{true: "synchronous", false: "async"}[syncArchive], func(t *testing.T) {
			restoreAcrossFailover(t, syncArchive)
		})
	}
}

func restoreAcrossFailover(t *testing.T, syncArchive bool) {
	ks, f, r, repoDir := archiveCluster(t, syncArchive)
	primary, replicas := leaderOf(t, ks...)
	w := backuptest.StartWriter(t, connectLeader(ks...), 10*time.Second)
	w.WaitRows(t, 200)
	backUpReplica(t, primary, replicas[0], r)
	w.WaitRows(t, 300)
	before := w.Count() - 150

	old := primary
	crash(t, old)
	primary, replicas = leaderOf(t, replicas...)
	waitCluster(t, primary, replicas...)
	w.WaitRows(t, 300)
	after := w.Count() - 150
	w.WaitRows(t, 200)
	acks := w.Finish()
	if acks[after].At.Before(f.started(primary.cfg.Node)) {
		t.Fatalf("the target after the failover, row %d, was acknowledged before the new primary's archiver started", acks[after].ID)
	}
	gap, end := backuptest.LongestGap(acks)
	t.Logf("failover from %s to %s: the writer paused %v (until %s); the new primary's archiver started %v before the first commit after",
		old.cfg.Node, primary.cfg.Node, gap.Round(time.Millisecond), end.Format("15:04:05.000"),
		end.Sub(f.started(primary.cfg.Node)).Round(time.Millisecond))

	// The archive holds the new primary's WAL to its end (async: wait
	// for it), then the archiver is killed.
	v, err := primary.node.tryQuery("SELECT pg_current_wal_insert_lsn()::text")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the archiver has flushed "+v, func() (string, bool) {
		got, err := primary.node.tryQuery("SELECT coalesce(max(flush_lsn) >= '" + v + "'::pg_lsn, false)::text FROM pg_stat_replication WHERE application_name = 'haven_archive'")
		return fmt.Sprint(got, err), got == "true"
	})
	f.kill()

	check := func(name string, target base.Target, upTo int) {
		t.Helper()
		s := restore(t, r, repoDir, target)
		backuptest.Check(t, s, name, acks, upTo)
		ctx, cancel := context.WithTimeout(context.Background(), pgtest.Timeout)
		defer cancel()
		s.Stop(ctx, pg.StopImmediate)
	}
	for _, i := range []int{before, after} {
		if i = backuptest.TimeTarget(acks, i); i < 0 {
			t.Fatal("no row with a clear commit time boundary")
		}
		check(fmt.Sprintf("time %s (row %d's commit)", acks[i].TS.Format(time.RFC3339Nano), acks[i].ID), base.Target{Time: acks[i].TS}, acks[i].ID)
	}
	check("the end of the archive", base.Target{}, w.Last())
}
