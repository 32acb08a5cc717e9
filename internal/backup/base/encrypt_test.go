package base

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/backup/repo/repotest"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestEncryptedBackup takes a backup, and archives its WAL, into an
// encrypted repository (repo.Encrypted): no stored file holds the data
// in the clear; verify passes; a restore, which fetches the WAL through
// restore_command, holds every row. Then one byte of a stored file is
// flipped: verify and restore name the file.
func TestEncryptedBackup(t *testing.T) {
	ctx := pgtest.Context(t)
	p := pgtest.Start(t, "db1", nil)
	const marker = "in-the-clear-"
	pgtest.Exec(t, p, "CREATE TABLE secret AS SELECT g AS id, '"+marker+"' || g AS v FROM generate_series(1, 20000) g")
	repoDir := testenv.SearchableDir(t)
	r, err := repotest.OpenEncrypted(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	arch := startArchiver(t, p, r)
	cfg := backupConfig(t, p, r)
	cfg.Compression = None // the table's rows would be readable in a file stored in the clear
	m, err := Take(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	const query = "SELECT count(*) || ' ' || md5(string_agg(v, ',' ORDER BY id)) FROM secret"
	want := pgtest.Query(t, p, query)
	arch.waitArchived(t, p)
	arch.stop()
	if _, err := Verify(ctx, r, "shop", m.Label, 2); err != nil {
		t.Fatalf("verify: %v", err)
	}

	var files int
	filepath.WalkDir(repoDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files++
		if !bytes.HasPrefix(b, []byte("haven-e1")) || bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s is stored in the clear", path)
		}
		return nil
	})
	if files < 10 {
		t.Errorf("the repository holds %d files; want a backup's and the WAL archive's", files)
	}

	pgtest.Chown(t, repoDir)
	s := restoreAndStart(t, r, fetchCommand(t, repoDir), m.Label, Target{})
	if got := pgtest.Query(t, s, query); got != want {
		t.Errorf("restored: %s; want %s", got, want)
	}
	s.Stop(ctx, pg.StopImmediate)

	var victim File
	for _, f := range m.Files {
		if f.Stored > victim.Stored {
			victim = f
		}
	}
	flipByte(t, filepath.Join(repoDir, filepath.FromSlash(fileObject("shop", m.Label, victim.Path, m.Compression))), victim.Stored/2)
	if _, err := Verify(ctx, r, "shop", m.Label, 2); err == nil || !strings.Contains(err.Error(), victim.Path) {
		t.Errorf("verify after a flipped byte in %s: %v; want an error naming it", victim.Path, err)
	} else {
		t.Logf("verify: %v", err)
	}
	dir := filepath.Join(testenv.SearchableDir(t), "data")
	_, _, err = Restore(ctx, RestoreConfig{Repo: r, Cluster: "shop", Label: m.Label, DataDir: dir, RestoreCommand: "false"})
	if err == nil || !strings.Contains(err.Error(), victim.Path) {
		t.Errorf("restore after a flipped byte in %s: %v; want an error naming it", victim.Path, err)
	}
}
