package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestBackupRunOnAReplica: in a cluster of a primary and a healthy
// replica, `haven backup run --wait` has the replica's agent take the
// backup (database.backup.from: replica, the default), waits for it and
// prints its label and size; the repository lists it as a backup of a
// replica, and `haven status` shows it as the newest backup, with the
// WAL archive the primary's agent runs. Then the agent taking a second
// backup is killed (SIGKILL) half way: nothing more is listed, and once
// it is back the backup that `haven backup run --wait` waits for is taken
// again and printed.
func TestBackupRunOnAReplica(t *testing.T) {
	store := t.TempDir()
	path, root, _, db2 := backupCluster(t, `{repositories: [{name: local, url: "file://`+store+`"}], compression: zstd}`)
	r := haven(t, 3*time.Minute, "backup", "run", "--wait", "-c", path)
	line := regexp.MustCompile(`(?m)^(\d{8}-\d{6}\.\d{3}F)  full  \d+\.\d MiB \(stored \d+\.\d [KM]iB\)  from db2, `)
	m := line.FindStringSubmatch(r.stdout)
	if r.code != 0 || m == nil {
		t.Fatalf("haven backup run --wait: want a full backup taken on db2 printed as %s:\n%s", line, r)
	}
	label := m[1]
	rp, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := base.List(context.Background(), rp, "shop")
	if err != nil || len(ms) != 1 || ms[0].Label != label || !ms[0].FromReplica {
		t.Fatalf("the repository lists %d backups (%v); want %s, of a replica", len(ms), err, label)
	}

	st := haven(t, 20*time.Second, "status", "-c", path)
	for _, want := range []string{
		"backups (file://" + store + "):",
		"newest: " + label + " full, ",
		"next scheduled: none (no database.backup.base_every)",
		"WAL archive: timeline 1, up to ",
		"(db1, archiving)",
	} {
		if !strings.Contains(st.stdout, want) {
			t.Errorf("haven status lacks %q:\n%s", want, st)
		}
	}
	if _, err := os.Stat(filepath.Join(store, "shop", "cluster.json")); err != nil {
		t.Errorf("the repository is not claimed: %v", err)
	}

	// kill -9 of the agent taking a backup: enough data that the copy
	// takes a while (about 200 MiB), a backup asked for and waited on,
	// db2's agent killed once the backup's first files are stored.
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=postgres", filepath.Join(root, "db1", "run"), cfg.Database.Port))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE big AS SELECT g, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 700000) g"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	run := start(t, "backup", "run", "--wait", "-c", path)
	testenv.Poll(t, 2*time.Minute, "a second backup stores files", func() (bool, string) {
		var labels []string
		err := rp.List(ctx, "shop/base/", func(i repo.Info) error {
			if !strings.HasPrefix(i.Name, "shop/base/"+label+"/") {
				labels = append(labels, i.Name)
			}
			return nil
		})
		return err == nil && len(labels) > 0, fmt.Sprint(labels, err)
	})
	if err := db2.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-db2.done
	if ms, err := base.List(ctx, rp, "shop"); err != nil || len(ms) != 1 {
		t.Fatalf("after the kill the repository lists %d backups (%v); want only %s", len(ms), err, label)
	}
	start(t, "agent", "-c", path, "-n", "db2")
	if code := run.wait(t, 4*time.Minute); code != 0 {
		t.Fatalf("haven backup run --wait: exit %d\n%s%s", code, run.stdout.String(), run.stderr.String())
	}
	m = regexp.MustCompile(`(?m)^(\d{8}-\d{6}\.\d{3}F)  full  `).FindStringSubmatch(run.stdout.String())
	ms, err = base.List(ctx, rp, "shop")
	if m == nil || err != nil || len(ms) != 2 || ms[1].Label != m[1] {
		t.Fatalf("after db2's agent came back the repository lists %d backups (%v); want %s and the one haven backup run printed:\n%s", len(ms), err, label, run.stdout.String())
	}
	t.Logf("the backup killed on db2 was taken again: %s", strings.TrimSpace(run.stdout.String()))
}
