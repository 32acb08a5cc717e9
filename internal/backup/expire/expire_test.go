package expire

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/backuptest"
	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestMain lets the test binary serve as restore_command ("wal-fetch
// REPO CLUSTER %f %p").
func TestMain(m *testing.M) {
	pgtest.Main(m, backuptest.Commands)
}

// TestExpire takes a full backup, an incremental on it, a second full one
// and an incremental on that, with WAL segments switched between them,
// and a stopped backup's objects beside them. With retain_count 1, a dry
// run plans to remove the first group, the stopped backup and the WAL
// before the second full backup's start, and removes nothing; the real
// run removes exactly that. The kept backups verify (their files and
// their WAL are all there), history files stay, and the newest backup
// restores to the archive's end with every row.
func TestExpire(t *testing.T) {
	ctx := pgtest.Context(t)
	p := pgtest.Start(t, "db1", nil)
	pgtest.Exec(t, p, "CREATE TABLE t (id int PRIMARY KEY)")
	dir := testenv.SearchableDir(t)
	r, err := repo.OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	stopArchiver := backuptest.StartArchiver(t, p, r)

	rows := 0
	step := func(incremental bool) *base.Manifest {
		t.Helper()
		for range 3 {
			rows++
			pgtest.Exec(t, p, fmt.Sprintf("INSERT INTO t VALUES (%d)", rows))
			pgtest.Exec(t, p, "SELECT pg_switch_wal()")
		}
		cc, err := p.ConnConfig()
		if err != nil {
			t.Fatal(err)
		}
		m, err := base.Take(ctx, base.Config{Conn: cc, DataDir: p.DataDir(), Repo: r, Cluster: "shop", Incremental: incremental, Logger: testenv.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	f1, i1, f2, i2 := step(false), step(true), step(false), step(true)
	if i1.Prior != f1.Label || i2.Prior != f2.Label || f2.Kind != "full" {
		t.Fatalf("backups %s, %s on %s, %s (%s), %s on %s: not two full backups each with an incremental", f1.Label, i1.Label, i1.Prior, f2.Label, f2.Kind, i2.Label, i2.Prior)
	}
	rows++
	pgtest.Exec(t, p, fmt.Sprintf("INSERT INTO t VALUES (%d)", rows))
	if err := stopArchiver(); err != nil {
		t.Fatalf("archiver: %v", err)
	}

	// A stopped backup, last written two hours ago, and a history file.
	stopped := "shop/base/20000101-000000.000F/data/base/1/1"
	if err := r.Put(ctx, stopped, strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, filepath.FromSlash(stopped)), old, old); err != nil {
		t.Fatal(err)
	}
	history := "shop/wal/00000001.history" // timeline 1 has none; recovery never asks for it
	if err := r.Put(ctx, history, strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}

	objects := func() map[string]bool {
		names := map[string]bool{}
		if err := r.List(ctx, "shop/", func(i repo.Info) error { names[i.Name] = true; return nil }); err != nil {
			t.Fatal(err)
		}
		return names
	}
	before := objects()
	cfg := Config{Repo: r, Cluster: "shop", Policy: Policy{RetainCount: 1}, DryRun: true, Logger: testenv.Logger(t)}
	dry, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := labels(dry.Expire); got != f1.Label+" "+i1.Label {
		t.Errorf("the plan expires %q, want the first full backup and its incremental, %s %s", got, f1.Label, i1.Label)
	}
	if got := labels(dry.Keep); got != f2.Label+" "+i2.Label {
		t.Errorf("the plan keeps %q, want %s %s", got, f2.Label, i2.Label)
	}
	if len(dry.Incomplete) != 1 || dry.Incomplete[0] != "20000101-000000.000F" {
		t.Errorf("the plan removes incomplete backups %v, want the stopped one", dry.Incomplete)
	}
	if want := f2.Start() - f2.Start()%wal.SegmentSize; dry.WALBefore != want || len(dry.WAL) == 0 {
		t.Errorf("the plan removes %d WAL objects before %s, want some, before %s", len(dry.WAL), dry.WALBefore, want)
	}
	if after := objects(); len(after) != len(before) {
		t.Fatalf("a dry run removed %d objects", len(before)-len(after))
	}

	cfg.DryRun = false
	done, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("expired %s and %s (%d objects, %d bytes), the stopped backup, and %d WAL objects (%d bytes) before %s",
		f1.Label, i1.Label, done.Objects, done.Bytes, len(done.WAL), done.WALBytes, done.WALBefore)
	after := objects()
	removed := map[string]bool{}
	for name := range before {
		if !after[name] {
			removed[name] = true
		}
	}
	want := map[string]bool{stopped: true}
	for _, name := range done.WAL {
		want[name] = true
	}
	for name := range before {
		if strings.HasPrefix(name, "shop/base/"+f1.Label+"/") || strings.HasPrefix(name, "shop/base/"+i1.Label+"/") {
			want[name] = true
		}
	}
	for name := range want {
		if !removed[name] {
			t.Errorf("%s is still there", name)
		}
	}
	for name := range removed {
		if !want[name] {
			t.Errorf("%s was removed, and the plan does not name it", name)
		}
	}
	for name := range after {
		if no, ok := segmentOf(path.Base(name)); ok && no < uint64(done.WALBefore)/wal.SegmentSize {
			t.Errorf("%s, before %s, is still there", name, done.WALBefore)
		}
	}
	if !after[history] {
		t.Errorf("the history file %s was removed", history)
	}
	ms, err := base.List(ctx, r, "shop")
	if err != nil || labels(ms) != f2.Label+" "+i2.Label {
		t.Fatalf("listed after expiry: %q, %v; want %s %s", labels(ms), err, f2.Label, i2.Label)
	}
	for _, m := range ms {
		if _, err := base.Verify(ctx, r, "shop", m.Label, 2); err != nil {
			t.Errorf("a kept backup does not verify: %v", err)
		}
	}
	if again, err := Run(ctx, cfg); err != nil || len(again.Expire)+len(again.Incomplete)+len(again.WAL) != 0 {
		t.Errorf("a second run: %d backups, %d incomplete, %d WAL objects, %v; want nothing to remove", len(again.Expire), len(again.Incomplete), len(again.WAL), err)
	}

	// The newest backup restores, through the WAL left, to the last row.
	pgtest.Chown(t, dir)
	data := filepath.Join(testenv.SearchableDir(t), "data")
	fetch := fmt.Sprintf("%s wal-fetch %s shop %%f %%p", pgtest.Executable(t), dir)
	if _, _, err := base.Restore(ctx, base.RestoreConfig{Repo: r, Cluster: "shop", DataDir: data, RestoreCommand: fetch, Owner: "postgres"}); err != nil {
		t.Fatal(err)
	}
	s := pgtest.Start(t, "restored", func(c *pg.Config) { c.DataDir = data })
	testenv.Poll(t, pgtest.Timeout, "the restored server ends recovery", func() (bool, string) {
		in, err := s.IsInRecovery(ctx)
		return err == nil && !in, fmt.Sprintf("in recovery %v, %v", in, err)
	})
	if got, want := pgtest.Query(t, s, "SELECT count(*)::text || ' ' || max(id)::text FROM t"), fmt.Sprintf("%d %d", rows, rows); got != want {
		t.Errorf("restored from %s after expiry: count and max %s, want %s", i2.Label, got, want)
	}
}
