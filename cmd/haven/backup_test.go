package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestBackupWALFetch: wal-fetch, PostgreSQL's restore_command, writes a
// file the archive holds to the path asked, and exits 1 naming the file
// when the archive does not hold it (which ends recovery there).
func TestBackupWALFetch(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "backups")
	cfg := backupConfig(t, dir, `    repositories:
      - {name: local, url: "file://`+store+`"}
`)
	r, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	history := "1\t0/3000000\tno recovery target specified\n"
	if err := r.Put(context.Background(), "shop/wal/00000002.history", strings.NewReader(history), int64(len(history))); err != nil {
		t.Fatal(err)
	}

	dst := filepath.Join(dir, "pg_wal", "RECOVERYHISTORY")
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"backup", "wal-fetch", "-c", cfg, "00000002.history", dst}, &stdout, &stderr); code != 0 {
		t.Fatalf("wal-fetch of an archived file: exit %d: %s", code, stderr.String())
	}
	if got, err := os.ReadFile(dst); err != nil || string(got) != history {
		t.Errorf("wal-fetch wrote %q (%v); want the archived history file", got, err)
	}

	stderr.Reset()
	missing := filepath.Join(dir, "pg_wal", "RECOVERYXLOG")
	code := run([]string{"backup", "wal-fetch", "-c", cfg, "000000020000000000000009", missing}, &stdout, &stderr)
	if code != 1 {
		t.Errorf("wal-fetch of a file the archive lacks: exit %d; want 1", code)
	}
	if !strings.Contains(stderr.String(), "000000020000000000000009") {
		t.Errorf("the error does not name the file: %s", stderr.String())
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("wal-fetch of a missing file left %s behind (%v)", missing, err)
	}

	stderr.Reset()
	if code := run([]string{"backup", "wal-fetch", "-c", cfg, "--repository", "west", "00000002.history", dst}, &stdout, &stderr); code != 126 || !strings.Contains(stderr.String(), `no repository "west"`) {
		t.Errorf("wal-fetch from an unknown repository: exit %d, %s; want 126 (recovery stops) naming it", code, stderr.String())
	}

	// The same through a socket that haven serves for the postgres user,
	// with no configuration to read.
	ctx, cancel := context.WithCancel(context.Background())
	socket := filepath.Join(dir, "wal.sock")
	if err := wal.ServeSocket(ctx, socket, "", wal.Handler(r, "shop", nil)); err != nil {
		t.Fatal(err)
	}
	viaSocket := filepath.Join(dir, "pg_wal", "SOCKETHISTORY")
	if code := run([]string{"backup", "wal-fetch", "--socket", socket, "00000002.history", viaSocket}, &stdout, &stderr); code != 0 {
		t.Fatalf("wal-fetch --socket of an archived file: exit %d: %s", code, stderr.String())
	}
	if got, err := os.ReadFile(viaSocket); err != nil || string(got) != history {
		t.Errorf("wal-fetch --socket wrote %q (%v); want the archived history file", got, err)
	}
	stderr.Reset()
	if code := run([]string{"backup", "wal-fetch", "--socket", socket, "000000020000000000000009", missing}, &stdout, &stderr); code != 1 {
		t.Errorf("wal-fetch --socket of a file the archive lacks: exit %d (%s); want 1", code, stderr.String())
	}
	cancel()
	testenv.Poll(t, 5*time.Second, "the socket to be removed", func() (bool, string) {
		_, err := os.Stat(socket)
		return os.IsNotExist(err), fmt.Sprint(err)
	})
	stderr.Reset()
	if code := run([]string{"backup", "wal-fetch", "--socket", socket, "00000002.history", viaSocket + "2"}, &stdout, &stderr); code != 126 || !strings.Contains(stderr.String(), socket) {
		t.Errorf("wal-fetch --socket with nobody serving: exit %d, %s; want 126 (recovery stops, not ends early) naming the socket", code, stderr.String())
	}
	// A standby runs restore_command in its data directory, which holds
	// standby.signal: it exits 1, and the standby tries again later.
	standby := filepath.Join(dir, "standby")
	if err := os.MkdirAll(standby, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(standby, "standby.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(standby)
	stderr.Reset()
	if code := run([]string{"backup", "wal-fetch", "--socket", socket, "00000002.history", viaSocket + "3"}, &stdout, &stderr); code != 1 {
		t.Errorf("wal-fetch --socket with nobody serving, for a standby: exit %d, %s; want 1 (a standby is not stopped)", code, stderr.String())
	}
}

// backupFixture is a running PostgreSQL whose WAL is archived into a file
// repository, a haven.yaml naming that repository, and a haven binary the
// postgres user can run (restore_command runs it).
type backupFixture struct {
	pg      *pg.Server
	repo    *repo.File
	repoDir string
	cfg     string
	haven   string
	arch    *wal.Archiver
	stop    func()
}

func newBackupFixture(t *testing.T, extra string) *backupFixture {
	t.Helper()
	ctx := pgtest.Context(t)
	f := &backupFixture{pg: pgtest.Start(t, "db1", nil), repoDir: testenv.SearchableDir(t)}
	var err error
	if f.repo, err = repo.OpenFile(f.repoDir); err != nil {
		t.Fatal(err)
	}
	dir := testenv.SearchableDir(t)
	f.cfg = filepath.Join(dir, "haven.yaml")
	yaml := `cluster: shop
regions:
  east:
    nodes:
      db1: {address: 127.0.0.1}
database:
  nodes: [db1]
  bindir: ` + f.pg.Binaries().Dir + `
  backup:
    repositories:
      - {name: local, url: "file://` + f.repoDir + `"}
` + extra + `coordination:
  members: [db1]
`
	if err := os.WriteFile(f.cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	f.haven = filepath.Join(dir, "haven")
	if out, err := exec.Command("cp", testenv.HavenRace(t), f.haven).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	if err := os.Chmod(f.haven, 0o755); err != nil {
		t.Fatal(err)
	}
	cc, err := f.pg.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	if f.arch, err = wal.New(wal.Config{Conn: &cc.Config, Repo: f.repo, Cluster: "shop", Logger: testenv.Logger(t)}); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.arch.Run(actx) }()
	var once sync.Once
	f.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("archiver: %v", err)
			}
		})
	}
	t.Cleanup(f.stop)
	return f
}

