package base

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/haven-ha/haven/internal/backup/backuptest"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/repo/repotest"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestMain lets the test binary serve as restore_command ("wal-fetch
// REPO CLUSTER %f %p"), as `haven backup wal-fetch` does.
func TestMain(m *testing.M) {
	pgtest.Main(m, backuptest.Commands)
}

// archive runs a WAL archiver of s into r until the returned stop is
// called (or the test ends); stop waits for it to end.
type archive struct {
	a    *wal.Archiver
	stop func()
}

func startArchiver(t *testing.T, s *pg.Server, r repo.Repository) *archive {
	t.Helper()
	cc, err := s.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	a, err := wal.New(wal.Config{Conn: &cc.Config, Repo: r, Cluster: "shop", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("archiver: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &archive{a: a, stop: stop}
}

// waitArchived waits until the archive holds s's WAL up to now.
func (a *archive) waitArchived(t *testing.T, s *pg.Server) {
	t.Helper()
	target := pgtest.InsertLSN(t, s)
	testenv.Poll(t, pgtest.Timeout, "the archive reaches "+target.String(), func() (bool, string) {
		_, pos := a.a.Archived()
		return pos >= target, pos.String()
	})
}

func newRepo(t *testing.T) (repo.Repository, string) {
	t.Helper()
	dir := testenv.SearchableDir(t)
	r, err := repotest.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r, dir
}

func backupConfig(t *testing.T, s *pg.Server, r repo.Repository) Config {
	t.Helper()
	cc, err := s.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	return Config{Conn: cc, DataDir: s.DataDir(), Repo: r, Cluster: "shop", Workers: 2,
		Logger: testenv.Logger(t)}
}

// fetchCommand returns a restore_command that fetches WAL from the
// repository in repoDir with the test binary.
func fetchCommand(t *testing.T, repoDir string) string {
	t.Helper()
	return backuptest.FetchCommand(t, repoDir, "shop")
}

// restoreAndStart restores cluster shop's backup label (newest when
// empty) from r to target, starts PostgreSQL on it and waits until it
// has promoted. The repository in repoDir must be readable by postgres.
func restoreAndStart(t *testing.T, r repo.Repository, fetch, label string, target Target) *pg.Server {
	t.Helper()
	dir := filepath.Join(testenv.SearchableDir(t), "data")
	_, st, err := Restore(pgtest.Context(t), RestoreConfig{Repo: r, Cluster: "shop", Label: label, DataDir: dir,
		RestoreCommand: fetch, Target: target, Owner: "postgres", Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored %d files, %d bytes (%d fetched)", st.Files, st.Bytes, st.Fetched)
	return backuptest.StartRestored(t, dir)
}
