package pg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultReplicationUser is the role replicas and pg_rewind connect to a
// primary as, by convention; Upstream.User names it.
const DefaultReplicationUser = "replicator"

// replicaPoll is the interval between polls while waiting for replication
// to reach a state.
const replicaPoll = 50 * time.Millisecond

// Upstream is how a replica reaches its primary over TCP: the primary's
// address, the replication role and its password, and the replica's
// physical replication slot on the primary.
type Upstream struct {
	// Host is the primary's address or host name.
	Host string
	// Port is the primary's port. Zero means DefaultPort.
	Port int
	// User is the role to connect as; it needs the REPLICATION attribute
	// (EnsureReplicationUser creates it). Empty: DefaultReplicationUser.
	User string
	// Password is the role's password (scram-sha-256). It is written into
	// haven.conf (mode 0600, owned by the run-as user) as part of
	// primary_conninfo, and given to pg_basebackup and pg_rewind in their
	// environment, never on a command line.
	Password string
	// Slot is the replica's physical replication slot on the primary
	// (CreateSlot). Empty: no slot, and the primary may remove WAL the
	// replica still needs.
	Slot string
	// RestoreCommand, when set, is the replica's restore_command: when
	// streaming breaks, or the primary no longer keeps the WAL the replica
	// needs, postgres replays WAL from the archive with it and then
	// returns to streaming (a standby cluster in another region).
	RestoreCommand string
}

// slotNameRE matches the names PostgreSQL accepts for a replication slot.
var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// SlotName is the name of the physical replication slot a primary keeps for
// node: lower case, with every character a slot name cannot hold as '_',
// at most 63 bytes.
func SlotName(node string) string {
	b := []byte(strings.ToLower(node))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			b[i] = '_'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}

// check validates u and fills its defaults.
func (u Upstream) check() (Upstream, error) {
	if u.Host == "" || strings.ContainsAny(u.Host, " \t\n'\"\\,") {
		return u, fmt.Errorf("upstream host %q is not an address or a host name", u.Host)
	}
	if u.Port == 0 {
		u.Port = DefaultPort
	}
	if u.Port < 1 || u.Port > 65535 {
		return u, fmt.Errorf("upstream port %d is not between 1 and 65535", u.Port)
	}
	if u.User == "" {
		u.User = DefaultReplicationUser
	}
	if u.Slot != "" && !slotNameRE.MatchString(u.Slot) {
		return u, fmt.Errorf("slot %q is not 1 to 63 lower-case letters, digits or '_'", u.Slot)
	}
	return u, nil
}