// take takes a base backup (incremental: on the newest).
func (f *backupFixture) take(t *testing.T, incremental bool) *base.Manifest {
	t.Helper()
	cc, err := f.pg.ConnConfig()
	if err != nil {
		t.Fatal(err)
	}
	m, err := base.Take(pgtest.Context(t), base.Config{Conn: cc, DataDir: f.pg.DataDir(), Repo: f.repo, Cluster: "shop",
		Incremental: incremental, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// archived waits until the archive holds the server's WAL up to now.
func (f *backupFixture) archived(t *testing.T) {
	t.Helper()
	end := pgtest.InsertLSN(t, f.pg)
	testenv.Poll(t, pgtest.Timeout, "the archive reaches "+end.String(), func() (bool, string) {
		_, pos := f.arch.Archived()
		return pos >= end, pos.String()
	})
}

// run runs the postgres-runnable copy of haven with -c.
func (f *backupFixture) run(t *testing.T, args ...string) result {
	t.Helper()
	var stdout, stderr testenv.Buffer
	cmd := exec.Command(f.haven, append(append([]string{}, args...), "-c", f.cfg)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	return result{exitCode(t, err), stdout.String(), stderr.String()}
}

// startOn starts PostgreSQL on a restored directory and waits for the end
// of its recovery.
func startOn(t *testing.T, dir string) *pg.Server {
	t.Helper()
	s := pgtest.Start(t, "restored", func(c *pg.Config) { c.DataDir = dir })
	ctx := pgtest.Context(t)
	testenv.Poll(t, pgtest.Timeout, "the restored server ends recovery", func() (bool, string) {
		in, err := s.IsInRecovery(ctx)
		return err == nil && !in, fmt.Sprintf("in recovery %v, %v", in, err)
	})
	return s
}

// TestBackupCommands drives list, verify, check, restore and expire, as
// root, against a real PostgreSQL and a file repository that only root
// can read (as the agent writes it).
func TestBackupCommands(t *testing.T) {
	f := newBackupFixture(t, "    retain_count: 1\n")
	pgtest.Exec(t, f.pg, "CREATE TABLE t (id int PRIMARY KEY)")
	pgtest.Exec(t, f.pg, "INSERT INTO t SELECT generate_series(1, 100)")
	full := f.take(t, false)
	pgtest.Exec(t, f.pg, "INSERT INTO t SELECT generate_series(101, 200)")
	inc := f.take(t, true)
	pgtest.Exec(t, f.pg, "INSERT INTO t SELECT generate_series(201, 300)")
	pgtest.Exec(t, f.pg, "SELECT pg_create_restore_point('before-mistake')")
	pgtest.Exec(t, f.pg, "INSERT INTO t SELECT generate_series(301, 400)")
	f.archived(t)

	// list
	res := f.run(t, "backup", "list")
	if res.code != 0 || !strings.Contains(res.stdout, full.Label+"  full") || !regexp.MustCompile(inc.Label+` +incremental +`+full.Label).MatchString(res.stdout) {
		t.Errorf("backup list: want %s full and %s incremental on it:\n%s", full.Label, inc.Label, res)
	}
	res = f.run(t, "backup", "list", "-o", "json")
	var entries []backupEntry
	if err := json.Unmarshal([]byte(res.stdout), &entries); err != nil || len(entries) != 2 ||
		entries[1].Parent != full.Label || entries[1].Kind != "incremental" || entries[0].StoredBytes != full.Stored || entries[1].StopLSN != inc.StopLSN {
		t.Errorf("backup list -o json: %v, %+v; want the two backups\n%s", err, entries, res)
	}

	// verify
	if res := f.run(t, "backup", "verify"); res.code != 0 || !strings.Contains(res.stdout, inc.Label) {
		t.Errorf("backup verify of the newest: want exit 0 naming %s:\n%s", inc.Label, res)
	}

	// check, with a repository postgres cannot read.
	scratch := testenv.SearchableDir(t)
	res = f.run(t, "backup", "check", "--scratch", scratch, "--query", "SELECT count(*) FROM t")
	if res.code != 0 || !strings.Contains(res.stdout, "backup "+inc.Label) || !strings.HasSuffix(res.stdout, "SELECT count(*) FROM t: 400\n") {
		t.Errorf("backup check: want the newest backup restored with its 400 rows:\n%s", res)
	} else {
		t.Log(strings.TrimSpace(res.stdout))
	}
	if es, _ := os.ReadDir(scratch); len(es) != 0 {
		t.Errorf("backup check left %v in the scratch directory", es)
	}

	// restore: refused while postgres cannot read the repository, nothing
	// written; through a socket served for postgres (as the agent serves
	// its node's) it needs no access.
	data := filepath.Join(testenv.SearchableDir(t), "data")
	res = f.run(t, "backup", "restore", "--to", data, "--name", "before-mistake")
	if res.code != 1 || !strings.Contains(res.stderr, "permission denied") || !strings.Contains(res.stderr, "nothing was restored") {
		t.Errorf("backup restore with a repository postgres cannot read: want exit 1 saying so:\n%s", res)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("the refused restore made %s (%v)", data, err)
	}
	socket := filepath.Join(testenv.SearchableDir(t), "haven-wal.sock")
	sctx, stopServing := context.WithCancel(pgtest.Context(t))
	defer stopServing()
	if err := wal.ServeSocket(sctx, socket, "postgres", wal.Handler(f.repo, "shop", nil)); err != nil {
		t.Fatal(err)
	}
	res = f.run(t, "backup", "restore", "--to", data, "--name", "before-mistake", "--socket", socket)
	if res.code != 0 || !strings.Contains(res.stdout, "restored backup "+inc.Label) || !strings.Contains(res.stdout, "pg_ctl -D") || !strings.Contains(res.stdout, "--socket") {
		t.Fatalf("backup restore --name --socket: want the newest backup restored through the socket and what to start next:\n%s", res)
	}
	s := startOn(t, data)
	if got := pgtest.Query(t, s, "SELECT count(*)::text FROM t"); got != "300" {
		t.Errorf("restored to the restore point: %s rows, want 300", got)
	}
	if err := s.Stop(pgtest.Context(t), pg.StopFast); err != nil {
		t.Fatal(err)
	}
	if res := f.run(t, "backup", "restore", "--to", data, "--label", full.Label, "--socket", socket); res.code != 1 || !strings.Contains(res.stderr, "delta") {
		t.Errorf("backup restore into a data directory without --delta: want exit 1 naming delta:\n%s", res)
	}
	res = f.run(t, "backup", "restore", "--to", data, "--delta", "--label", full.Label, "--socket", socket)
	if res.code != 0 || !strings.Contains(res.stdout, "restored backup "+full.Label) {
		t.Fatalf("backup restore --delta: %s", res)
	}
	s = startOn(t, data)
	if got := pgtest.Query(t, s, "SELECT count(*)::text FROM t"); got != "400" {
		t.Errorf("restored the full backup with --delta to the archive's end: %s rows, want 400", got)
	}
	s.Stop(pgtest.Context(t), pg.StopImmediate)
	stopServing()
	t.Log(strings.TrimSpace(res.stdout))

	// expire: a second full backup makes the first group expire.
	pgtest.Exec(t, f.pg, "SELECT pg_switch_wal()")
	second := f.take(t, false)
	f.archived(t)
	res = f.run(t, "backup", "expire", "--dry-run")
	if res.code != 0 || !strings.Contains(res.stdout, "dry run") || !strings.Contains(res.stdout, full.Label) || !strings.Contains(res.stdout, inc.Label) {
		t.Errorf("backup expire --dry-run: want the first full backup and its incremental named:\n%s", res)
	}
	if res := f.run(t, "backup", "list"); !strings.Contains(res.stdout, full.Label) {
		t.Errorf("a dry run removed %s:\n%s", full.Label, res)
	}
	res = f.run(t, "backup", "expire")
	t.Log(strings.TrimSpace(res.stdout))
	if res := f.run(t, "backup", "list", "-o", "json"); json.Unmarshal([]byte(res.stdout), &entries) != nil || len(entries) != 1 || entries[0].Label != second.Label {
		t.Errorf("after expire: want only %s listed:\n%s", second.Label, res)
	}

	// The default restore_command reads the repository as postgres: what
	// docs/backup.md says to do, once the archive holds what the restore
	// needs (the archiver stopped: it would write root's 0600 again).
	f.stop()
	for _, c := range [][]string{{"chgrp", "-R", "postgres", f.repoDir}, {"chmod", "-R", "g+rX", f.repoDir}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", c[0], err, out)
		}
	}
	data = filepath.Join(testenv.SearchableDir(t), "data")
	if res := f.run(t, "backup", "restore", "--to", data); res.code != 0 || !strings.Contains(res.stdout, "restored backup "+second.Label) {
		t.Fatalf("backup restore with the default restore_command: %s", res)
	}
	s = startOn(t, data)
	if got := pgtest.Query(t, s, "SELECT count(*)::text FROM t"); got != "400" {
		t.Errorf("restored %s with the default restore_command: %s rows, want 400", second.Label, got)
	}
	s.Stop(pgtest.Context(t), pg.StopImmediate)

	// A flipped byte: verify names the file.
	var victim base.File
	for _, fl := range second.Files {
		if fl.Stored > victim.Stored {
			victim = fl
		}
	}
	obj := filepath.Join(f.repoDir, "shop", "base", second.Label, "data", filepath.FromSlash(victim.Path)+".lz4")
	b, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(obj, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if res := f.run(t, "backup", "verify", second.Label); res.code != 1 || !strings.Contains(res.stderr, victim.Path) {
		t.Errorf("backup verify of a damaged backup: want exit 1 naming %s:\n%s", victim.Path, res)
	}
}

// TestBackupUsage: an unknown action, a missing argument and a flag of
// another action are usage errors that say so.
func TestBackupUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"backup"}, 2, "restore --to DIR"},
		{[]string{"backup", "rewind"}, 2, `unknown action "rewind"`},
		{[]string{"backup", "wal-fetch", "x"}, 2, "wal-fetch FILE PATH"},
		{[]string{"backup", "list", "--dry-run"}, 1, "backup list does not take -dry-run"},
		{[]string{"backup", "restore", "-c", "/nonexistent.yaml"}, 1, "nonexistent"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(c.args, &stdout, &stderr)
		if code != c.code || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("haven %s: exit %d, %s; want %d with %q", strings.Join(c.args, " "), code, stderr.String(), c.code, c.want)
		}
	}
}

