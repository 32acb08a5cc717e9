package check

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/backuptest"
	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestMain lets the test binary serve as restore_command, as haven does:
// "backup wal-fetch --socket SOCKET %f %p" through the socket Run serves, and
// "wal-fetch REPO CLUSTER %f %p" straight from a file repository.
func TestMain(m *testing.M) {
	pgtest.Main(m, map[string]func([]string) error{
		"backup": func(args []string) error {
			if len(args) != 5 || args[0] != "wal-fetch" || args[1] != "--socket" {
				return fmt.Errorf("usage: backup wal-fetch --socket SOCKET %%f %%p")
			}
			return wal.FetchFromSocket(context.Background(), args[2], args[3], args[4])
		},
		"wal-fetch": backuptest.WALFetch,
	})
}

// TestRun backs up a server, writes more rows, and runs the restore test
// on a repository the postgres user cannot read (root's, as the agent
// writes it): the restored server reaches the archive's end (every row,
// past the backup's stop LSN), the scratch directory is gone after it, and
// postgres indeed could not have read the repository itself. Then one
// byte of a stored file is flipped: the test fails naming the file, and
// leaves no scratch directory either.
func TestRun(t *testing.T) {
	ctx := pgtest.Context(t)
	p := pgtest.Start(t, "db1", nil)
	pgtest.Exec(t, p, "CREATE TABLE t (id int PRIMARY KEY)")
	pgtest.Exec(t, p, "INSERT INTO t SELECT generate_series(1, 1000)")
	repoDir := testenv.SearchableDir(t)
	r, err := repo.OpenFile(repoDir)
	if err != nil {
		t.Fatal(err)
	}
	stopArchiver := backuptest.StartArchiver(t, p, r)
	cc, err := p.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	m, err := base.Take(ctx, base.Config{Conn: cc, DataDir: p.DataDir(), Repo: r, Cluster: "shop", Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	pgtest.Exec(t, p, "INSERT INTO t SELECT generate_series(1001, 1500)")
	if err := stopArchiver(); err != nil {
		t.Fatal(err)
	}

	haven := pgtest.Executable(t)
	direct := fmt.Sprintf("%s wal-fetch %s shop %%f %%p", haven, repoDir)
	if err := RestoreCommand(ctx, direct, "postgres", m.FirstSegment()); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("postgres fetching straight from root's repository: %v; want permission denied", err)
	}

	scratch := testenv.SearchableDir(t)
	cfg := Config{Repo: r, Cluster: "shop", ScratchDir: scratch, Haven: haven, Query: "SELECT count(*) FROM t", Logger: testenv.Logger(t)}
	res, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restore test of %s: %d bytes restored (%d fetched) in %s, recovered to %s at %s; %s: %s",
		res.Label, res.Bytes, res.Fetched, res.Duration.Round(time.Millisecond), res.RecoveredLSN, res.RecoveredTime, res.Query, res.Answer)
	if res.Label != m.Label || res.Answer != "1500" {
		t.Errorf("restore test of %s answered %q; want backup %s and 1500 rows", res.Label, res.Answer, m.Label)
	}
	if res.RecoveredLSN <= m.Stop() || res.RecoveredTime.IsZero() {
		t.Errorf("recovered to %s at %v; want past the backup's stop %s, with a transaction's time", res.RecoveredLSN, res.RecoveredTime, m.StopLSN)
	}
	if res.Bytes != m.Bytes {
		t.Errorf("restored %d bytes; the backup holds %d", res.Bytes, m.Bytes)
	}
	empty := func() {
		t.Helper()
		if es, err := os.ReadDir(scratch); err != nil || len(es) != 0 {
			t.Errorf("the scratch directory holds %v (%v) after the test; want nothing", es, err)
		}
	}
	empty()

	// A flipped byte in the biggest stored file.
	var victim base.File
	for _, f := range m.Files {
		if f.Stored > victim.Stored {
			victim = f
		}
	}
	obj := filepath.Join(repoDir, "shop", "base", m.Label, "data", filepath.FromSlash(victim.Path)+".lz4")
	b, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(obj, b, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Label = m.Label
	if _, err := Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), victim.Path) {
		t.Errorf("the restore test of a damaged backup: %v; want an error naming %s", err, victim.Path)
	} else {
		t.Logf("damaged: %v", err)
	}
	empty()
	cfg.Label = "20000101-000000.000F"
	if _, err := Run(ctx, cfg); err == nil || !strings.Contains(err.Error(), cfg.Label) {
		t.Errorf("the restore test of a backup that does not exist: %v; want an error naming it", err)
	}
}

func TestCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"/usr/local/bin/haven", "backup", "wal-fetch", "-c", "/etc/haven/haven.yaml"}, "/usr/local/bin/haven backup wal-fetch -c /etc/haven/haven.yaml %f %p"},
		{[]string{"/opt/my haven/haven", "--repository", "it's"}, `'/opt/my haven/haven' --repository 'it'\''s' %f %p`},
		{[]string{"haven", ""}, "haven '' %f %p"},
	} {
		if got := Command(c.args[0], c.args[1:]...); got != c.want {
			t.Errorf("Command(%q) = %s, want %s", c.args, got, c.want)
		}
	}
}
