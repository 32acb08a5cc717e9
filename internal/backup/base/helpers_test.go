package base

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestMain lets the test binary serve as restore_command ("wal-fetch
// REPO CLUSTER %f %p"), as `haven backup wal-fetch` will.
func TestMain(m *testing.M) {
	if len(os.Args) == 6 && os.Args[1] == "wal-fetch" {
		r, err := repo.OpenFile(os.Args[2])
		if err == nil {
			err = wal.FetchFile(context.Background(), r, os.Args[3], os.Args[4], os.Args[5])
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const testTimeout = 60 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// newServer starts PostgreSQL on a fresh directory (initdb when edit
// leaves the data directory empty), stopped when the test ends.
func newServer(t *testing.T, name string, edit func(*pg.Config)) *pg.Server {
	t.Helper()
	s := makeServer(t, name, edit)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if !s.HasData() {
		if err := s.Init(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// makeServer makes a Server, stopped when the test ends, without
// starting it.
func makeServer(t *testing.T, name string, edit func(*pg.Config)) *pg.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("runs PostgreSQL")
	}
	testenv.NeedRoot(t)
	bins, err := pg.FindBinaries(context.Background(), "")
	testenv.Need(t, err == nil, "no PostgreSQL binaries: %v", err)
	dir := testenv.SearchableDir(t)
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := pg.Config{
		Bindir: bins.Dir, Name: name, DataDir: filepath.Join(dir, "data"),
		ListenAddresses: []string{"127.0.0.1"}, Port: port,
		Settings: map[string]string{"dynamic_shared_memory_type": "mmap"},
		HBA:      pg.ReplicationHBA(pg.DefaultReplicationUser, "127.0.0.1/32"),
		Logger:   slog.New(slog.DiscardHandler),
	}
	if edit != nil {
		edit(&cfg)
	}
	s, err := pg.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Stop(ctx, pg.StopImmediate); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if t.Failed() {
			if b, err := os.ReadFile(s.LogFile()); err == nil {
				lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
				t.Logf("postgres %s's log:\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	})
	return s
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func query(t *testing.T, s *pg.Server, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	var v string
	if err := c.QueryRow(ctx, sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

func execSQL(t *testing.T, s *pg.Server, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := s.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func insertLSN(t *testing.T, s *pg.Server) wal.LSN {
	t.Helper()
	l, err := pg.ParseLSN(query(t, s, "SELECT pg_current_wal_insert_lsn()::text"))
	if err != nil {
		t.Fatal(err)
	}
	return wal.LSN(l)
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
	target := insertLSN(t, s)
	testenv.Poll(t, testTimeout, "the archive reaches "+target.String(), func() (bool, string) {
		_, pos := a.a.Archived()
		return pos >= target, pos.String()
	})
}

func newRepo(t *testing.T) (*repo.File, string) {
	t.Helper()
	dir := testenv.SearchableDir(t)
	r, err := repo.OpenFile(dir)
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
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// fetchCommand copies the test binary where postgres can run it and
// returns a restore_command that fetches WAL from the repository in
// repoDir.
func fetchCommand(t *testing.T, repoDir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(testenv.SearchableDir(t), "basetest")
	if out, err := exec.Command("cp", self, bin).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	return fmt.Sprintf("%s wal-fetch %s shop %%f %%p", bin, repoDir)
}

func chownPostgres(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("chown", "-R", "postgres:postgres", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
}

// restoreAndStart restores cluster shop's backup label (newest when
// empty) from r to target, starts PostgreSQL on it and waits until it
// has promoted. The repository in repoDir must be readable by postgres.
func restoreAndStart(t *testing.T, r repo.Repository, fetch, label string, target Target) *pg.Server {
	t.Helper()
	dir := filepath.Join(testenv.SearchableDir(t), "data")
	_, st, err := Restore(testCtx(t), RestoreConfig{Repo: r, Cluster: "shop", Label: label, DataDir: dir,
		RestoreCommand: fetch, Target: target, Owner: "postgres", Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restored %d files, %d bytes (%d fetched)", st.Files, st.Bytes, st.Fetched)
	s := newServer(t, "restored", func(c *pg.Config) { c.DataDir = dir })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	testenv.Poll(t, testTimeout, "the restored server ends recovery", func() (bool, string) {
		in, err := s.IsInRecovery(ctx)
		return err == nil && !in, fmt.Sprintf("in recovery %v, %v", in, err)
	})
	return s
}
