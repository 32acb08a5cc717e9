package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestBackupRunOnAReplica: in a cluster of a primary and a healthy
// replica, `haven backup run --wait` has the replica's agent take the
// backup (database.backup.from: replica, the default), waits for it and
// prints its label and size; the repository lists it as a backup of a
// replica, and `haven status` shows it as the newest backup, with the
// WAL archive the primary's agent runs.
func TestBackupRunOnAReplica(t *testing.T) {
	bindir := needDatabase(t)
	base_ := testenv.SearchableDir(t)
	path, _ := dbConfig(t, base_, bindir)
	store := t.TempDir()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`  backup: {repositories: [{name: local, url: "file://` + store + `"}], compression: zstd}` + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	db1 := start(t, "agent", "-c", path, "-n", "db1")
	db2 := start(t, "agent", "-c", path, "-n", "db2")
	rows := regexp.MustCompile(`(?m)^db1\s+primary\s.*\n^db2\s+replica\s+-\s+\d+\s+\S+\s+\d+\s+\S+\s+db1\s`)
	testenv.Poll(t, 90*time.Second, "db1 the primary, db2 its replica, in haven pg status", func() (bool, string) {
		for _, a := range []*proc{db1, db2} {
			select {
			case <-a.done:
				t.Fatalf("haven %s exited: %v\n%s", strings.Join(a.cmd.Args[1:], " "), a.err, a.stderr.String())
			default:
			}
		}
		r := haven(t, 20*time.Second, "pg", "status", "-c", path)
		return r.code == 0 && rows.MatchString(r.stdout), r.String()
	})

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
}
