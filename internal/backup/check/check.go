// Package check proves a backup by restoring it: the restore test that
// `haven backup check` runs and the agent schedules (verify_every).
//
// Run restores a base backup into a fresh directory under a scratch
// directory, starts PostgreSQL on it (a unix socket in a private
// directory, no TCP; as the postgres user when haven runs as root), lets
// it replay the archive's WAL to its end and promote, runs a query, and
// stops it and removes the directory, whatever happened.
//
// # Who reads the repository
//
// PostgreSQL fetches WAL with restore_command, which runs as the user
// postgres runs as. A repository the agent (root) writes is not readable
// by that user (a file repository's directories are 0700, an S3
// repository's credentials file is root's). So Run serves the archive
// itself, as the agent does for its node (wal.ServeSocket): a unix socket
// only the postgres user and root may open, in the scratch directory, and
// restore_command is
// `haven backup wal-fetch --socket SOCKET %f %p`. postgres needs no access
// to the repository; it needs to run the haven executable (Config.Haven).
// Before restoring anything, Run runs that restore_command once, as
// postgres, for the backup's first WAL segment (RestoreCommand), so that
// a haven binary postgres cannot run is reported as such rather than as
// a recovery that never ends.
package check

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
)

// Config is what Run needs. Repo, Cluster and ScratchDir are required.
type Config struct {
	Repo    repo.Repository
	Cluster string
	// Label is the backup to test; the newest complete one when empty.
	Label string
	// ScratchDir is where the backup is restored, in a directory of its
	// own that Run removes: it needs room for the whole data directory.
	ScratchDir string
	// BinDir is PostgreSQL's binary directory; empty: searched (PATH,
	// then pg_config).
	BinDir string
	// User is the operating system user postgres runs as; empty:
	// postgres when Run runs as root.
	User string
	// Haven is the haven executable restore_command runs; empty: this
	// process's own. The postgres user must be able to run it.
	Haven string
	// Settings are postgresql.conf settings for the restored server
	// (database.settings): a server in recovery refuses to run with
	// max_connections and a few others lower than the cluster had.
	Settings map[string]string
	// Workers restore files in parallel: 2 when zero.
	Workers int
	// Query is run on the restored server; its first column of its first
	// row is the Result's Answer. Default: SELECT count(*) FROM pg_class.
	Query  string
	Logger *slog.Logger
}

// Result is what a restore test found.
type Result struct {
	// Label is the backup restored.
	Label string
	// Bytes is the size of the restored data directory's files, Fetched
	// what was read from the repository for them (compressed).
	Bytes, Fetched int64
	// Duration is how long the whole test took: restore, recovery and
	// query.
	Duration time.Duration
	// RecoveredLSN is the end of the last WAL record replayed, and
	// RecoveredTime the commit time of the last transaction replayed
	// (zero when recovery replayed none).
	RecoveredLSN  pg.LSN
	RecoveredTime time.Time
	// Query and Answer are the query run on the restored server and its
	// answer.
	Query, Answer string
}

const defaultQuery = "SELECT count(*) FROM pg_class"

