package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/config"
)

// TestBackupWALFetch: wal-fetch, PostgreSQL's restore_command, writes a
// file the archive holds to the path asked, and exits 1 naming the file
// when the archive does not hold it (which ends recovery there).
func TestBackupWALFetch(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "backups")
	cfg := filepath.Join(dir, "haven.yaml")
	yaml := `cluster: shop
regions:
  east:
    nodes:
      db1: {address: 127.0.0.1}
database:
  nodes: [db1]
  backup:
    repositories:
      - {name: local, url: "file://` + store + `"}
coordination:
  members: [db1]
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	history := "1\t0/3000000\tno recovery target specified\n"
	if err := r.Put(context.Background(), "shop/wal/00000002.history", strings.NewReader(history), int64(len(history))); err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(dir, "pg_wal", "RECOVERYHISTORY")
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"backup", "wal-fetch", "-c", cfg, "00000002.history", dst}, &stdout, &stderr); code != 0 {
		t.Fatalf("wal-fetch of an archived file: exit %d: %s", code, stderr.String())
	}
	if got, err := os.ReadFile(dst); err != nil || string(got) != history {
		t.Errorf("wal-fetch wrote %q (%v); want the archived history file", got, err)
	}

	stderr.Reset()
	missing := filepath.Join(dir, "pg_wal", "RECOVERYXLOG")
	code := run([]string{"backup", "wal-fetch", "-c", cfg, "000000020000000000000009", missing}, &stdout, &stderr)
	if code != 1 {
		t.Errorf("wal-fetch of a file the archive lacks: exit %d; want 1", code)
	}
	if !strings.Contains(stderr.String(), "000000020000000000000009") {
		t.Errorf("the error does not name the file: %s", stderr.String())
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("wal-fetch of a missing file left %s behind (%v)", missing, err)
	}

	stderr.Reset()
	if code := run([]string{"backup", "wal-fetch", "-c", cfg, "--repository", "west", "00000002.history", dst}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), `no repository "west"`) {
		t.Errorf("wal-fetch from an unknown repository: exit %d, %s; want 1 naming it", code, stderr.String())
	}
}

// TestBackupWALFetchEncrypted: with database.backup.encryption_key_file,
// wal-fetch decrypts what the archive holds; with another key it exits 1
// saying so, and writes nothing.
func TestBackupWALFetchEncrypted(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "backup.key")
	if err := os.WriteFile(keyFile, []byte("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "haven.yaml")
	yaml := `cluster: shop
regions:
  east:
    nodes:
      db1: {address: 127.0.0.1}
database:
  nodes: [db1]
  backup:
    repositories:
      - {name: local, url: "file://` + filepath.Join(dir, "backups") + `"}
    encryption_key_file: backup.key
coordination:
  members: [db1]
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.OpenNamed(c.Database.Backup, "")
	if err != nil {
		t.Fatal(err)
	}
	history := "1\t0/3000000\tno recovery target specified\n"
	if err := r.Put(context.Background(), "shop/wal/00000002.history", strings.NewReader(history), int64(len(history))); err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(filepath.Join(dir, "backups", "shop", "wal", "00000002.history"))
	if err != nil || strings.Contains(string(stored), "no recovery target") {
		t.Fatalf("the history file is stored in the clear (%v)", err)
	}

	dst := filepath.Join(dir, "RECOVERYHISTORY")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"backup", "wal-fetch", "-c", cfg, "00000002.history", dst}, &stdout, &stderr); code != 0 {
		t.Fatalf("wal-fetch with the key: exit %d: %s", code, stderr.String())
	}
	if got, err := os.ReadFile(dst); err != nil || string(got) != history {
		t.Errorf("wal-fetch wrote %q (%v); want the archived history file", got, err)
	}

	os.Remove(dst)
	if err := os.WriteFile(keyFile, []byte("CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	code := run([]string{"backup", "wal-fetch", "-c", cfg, "00000002.history", dst}, &stdout, &stderr)
	if want := "the key does not decrypt repository file://" + filepath.Join(dir, "backups"); code != 1 || !strings.Contains(stderr.String(), want) {
		t.Errorf("wal-fetch with another key: exit %d, %s; want 1 and %q", code, stderr.String(), want)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("wal-fetch with another key wrote %s (%v)", dst, err)
	}
}
