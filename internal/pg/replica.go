package pg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// standbySignal is the file that makes postgres start as a standby.
const standbySignal = "standby.signal"

// defaultPromoteWait is how long Promote lets PostgreSQL take when ctx has
// no deadline.
const defaultPromoteWait = 60 * time.Second

// ErrNoName is wrapped by the errors of Clone, SetStandby, Follow and Rewind
// when Config.Name is empty: a replica needs a name for its primary.
var ErrNoName = errors.New("the node has no name (Config.Name)")

// HasStandbySignal reports whether the data directory holds
// standby.signal: postgres starts from it as a replica, never as a primary.
// A data directory that holds a cluster without it was last a primary.
func (s *Server) HasStandbySignal() bool {
	_, err := os.Stat(filepath.Join(s.cfg.dataDir, standbySignal))
	return err == nil
}

// SetStandby makes the stopped data directory start as a replica of up on
// its next Start: standby.signal, and in haven.conf primary_conninfo (with
// application_name set to Config.Name), primary_slot_name and
// recovery_target_timeline = 'latest', so that the replica follows its
// primary across promotions. synchronous_standby_names is dropped: a replica
// does not wait for anyone. Clone and Rewind call it; the keeper calls it to
// restart a cleanly stopped former primary as a replica.
//
// The zero Upstream makes a standby of no one: it replays its own WAL and
// stays read-only, so that a node that does not know its primary yet can
// start without ever taking writes, and report how far its WAL goes.
func (s *Server) SetStandby(up Upstream) error {
	if err := s.setStandby(up); err != nil {
		return fmt.Errorf("pg: set standby %s: %w", s.cfg.dataDir, err)
	}
	return nil
}

// setStandby is SetStandby without the prefix.
func (s *Server) setStandby(up Upstream) error {
	if s.cfg.name == "" {
		return ErrNoName
	}
	alone := up == Upstream{}
	if !alone {
		var err error
		if up, err = up.check(); err != nil {
			return err
		}
	}
	if v, err := dataDirVersion(s.cfg.dataDir); err != nil || v == 0 {
		return errors.Join(ErrNotInitialized, err)
	}
	err := s.cfg.setKeeper(func(m map[string]string) {
		clear(m)
		if !alone {
			m["primary_conninfo"] = up.conninfo(s.cfg.name, "", true)
			m["primary_slot_name"] = up.Slot
			if up.RestoreCommand != "" {
				m["restore_command"] = up.RestoreCommand
			}
		}
		m["recovery_target_timeline"] = "latest"
	})
	if err != nil {
		return err
	}
	return s.cfg.writeFile(filepath.Join(s.cfg.dataDir, standbySignal), []byte{})
}

// Clone makes the empty (or missing) data directory a replica of the
// primary up and starts it: pg_basebackup, run as the run-as user, copies
// the primary through the replica's slot (up.Slot, which must exist on the
// primary: CreateSlot) with the WAL streamed alongside (-X stream) after an
// immediate checkpoint (-c fast); SetStandby configures it; Start starts
// it; Clone returns once it streams from up (WaitStreaming). On an error
// after the start, postgres is left running for the caller to stop.
//
// A data directory that holds a cluster is an error wrapping
// ErrInitialized.
func (s *Server) Clone(ctx context.Context, up Upstream) error {
	if err := s.clone(ctx, up); err != nil {
		return fmt.Errorf("pg: clone %s from %s: %w", s.cfg.dataDir, up, err)
	}
	return s.startStreaming(ctx, up)
}

// RestoreStandby is Clone from a backup instead of from the primary:
// restore fills the empty (or missing) data directory from a base backup
// (with the restore_command that fetches the archive's WAL, which the
// replica replays until it reaches what the primary still keeps), then, as
// Clone does, SetStandby configures it to stream from up, Start starts it,
// and RestoreStandby returns once it streams. The primary sends nothing but
// the WAL the archive does not have yet: this is how a replica is rebuilt
// without loading the primary with a copy of the whole database.
func (s *Server) RestoreStandby(ctx context.Context, up Upstream, restore func(ctx context.Context, dataDir string) error) error {
	err := s.makeReplica(ctx, up, "restored a backup as a replica", func(up Upstream) error { return restore(ctx, s.cfg.dataDir) })
	if err != nil {
		return fmt.Errorf("pg: restore %s from a backup as a replica of %s: %w", s.cfg.dataDir, up, err)
	}
	return s.startStreaming(ctx, up)
}

