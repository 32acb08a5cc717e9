package pg

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reconfigured is what Reconfigure changed.
type Reconfigured struct {
	// Changed are the settings that differ from before; Pending those
	// PostgreSQL applies only at its next start (pg_settings'
	// pending_restart), nil when postgres does not run; Lowered those of
	// Pending that a standby needs at least the primary's value of
	// (RecoverySensitive), lowered: the primary must restart with them
	// before its standbys can. All sorted.
	Changed, Pending, Lowered []string
}

// RecoverySensitive are the settings a standby must have at least as high
// as its primary's, or its recovery stops ("insufficient parameter
// settings"): raise them on the standbys first, lower them on the primary
// first.
var RecoverySensitive = []string{"max_connections", "max_locks_per_transaction", "max_prepared_transactions", "max_wal_senders", "max_worker_processes"}

// Reconfigure replaces the user's settings and pg_hba.conf lines (Config's
// Settings and HBA; nothing else of a Server changes while it lives),
// rewrites haven's files and, while postgres runs, reloads it: what a
// reload applies takes effect now. Invalid settings change nothing.
func (s *Server) Reconfigure(ctx context.Context, settings map[string]string, hba []string) (Reconfigured, error) {
	var out Reconfigured
	if err := checkHBA(hba); err != nil {
		return out, err
	}
	conf, err := userSettings(settings, s.cfg.managed)
	if err != nil {
		return out, err
	}
	changed := []string{}
	s.cfg.kmu.Lock()
	for name, v := range conf {
		if old, ok := s.cfg.userConf[name]; !ok || old != v {
			changed = append(changed, name)
		}
	}
	for name := range s.cfg.userConf {
		if _, ok := conf[name]; !ok {
			changed = append(changed, name)
		}
	}
	hbaChanged := !slices.Equal(hba, s.cfg.hba)
	oldConf, oldHBA := s.cfg.userConf, s.cfg.hba
	s.cfg.userConf, s.cfg.hba = conf, slices.Clone(hba)
	err = s.cfg.writeConfigLocked()
	if err == nil && (len(changed) > 0 || hbaChanged) {
		if cerr := s.checkConf(ctx); cerr != nil {
			// Put the files back as they were: postgres must never
			// read values it would refuse at its next start.
			s.cfg.userConf, s.cfg.hba = oldConf, oldHBA
			err = errors.Join(cerr, s.cfg.writeConfigLocked())
		}
	}
	s.cfg.kmu.Unlock()
	slices.Sort(changed)
	out.Changed = changed
	if err != nil {
		return out, fmt.Errorf("pg: reconfigure: %w", err)
	}
	switch {
	case s.PID() == 0:
		return out, nil // the next start reads the files
	case len(changed) == 0 && !hbaChanged:
		out.Pending, err = s.PendingRestart(ctx)
	default:
		out.Pending, err = s.reloadConf(ctx)
	}
	if err != nil {
		return out, err
	}
	out.Lowered, err = s.lowered(ctx, out.Pending, conf)
	return out, err
}

// lowered returns the recovery-sensitive settings among pending whose
// value in conf is lower than the one postgres runs with.
func (s *Server) lowered(ctx context.Context, pending []string, conf map[string]string) ([]string, error) {
	var out []string
	for _, name := range pending {
		want, set := conf[name]
		if !slices.Contains(RecoverySensitive, name) || !set {
			continue
		}
		var running string
		err := s.withConn(ctx, func(c *pgx.Conn) error {
			return c.QueryRow(ctx, "SELECT setting FROM pg_settings WHERE name = $1", name).Scan(&running)
		})
		if err != nil {
			return nil, fmt.Errorf("pg: %s: %w", name, err)
		}
		w, werr := strconv.ParseInt(want, 10, 64)
		r, rerr := strconv.ParseInt(running, 10, 64)
		if werr == nil && rerr == nil && w < r {
			out = append(out, name)
		}
	}
	return out, nil
}

// checkConfTimeout bounds checkConf.
const checkConfTimeout = 30 * time.Second

// checkConf has PostgreSQL read the configuration files as it would at
// its next start (postgres -C, which the running server does not mind)
// and fails with what it says when it would refuse them: an unknown
// parameter, a value out of range or of the wrong kind. A reload would
// only log these and go on with the old values.
func (s *Server) checkConf(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, checkConfTimeout)
	defer cancel()
	out, err := s.command(ctx, "postgres", "-D", s.cfg.dataDir, "-C", "port").CombinedOutput()
	if err != nil {
		return fmt.Errorf("PostgreSQL refuses the settings (%w): %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// reloadTimeout bounds the wait for a reload to reach haven's session.
const reloadTimeout = 10 * time.Second

// reloadConf asks postgres to reread its files, waits until haven's
// session has (pg_conf_load_time moves: the postmaster rereads them, then
// signals every backend), and returns the settings it will apply only at
// its next start.
func (s *Server) reloadConf(ctx context.Context) ([]string, error) {
	var before time.Time
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		if err := c.QueryRow(ctx, "SELECT pg_conf_load_time()").Scan(&before); err != nil {
			return err
		}
		_, err := c.Exec(ctx, "SELECT pg_reload_conf()")
		return err
	})
	if err == nil {
		pctx, cancel := context.WithTimeout(ctx, reloadTimeout)
		defer cancel()
		err = poll(pctx, func() (bool, error) {
			var loaded time.Time
			err := s.withConn(pctx, func(c *pgx.Conn) error {
				return c.QueryRow(pctx, "SELECT pg_conf_load_time()").Scan(&loaded)
			})
			return err == nil && loaded.After(before), err
		})
	}
	if err != nil {
		return nil, fmt.Errorf("pg: reload: %w", err)
	}
	return s.PendingRestart(ctx)
}

// PendingRestart lists, sorted, the settings whose value in the files
// postgres applies only at its next start (pg_settings.pending_restart).
func (s *Server) PendingRestart(ctx context.Context) ([]string, error) {
	var names []string
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name")
		if err != nil {
			return err
		}
		names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pg: settings pending a restart: %w", err)
	}
	return names, nil
}
