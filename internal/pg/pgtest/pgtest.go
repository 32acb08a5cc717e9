// Package pgtest runs real PostgreSQL servers for other packages' tests:
// one started or only made on a fresh directory, stopped when the test
// ends (with the tail of its log when the test failed), a query or a
// statement on it, and the test binary itself as a command PostgreSQL
// runs (restore_command). Only tests import it.
package pgtest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/testenv"
)

// Timeout bounds each step that waits for PostgreSQL: starting it, one
// query, recovery to end; none takes more than a few seconds.
const Timeout = 60 * time.Second

// Context returns a context for a whole test, cancelled when it ends or
// after eight minutes: under -race on a loaded machine, a test of several
// backups and restores takes minutes.
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// Main runs the package's tests with m, unless PostgreSQL started the
// test binary as one of commands (say restore_command
// "BINARY wal-fetch REPO CLUSTER %f %p", with the path from Executable):
// then it runs that command with the arguments after its name and exits,
// 1 with the error on stderr when it fails. Call it from TestMain.
func Main(m *testing.M, commands map[string]func(args []string) error) {
	RunCommand(commands)
	os.Exit(m.Run())
}

// RunCommand runs one of commands and exits, when the test binary was
// started as it (see Main), and returns otherwise: for a TestMain that
// runs the tests some other way (testenv.Main).
func RunCommand(commands map[string]func(args []string) error) {
	if len(os.Args) > 1 {
		if run, ok := commands[os.Args[1]]; ok {
			if err := run(os.Args[2:]); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
}

// Executable copies the test binary where the postgres user can run it,
// for a command that Main serves, and returns its path.
func Executable(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(testenv.SearchableDir(t), filepath.Base(self))
	if out, err := exec.Command("cp", self, bin).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	return bin
}

// Start starts PostgreSQL as New makes it, running initdb first when edit
// leaves the data directory empty.
func Start(t testing.TB, name string, edit func(*pg.Config)) *pg.Server {
	t.Helper()
	s := New(t, name, edit)
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
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

// New makes a Server named name on a fresh data directory and a free port
// of 127.0.0.1, with replication allowed from there, without starting it;
// edit changes its configuration first. The server is stopped when the
// test ends, and the tail of its log is logged when the test failed. It
// needs root and the PostgreSQL binaries (testenv.Need), and is skipped
// in -short mode.
func New(t testing.TB, name string, edit func(*pg.Config)) *pg.Server {
	t.Helper()
	if testing.Short() {
		t.Skip("runs PostgreSQL")
	}
	testenv.NeedRoot(t)
	bins, err := pg.FindBinaries(context.Background(), "")
	testenv.Need(t, err == nil, "no PostgreSQL binaries: %v", err)
	cfg := pg.Config{
		Bindir: bins.Dir, Name: name, DataDir: filepath.Join(testenv.SearchableDir(t), "data"),
		ListenAddresses: []string{"127.0.0.1"}, Port: testenv.FreePort(t),
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

// Query runs sql on s and returns the one text value of its one row; an
// error fails the test.
func Query(t testing.TB, s *pg.Server, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
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

// Exec runs the statement sql on s; an error fails the test.
func Exec(t testing.TB, s *pg.Server, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
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

// InsertLSN returns s's current WAL insert position.
func InsertLSN(t testing.TB, s *pg.Server) pg.LSN {
	t.Helper()
	l, err := pg.ParseLSN(Query(t, s, "SELECT pg_current_wal_insert_lsn()::text"))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Chown gives dir and everything in it to the postgres user, for a
// server or its restore_command to use.
func Chown(t testing.TB, dir string) {
	t.Helper()
	if out, err := exec.Command("chown", "-R", "postgres:postgres", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
}
