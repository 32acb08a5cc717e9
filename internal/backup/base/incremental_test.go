package base

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestIncrementalVerifyAndDamage takes a full backup, changes a small
// table, and takes an incremental one, which copies far fewer bytes and
// restores the changed data (and the big table, from the full backup).
// Then one byte of a stored file is flipped: verify names the file, and
// restore refuses it and leaves a directory PostgreSQL will not start.
func TestIncrementalVerifyAndDamage(t *testing.T) {
	ctx := pgtest.Context(t)
	p := pgtest.Start(t, "db1", nil)
	pgtest.Exec(t, p, "CREATE TABLE big AS SELECT g AS id, repeat('y', 200) AS pad FROM generate_series(1, 200000) g")
	pgtest.Exec(t, p, "CREATE TABLE small (id int PRIMARY KEY, v int)")
	pgtest.Exec(t, p, "INSERT INTO small SELECT g, 0 FROM generate_series(1, 1000) g")
	pgtest.Exec(t, p, "VACUUM FREEZE") // set hint bits now, not during the incremental
	r, repoDir := newRepo(t)
	arch := startArchiver(t, p, r)

	cfg := backupConfig(t, p, r)
	cfg.Compression = Zstd
	full, err := Take(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, p, "UPDATE small SET v = v + 1 WHERE id <= 10")
	pgtest.Exec(t, p, "INSERT INTO small VALUES (1001, 7)")
	cfg.Incremental = true
	inc, err := Take(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("full backup %s: %d bytes copied (%d stored); incremental %s on %s: %d bytes copied (%d stored) of %d",
		full.Label, full.Copied, full.Stored, inc.Label, inc.Prior, inc.Copied, inc.Stored, inc.Bytes)
	if inc.Kind != "incremental" || inc.Prior != full.Label {
		t.Errorf("second backup: kind %s on %q, want incremental on %s", inc.Kind, inc.Prior, full.Label)
	}
	if inc.Copied*10 > full.Copied {
		t.Errorf("the incremental copied %d bytes, more than a tenth of the full backup's %d", inc.Copied, full.Copied)
	}
	want := pgtest.Query(t, p, "SELECT (SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM small) || ' ' || (SELECT count(*) FROM big)")
	arch.waitArchived(t, p)
	if _, err := Verify(ctx, r, "shop", inc.Label, 2); err != nil {
		t.Fatalf("verify of a sound backup: %v", err)
	}
	ms, err := List(ctx, r, "shop")
	if err != nil || len(ms) != 2 {
		t.Fatalf("list: %d backups, %v; want 2", len(ms), err)
	}
	arch.stop()
	pgtest.Chown(t, repoDir)
	fetch := fetchCommand(t, repoDir)

	s := restoreAndStart(t, r, fetch, inc.Label, Target{})
	if got := pgtest.Query(t, s, "SELECT (SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM small) || ' ' || (SELECT count(*) FROM big)"); got != want {
		t.Errorf("restored from the incremental: %s, want %s", got, want)
	}
	s.Stop(ctx, pg.StopImmediate)

	// Flip one byte in the middle of the biggest file the incremental
	// takes from the full backup.
	var victim File
	for _, f := range inc.Files {
		if f.Ref == full.Label && f.Stored > victim.Stored {
			victim = f
		}
	}
	obj := filepath.Join(repoDir, filepath.FromSlash(fileObject("shop", full.Label, victim.Path, full.Compression)))
	flipByte(t, obj, victim.Stored/2)

	_, err = Verify(ctx, r, "shop", inc.Label, 2)
	if err == nil || !strings.Contains(err.Error(), victim.Path) {
		t.Errorf("verify after a flipped byte in %s: %v; want an error naming it", victim.Path, err)
	} else {
		t.Logf("verify: %v", err)
	}
	dir := filepath.Join(testenv.SearchableDir(t), "data")
	_, _, err = Restore(ctx, RestoreConfig{Repo: r, Cluster: "shop", Label: inc.Label, DataDir: dir, RestoreCommand: fetch})
	if err == nil || !strings.Contains(err.Error(), victim.Path) {
		t.Errorf("restore after a flipped byte in %s: %v; want an error naming it", victim.Path, err)
	} else {
		t.Logf("restore: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "global", "pg_control")); err == nil {
		t.Error("the refused restore wrote global/pg_control: PostgreSQL could start on it")
	}
}

func flipByte(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x01
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// cancelAfter is a repository that cancels a context once n objects are
// stored: a backup stopped half-way.
type cancelAfter struct {
	repo.Repository
	n      int64
	puts   atomic.Int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Put(ctx context.Context, name string, r io.Reader, size int64) error {
	if c.puts.Add(1) == c.n {
		c.cancel()
	}
	return c.Repository.Put(ctx, name, r, size)
}

// TestStoppedBackup stops a backup half-way (its context ends after 100
// files): it is not listed, cannot be restored or verified, the server
// has no backup left running, and the next backup succeeds.
func TestStoppedBackup(t *testing.T) {
	ctx := pgtest.Context(t)
	p := pgtest.Start(t, "db1", nil)
	pgtest.Exec(t, p, "CREATE TABLE big AS SELECT g AS id, repeat('y', 200) AS pad FROM generate_series(1, 50000) g")
	r, _ := newRepo(t)
	arch := startArchiver(t, p, r)

	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cfg := backupConfig(t, p, r)
	cfg.Repo = &cancelAfter{Repository: r, n: 100, cancel: cancel}
	_, err := Take(bctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a backup whose context ended: %v; want context.Canceled", err)
	}
	var stored int
	r.List(ctx, "shop/base/", func(repo.Info) error { stored++; return nil })
	ms, err := List(ctx, r, "shop")
	if err != nil || len(ms) != 0 {
		t.Errorf("after a stopped backup (%d objects stored): %d listed, %v; want none", stored, len(ms), err)
	}
	if _, _, err := Restore(ctx, RestoreConfig{Repo: r, Cluster: "shop", DataDir: filepath.Join(testenv.SearchableDir(t), "data"), RestoreCommand: "false"}); !repo.IsNotExist(err) {
		t.Errorf("restore with only a stopped backup: %v; want no backup", err)
	}
	testenv.Poll(t, pgtest.Timeout, "the server ends the stopped backup's session", func() (bool, string) {
		n := pgtest.Query(t, p, "SELECT count(*)::text FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE '%pg_backup_start%'")
		return n == "0", n + " sessions that ran pg_backup_start"
	})
	cfg.Repo = r
	m, err := Take(ctx, cfg)
	if err != nil {
		t.Fatalf("the backup after a stopped one: %v", err)
	}
	if _, err := Verify(ctx, r, "shop", "", 2); err != nil {
		t.Fatal(err)
	}
	arch.waitArchived(t, p)
	arch.stop()
	t.Logf("a backup stopped after 100 of its files left %d objects and is not listed; the next, %s, is complete (%d files)", stored, m.Label, len(m.Files))
}