// Run restores cfg's backup into a scratch directory, starts PostgreSQL
// on it, waits until it has replayed the archive to its end and
// promoted, runs cfg.Query, then stops it and removes the directory.
// The error says which step failed: finding the backup, restore_command,
// restoring (naming a damaged file), starting PostgreSQL, recovery (with
// the server's last log lines), or the query.
func Run(ctx context.Context, cfg Config) (Result, error) {
	start := time.Now()
	if cfg.Query == "" {
		cfg.Query = defaultQuery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	res := Result{Label: cfg.Label, Query: cfg.Query}
	err := run(ctx, cfg, &res)
	res.Duration = time.Since(start)
	if err != nil {
		what := "the newest backup"
		if res.Label != "" {
			what = "backup " + res.Label
		}
		return res, fmt.Errorf("check: restore test of %s of %s in %s: %w", what, cfg.Cluster, cfg.Repo, err)
	}
	return res, nil
}

func run(ctx context.Context, cfg Config, res *Result) error {
	log := cfg.Logger.With("component", "backup")
	if cfg.ScratchDir == "" {
		return errors.New("no scratch directory to restore into")
	}
	m, err := base.Find(ctx, cfg.Repo, cfg.Cluster, cfg.Label)
	if err != nil {
		return err
	}
	res.Label = m.Label
	owner, err := runAs(cfg.User)
	if err != nil {
		return err
	}
	haven := cfg.Haven
	if haven == "" {
		if haven, err = os.Executable(); err != nil {
			return fmt.Errorf("the haven executable for restore_command: %w", err)
		}
	}

	if err := os.MkdirAll(cfg.ScratchDir, 0o711); err != nil {
		return fmt.Errorf("scratch directory: %w", err)
	}
	dir, err := os.MkdirTemp(cfg.ScratchDir, "haven-check-")
	if err != nil {
		return fmt.Errorf("scratch directory: %w", err)
	}
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("cannot remove the restore test's scratch directory", "dir", dir, "err", err)
		}
	}()
	if err := os.Chmod(dir, 0o711); err != nil {
		return err
	}

	// The archive, served to postgres alone on a socket of its own.
	sock := filepath.Join(dir, "wal.sock")
	sctx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	if err := wal.ServeSocket(sctx, sock, owner.name, wal.Handler(cfg.Repo, cfg.Cluster, cfg.Logger)); err != nil {
		return err
	}
	command := Command(haven, "backup", "wal-fetch", "--socket", sock)
	if err := RestoreCommand(ctx, command, owner.name, m.FirstSegment()); err != nil {
		return err
	}

	data := filepath.Join(dir, "data")
	log.Info("restore test started", "label", m.Label, "dir", data)
	_, st, err := base.Restore(ctx, base.RestoreConfig{Repo: cfg.Repo, Cluster: cfg.Cluster, Label: m.Label,
		DataDir: data, RestoreCommand: command, Owner: owner.name, Workers: cfg.Workers, Logger: cfg.Logger})
	res.Bytes, res.Fetched = st.Bytes, st.Fetched
	if err != nil {
		return err
	}
	srv, err := pg.New(ctx, pg.Config{Bindir: cfg.BinDir, DataDir: data, SocketDir: filepath.Join(dir, "run"),
		User: owner.name, Settings: cfg.Settings, Logger: cfg.Logger})
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if err := srv.Stop(sctx, pg.StopImmediate); err != nil {
			log.Warn("cannot stop the restore test's server", "err", err)
		}
	}()
	if err := srv.Start(ctx); err != nil {
		return fmt.Errorf("start PostgreSQL on the restored backup: %w", err)
	}
	if err := waitPromoted(ctx, srv); err != nil {
		return err
	}
	c, err := srv.Connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close(context.WithoutCancel(ctx))
	var lsn string
	var at *time.Time
	if err := c.QueryRow(ctx, "SELECT pg_last_wal_replay_lsn()::text, pg_last_xact_replay_timestamp()").Scan(&lsn, &at); err != nil {
		return fmt.Errorf("where recovery ended: %w", err)
	}
	if res.RecoveredLSN, err = pg.ParseLSN(lsn); err != nil {
		return fmt.Errorf("where recovery ended: %w", err)
	}
	if at != nil {
		res.RecoveredTime = *at
	}
	rows, err := c.Query(ctx, cfg.Query)
	if err != nil {
		return fmt.Errorf("query %q: %w", cfg.Query, err)
	}
	if rows.Next() {
		vs, err := rows.Values()
		if err == nil && len(vs) > 0 {
			res.Answer = fmt.Sprint(vs[0])
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query %q: %w", cfg.Query, err)
	}
	log.Info("restore test passed", "label", m.Label, "bytes", res.Bytes, "recovered_lsn", res.RecoveredLSN.String(),
		"recovered_time", res.RecoveredTime, "answer", res.Answer)
	return nil
}

