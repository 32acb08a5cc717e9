package base

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestMeasure prints full backup and restore throughput on a database
// pgbench initialised at HAVEN_BACKUP_MEASURE's scale (10 when set to 1),
// with each compression and 1 and 2 workers, beside pg_basebackup on the
// same data. Behind the variable: it takes minutes.
//
//	HAVEN_BACKUP_MEASURE=10 go test -run TestMeasure -v ./internal/backup/base/
func TestMeasure(t *testing.T) {
	scale := os.Getenv("HAVEN_BACKUP_MEASURE")
	if scale == "" {
		t.Skip("set HAVEN_BACKUP_MEASURE to a pgbench scale to measure")
	}
	if scale == "1" {
		scale = "10"
	}
	ctx := pgtest.Context(t)
	p := pgtest.Start(t, "db1", nil)
	out, err := exec.Command(p.Binaries().Path("pgbench"), "-i", "-q", "-s", scale, "-h", p.SocketDir(), "-p", fmt.Sprint(p.Port()), "-U", "postgres", "postgres").CombinedOutput()
	if err != nil {
		t.Fatalf("pgbench: %v: %s", err, out)
	}
	pgtest.Exec(t, p, "CHECKPOINT")
	r, _ := newRepo(t)
	startArchiver(t, p, r)
	mib := func(b int64, d time.Duration) float64 { return float64(b) / (1 << 20) / d.Seconds() }

	begin := time.Now()
	dst := filepath.Join(testenv.SearchableDir(t), "pgbb")
	out, err = exec.Command(p.Binaries().Path("pg_basebackup"), "-h", p.SocketDir(), "-p", fmt.Sprint(p.Port()), "-U", "postgres",
		"-D", dst, "-X", "none", "-c", "fast").CombinedOutput()
	if err != nil {
		t.Fatalf("pg_basebackup: %v: %s", err, out)
	}
	pgbb := time.Since(begin)
	var size int64
	filepath.Walk(dst, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			size += fi.Size()
		}
		return nil
	})
	os.RemoveAll(dst)
	t.Logf("pg_basebackup plain -X none: %d MiB in %v: %.0f MiB/s", size>>20, pgbb.Round(time.Millisecond), mib(size, pgbb))

	for _, c := range []Compression{None, LZ4, Zstd} {
		for _, n := range []int{1, 2} {
			cfg := backupConfig(t, p, r)
			cfg.Compression, cfg.Workers = c, n
			cfg.Logger = nil
			begin := time.Now()
			m, err := Take(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(begin)
			dir := filepath.Join(testenv.SearchableDir(t), "data")
			begin = time.Now()
			_, st, err := Restore(ctx, RestoreConfig{Repo: r, Cluster: "shop", Label: m.Label, DataDir: dir, Workers: n, RestoreCommand: "false"})
			if err != nil {
				t.Fatal(err)
			}
			rtook := time.Since(begin)
			os.RemoveAll(dir)
			t.Logf("%-4s %d worker(s): backup %d MiB (stored %d MiB) in %v: %.0f MiB/s (%.2f× pg_basebackup); restore in %v: %.0f MiB/s",
				c, n, m.Bytes>>20, m.Stored>>20, took.Round(time.Millisecond), mib(m.Bytes, took), mib(m.Bytes, took)/mib(size, pgbb),
				rtook.Round(time.Millisecond), mib(st.Bytes, rtook))
		}
	}
}
