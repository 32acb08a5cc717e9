package demo

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
)

// The third act's last scene: the cluster's agents archive its WAL into a
// backup repository, and a base backup is taken from a replica while the
// orders come in. After the failover, someone drops the orders table by
// mistake; the demo restores the backup to the moment before the drop and
// counts the orders it got back.

// RestoreResult summarises the restore scene.
type RestoreResult struct {
	// Label is the base backup restored, taken from Source.
	Label, Source string
	// XID is the transaction that dropped the table; recovery stopped
	// just before it.
	XID string
	// Recovered orders are in the restored copy; Missing are
	// acknowledged orders that are not (must be 0).
	Recovered, Missing int
}

// demoRepository is the act's backup repository, under its stage.
func demoRepository(dir string) string { return filepath.Join(dir, "backups") }

// nodeConn returns a superuser connection to node's PostgreSQL over its
// unix socket, which the demo's process reaches from outside the node's
// namespace (pg_hba maps root to postgres).
func nodeConn(dir, node string) *pgx.ConnConfig {
	cfg, _ := pgx.ParseConfig("sslmode=disable connect_timeout=5")
	cfg.Host = filepath.Join(dir, node, "run")
	cfg.Port = 5432
	cfg.User = pg.Superuser
	cfg.Database = "postgres"
	return cfg
}

// takeBackup takes a full base backup from replica into the act's
// repository, as a scheduled backup would (from a replica, so the
// primary is not loaded).
func takeBackup(ctx context.Context, dir, cluster, replica string) (*base.Manifest, error) {
	r, err := repo.OpenFile(demoRepository(dir))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return base.Take(ctx, base.Config{Conn: nodeConn(dir, replica), DataDir: filepath.Join(dir, replica, "pg"),
		Repo: r, Cluster: cluster})
}

// dropOrders drops the orders table on primary, as a mistaken migration
// would, and returns the dropping transaction's id and where its commit
// ends in the WAL, on which timeline.
func dropOrders(ctx context.Context, dir, primary string) (xid string, end pg.LSN, tli uint32, err error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, nodeConn(dir, primary))
	if err != nil {
		return "", 0, 0, fmt.Errorf("connect to %s: %w", primary, err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		return "", 0, 0, err
	}
	defer tx.Rollback(context.Background())
	if err := tx.QueryRow(ctx, "SELECT txid_current()::text").Scan(&xid); err != nil {
		return "", 0, 0, err
	}
	if _, err := tx.Exec(ctx, "DROP TABLE orders"); err != nil {
		return "", 0, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return "", 0, 0, err
	}
	var lsn, file string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text, pg_walfile_name(pg_current_wal_lsn())").Scan(&lsn, &file); err != nil {
		return "", 0, 0, err
	}
	if end, err = pg.ParseLSN(lsn); err != nil {
		return "", 0, 0, err
	}
	t, err := strconv.ParseUint(file[:8], 16, 32)
	return xid, end, uint32(t), err
}

// waitArchived waits until the repository's archive holds timeline tli's
// WAL up to end: the archiver ships it within about a second.
func waitArchived(ctx context.Context, dir, cluster string, tli uint32, end pg.LSN) error {
	r, err := repo.OpenFile(demoRepository(dir))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := wal.Holds(ctx, r, cluster, tli, end-1, end)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// restoreBefore restores the newest backup into a scratch directory,
// recovering from the archive up to just before transaction xid, starts
// PostgreSQL on it (unix socket only), and returns the order ids it holds.
// The server's restore_command, run as the postgres user, gets the WAL
// through a socket the demo serves, as an agent does for its node.
func restoreBefore(ctx context.Context, st *stage, cluster, bindir, xid string, log io.Writer) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	dir := st.dir
	r, err := repo.OpenFile(demoRepository(dir))
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "restored", "pg")
	if err := os.MkdirAll(filepath.Dir(data), 0o711); err != nil {
		return nil, err
	}
	exe, err := copyExecutable(st.exe, filepath.Join(dir, "restored", "haven"))
	if err != nil {
		return nil, err
	}
	socket := filepath.Join(dir, "restored", "wal.sock")
	if err := wal.ServeSocket(ctx, socket, "postgres", wal.Handler(r, cluster, nil)); err != nil {
		return nil, err
	}
	restoreCommand := fmt.Sprintf("%s backup wal-fetch --socket %s %%f %%p", exe, socket)
	if _, _, err := base.Restore(ctx, base.RestoreConfig{Repo: r, Cluster: cluster, DataDir: data, RestoreCommand: restoreCommand,
		Target: base.Target{XID: xid, Exclusive: true}, Owner: "postgres"}); err != nil {
		return nil, err
	}
	s, err := pg.New(ctx, pg.Config{Bindir: bindir, Name: "restored", DataDir: data, Port: 5432,
		SocketDir: filepath.Join(dir, "restored", "run"), Settings: map[string]string{"dynamic_shared_memory_type": "mmap"}})
	if err != nil {
		return nil, err
	}
	if err := s.Start(ctx); err != nil {
		return nil, err
	}
	defer s.Stop(context.WithoutCancel(ctx), pg.StopFast)
	for {
		in, err := s.IsInRecovery(ctx)
		if err == nil && !in {
			break
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			fmt.Fprintf(log, "the restored server's log:\n%s\n", s.LogTail())
			return nil, fmt.Errorf("the restored server did not end recovery: %v", err)
		}
	}
	conn, err := s.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return orderIDs(ctx, conn)
}

// copyExecutable copies haven's binary where the postgres user may run it
// (go run builds it in a directory only root may enter).
func copyExecutable(src, dst string) (string, error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	return dst, os.WriteFile(dst, b, 0o755)
}