// waitPromoted waits until srv has ended recovery: replayed the archive
// to its end (restore_command answers that the next file is missing) and
// promoted. A server that exits first is an error with its last log
// lines.
func waitPromoted(ctx context.Context, srv *pg.Server) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		in, err := srv.IsInRecovery(ctx)
		if err == nil && !in {
			return nil
		}
		last = err
		select {
		case <-srv.Done():
			return fmt.Errorf("PostgreSQL exited during recovery; its last lines:\n%s", strings.Join(srv.LogTail(), "\n"))
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("recovery did not end: %w (last: %v); its last lines:\n%s", ctx.Err(), last, strings.Join(srv.LogTail(), "\n"))
			}
			return fmt.Errorf("recovery did not end: %w; its last lines:\n%s", ctx.Err(), strings.Join(srv.LogTail(), "\n"))
		case <-tick.C:
		}
	}
}

// account is an operating system user a child process runs as.
type account struct {
	name     string
	cred     *syscall.Credential // nil: this process's own
	uid, gid int
}

// runAs resolves the user postgres runs as: name, or postgres when this
// process is root; this process's own user otherwise.
func runAs(name string) (account, error) {
	if os.Geteuid() != 0 {
		if name != "" {
			if u, err := user.Current(); err != nil || u.Username != name {
				return account{}, fmt.Errorf("postgres runs as %s: only root can run it as another user", name)
			}
		}
		return account{uid: -1, gid: -1}, nil
	}
	if name == "" {
		name = pg.Superuser
	}
	u, err := user.Lookup(name)
	if err != nil {
		return account{}, fmt.Errorf("the user postgres runs as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	var groups []uint32
	if ids, err := u.GroupIds(); err == nil {
		for _, id := range ids {
			if g, err := strconv.Atoi(id); err == nil {
				groups = append(groups, uint32(g))
			}
		}
	}
	return account{name: name, uid: uid, gid: gid,
		cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}, nil
}

func chown(p string, a account) error {
	if a.cred == nil {
		return nil
	}
	return os.Lchown(p, a.uid, a.gid)
}

// Command returns a restore_command that runs the program prog with
// args and then %f and %p, each quoted for sh, which runs it.
func Command(prog string, args ...string) string {
	var b strings.Builder
	for _, a := range append([]string{prog}, args...) {
		b.WriteString(shellQuote(a) + " ")
	}
	return b.String() + "%f %p"
}

// shellQuote quotes s for sh when it holds more than letters, digits and
// /._-+=:.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// RestoreCommand runs command, a restore_command with %f and %p, once as
// PostgreSQL would: through sh, as user (the user postgres runs as; empty:
// this process's own, or postgres when root), with PostgreSQL's bare
// environment, for the WAL file name, into a file in a temporary
// directory of that user's. It returns an error with the command's output
// when the command fails or writes no file: a restore_command that
// postgres cannot run (the haven executable, haven.yaml or the repository
// unreadable to that user) found before a restore rather than by a
// recovery that stops.
func RestoreCommand(ctx context.Context, command, username, name string) error {
	a, err := runAs(username)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "haven-fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := chown(dir, a); err != nil {
		return err
	}
	dst := filepath.Join(dir, "RECOVERYXLOG")
	line := strings.NewReplacer("%f", name, "%p", dst, "%%", "%").Replace(command)
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C"}
	if a.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: a.cred}
	}
	who := a.name
	if who == "" {
		who = "this user"
	}
	out, err := cmd.CombinedOutput()
	if err == nil {
		if _, serr := os.Stat(dst); serr != nil {
			err = fmt.Errorf("it wrote no file")
		}
	}
	if err != nil {
		return fmt.Errorf("restore_command run as %s for %s failed: %w: %s (%s)", who, name, err,
			strings.TrimSpace(string(out)), line)
	}
	return nil
}
