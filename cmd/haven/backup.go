package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/check"
	"github.com/haven-ha/haven/internal/backup/expire"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/pg"
)

const backupUsage = `usage: haven backup ACTION [flags] [ARGS]

actions:
  run [--incremental] [--wait]
                           ask the cluster for a full (or incremental) base backup now: the agents take it
                           on the node database.backup.from names, one at a time; with --wait, wait until
                           it is complete and print its label and size (--timeout bounds the wait)
  list [-o json]           the complete base backups, oldest first: label, kind, parent, start and
                           stop time, WAL positions, timeline, size and size stored
  verify [LABEL]           read back every file of the backup (the newest when no LABEL) and of
                           those it refers to, check sizes and checksums and that the archive holds
                           its WAL; exit 1 naming the first damaged or missing file
  restore --to DIR [--time T | --lsn L | --xid X | --name N] [--exclusive] [--label L] [--delta] [--socket PATH]
                           restore a backup (the newest, or the newest before --time, or --label)
                           into DIR, empty or missing (or, with --delta, a stopped data directory
                           whose matching files are kept), ready to start: recovery replays the
                           archive to the target (its end without one) and promotes; its
                           restore_command reads the repository as postgres, or, with --socket,
                           fetches through a haven's socket (the agent's: run/haven-wal.sock
                           beside database.data_dir)
  expire [--dry-run]       remove the backups and WAL that database.backup.retain and retain_count
                           no longer keep (--dry-run: say what, remove nothing)
  check [LABEL]            the restore test: restore the backup into a scratch directory, start
                           PostgreSQL on it, replay the archive to its end, run a query, remove it
  copy NAME                copy the cluster's backups and WAL archive from the first repository (or
                           --repository) to the repository NAME of database.backup.repositories (another
                           region's): only what NAME lacks, each backup's manifest after its files, so
                           it can run again after a failure or from cron; nothing is deleted from NAME
  wal-fetch FILE PATH      write WAL segment or history file FILE from the archive to PATH:
                           PostgreSQL's restore_command, as
                           restore_command = 'haven backup wal-fetch -c /etc/haven/haven.yaml %f %p'
                           or, run by the postgres user, through a socket of haven's (--socket)
                           exit 1 when FILE is not in the archive, which ends recovery there;
                           exit 126 when the archive could not be read, which stops recovery
                           rather than end it early at the wrong point

flags:
`

// backupFlags are the flags each action takes besides -c and --repository.
var backupFlags = map[string][]string{
	"run":       {"incremental", "wait", "timeout"},
	"list":      {"o"},
	"verify":    {"timeout"},
	"restore":   {"to", "time", "lsn", "xid", "name", "exclusive", "label", "delta", "socket", "restore-command"},
	"expire":    {"dry-run", "timeout"},
	"check":     {"scratch", "query", "timeout"},
	"wal-fetch": {"timeout", "socket"},
	"copy":      {"timeout"},
}