// startStreaming starts the replica Clone or RestoreStandby made and waits
// until it streams from up.
func (s *Server) startStreaming(ctx context.Context, up Upstream) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	_, err := s.WaitStreaming(ctx, up, 0)
	return err
}

// clone runs pg_basebackup and SetStandby.
func (s *Server) clone(ctx context.Context, up Upstream) error {
	return s.makeReplica(ctx, up, "cloned the primary", func(up Upstream) error {
		args := []string{"-D", s.cfg.dataDir, "-X", "stream", "-c", "fast", "-w",
			"-d", up.conninfo(s.cfg.name+"_clone", "", false)}
		if up.Slot != "" {
			args = append(args, "-S", up.Slot)
		}
		return s.runTool(ctx, up.Password, "pg_basebackup", args...)
	})
}

// makeReplica fills the stopped server's empty data directory with fill,
// then makes it a replica of up (SetStandby), and logs done.
func (s *Server) makeReplica(ctx context.Context, up Upstream, done string, fill func(up Upstream) error) error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.cfg.name == "" {
		return ErrNoName
	}
	up, err := up.check()
	if err != nil {
		return err
	}
	if pid := s.PID(); pid != 0 {
		return fmt.Errorf("%w (pid %d)", ErrAlreadyRunning, pid)
	}
	if err := s.cfg.prepareDataDir(); err != nil {
		return err
	}
	start := time.Now()
	if err := fill(up); err != nil {
		// The directory was empty: what is in it now is half a copy,
		// which must never start (a pg_basebackup killed when its source
		// stopped leading cleans nothing up).
		if rerr := s.cfg.emptyDataDir(); rerr != nil {
			return errors.Join(err, fmt.Errorf("empty the half-made data directory: %w", rerr))
		}
		return err
	}
	// A new copy: nothing of a rewind that stopped half way is left.
	if err := os.Remove(s.rewindMarker()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// A fresh configuration: nothing of the primary's role settings.
	s.cfg.kmu.Lock()
	s.cfg.keeper = map[string]string{}
	s.cfg.kmu.Unlock()
	if err := s.setStandby(up); err != nil {
		return err
	}
	s.log.Info(done, "upstream", up.String(), "slot", up.Slot, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// runTool runs a PostgreSQL client program as the run-as user, with
// password in PGPASSWORD, and appends its output to the log file. Its error
// holds the program's last lines.
func (s *Server) runTool(ctx context.Context, password, name string, args ...string) error {
	_, err := s.runToolOutput(ctx, password, name, args...)
	return err
}

// runToolOutput is runTool that also returns the program's output.
func (s *Server) runToolOutput(ctx context.Context, password, name string, args ...string) (string, error) {
	cmd := s.command(ctx, name, args...)
	if password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+password)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if lerr := s.appendLog(out.Bytes()); lerr != nil {
		s.log.Warn("cannot write a program's output to the log file", "program", name, "file", s.cfg.logFile, "err", lerr)
	}
	if err != nil {
		lines := lastLines(out.String(), errorTailLines)
		return out.String(), fmt.Errorf("%s: %w%s", name, err, formatTail(name, lines))
	}
	return out.String(), nil
}

// Receiver is the state of a replica's WAL receiver
// (pg_stat_wal_receiver).
type Receiver struct {
	// Status is "streaming" while it receives WAL; "starting", "waiting",
	// "restarting" or "stopping" otherwise; empty when no WAL receiver runs
	// (a primary, or a replica between attempts to connect).
	Status string
	// SenderHost and SenderPort are the address of the server it streams
	// from.
	SenderHost string
	SenderPort int
	// Timeline is the timeline of the WAL it last received and flushed.
	Timeline uint32
	// Flushed is how far it has received and flushed WAL.
	Flushed LSN
	// Slot is the replication slot it uses on the upstream.
	Slot string
}

// WALReceiver returns the state of the replica's WAL receiver.
func (s *Server) WALReceiver(ctx context.Context) (Receiver, error) {
	var (
		r       Receiver
		tli     int64
		flushed string
	)
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		err := c.QueryRow(ctx, `SELECT status, COALESCE(sender_host, ''), COALESCE(sender_port, 0),
			COALESCE(received_tli, 0), COALESCE(flushed_lsn::text, ''), COALESCE(slot_name, '')
			FROM pg_stat_wal_receiver`).Scan(&r.Status, &r.SenderHost, &r.SenderPort, &tli, &flushed, &r.Slot)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err == nil {
		err = parseOptLSN(flushed, &r.Flushed)
	}
	if err != nil {
		return Receiver{}, fmt.Errorf("pg: wal receiver: %w", err)
	}
	r.Timeline = uint32(tli)
	return r, nil
}

// WaitStreaming waits until the replica streams from up (its WAL
// receiver's status is "streaming", from up's host and port) and has
// received WAL of timeline or a later one (0: any). The error says what the
// WAL receiver showed last.
func (s *Server) WaitStreaming(ctx context.Context, up Upstream, timeline uint32) (Receiver, error) {
	up, err := up.check()
	if err != nil {
		return Receiver{}, fmt.Errorf("pg: wait streaming: %w", err)
	}
	var last Receiver
	err = poll(ctx, func() (bool, error) {
		var err error
		if last, err = s.WALReceiver(ctx); err != nil {
			return false, err
		}
		return last.Status == "streaming" && last.SenderHost == up.Host && last.SenderPort == up.Port &&
			last.Timeline >= timeline, nil
	})
	if err != nil {
		return last, fmt.Errorf("pg: wait streaming from %s, timeline %d or later: %w (WAL receiver last seen: %+v)", up, timeline, err, last)
	}
	return last, nil
}

// Follow points the running replica at another primary, up: it rewrites
// primary_conninfo and primary_slot_name, reloads (PostgreSQL 13 and later
// restart the WAL receiver without restarting the server), and waits until
// the replica streams from up on timeline or a later one (the new
// primary's, which it follows because recovery_target_timeline is
// 'latest'). up.Slot must exist on the new primary.
//
// A replica that has replayed past the point where the new primary's
// timeline forked cannot follow it: it keeps waiting, PostgreSQL logs
// "requested timeline ... is not a child of this server's history", and
// the replica needs Rewind.
func (s *Server) Follow(ctx context.Context, up Upstream, timeline uint32) error {
	if err := s.follow(ctx, up, timeline); err != nil {
		return fmt.Errorf("pg: follow %s: %w", up, err)
	}
	return nil
}

// follow is Follow without the prefix.
func (s *Server) follow(ctx context.Context, up Upstream, timeline uint32) error {
	in, err := s.IsInRecovery(ctx)
	if err != nil {
		return err
	}
	if !in {
		return errors.New("the server is a primary; only a replica follows (Rewind a former primary)")
	}
	if err := s.setStandby(up); err != nil {
		return err
	}
	up, _ = up.check()
	if err := s.reloadUntil(ctx, "primary_slot_name", up.Slot); err != nil {
		return err
	}
	if err := s.reloadUntil(ctx, "primary_conninfo", up.conninfo(s.cfg.name, "", true)); err != nil {
		return err
	}
	_, err = s.WaitStreaming(ctx, up, timeline)
	return err
}

// Promote makes the replica a primary: pg_promote(wait => true), bounded by
// ctx's deadline (a minute without one), then a checkpoint, so that the new
// timeline is in pg_control (pg_rewind reads the source's timeline from
// there). The standby settings are removed from haven.conf. It returns the
// new timeline.
func (s *Server) Promote(ctx context.Context) (uint32, error) {
	wait := defaultPromoteWait
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	secs := max(int(wait/time.Second), 1)
	var promoted bool
	err := s.withConn(ctx, func(c *pgx.Conn) error {
		if err := c.QueryRow(ctx, "SELECT pg_promote(true, $1)", secs).Scan(&promoted); err != nil {
			return err
		}
		if !promoted {
			return fmt.Errorf("not promoted within %d s", secs)
		}
		_, err := c.Exec(ctx, "CHECKPOINT")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("pg: promote %s: %w", s.cfg.dataDir, err)
	}
	err = s.cfg.setKeeper(func(m map[string]string) {
		delete(m, "primary_conninfo")
		delete(m, "primary_slot_name")
		delete(m, "recovery_target_timeline")
	})
	if err != nil {
		return 0, fmt.Errorf("pg: promote %s: configuration: %w", s.cfg.dataDir, err)
	}
	if _, err := os.Stat(filepath.Join(s.cfg.dataDir, standbySignal)); err == nil {
		return 0, fmt.Errorf("pg: promote %s: %s is still there after the promotion", s.cfg.dataDir, standbySignal)
	}
	tli, err := s.Timeline(ctx)
	if err != nil {
		return 0, fmt.Errorf("pg: promote %s: %w", s.cfg.dataDir, err)
	}
	s.log.Info("promoted", "timeline", tli)
	return tli, nil
}
