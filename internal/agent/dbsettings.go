package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/web"
)

// reconfigureTimeout bounds a reload's rewrite of postgres's files and its
// reload of them.
const reconfigureTimeout = 10 * time.Second

// reconfigure applies a reloaded file's database settings and pg_hba.conf
// lines to this node's postgres without restarting it; postgres reports
// those it applies only at its next start, which the keeper publishes as
// pending (haven pg status, haven pg restart --pending). Nothing else of
// the database section changes before the agent restarts
// (databaseRestartOnly).
func (db *dbRole) reconfigure(cfg *config.Config) error {
	pc, err := serverConfig(cfg, db.a.opt.Node)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), reconfigureTimeout)
	defer cancel()
	r, err := db.srv.Reconfigure(ctx, pc.Settings, pc.HBA)
	if err != nil {
		return fmt.Errorf("database settings: %w", err)
	}
	if k := db.keeper.Load(); k != nil && db.srv.PID() != 0 {
		k.SetPendingRestart(r.Pending, r.Lowered)
	}
	if len(r.Changed) > 0 || len(r.Pending) > 0 {
		db.a.log.Info("database settings reloaded", "changed", r.Changed, "pending_restart", r.Pending)
	}
	if len(r.Pending) > 0 {
		db.a.log.Warn("database settings that take effect only when postgres restarts: haven pg restart --pending applies them, a node at a time", "pending_restart", r.Pending, "lowered", r.Lowered)
	}
	return nil
}

// databaseRestartOnly says whether the database sections differ in more
// than what a reload applies (settings and hba).
func databaseRestartOnly(old, cfg *config.Database) bool {
	if old == nil || cfg == nil {
		return (old == nil) != (cfg == nil)
	}
	a, b := *old, *cfg
	a.Settings, b.Settings = nil, nil
	a.HBA, b.HBA = nil, nil
	return !reflect.DeepEqual(a, b)
}

// restartDatabase serves POST /api/v1/database/restart: a restart in place
// of this node's postgres (haven pg restart), answered once it runs again.
// The primary refuses when the database has another node: the CLI
// switches over first, so that writes never wait for the restart.
func (a *Agent) restartDatabase(w http.ResponseWriter, r *http.Request) {
	rs := a.current()
	if rs.db == nil {
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("node %s is not a database node", a.opt.Node))
		return
	}
	k := rs.db.keeper.Load()
	if k == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("the keeper is not running yet (waiting for etcd?)"))
		return
	}
	if k.Leader() && len(rs.db.cfg.Database.Nodes) > 1 && r.URL.Query().Get("primary") != "in-place" {
		web.WriteError(w, http.StatusConflict, errors.New("this node is the primary: switch over first (haven pg restart does), or ask for primary=in-place to have writes wait while it restarts"))
		return
	}
	const limit = 2 * time.Minute
	ctx, cancel := context.WithTimeout(r.Context(), limit)
	defer cancel()
	// The answer may come after the server's 30 s write timeout: the
	// caller must get it, not a closed connection.
	if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(limit + 10*time.Second)); err != nil {
		a.log.Warn("restart: cannot extend the answer's write deadline", "err", err)
	}
	began := time.Now()
	if err := k.RestartPostgres(ctx); err != nil {
		web.WriteError(w, http.StatusInternalServerError, err)
		return
	}
	web.WriteJSON(w, http.StatusOK, map[string]any{"node": a.opt.Node, "took_ms": time.Since(began).Milliseconds(), "pid": rs.db.srv.PID()})
}