func runBackup(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("backup", stderr)
	fs.Usage = func() { io.WriteString(stderr, backupUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	from := fs.String("repository", "", "the repository to use (default: the first of database.backup.repositories)")
	timeout := fs.Duration("timeout", 0, "give up after this long (default: wal-fetch 2m, so that a restore_command cannot hang recovery; check 6h; otherwise none)")
	output := fs.String("o", "text", "list: text or json")
	incremental := fs.Bool("incremental", false, "run: an incremental backup (only what changed since the newest backup)")
	wait := fs.Bool("wait", false, "run: wait until the backup is complete")
	var r restoreFlags
	fs.StringVar(&r.to, "to", "", "restore: the data directory to restore into")
	fs.StringVar(&r.time, "time", "", "restore: recover to this time, such as 2026-12-04T13:05:00Z (a time without a zone is UTC)")
	fs.StringVar(&r.lsn, "lsn", "", "restore: recover to this WAL position, such as 0/3000060")
	fs.StringVar(&r.xid, "xid", "", "restore: recover to the commit of this transaction id")
	fs.StringVar(&r.name, "name", "", "restore: recover to this restore point (pg_create_restore_point)")
	fs.BoolVar(&r.exclusive, "exclusive", false, "restore: stop just before the target rather than just after it")
	fs.StringVar(&r.label, "label", "", "restore: the backup to restore (default: the newest that stopped before the target)")
	fs.BoolVar(&r.delta, "delta", false, "restore: into a stopped data directory, keeping the files that match the backup")
	fs.StringVar(&r.command, "restore-command", "", "restore: the restore_command to write (default: this haven's wal-fetch with -c and --repository)")
	dryRun := fs.Bool("dry-run", false, "expire: say what would be removed, remove nothing")
	scratch := fs.String("scratch", "/var/tmp", "check: the directory to restore into (a directory of its own in it, removed after)")
	query := fs.String("query", "", "check: the query to run on the restored server (default: SELECT count(*) FROM pg_class)")
	socket := fs.String("socket", "", "wal-fetch: fetch through this unix socket, served by haven for the postgres user, instead of reading the repository (no -c); restore: write that restore_command")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	action := pos[0]
	allowed, ok := backupFlags[action]
	if !ok {
		fmt.Fprintf(stderr, "haven backup: unknown action %q\n\n", action)
		fs.Usage()
		return errUsage
	}
	var stray []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "c" && f.Name != "repository" && !slices.Contains(allowed, f.Name) {
			stray = append(stray, "-"+f.Name)
		}
	})
	if len(stray) > 0 {
		return fmt.Errorf("backup %s does not take %s (see haven backup -h)", action, strings.Join(stray, ", "))
	}
	nargs := map[string][2]int{"run": {0, 0}, "list": {0, 0}, "verify": {0, 1}, "restore": {0, 0}, "expire": {0, 0}, "check": {0, 1}, "wal-fetch": {2, 2}, "copy": {1, 1}}[action]
	if n := len(pos) - 1; n < nargs[0] || n > nargs[1] {
		fs.Usage()
		return errUsage
	}
	label := ""
	if len(pos) > 1 {
		label = pos[1]
	}

	if action == "run" {
		return backupRun(*cfgPath, *incremental, *wait, *timeout, stdout)
	}
	if action == "wal-fetch" {
		ctx, cancel := withTimeout(context.Background(), *timeout, 2*time.Minute)
		defer cancel()
		return walFetch(ctx, *cfgPath, *from, *socket, pos[1], pos[2])
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	rp, err := openRepository(cfg, *from)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch action {
	case "list":
		if *output != "text" && *output != "json" {
			return fmt.Errorf("-o %q: want text or json", *output)
		}
		return backupList(ctx, rp, cfg.Cluster, *output == "json", stdout)
	case "verify":
		ctx, cancel := withTimeout(ctx, *timeout, 0)
		defer cancel()
		return backupVerify(ctx, rp, cfg, label, stdout)
	case "restore":
		r.cfgPath, r.repository, r.socket = *cfgPath, *from, *socket
		return backupRestore(ctx, rp, cfg, r, stdout, stderr)
	case "expire":
		ctx, cancel := withTimeout(ctx, *timeout, 0)
		defer cancel()
		return backupExpire(ctx, rp, cfg, *dryRun, stdout, stderr)
	case "copy":
		ctx, cancel := withTimeout(ctx, *timeout, 0)
		defer cancel()
		return backupCopy(ctx, rp, cfg, pos[1], stdout)
	case "check":
		ctx, cancel := withTimeout(ctx, *timeout, 6*time.Hour)
		defer cancel()
		return backupCheck(ctx, rp, cfg, check.Config{Label: label, ScratchDir: *scratch, Query: *query}, stdout, stderr)
	}
	return nil
}

// withTimeout bounds ctx by d, or by def when d is zero (no bound when
// both are).
func withTimeout(ctx context.Context, d, def time.Duration) (context.Context, context.CancelFunc) {
	if d == 0 {
		d = def
	}
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// backupCopy copies cfg's cluster from src to the repository named to.
func backupCopy(ctx context.Context, src repo.Repository, cfg *config.Config, to string, stdout io.Writer) error {
	dst, err := openRepository(cfg, to)
	if err != nil {
		return err
	}
	if dst.String() == src.String() {
		return fmt.Errorf("backup copy: %s is the repository copied from: name another", to)
	}
	start := time.Now()
	st, err := repo.Copy(ctx, dst, src, cfg.Cluster+"/")
	fmt.Fprintf(stdout, "copied %d objects (%s), %d already there, from %s to %s in %s\n",
		st.Copied, size(st.Bytes), st.Skipped, src, dst, time.Since(start).Round(time.Millisecond))
	return err
}

// openRepository opens the repository named name of cfg's database
// backups, or the first one when name is empty.
func openRepository(cfg *config.Config, name string) (repo.Repository, error) {
	if cfg.Database == nil || cfg.Database.Backup == nil {
		return nil, fmt.Errorf("%s has no database.backup: nowhere to read backups from", cfg.File)
	}
	return repo.OpenNamed(cfg.Database.Backup, name)
}

// backupEntry is one line of `haven backup list`, and its JSON.
type backupEntry struct {
	Label       string    `json:"label"`
	Kind        string    `json:"kind"`
	Parent      string    `json:"parent,omitempty"`
	StartTime   time.Time `json:"start_time"`
	StopTime    time.Time `json:"stop_time"`
	StartLSN    string    `json:"start_lsn"`
	StopLSN     string    `json:"stop_lsn"`
	Timeline    uint32    `json:"timeline"`
	Bytes       int64     `json:"bytes"`
	StoredBytes int64     `json:"stored_bytes"`
	Compression string    `json:"compression"`
	FromReplica bool      `json:"from_replica"`
}

func backupList(ctx context.Context, r repo.Repository, cluster string, asJSON bool, stdout io.Writer) error {
	ms, err := base.List(ctx, r, cluster)
	if err != nil {
		return err
	}
	entries := []backupEntry{}
	for _, m := range ms {
		entries = append(entries, backupEntry{Label: m.Label, Kind: m.Kind, Parent: m.Prior,
			StartTime: m.StartTime.UTC(), StopTime: m.StopTime.UTC(), StartLSN: m.StartLSN, StopLSN: m.StopLSN,
			Timeline: m.Timeline, Bytes: m.Bytes, StoredBytes: m.Stored, Compression: string(m.Compression), FromReplica: m.FromReplica})
	}
	if asJSON {
		return printJSON(stdout, entries)
	}
	if len(entries) == 0 {
		fmt.Fprintf(stdout, "no complete backup of %s in %s\n", cluster, r)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LABEL\tKIND\tPARENT\tSTART\tSTOP\tSTART LSN\tSTOP LSN\tTL\tSIZE\tSTORED")
	for _, e := range entries {
		parent := e.Parent
		if parent == "" {
			parent = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Label, e.Kind, parent,
			e.StartTime.Format(time.DateTime), e.StopTime.Format(time.DateTime), e.StartLSN, e.StopLSN, e.Timeline,
			size(e.Bytes), size(e.StoredBytes))
	}
	return tw.Flush()
}

// size formats n bytes in binary units.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n)/unit, 0
	for v >= unit && u < 4 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[u])
}

func backupVerify(ctx context.Context, r repo.Repository, cfg *config.Config, label string, stdout io.Writer) error {
	m, err := base.Verify(ctx, r, cfg.Cluster, label, cfg.Database.Backup.Parallel)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backup %s (%s) of %s is sound: %d files, %s, read back and checked; the archive holds its WAL from %s to %s\n",
		m.Label, m.Kind, cfg.Cluster, len(m.Files), size(m.Bytes), m.StartLSN, m.StopLSN)
	return nil
}

