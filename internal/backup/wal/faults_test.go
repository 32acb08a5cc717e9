package wal

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testenv/s3server"
)

// TestArchiveThroughS3Outage: the S3 server is down for 30 s
// (HAVEN_S3_OUTAGE) under a writer. The archiver counts upload errors, the
// lag metric grows, the slot keeps the WAL; once the server is back the
// archive catches up with no gap, and a base backup taken before the
// outage, restored from the archive, holds every committed row.
func TestArchiveThroughS3Outage(t *testing.T) {
	outage := 30 * time.Second
	if v := os.Getenv("HAVEN_S3_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("HAVEN_S3_OUTAGE=%q: %v", v, err)
		}
		outage = d
	}
	srv := s3server.Start(t, s3server.Options{})
	srv.Bucket("wal")
	path := true
	r, err := repo.OpenS3(repo.S3Config{Bucket: "wal", Endpoint: srv.Endpoint, Region: srv.Region,
		PathStyle: &path, CredentialsFile: srv.CredentialsFile()})
	if err != nil {
		t.Fatal(err)
	}
	faultRun(t, r, func() {
		srv.Stop()
	}, outage, func() {
		srv.Start()
	})
}

// TestArchiveThroughAFullRepository: the file system of a file repository
// fills up under a writer: uploads fail saying so, the slot keeps the WAL;
// once space is freed the archive catches up with no gap, and a restore
// holds every committed row.
func TestArchiveThroughAFullRepository(t *testing.T) {
	testenv.NeedRoot(t)
	dir := testenv.SearchableDir(t)
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=96m,mode=0711"); err != nil {
		testenv.Need(t, false, "needs to mount a tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	r, err := repo.OpenFile(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(dir, "filler")
	faultRun(t, r, func() {
		// Whatever is left, taken: the next upload finds no space.
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		for {
			if _, err := f.Write(buf); err != nil {
				break
			}
		}
	}, 10*time.Second, func() {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	})
}

// faultRun archives a fresh server into r under a writer, breaks the
// repository with fault for outage, mends it, and checks that nothing was
// lost: upload errors counted and lag reported during the fault, the
// archive contiguous after, and a restore of a base backup taken before
// the fault holding every committed row.
func faultRun(t *testing.T, r repo.Repository, fault func(), outage time.Duration, mend func()) {
	t.Helper()
	p := pgtest.Start(t, "db1", nil)
	pgtest.Exec(t, p, "CREATE TABLE t (id int PRIMARY KEY, pad text DEFAULT repeat('x', 200))")
	a, reg, stop := startArchiver(t, p, r, nil)
	waitArchived(t, a, p)
	backup := baseBackup(t, p)
	w := startWriter(t, p, 1)
	waitArchived(t, a, p)

	errorsBefore := metricValue(t, reg, "haven_backup_wal_errors_total", "upload")
	fault()
	broken := time.Now()
	var maxLag float64
	testenv.Poll(t, outage+pgtest.Timeout, "the fault's time to pass", func() (bool, string) {
		maxLag = max(maxLag, metricValue(t, reg, "haven_backup_wal_lag_bytes", ""))
		return time.Since(broken) >= outage, fmt.Sprintf("lag %.0f bytes", maxLag)
	})
	errorsDuring := metricValue(t, reg, "haven_backup_wal_errors_total", "upload") - errorsBefore
	lagSeconds := metricValue(t, reg, "haven_backup_wal_lag_seconds", "")
	behind := pgtest.InsertLSN(t, p)
	if _, pos := a.Archived(); pos >= behind {
		t.Errorf("the archive reached %s, the server's position, while the repository was broken", pos)
	}
	mend()
	waitArchivedAt(t, a, behind)
	commits := w.finish(t)
	waitArchived(t, a, p)
	stop()

	t.Logf("during the %v fault: %.0f upload errors, lag up to %.0f bytes, %.1f s at its end; %d rows committed in all",
		outage, errorsDuring, maxLag, lagSeconds, len(commits))
	if errorsDuring == 0 {
		t.Errorf("no upload error was counted while the repository was broken")
	}
	if maxLag == 0 || lagSeconds < outage.Seconds()/2 {
		t.Errorf("the lag metrics did not show the fault: %.0f bytes at most, %.1f s at its end", maxLag, lagSeconds)
	}
	checkContiguous(t, listArchive(t, r), 1)

	// Restore from a file copy of the repository (restore_command reads a
	// directory).
	copyDir := testenv.SearchableDir(t)
	local, err := repo.OpenFile(copyDir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Copy(context.Background(), local, r, "shop/"); err != nil {
		t.Fatal(err)
	}
	s := restore(t, backup, copyDir)
	got := pgtest.Query(t, s, "SELECT count(*)::text || ' ' || coalesce(max(id), 0)::text FROM t")
	if want := fmt.Sprintf("%d %d", len(commits), len(commits)); got != want {
		t.Errorf("restored table: count and max id %s, want %s (every committed row)", got, want)
	}
}

// metricValue reads a counter or gauge from reg; label is the value of
// its one label, "" for none.
func metricValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s{%s}", name, label)
	return 0
}

// TestArchiveGap: the server removed the WAL from where the archive ends
// (the archiver was away and its slot was dropped): the archiver does not
// retry for ever, but counts a gap, says so, and archives on from where
// its new slot keeps WAL.
func TestArchiveGap(t *testing.T) {
	p := pgtest.Start(t, "db1", func(c *pg.Config) {
		c.Settings["min_wal_size"] = "32MB"
		c.Settings["max_wal_size"] = "32MB"
		c.Settings["wal_keep_size"] = "0"
	})
	pgtest.Exec(t, p, "CREATE TABLE t (id int)")
	r, err := repo.OpenFile(testenv.SearchableDir(t))
	if err != nil {
		t.Fatal(err)
	}
	a, _, stop := startArchiver(t, p, r, nil)
	waitArchived(t, a, p)
	stop()
	// The stopped archiver's walsender may outlive its connection for a
	// moment, and an active slot cannot be dropped: dropped once free.
	ctx := pgtest.Context(t)
	testenv.Poll(t, pgtest.Timeout, "the archiver's slot dropped", func() (bool, string) {
		err := p.DropSlot(ctx, DefaultSlot)
		return err == nil, fmt.Sprint(err)
	})
	for i := range 6 {
		pgtest.Exec(t, p, fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
		pgtest.Exec(t, p, "SELECT pg_switch_wal()")
		pgtest.Exec(t, p, "CHECKPOINT")
	}
	a, reg, stop := startArchiver(t, p, r, nil)
	waitArchived(t, a, p)
	stop()
	if gaps := metricValue(t, reg, "haven_backup_wal_gaps_total", ""); gaps != 1 {
		t.Errorf("haven_backup_wal_gaps_total = %v, want 1", gaps)
	}
}
