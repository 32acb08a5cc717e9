package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/testenv"
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
	if code := run([]string{"backup", "wal-fetch", "-c", cfg, "--repository", "west", "00000002.history", dst}, &stdout, &stderr); code != 126 || !strings.Contains(stderr.String(), `no repository "west"`) {
		t.Errorf("wal-fetch from an unknown repository: exit %d, %s; want 126 (recovery stops) naming it", code, stderr.String())
	}

	// The same through a socket that haven serves for the postgres user,
	// with no configuration to read.
	ctx, cancel := context.WithCancel(context.Background())
	socket := filepath.Join(dir, "wal.sock")
	if err := wal.ServeSocket(ctx, socket, "", wal.Handler(r, "shop", nil)); err != nil {
		t.Fatal(err)
	}
	viaSocket := filepath.Join(dir, "pg_wal", "SOCKETHISTORY")
	if code := run([]string{"backup", "wal-fetch", "--socket", socket, "00000002.history", viaSocket}, &stdout, &stderr); code != 0 {
		t.Fatalf("wal-fetch --socket of an archived file: exit %d: %s", code, stderr.String())
	}
	if got, err := os.ReadFile(viaSocket); err != nil || string(got) != history {
		t.Errorf("wal-fetch --socket wrote %q (%v); want the archived history file", got, err)
	}
	stderr.Reset()
	if code := run([]string{"backup", "wal-fetch", "--socket", socket, "000000020000000000000009", missing}, &stdout, &stderr); code != 1 {
		t.Errorf("wal-fetch --socket of a file the archive lacks: exit %d (%s); want 1", code, stderr.String())
	}
	cancel()
	testenv.Poll(t, 5*time.Second, "the socket to be removed", func() (bool, string) {
		_, err := os.Stat(socket)
		return os.IsNotExist(err), fmt.Sprint(err)
	})
	stderr.Reset()
	if code := run([]string{"backup", "wal-fetch", "--socket", socket, "00000002.history", viaSocket + "2"}, &stdout, &stderr); code != 126 || !strings.Contains(stderr.String(), socket) {
		t.Errorf("wal-fetch --socket with nobody serving: exit %d, %s; want 126 (recovery stops, not ends early) naming the socket", code, stderr.String())
	}
	// A standby runs restore_command in its data directory, which holds
	// standby.signal: it exits 1, and the standby tries again later.
	standby := filepath.Join(dir, "standby")
	if err := os.MkdirAll(standby, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(standby, "standby.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(standby)
	stderr.Reset()
	if code := run([]string{"backup", "wal-fetch", "--socket", socket, "00000002.history", viaSocket + "3"}, &stdout, &stderr); code != 1 {
		t.Errorf("wal-fetch --socket with nobody serving, for a standby: exit %d, %s; want 1 (a standby is not stopped)", code, stderr.String())
	}
}