func TestPickBackupAndTargetTime(t *testing.T) {
	at := func(s string) time.Time {
		t.Helper()
		v, err := parseTargetTime(s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for in, want := range map[string]string{
		"2026-12-04T13:05:00Z":        "2026-12-04T13:05:00Z",
		"2026-12-04T14:05:00.5+01:00": "2026-12-04T13:05:00.5Z",
		"2026-12-04 14:05:00+01:00":   "2026-12-04T13:05:00Z",
		"2026-12-04 13:05:00":         "2026-12-04T13:05:00Z",
		"2026-12-04 13:05:00.123456":  "2026-12-04T13:05:00.123456Z",
	} {
		if got := at(in).UTC().Format(time.RFC3339Nano); got != want {
			t.Errorf("--time %s: %s, want %s", in, got, want)
		}
	}
	if _, err := parseTargetTime("yesterday"); err == nil || !strings.Contains(err.Error(), "2026-12-04T13:05:00Z") {
		t.Errorf("--time yesterday: %v; want an error showing the forms", err)
	}

	ms := []*base.Manifest{
		{Label: "1F", StopTime: at("2026-12-01 00:00:00")},
		{Label: "2I", StopTime: at("2026-12-02 00:00:00")},
		{Label: "3F", StopTime: at("2026-12-03 00:00:00")},
	}
	for _, c := range []struct {
		label, time, want string
	}{
		{"", "", "3F"},
		{"1F", "", "1F"},
		{"", "2026-12-02 12:00:00", "2I"},
		{"", "2026-12-02 00:00:00", "2I"},
		{"", "2026-12-05 00:00:00", "3F"},
		{"", "2026-11-30 00:00:00", "error: no backup stopped before"},
		{"9F", "", "error: no complete backup \"9F\""},
	} {
		var target base.Target
		if c.time != "" {
			target.Time = at(c.time)
		}
		m, err := pickBackup(ms, c.label, target)
		got := ""
		if err != nil {
			got = "error: " + err.Error()
		} else {
			got = m.Label
		}
		if !strings.HasPrefix(got, c.want) {
			t.Errorf("pickBackup(label %q, time %q) = %s, want %s", c.label, c.time, got, c.want)
		}
	}
}

// TestBackupWALFetchEncrypted: with database.backup.encryption_key_file,
// wal-fetch decrypts what the archive holds; with another key it exits 1
// saying so, and writes nothing.
func TestBackupWALFetchEncrypted(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "backup.key")
	if err := os.WriteFile(keyFile, []byte("BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := backupConfig(t, dir, `    repositories:
      - {name: local, url: "file://`+filepath.Join(dir, "backups")+`"}
    encryption_key_file: backup.key
`)
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.OpenNamed(c.Database.Backup, "")
	if err != nil {
		t.Fatal(err)
	}
	history := "1\t0/3000000\tno recovery target specified\n"
	if err := r.Put(context.Background(), "shop/wal/00000002.history", strings.NewReader(history), int64(len(history))); err != nil {
		t.Fatal(err)
	}
	stored, err := os.ReadFile(filepath.Join(dir, "backups", "shop", "wal", "00000002.history"))
	if err != nil || strings.Contains(string(stored), "no recovery target") {
		t.Fatalf("the history file is stored in the clear (%v)", err)
	}

	dst := filepath.Join(dir, "RECOVERYHISTORY")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"backup", "wal-fetch", "-c", cfg, "00000002.history", dst}, &stdout, &stderr); code != 0 {
		t.Fatalf("wal-fetch with the key: exit %d: %s", code, stderr.String())
	}
	if got, err := os.ReadFile(dst); err != nil || string(got) != history {
		t.Errorf("wal-fetch wrote %q (%v); want the archived history file", got, err)
	}

	os.Remove(dst)
	if err := os.WriteFile(keyFile, []byte("CAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	code := run([]string{"backup", "wal-fetch", "-c", cfg, "00000002.history", dst}, &stdout, &stderr)
	if want := "the key does not decrypt repository file://" + filepath.Join(dir, "backups"); code != 126 || !strings.Contains(stderr.String(), want) {
		t.Errorf("wal-fetch with another key: exit %d, %s; want 126 (recovery stops) and %q", code, stderr.String(), want)
	}
	if _, err := os.Stat(dst); !os.IsNotExist(err) {
		t.Errorf("wal-fetch with another key wrote %s (%v)", dst, err)
	}
}

// backupConfig writes dir/haven.yaml: cluster shop, one database node db1,
// and database.backup's keys as given (indented four spaces).
func backupConfig(t *testing.T, dir, backup string) string {
	t.Helper()
	cfg := filepath.Join(dir, "haven.yaml")
	yaml := `cluster: shop
regions:
  east:
    nodes:
      db1: {address: 127.0.0.1}
database:
  nodes: [db1]
  backup:
` + backup + `coordination:
  members: [db1]
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}