// restoreFlags are restore's flags.
type restoreFlags struct {
	to, time, lsn, xid, name, label, command string
	exclusive, delta                         bool
	cfgPath, repository, socket              string
}

// parseTargetTime reads --time: RFC 3339, or a date and time with an
// optional zone (UTC without one).
func parseTargetTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999Z07",
		"2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--time %q is not a time: give 2026-12-04T13:05:00Z, 2026-12-04 13:05:00+01:00 or 2026-12-04 13:05:00 (UTC)", s)
}

// runAsUser is the user PostgreSQL runs as: database.user when haven
// runs as root, this process's own otherwise.
func runAsUser(cfg *config.Config) string {
	if os.Geteuid() != 0 {
		return ""
	}
	if cfg.Database.User != "" {
		return cfg.Database.User
	}
	return pg.Superuser
}

func backupRestore(ctx context.Context, r repo.Repository, cfg *config.Config, f restoreFlags, stdout, stderr io.Writer) error {
	if f.to == "" {
		return errors.New("restore: --to DIR is required: the data directory to restore into")
	}
	dir, err := filepath.Abs(f.to)
	if err != nil {
		return err
	}
	target := base.Target{LSN: f.lsn, XID: f.xid, Name: f.name, Exclusive: f.exclusive}
	if f.time != "" {
		if target.Time, err = parseTargetTime(f.time); err != nil {
			return err
		}
	}
	if f.lsn != "" {
		if _, err := pg.ParseLSN(f.lsn); err != nil {
			return fmt.Errorf("--lsn %q is not a WAL position such as 0/3000060", f.lsn)
		}
	}
	ms, err := base.List(ctx, r, cfg.Cluster)
	if err != nil {
		return err
	}
	m, err := pickBackup(ms, f.label, target)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	command := f.command
	if command == "" && f.socket != "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		socket, err := filepath.Abs(f.socket)
		if err != nil {
			return err
		}
		command = check.Command(exe, "backup", "wal-fetch", "--socket", socket)
	}
	if command == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		cfgPath, err := filepath.Abs(f.cfgPath)
		if err != nil {
			return err
		}
		args := []string{"backup", "wal-fetch", "-c", cfgPath}
		if f.repository != "" {
			args = append(args, "--repository", f.repository)
		}
		command = check.Command(exe, args...)
	}
	owner := runAsUser(cfg)
	if err := check.RestoreCommand(ctx, command, owner, m.FirstSegment()); err != nil {
		who := owner
		if who == "" {
			who = "this user"
		}
		return fmt.Errorf("restore: %w\nrestore_command runs as the user PostgreSQL runs as (%s), who must be able to run it: "+
			"run the haven executable, read %s and the repository %s (see \"Restoring as root\" in docs/backup.md), "+
			"or give --restore-command a command that can; nothing was restored", err, who, f.cfgPath, r)
	}
	log := newLogger(stderr, "info", false)
	m, st, err := base.Restore(ctx, base.RestoreConfig{Repo: r, Cluster: cfg.Cluster, Label: m.Label, DataDir: dir, Delta: f.delta,
		Workers: cfg.Database.Backup.Parallel, RestoreCommand: command, Target: target, Owner: owner, Logger: log})
	if err != nil {
		return err
	}
	to := "the end of the archive"
	switch {
	case !target.Time.IsZero():
		to = "time " + target.Time.UTC().Format(time.RFC3339Nano)
	case target.LSN != "":
		to = "WAL position " + target.LSN
	case target.XID != "":
		to = "the commit of transaction " + target.XID
	case target.Name != "":
		to = "restore point " + target.Name
	}
	bindir := "PG_BINDIR"
	if bins, err := pg.FindBinaries(ctx, cfg.Database.Bindir); err == nil {
		bindir = bins.Dir
	}
	start := fmt.Sprintf("%s -D %s -l %s start", filepath.Join(bindir, "pg_ctl"), dir, dir+".log")
	if owner != "" {
		start = fmt.Sprintf("su %s -s /bin/sh -c '%s'", owner, start)
	}
	fmt.Fprintf(stdout, `restored backup %s (%s, stopped %s) of %s into %s: %d files, %s (%s fetched, %d files kept by --delta)
recovery will replay the archive from %s to %s, then promote (a new timeline); restore_command = %s

next: start PostgreSQL %d on it, for example
  %s
it listens on the port, addresses and socket directory of the server it was backed up from (set in
%s in it): change them there if that server runs on this node or the directory is not here.
To run it as a node of the cluster instead, give the agent this directory as database.data_dir.
`, m.Label, m.Kind, m.StopTime.UTC().Format(time.DateTime), cfg.Cluster, dir, st.Files, size(st.Bytes), size(st.Fetched), st.Reused,
		m.StartLSN, to, command, m.PGVersion/10000, start, pg.HavenConf)
	return nil
}