// conninfo renders u as a libpq connection string. The password is left
// out unless withPassword.
func (u Upstream) conninfo(appName, dbname string, withPassword bool) string {
	kv := [][2]string{{"host", u.Host}, {"port", strconv.Itoa(u.Port)}, {"user", u.User}}
	if dbname != "" {
		kv = append(kv, [2]string{"dbname", dbname})
	}
	if withPassword && u.Password != "" {
		kv = append(kv, [2]string{"password", u.Password})
	}
	kv = append(kv, [2]string{"application_name", appName}, [2]string{"connect_timeout", "2"})
	parts := make([]string, len(kv))
	for i, p := range kv {
		v := strings.ReplaceAll(p[1], `\`, `\\`)
		parts[i] = p[0] + "='" + strings.ReplaceAll(v, "'", `\'`) + "'"
	}
	return strings.Join(parts, " ")
}

// String returns u as user@host:port for messages, without the password.
func (u Upstream) String() string {
	if c, err := u.check(); err == nil {
		u = c
	}
	return u.User + "@" + net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
}

// Peer is what another node's postgres says about its WAL (QueryPeer).
type Peer struct {
	InRecovery bool
	SystemID   uint64
	// Received and Replayed are pg_last_wal_receive_lsn and
	// pg_last_wal_replay_lsn: zero on a primary, and Received on a replica
	// that has not streamed since it started.
	Received, Replayed LSN
}

// QueryPeer asks the postgres at up's host and port, over TCP as up's role
// to the database postgres (ReplicationHBA allows it), whether it is in
// recovery, its system identifier and how far it has received and
// replayed WAL. application names the session in pg_stat_activity. up.Slot
// is not used.
func QueryPeer(ctx context.Context, up Upstream, application string) (Peer, error) {
	up.Slot = ""
	up, err := up.check()
	if err != nil {
		return Peer{}, fmt.Errorf("pg: query peer: %w", err)
	}
	cfg, err := pgx.ParseConfig(up.conninfo(application, "postgres", true))
	if err != nil {
		return Peer{}, fmt.Errorf("pg: query peer %s: %w", up, err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return Peer{}, fmt.Errorf("pg: query peer %s: %w", up, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var p Peer
	var recv, replay string
	var sysid int64
	err = conn.QueryRow(ctx, `SELECT coalesce(pg_last_wal_receive_lsn()::text, ''),
		coalesce(pg_last_wal_replay_lsn()::text, ''), pg_is_in_recovery(),
		(SELECT system_identifier FROM pg_control_system())`).Scan(&recv, &replay, &p.InRecovery, &sysid)
	if err == nil {
		err = parseOptLSN(recv, &p.Received)
	}
	if err == nil {
		err = parseOptLSN(replay, &p.Replayed)
	}
	if err != nil {
		return Peer{}, fmt.Errorf("pg: query peer %s: %w", up, err)
	}
	p.SystemID = uint64(sysid)
	return p, nil
}

// ReplicationHBA returns the pg_hba.conf lines a primary needs for replicas
// and pg_rewind that connect as user from the addresses in cidr (such as
// "198.18.1.0/24"), with scram-sha-256: streaming replication
// (pg_basebackup, the replicas' WAL receivers) and the database postgres
// (pg_rewind reads files through SQL functions). Put them in Config.HBA
// on every node, since any node may become the primary.
func ReplicationHBA(user, cidr string) []string {
	if user == "" {
		user = DefaultReplicationUser
	}
	return []string{
		fmt.Sprintf("host replication %s %s scram-sha-256", user, cidr),
		fmt.Sprintf("host postgres %s %s scram-sha-256", user, cidr),
	}
}

// rewindGrants are the functions pg_rewind calls on its source server, which
// a role without superuser needs to be granted.
var rewindGrants = []string{
	"pg_catalog.pg_ls_dir(text, boolean, boolean)",
	"pg_catalog.pg_stat_file(text, boolean)",
	"pg_catalog.pg_read_binary_file(text)",
	"pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
}

// EnsureReplicationUser creates, on a primary, the role replicas and
// pg_rewind connect as (LOGIN REPLICATION, not a superuser), or updates its
// password, and grants it the functions pg_rewind needs. It is idempotent;
// replicas inherit the role through replication.
func (s *Server) EnsureReplicationUser(ctx context.Context, user, password string) error {
	if user == "" {
		user = DefaultReplicationUser
	}
	if password == "" {
		return fmt.Errorf("pg: replication user %s: a password is required", user)
	}
	ident := pgx.Identifier{user}.Sanitize()
	pw := "'" + strings.ReplaceAll(password, "'", "''") + "'"
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		var exists bool
		if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", user).Scan(&exists); err != nil {
			return err
		}
		verb := "CREATE"
		if exists {
			verb = "ALTER"
		}
		// standard_conforming_strings is on: a backslash is literal.
		sql := fmt.Sprintf("%s ROLE %s WITH LOGIN REPLICATION NOSUPERUSER PASSWORD %s", verb, ident, pw)
		if _, err := c.Exec(ctx, sql); err != nil {
			return err
		}
		for _, fn := range rewindGrants {
			if _, err := c.Exec(ctx, "GRANT EXECUTE ON FUNCTION "+fn+" TO "+ident); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pg: replication user %s: %w", user, err)
	}
	return nil
}

// Slot is a replication slot, as pg_replication_slots shows it.
type Slot struct {
	// Name is the slot's name.
	Name string
	// Active is true while a replica streams through the slot.
	Active bool
	// ActivePID is the WAL sender using the slot, or 0.
	ActivePID int
	// RestartLSN is the oldest WAL the slot keeps; zero before a replica
	// first used a slot created without reserving WAL.
	RestartLSN LSN
	// WALStatus is "reserved", "extended", "unreserved" or "lost" (the
	// replica needs WAL that is gone, and must be cloned again).
	WALStatus string
}

// CreateSlot creates, on a primary, the physical replication slot name for
// a replica, reserving WAL from now on. A slot that exists is left alone.
func (s *Server) CreateSlot(ctx context.Context, name string) error {
	if !slotNameRE.MatchString(name) {
		return fmt.Errorf("pg: create slot %q: not 1 to 63 lower-case letters, digits or '_'", name)
	}
	err := s.execSlot(ctx, `SELECT pg_create_physical_replication_slot($1, true)
		WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`,
		name, "42710") // duplicate_object: created meanwhile
	if err != nil {
		return fmt.Errorf("pg: create slot %s: %w", name, err)
	}
	return nil
}

// DropSlot drops the replication slot name, so that the primary no longer
// keeps WAL for it. A slot that does not exist is not an error; a slot a
// replica streams through is (stop the replica or point it elsewhere).
func (s *Server) DropSlot(ctx context.Context, name string) error {
	err := s.execSlot(ctx, `SELECT pg_drop_replication_slot(slot_name)
		FROM pg_replication_slots WHERE slot_name = $1`,
		name, "42704") // undefined_object: dropped meanwhile
	if err != nil {
		return fmt.Errorf("pg: drop slot %s: %w", name, err)
	}
	return nil
}

// FreeSlot ends the walsender that streams through slot name to a standby
// whose application_name is not keep, and reports whether it ended one:
// a standby that died without closing its connection (its network cut)
// holds its slot until wal_sender_timeout, and a successor that streams
// through the same slot (the standby leader of another region, whichever
// node that is now) cannot until then.
func (s *Server) FreeSlot(ctx context.Context, name, keep string) (bool, error) {
	var ended bool
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT COALESCE(bool_or(pg_terminate_backend(r.pid)), false)
			FROM pg_replication_slots sl JOIN pg_stat_replication r ON r.pid = sl.active_pid
			WHERE sl.slot_name = $1 AND r.application_name <> $2`, name, keep).Scan(&ended)
	})
	if err != nil {
		return false, fmt.Errorf("pg: free slot %s: %w", name, err)
	}
	return ended, nil
}

// execSlot runs sql with the slot name as $1. The SQLSTATE raced, which
// another client doing the same meanwhile causes, counts as success.
func (s *Server) execSlot(ctx context.Context, sql, name, raced string) error {
	return s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, sql, name)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == raced {
			return nil
		}
		return err
	})
}

// Slots lists the server's physical replication slots, by name.
func (s *Server) Slots(ctx context.Context) ([]Slot, error) {
	var slots []Slot
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT slot_name, active, COALESCE(active_pid, 0),
			COALESCE(restart_lsn::text, ''), COALESCE(wal_status, '')
			FROM pg_replication_slots WHERE slot_type = 'physical' ORDER BY slot_name`)
		if err != nil {
			return err
		}
		slots, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Slot, error) {
			var sl Slot
			var restart string
			if err := r.Scan(&sl.Name, &sl.Active, &sl.ActivePID, &restart, &sl.WALStatus); err != nil {
				return sl, err
			}
			return sl, parseOptLSN(restart, &sl.RestartLSN)
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pg: slots: %w", err)
	}
	return slots, nil
}

// parseOptLSN parses text into dst unless it is empty (SQL NULL).
func parseOptLSN(text string, dst *LSN) error {
	if text == "" {
		return nil
	}
	l, err := ParseLSN(text)
	*dst = l
	return err
}

// Standby is a replica connected to this server, a row of
// pg_stat_replication.
type Standby struct {
	// Name is the replica's application_name: its node name.
	Name string
	// ClientAddr is the replica's address; empty over a unix socket.
	ClientAddr string
	// State is the WAL sender's state: "startup", "catchup", "streaming",
	// "backup" or "stopping".
	State string
	// Sent, Write, Flush and Replay are how far WAL was sent, and how far
	// the replica reports it written, flushed and replayed.
	Sent, Write, Flush, Replay LSN
	// WriteLag, FlushLag and ReplayLag are the time the replica took to
	// write, flush and replay recent WAL; zero when PostgreSQL has no
	// measure (an idle primary).
	WriteLag, FlushLag, ReplayLag time.Duration
	// SyncState is "async", "potential", "sync" or "quorum".
	SyncState string
	// SyncPriority is the replica's priority in synchronous_standby_names;
	// 0 when not named, and in quorum mode (ANY k) 1 for every named
	// replica.
	SyncPriority int
}

// Replication lists the replicas streaming from this server
// (pg_stat_replication), by name.
func (s *Server) Replication(ctx context.Context) ([]Standby, error) {
	var out []Standby
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT COALESCE(application_name, ''), COALESCE(host(client_addr), ''),
			COALESCE(state, ''), COALESCE(sent_lsn::text, ''), COALESCE(write_lsn::text, ''),
			COALESCE(flush_lsn::text, ''), COALESCE(replay_lsn::text, ''),
			COALESCE(EXTRACT(epoch FROM write_lag)::float8, 0),
			COALESCE(EXTRACT(epoch FROM flush_lag)::float8, 0),
			COALESCE(EXTRACT(epoch FROM replay_lag)::float8, 0),
			COALESCE(sync_state, ''), COALESCE(sync_priority, 0)
			FROM pg_stat_replication ORDER BY application_name, pid`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Standby, error) {
			var st Standby
			var sent, write, flush, replay string
			var wl, fl, rl float64
			if err := r.Scan(&st.Name, &st.ClientAddr, &st.State, &sent, &write, &flush, &replay,
				&wl, &fl, &rl, &st.SyncState, &st.SyncPriority); err != nil {
				return st, err
			}
			st.WriteLag, st.FlushLag, st.ReplayLag = seconds(wl), seconds(fl), seconds(rl)
			return st, errors.Join(parseOptLSN(sent, &st.Sent), parseOptLSN(write, &st.Write),
				parseOptLSN(flush, &st.Flush), parseOptLSN(replay, &st.Replay))
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("pg: replication: %w", err)
	}
	return out, nil
}

// seconds converts seconds to a Duration.
func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// SynchronousStandbyNames renders synchronous_standby_names for a quorum of
// k among names: `ANY 1 ("db2", "db3")`, or "" (asynchronous) when k is 0.
func SynchronousStandbyNames(k int, names []string) (string, error) {
	if k == 0 {
		return "", nil
	}
	if k < 0 || k > len(names) {
		return "", fmt.Errorf("%d standbys of %d named: want 0 to %d", k, len(names), len(names))
	}
	quoted := make([]string, len(names))
	for i, n := range names {
		if !nodeNameRE.MatchString(n) {
			return "", fmt.Errorf("standby %q is not a node name", n)
		}
		quoted[i] = `"` + n + `"`
	}
	return fmt.Sprintf("ANY %d (%s)", k, strings.Join(quoted, ", ")), nil
}

// SetSynchronousStandbys makes commits on this primary wait until k of the
// named replicas have flushed them (synchronous_standby_names =
// 'ANY k ("a", "b")'), or, with k = 0, stops waiting. It writes the setting
// in haven.conf, reloads, waits until the server and the WAL senders of the
// named replicas that are connected use it, and returns pg_stat_replication
// as it then is: SyncState "quorum" for the named replicas, "async" for the
// others.
//
// Commits already waiting are released by a setting that no longer needs
// them; with k > 0 and fewer than k named replicas connected, commits wait.
func (s *Server) SetSynchronousStandbys(ctx context.Context, k int, names []string) ([]Standby, error) {
	value, err := SynchronousStandbyNames(k, names)
	if err != nil {
		return nil, fmt.Errorf("pg: synchronous standbys: %w", err)
	}
	if err := s.cfg.setKeeper(func(m map[string]string) { m["synchronous_standby_names"] = value }); err != nil {
		return nil, fmt.Errorf("pg: synchronous standbys: configuration: %w", err)
	}
	if err := s.reloadUntil(ctx, "synchronous_standby_names", value); err != nil {
		return nil, fmt.Errorf("pg: synchronous standbys %q: %w", value, err)
	}
	named := make(map[string]bool, len(names))
	for _, n := range names {
		named[n] = k > 0
	}
	var last []Standby
	err = poll(ctx, func() (bool, error) {
		var err error
		if last, err = s.Replication(ctx); err != nil {
			return false, err
		}
		for _, st := range last {
			if (st.SyncPriority > 0) != named[st.Name] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return last, fmt.Errorf("pg: synchronous standbys %q: the WAL senders did not apply it: %w (last seen: %+v)", value, err, last)
	}
	return last, nil
}

// reloadUntil asks postgres to reload its configuration files and waits
// until haven's session sees name = want.
func (s *Server) reloadUntil(ctx context.Context, name, want string) error {
	var got string
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, "SELECT pg_reload_conf()")
		return err
	})
	if err == nil {
		// The postmaster rereads the files, then signals the sessions.
		err = poll(ctx, func() (bool, error) {
			err := s.withConn(ctx, func(c *pgx.Conn) error {
				return c.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got)
			})
			return err == nil && got == want, err
		})
	}
	if err != nil {
		return fmt.Errorf("reload: %w (%s is %q; an ALTER SYSTEM in postgresql.auto.conf overrides haven.conf)", err, name, got)
	}
	return nil
}

// poll calls cond every replicaPoll until it returns true or an error, or
// ctx ends. It is for what PostgreSQL announces to nobody: the WAL
// receiver's status (pg_stat_wal_receiver), which standbys the WAL senders
// count as synchronous (pg_stat_replication), whether a reload has reached
// a session. LISTEN/NOTIFY carries only what sessions send; no server
// event goes through it.
func poll(ctx context.Context, cond func() (bool, error)) error {
	tick := time.NewTicker(replicaPoll)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-tick.C:
		}
	}
}
