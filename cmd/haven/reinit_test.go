package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/testenv"
)

// haven pg reinit NODE --from-backup rebuilds a replica from the newest
// base backup and the WAL archive instead of copying the primary: the
// replica ends with every row the primary has, including those written
// after the backup, and its agent restored a backup rather than cloned.
// The primary refuses to be rebuilt, and its data is untouched.
func TestReinitFromBackup(t *testing.T) {
	backups := filepath.Join(testenv.MemoryDir(t), "backups")
	path, root, _, db2 := backupCluster(t, `{target: "file://`+backups+`"}`)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	port := cfg.Database.Port

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	primary := connectNode(t, ctx, root, "db1", port)
	exec := func(sql string) {
		t.Helper()
		if _, err := primary.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	exec("CREATE TABLE orders (id int PRIMARY KEY)")
	exec("INSERT INTO orders SELECT generate_series(1, 1000)")

	// A base backup from the replica, as scheduled ones are taken.
	r, err := repo.OpenFile(backups)
	if err != nil {
		t.Fatal(err)
	}
	m, err := base.Take(ctx, base.Config{Conn: nodeConnConfig(t, root, "db2", port), DataDir: filepath.Join(root, "db2", "pg"),
		Repo: r, Cluster: "shop"})
	if err != nil {
		t.Fatalf("base backup from db2: %v", err)
	}
	t.Logf("base backup %s: %d bytes", m.Label, m.Bytes)
	exec("INSERT INTO orders SELECT generate_series(1001, 2000)") // after the backup

	if res := haven(t, 30*time.Second, "pg", "reinit", "-c", path, "db1"); res.code != 1 || !strings.Contains(res.stderr, "switch over first") {
		t.Errorf("haven pg reinit of the primary: %s\nwant exit 1 saying to switch over first", res)
	}
	res := haven(t, 150*time.Second, "pg", "reinit", "-c", path, "--from-backup", "db2")
	if res.code != 0 || !strings.Contains(res.stdout, "db2 is a replica again, rebuilt from the newest backup") {
		t.Fatalf("haven pg reinit --from-backup db2: %s", res)
	}
	log := db2.stderr.String()
	if !strings.Contains(log, "restored a base backup") || !strings.Contains(log, m.Label) {
		t.Errorf("db2's agent did not say it restored backup %s", m.Label)
	}
	if n := strings.Count(log, "cloned the primary"); n != 1 {
		t.Errorf("db2's agent cloned the primary %d times; want once, when it first started, not for the rebuild", n)
	}

	replica := connectNode(t, ctx, root, "db2", port)
	exec("INSERT INTO orders VALUES (2001)") // streamed, after the rebuild
	testenv.Poll(t, 30*time.Second, "db2 to hold all 2001 orders", func() (bool, string) {
		var n int
		err := replica.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n)
		return err == nil && n == 2001, fmt.Sprintf("%d orders, %v", n, err)
	})
	var n int
	if err := primary.QueryRow(ctx, "SELECT count(*) FROM orders").Scan(&n); err != nil || n != 2001 {
		t.Errorf("the primary holds %d orders (%v) after the refused rebuild; want 2001", n, err)
	}
}

// nodeConnConfig connects to node's postgres as the superuser over its
// unix socket (root/NODE/run, the documented layout).
func nodeConnConfig(t *testing.T, root, node string, port int) *pgx.ConnConfig {
	t.Helper()
	c, err := pgx.ParseConfig("sslmode=disable connect_timeout=5")
	if err != nil {
		t.Fatal(err)
	}
	c.Host, c.Port, c.User, c.Database = filepath.Join(root, node, "run"), uint16(port), pg.Superuser, "postgres"
	return c
}

func connectNode(t *testing.T, ctx context.Context, root, node string, port int) *pgx.Conn {
	t.Helper()
	c, err := pgx.ConnectConfig(ctx, nodeConnConfig(t, root, node, port))
	if err != nil {
		t.Fatalf("connect to %s: %v", node, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}