// pickBackup is the backup a restore starts from: label, or the newest
// that stopped before a time target (the newest at all without one).
func pickBackup(ms []*base.Manifest, label string, t base.Target) (*base.Manifest, error) {
	if len(ms) == 0 {
		return nil, errors.New("no complete backup to restore")
	}
	if label != "" {
		for _, m := range ms {
			if m.Label == label {
				return m, nil
			}
		}
		return nil, fmt.Errorf("no complete backup %q (haven backup list shows them)", label)
	}
	if t.Time.IsZero() {
		return ms[len(ms)-1], nil
	}
	for _, m := range slices.Backward(ms) {
		if !m.StopTime.After(t.Time) {
			return m, nil
		}
	}
	return nil, fmt.Errorf("no backup stopped before %s: the oldest, %s, stopped %s", t.Time.UTC().Format(time.RFC3339), ms[0].Label, ms[0].StopTime.UTC().Format(time.RFC3339))
}

func backupExpire(ctx context.Context, r repo.Repository, cfg *config.Config, dry bool, stdout, stderr io.Writer) error {
	b := cfg.Database.Backup
	p, err := expire.Run(ctx, expire.Config{Repo: r, Cluster: cfg.Cluster, DryRun: dry, Logger: newLogger(stderr, "warn", false),
		Policy: expire.Policy{Retain: b.Retain.D(), RetainCount: b.RetainCount}})
	if p == nil {
		return err
	}
	policy := fmt.Sprintf("retain_count %d", b.RetainCount)
	if b.Retain != 0 {
		policy = fmt.Sprintf("retain %s, %s", b.Retain, policy)
	}
	if dry {
		fmt.Fprintf(stdout, "dry run, nothing removed: expiry of %s in %s (%s) would remove\n", cfg.Cluster, r, policy)
	} else {
		fmt.Fprintf(stdout, "expiry of %s in %s (%s) removed\n", cfg.Cluster, r, policy)
	}
	for _, m := range p.Expire {
		fmt.Fprintf(stdout, "  backup %s (%s, stopped %s)\n", m.Label, m.Kind, m.StopTime.UTC().Format(time.DateTime))
	}
	for _, l := range p.Incomplete {
		fmt.Fprintf(stdout, "  incomplete backup %s\n", l)
	}
	if len(p.WAL) > 0 {
		fmt.Fprintf(stdout, "  %d WAL objects before %s (%s)\n", len(p.WAL), p.WALBefore, size(p.WALBytes))
	}
	if len(p.Expire)+len(p.Incomplete)+len(p.WAL) == 0 {
		fmt.Fprintln(stdout, "  nothing")
	}
	var kept []string
	for _, m := range p.Keep {
		kept = append(kept, m.Label)
	}
	fmt.Fprintf(stdout, "kept %d backups: %s\n", len(kept), strings.Join(kept, " "))
	return err
}

