package pg

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// LSN is a position in the write-ahead log.
type LSN uint64

// String formats l as PostgreSQL does: "16/B374D848".
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// ParseLSN parses PostgreSQL's text form of an LSN, "16/B374D848".
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("pg: %q is not an LSN", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("pg: %q is not an LSN", s)
	}
	return LSN(h<<32 | l), nil
}

// ConnConfig returns the configuration of a connection to the server as
// Superuser over the unix socket, to the database "postgres". Nothing comes
// from the environment (PGHOST, PGPASSWORD, PGOPTIONS...).
func (s *Server) ConnConfig() (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, fmt.Errorf("pg: connection config: %w", err)
	}
	cfg.Host = s.cfg.socketDir
	cfg.Port = uint16(s.cfg.port)
	cfg.User = Superuser
	cfg.Database = "postgres"
	cfg.Password = ""
	cfg.TLSConfig = nil
	cfg.Fallbacks = nil
	cfg.ValidateConnect = nil
	cfg.RequireAuth = ""
	cfg.ConnectTimeout = attemptTimeout
	cfg.RuntimeParams = map[string]string{"application_name": "haven"}
	return cfg, nil
}

// Connect opens a new connection to the server as Superuser over the unix
// socket (see ConnConfig). The caller closes it.
func (s *Server) Connect(ctx context.Context) (*pgx.Conn, error) {
	conn, err := s.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("pg: connect: %w", err)
	}
	return conn, nil
}

// connect is Connect without the prefix.
func (s *Server) connect(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := s.ConnConfig()
	if err != nil {
		return nil, err
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// connectOwn opens haven's own connection (withConn). Its commits (the
// replication role, its grants) do not wait for synchronous standbys
// (synchronous_commit = local): every query of the keeper goes through
// this one session, which a commit waiting for a standby that is not
// there yet (a new primary's WAL archiver, which starts once the keeper
// has published the primary) would hold up. What haven writes there is
// written again by every new primary.
func (s *Server) connectOwn(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := s.ConnConfig()
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["synchronous_commit"] = "local"
	return pgx.ConnectConfig(ctx, cfg)
}

// setConn makes conn haven's own connection, closing the one it replaces.
func (s *Server) setConn(conn *pgx.Conn) {
	s.connSem <- struct{}{}
	old := s.conn
	s.conn = conn
	<-s.connSem
	if old != nil {
		old.Close(context.Background())
	}
}

// dropConn closes haven's own connection.
func (s *Server) dropConn() { s.dropConnCtx(context.Background()) }

// dropConnCtx closes haven's own connection, unless ctx ends while a query
// uses it.
func (s *Server) dropConnCtx(ctx context.Context) {
	select {
	case s.connSem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	conn := s.conn
	s.conn = nil
	<-s.connSem
	if conn != nil {
		cctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
		conn.Close(cctx)
		cancel()
	}
}

// withConn runs fn on haven's own connection, opening it if needed. Queries
// run one at a time.
func (s *Server) withConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	select {
	case s.connSem <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-s.connSem }()
	if r := s.current(); r != nil && r.stopping.Load() && !r.finished() {
		// A new session would hold up a smart shutdown.
		return errors.New("postgres is stopping")
	}
	if s.conn == nil || s.conn.IsClosed() {
		conn, err := s.connectOwn(ctx)
		if err != nil {
			return err
		}
		s.conn = conn
	}
	err := fn(s.conn)
	if err != nil && s.conn.IsClosed() {
		s.conn = nil
	}
	return err
}

// IsInRecovery reports whether the server is in recovery: a replica (or a
// server still replaying WAL before it is promoted), rather than a primary.
func (s *Server) IsInRecovery(ctx context.Context) (bool, error) {
	var r bool
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&r)
	})
	if err != nil {
		return false, fmt.Errorf("pg: is in recovery: %w", err)
	}
	return r, nil
}

// Position is where a server is in the write-ahead log, read in one query.
type Position struct {
	// InRecovery is true on a replica.
	InRecovery bool
	// Timeline is the timeline of the WAL the primary writes; on a
	// replica, of the WAL it last received, or while it does not stream,
	// of its last restartpoint (which may lag).
	Timeline uint32
	// Current is the primary's write position (pg_current_wal_lsn); zero
	// on a replica.
	Current LSN
	// Received is how far a replica has received and flushed WAL from its
	// primary (pg_last_wal_receive_lsn); zero on a primary, and on a
	// replica that has not streamed since it started.
	Received LSN
	// Replayed is how far a replica has replayed WAL
	// (pg_last_wal_replay_lsn); zero on a primary.
	Replayed LSN
	// ReplayDelay is, on a replica with received WAL not replayed yet, how
	// old the last transaction it replayed is: the usual "lag in
	// seconds". Zero when replay has caught up with what it received (its
	// byte lag behind the primary may not be zero), and on a primary.
	ReplayDelay time.Duration
}

// positionSQL reads a Position. pg_current_wal_lsn and pg_walfile_name fail
// in recovery, hence the CASEs; the primary's timeline is the one in the
// name of the WAL file it writes, which changes at promotion, before the
// checkpoint that pg_control_checkpoint reports.
const positionSQL = `
SELECT r,
  CASE WHEN r THEN COALESCE(
      (SELECT received_tli FROM pg_stat_wal_receiver WHERE received_tli > 0),
      (SELECT timeline_id FROM pg_control_checkpoint()))
    ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
  END,
  CASE WHEN NOT r THEN pg_current_wal_lsn()::text END,
  CASE WHEN r THEN pg_last_wal_receive_lsn()::text END,
  CASE WHEN r THEN pg_last_wal_replay_lsn()::text END,
  CASE WHEN r THEN CASE
      WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0
      ELSE COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0)::float8
    END END
FROM pg_is_in_recovery() AS r`

// Position reads the server's recovery state, timeline and WAL positions.
func (s *Server) Position(ctx context.Context) (Position, error) {
	var (
		p                 Position
		tli               int64
		cur, recv, replay *string
		delay             *float64
	)
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, positionSQL).Scan(&p.InRecovery, &tli, &cur, &recv, &replay, &delay)
	})
	if err != nil {
		return Position{}, fmt.Errorf("pg: position: %w", err)
	}
	p.Timeline = uint32(tli)
	if delay != nil && *delay > 0 {
		p.ReplayDelay = time.Duration(*delay * float64(time.Second))
	}
	for _, f := range []struct {
		text *string
		lsn  *LSN
	}{{cur, &p.Current}, {recv, &p.Received}, {replay, &p.Replayed}} {
		if f.text == nil {
			continue
		}
		l, err := ParseLSN(*f.text)
		if err != nil {
			return Position{}, fmt.Errorf("pg: position: %w", err)
		}
		*f.lsn = l
	}
	return p, nil
}

// Timeline returns the server's timeline, as Position does.
func (s *Server) Timeline(ctx context.Context) (uint32, error) {
	p, err := s.Position(ctx)
	if err != nil {
		return 0, err
	}
	return p.Timeline, nil
}

// SystemIdentifier returns the cluster's system identifier, which initdb
// chose and every clone shares: a replica of another cluster is refused by
// it.
func (s *Server) SystemIdentifier(ctx context.Context) (uint64, error) {
	var id int64
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, "SELECT system_identifier FROM pg_control_system()").Scan(&id)
	})
	if err != nil {
		return 0, fmt.Errorf("pg: system identifier: %w", err)
	}
	if id == 0 {
		return 0, errors.New("pg: system identifier: the server reports 0")
	}
	return uint64(id), nil
}
