package keeper

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/coord/coordtest"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/testenv"
)

// testTimeout bounds each step of an integration test that waits for
// PostgreSQL or etcd.
const testTimeout = 60 * time.Second

// testReplPassword is the replication role's password in the tests, with
// the characters a connection string must quote.
const testReplPassword = `s3cret 'it''s' \ ok`

// startEtcd runs a one-member embedded etcd until the test ends and
// returns its client URL.
func startEtcd(t *testing.T) string {
	t.Helper()
	url, _ := coordtest.StartMember(t)
	return url
}

// requirePostgres returns the PostgreSQL binaries. Without them it skips the
// test, or fails it when CI=true.
func requirePostgres(t *testing.T) *pg.Binaries {
	t.Helper()
	if testing.Short() {
		t.Skip("runs PostgreSQL")
	}
	b, err := pg.FindBinaries(context.Background(), "")
	if err == nil {
		return b
	}
	testenv.Need(t, false, "no PostgreSQL binaries: %v", err)
	return nil
}

// testServer is a node's postgres on a fresh directory, listening on
// 127.0.0.1 and a free port, accepting replication and pg_rewind from
// 127.0.0.1 as pg.DefaultReplicationUser.
type testServer struct {
	*pg.Server
	log    *testenv.Buffer
	logger *slog.Logger
	cfg    pg.Config
}

// newNode makes the test server of node name, stopped (SIGKILL as the
// last resort) and its directory removed when the test ends.
func newNode(t *testing.T, name string, edits ...func(*pg.Config)) *testServer {
	t.Helper()
	bins := requirePostgres(t)
	dir := testenv.SearchableDir(t)
	lb := &testenv.Buffer{}
	logger := slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg := pg.Config{
		Bindir:          bins.Dir,
		DataDir:         filepath.Join(dir, "data"),
		ListenAddresses: []string{"127.0.0.1"},
		Name:            name,
		Port:            testenv.FreePort(t),
		HBA:             pg.ReplicationHBA(pg.DefaultReplicationUser, "127.0.0.1/32"),
		// Killed postgres leave their dynamic shared memory behind; mmap
		// keeps it in the data directory, which the test removes.
		Settings: map[string]string{"dynamic_shared_memory_type": "mmap"},
		Logger:   logger,
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	return openNode(t, cfg, lb, logger)
}

// reopen is another test server on n's data directory, its configuration
// changed by edit, logging where n does.
func reopen(t *testing.T, n *testServer, edit func(*pg.Config)) *testServer {
	t.Helper()
	cfg := n.cfg
	edit(&cfg)
	return openNode(t, cfg, n.log, n.logger)
}

// openNode makes the test server of cfg, stopped (SIGKILL as the last
// resort) when the test ends.
func openNode(t *testing.T, cfg pg.Config, lb *testenv.Buffer, logger *slog.Logger) *testServer {
	t.Helper()
	name := cfg.Name
	s, err := pg.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pid := s.PID()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := s.Stop(ctx, pg.StopImmediate); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if pid != 0 && syscall.Kill(pid, 0) == nil {
			t.Errorf("cleanup: postgres (pid %d) still runs after Stop; killing it", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if t.Failed() {
			t.Logf("haven's log of %s:\n%s", name, lb.String())
			if b, err := os.ReadFile(s.LogFile()); err == nil {
				t.Logf("postgres's log %s:\n%s", s.LogFile(), b)
			}
		}
	})
	return &testServer{Server: s, log: lb, logger: logger, cfg: cfg}
}

// tryQuery runs sql on a new connection and returns the first column of
// the first row as text, or the error.
func (s *testServer) tryQuery(sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := s.Connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var v string
	err = conn.QueryRow(ctx, sql).Scan(&v)
	return v, err
}

// waitRow waits until the row id of table t is on s.
func waitRow(t *testing.T, s *testServer, id int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("row %d on %s", id, s.Name()), func() (string, bool) {
		v, err := s.tryQuery(fmt.Sprintf("SELECT count(*)::text FROM t WHERE id = %d", id))
		return fmt.Sprintf("%q, %v", v, err), err == nil && v == "1"
	})
}

// waitFor polls cond until it returns true, failing with what it returned
// last when testTimeout passes.
func waitFor(t *testing.T, what string, cond func() (string, bool)) {
	t.Helper()
	testenv.Poll(t, testTimeout, what, func() (bool, string) {
		seen, ok := cond()
		return ok, seen
	})
}