func backupCheck(ctx context.Context, r repo.Repository, cfg *config.Config, c check.Config, stdout, stderr io.Writer) error {
	c.Repo, c.Cluster = r, cfg.Cluster
	c.BinDir, c.User, c.Settings = cfg.Database.Bindir, runAsUser(cfg), cfg.Database.Settings
	c.Workers = cfg.Database.Backup.Parallel
	c.Logger = newLogger(stderr, "warn", false)
	res, err := check.Run(ctx, c)
	if err != nil {
		return err
	}
	at := "no transaction replayed"
	if !res.RecoveredTime.IsZero() {
		at = "last transaction committed " + res.RecoveredTime.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(stdout, "restore test of backup %s of %s passed in %s: %s restored (%s fetched), recovered to %s (%s); %s: %s\n",
		res.Label, cfg.Cluster, res.Duration.Round(time.Millisecond), size(res.Bytes), size(res.Fetched), res.RecoveredLSN, at, res.Query, res.Answer)
	return nil
}

// walFetch is restore_command: WAL file name into dst, from the repository
// or through socket. A file the archive does not have exits 1, which ends
// recovery there; any other failure exits 126, which PostgreSQL takes as
// fatal: a restore that could not read the archive must stop, not promote
// at an earlier point than asked for. A standby (restore_command runs in
// its data directory, which holds standby.signal) exits 1 for those too:
// it never promotes on its own, and tries streaming and the archive again.
func walFetch(ctx context.Context, cfgPath, repository, socket, name, dst string) error {
	var err error
	if socket != "" {
		err = wal.FetchFromSocket(ctx, socket, name, dst)
	} else {
		err = fetchFromRepository(ctx, cfgPath, repository, name, dst)
	}
	if _, serr := os.Stat("standby.signal"); err != nil && !repo.IsNotExist(err) && serr != nil {
		return codedError{code: 126, err: err}
	}
	return err
}

func fetchFromRepository(ctx context.Context, cfgPath, repository, name, dst string) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	r, err := openRepository(cfg, repository)
	if err != nil {
		return err
	}
	return wal.FetchFile(ctx, r, cfg.Cluster, name, dst)
}

// printJSON writes v as indented JSON: what -o json prints.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
