package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/web"
)

// A database node's agent serves the backup archive to its postgres:
// restore_command runs as the postgres user, which reads neither
// haven.yaml nor the repository, and asks the agent through a socket that
// only that user and root may open (wal.ServeSocket).

// WALSocketName is the archive's socket, in PostgreSQL's socket directory.
const WALSocketName = "haven-wal.sock"

// walSocket returns the path of this node's archive socket.
func (r *dbRole) walSocket() string { return filepath.Join(r.srv.SocketDir(), WALSocketName) }

// restoreCommand is the restore_command of a data directory restored on
// this node.
func (r *dbRole) restoreCommand() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("the haven binary's path, for restore_command: %w", err)
	}
	return fmt.Sprintf("'%s' backup wal-fetch --socket '%s' %%f %%p", exe, r.walSocket()), nil
}

// serveWAL serves the archive on the node's socket until ctx ends; nothing
// when the cluster has no backups.
func (r *dbRole) serveWAL(ctx context.Context, b *config.Backup) {
	if b == nil {
		return
	}
	rp, err := repo.OpenNamed(b, "")
	if err != nil {
		r.a.log.Error("the backup archive is not served to postgres", "err", err)
		return
	}
	owner := ""
	if os.Geteuid() == 0 {
		owner = r.cfg.Database.User
	}
	if err := r.srv.PrepareSocketDir(); err != nil {
		r.a.log.Error("the backup archive is not served to postgres", "err", err)
		return
	}
	if err := wal.ServeSocket(ctx, r.walSocket(), owner, wal.Handler(rp, r.cfg.Cluster, r.a.log)); err != nil {
		r.a.log.Error("the backup archive is not served to postgres", "err", err)
	}
}

// restoreBackup is the keeper's RestoreBackup: the newest base backup into
// dataDir, with this node's restore_command. Nil without backups.
func (r *dbRole) restoreBackup(b *config.Backup) func(ctx context.Context, dataDir string) error {
	if b == nil {
		return nil
	}
	return func(ctx context.Context, dataDir string) error {
		rp, err := repo.OpenNamed(b, "")
		if err != nil {
			return err
		}
		cmd, err := r.restoreCommand()
		if err != nil {
			return err
		}
		owner := ""
		if os.Geteuid() == 0 {
			owner = r.cfg.Database.User
		}
		m, st, err := base.Restore(ctx, base.RestoreConfig{Repo: rp, Cluster: r.cfg.Cluster, DataDir: dataDir,
			RestoreCommand: cmd, Owner: owner, Workers: b.Parallel, Logger: r.a.log})
		if err != nil {
			return err
		}
		r.a.log.Info("restored a base backup", "label", m.Label, "files", st.Files, "bytes", st.Bytes, "fetched", st.Fetched)
		return nil
	}
}

// reinit serves POST /api/v1/database/reinit[?from=backup][&wait=DURATION]:
// this node's replica rebuilt (keeper.Reinit); it answers once the new
// replica streams, or when wait (default an hour) has passed.
func (a *Agent) reinit(w http.ResponseWriter, req *http.Request) {
	rs := a.current()
	var k *keeper.Keeper
	if rs.db != nil {
		k = rs.db.keeper.Load()
	}
	if k == nil {
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("node %s runs no database keeper (not a database node, or waiting for etcd)", a.opt.Node))
		return
	}
	from := req.URL.Query().Get("from")
	if from != "" && from != "backup" {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("from=%q: give from=backup, or nothing to copy the primary", from))
		return
	}
	wait := time.Hour
	if s := req.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			web.WriteError(w, http.StatusBadRequest, fmt.Errorf("wait=%q is not a positive duration", s))
			return
		}
		wait = d
	}
	ctx, cancel := context.WithTimeout(req.Context(), wait)
	defer cancel()
	// The admin server ends a response after 30 s; a rebuild takes as
	// long as copying the database.
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + 10*time.Second)); err != nil {
		a.log.Warn("reinit: the answer may be cut at the admin server's write timeout", "err", err)
	}
	err := k.Reinit(ctx, from == "backup")
	switch {
	case errors.Is(err, keeper.ErrReinitPrimary):
		web.WriteError(w, http.StatusConflict, err)
	case err != nil:
		web.WriteError(w, http.StatusInternalServerError, fmt.Errorf("rebuild %s: %w", a.opt.Node, err))
	default:
		if from == "" {
			from = "the primary"
		} else {
			from = "the newest backup"
		}
		web.WriteJSON(w, http.StatusOK, map[string]string{"from": from})
	}
}
