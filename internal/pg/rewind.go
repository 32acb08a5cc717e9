package pg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// ErrRewindImpossible is wrapped by Rewind's error when pg_rewind cannot
// bring the data directory back into the new primary's history: no data
// checksums nor wal_log_hints, another cluster, or the WAL since the
// divergence is gone. The caller clones the node again instead.
var ErrRewindImpossible = errors.New("rewind impossible, clone again")

// rewindImpossible are pg_rewind's messages that mean retrying cannot help.
var rewindImpossible = []string{
	"could not find previous WAL record",
	"could not find common ancestor",
	"from different systems",
	"clusters are not compatible",
	"needs to use either data checksums",
	"pg_wal",
	// The target's WAL holds no valid record where the histories diverge
	// ("record with incorrect prev-link", "invalid record length"): every
	// retry reads the same bytes. A soak of random faults found a former
	// primary retrying this for minutes (docs/drills.md); a clone, with
	// the directory kept aside, brings it back.
	"could not read WAL record at",
}

// ErrPastFork is wrapped by Start's error when a replica cannot start
// because it replayed its old timeline past the point where the timeline
// it must follow forked: its minimum recovery point is past the fork
// ("requested timeline N does not contain minimum recovery point"), or its
// latest checkpoint is ("requested timeline N is not a child of this
// server's history"). It will never start so, and needs Rewind against
// the new timeline's primary.
var ErrPastFork = errors.New("the replica replayed past where its new timeline forked: it needs a rewind")

// pastFork reports whether postgres's last lines say what ErrPastFork
// stands for.
func pastFork(lines []string) bool {
	for _, l := range lines {
		if strings.Contains(l, "does not contain minimum recovery point") || strings.Contains(l, "is not a child of this server's history") {
			return true
		}
	}
	return false
}

// RewindResult is what Rewind did, for the caller to log: the target's WAL
// from DivergedAt on, on TargetTimeline, was never on the new primary and
// is now gone; Discarded says what it held, which may be no transaction at
// all (a checkpoint the new primary forked before).
type RewindResult struct {
	// Rewound is false when no rewind was needed: the data directory was
	// already in the new primary's history.
	Rewound bool
	// DivergedAt is where the target's history left the source's, and
	// DivergedTimeline the timeline it was on.
	DivergedAt       LSN
	DivergedTimeline uint32
	// CommonCheckpoint is the last checkpoint both had, where replay
	// restarts.
	CommonCheckpoint LSN
	// TargetEnd is where the target's latest checkpoint before the rewind
	// starts (its shutdown checkpoint after a clean stop), on
	// TargetTimeline.
	TargetEnd      LSN
	TargetTimeline uint32
	// Discarded is what the target's WAL held from DivergedAt to its end,
	// read with pg_waldump before pg_rewind overwrote it; DiscardedErr
	// says why it could not be read (Discarded is then zero).
	Discarded    WALSummary
	DiscardedErr error
	// Took is how long pg_rewind ran.
	Took time.Duration
}

// pg_rewind's messages (LC_ALL=C).
var (
	divergedRE = regexp.MustCompile(`servers diverged at WAL location ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)`)
	commonRE   = regexp.MustCompile(`rewinding from last common checkpoint at ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)`)
)

// parseRewind fills res from pg_rewind's output.
func parseRewind(out string, res *RewindResult) error {
	if strings.Contains(out, "no rewind required") {
		return nil
	}
	m := divergedRE.FindStringSubmatch(out)
	c := commonRE.FindStringSubmatch(out)
	if m == nil || c == nil {
		return errors.New("pg_rewind did not say where the servers diverged")
	}
	var err1, err2, err3 error
	res.DivergedAt, err1 = ParseLSN(m[1])
	tli, err2 := strconv.ParseUint(m[2], 10, 32)
	res.DivergedTimeline = uint32(tli)
	res.CommonCheckpoint, err3 = ParseLSN(c[1])
	res.Rewound = true
	return errors.Join(err1, err2, err3)
}

// Rewind makes the stopped data directory of a former primary (or of a
// replica that went past a fork) a replica of up, the new primary, and
// starts it. It first brings the data directory to a clean shutdown if it
// crashed (postgres in single-user mode runs crash recovery and
// checkpoints; pg_rewind requires a clean shutdown), notes where its WAL
// ends, configures it as a standby of up (SetStandby, so that it can only
// ever start as a replica from then on), runs pg_rewind --source-server as
// the run-as user, and returns once the node streams from up. pg_rewind
// runs twice when the histories diverged: a dry run says where, then
// pg_waldump reads what the node's WAL holds from there (it may be no
// transaction at all, only a checkpoint), then the rewind itself. The
// result holds the diverged WAL range and what it held, for the caller to
// log.
//
// When pg_rewind cannot work (see ErrRewindImpossible) the error wraps
// ErrRewindImpossible and the caller clones the node again. up.User needs
// the functions EnsureReplicationUser grants, and an HBA line for the
// database postgres (ReplicationHBA). On an error after the start,
// postgres is left running for the caller to stop.
func (s *Server) Rewind(ctx context.Context, up Upstream) (RewindResult, error) {
	return s.RewindFrom(ctx, up, up)
}

// RewindFrom is Rewind against source, a server whose history the node's
// must join, to make the node a replica of up: the primary of the active
// region as the source, the standby leader of the node's own region as
// up. A standby is no source to rewind against: its control file names
// the timeline of its last restartpoint, which lags the timeline it
// replays, and pg_rewind would find no fork where there is one.
func (s *Server) RewindFrom(ctx context.Context, source, up Upstream) (RewindResult, error) {
	res, err := s.rewind(ctx, source, up)
	if err != nil {
		return res, fmt.Errorf("pg: rewind %s from %s: %w", s.cfg.dataDir, source, err)
	}
	if err := s.Start(ctx); err != nil {
		return res, err
	}
	if _, err := s.WaitStreaming(ctx, up, 0); err != nil {
		return res, err
	}
	return res, nil
}

// errRewindIncomplete says why a data directory whose pg_rewind stopped
// half way may not start nor be rewound again.
var errRewindIncomplete = errors.New("an earlier pg_rewind stopped before it finished, and the data directory may hold pages of two histories: it must be copied again")

// RewindIncomplete reports whether a pg_rewind began on the data directory
// and did not finish. Such a directory never starts (Start refuses it) and
// is not rewound again: the caller sets it aside and clones. Clone and
// RestoreStandby clear the mark.
func (s *Server) RewindIncomplete() bool {
	_, err := os.Stat(s.rewindMarker())
	return err == nil
}

// rewindMarker is the file that says a pg_rewind is under way: beside the
// data directory, since pg_rewind removes what the source does not have.
func (s *Server) rewindMarker() string { return s.cfg.dataDir + ".rewind-incomplete" }

// rewind is RewindFrom up to the start.
func (s *Server) rewind(ctx context.Context, source, up Upstream) (RewindResult, error) {
	s.life.Lock()
	defer s.life.Unlock()
	var res RewindResult
	if s.cfg.name == "" {
		return res, ErrNoName
	}
	up, err := up.check()
	if err != nil {
		return res, err
	}
	if source, err = source.check(); err != nil {
		return res, err
	}
	dir := s.cfg.dataDir
	if pid := s.PID(); pid != 0 {
		return res, fmt.Errorf("%w (pid %d): stop it first", ErrAlreadyRunning, pid)
	}
	if s.RewindIncomplete() {
		return res, fmt.Errorf("%w: %w", ErrRewindImpossible, errRewindIncomplete)
	}
	if lock, err := readLock(dir); err != nil {
		return res, err
	} else if lock.pid != 0 && !lock.stale {
		return res, fmt.Errorf("%w: pid %d holds postmaster.pid; stop it first", ErrAlreadyRunning, lock.pid)
	}
	cd, err := s.ControlData(ctx)
	if err != nil {
		return res, err
	}
	if !cd.DataChecksums && !cd.WALLogHints {
		return res, fmt.Errorf("%w: the data directory has neither data checksums nor wal_log_hints", ErrRewindImpossible)
	}
	if cd.State != "shut down" && cd.State != "shut down in recovery" {
		if err := s.singleUserRecovery(ctx, cd.State); err != nil {
			return res, err
		}
		if cd, err = s.ControlData(ctx); err != nil {
			return res, err
		}
	}
	res.TargetEnd, res.TargetTimeline = cd.Checkpoint, cd.Timeline
	// From here on the data directory can only start as a replica.
	s.cfg.kmu.Lock()
	s.cfg.keeper = map[string]string{}
	s.cfg.kmu.Unlock()
	if err := s.setStandby(up); err != nil {
		return res, err
	}
	start := time.Now()
	var rewindArgs []string
	if up.RestoreCommand != "" {
		// WAL the data directory recycled since the fork's checkpoint
		// (a standby removes it at its restartpoints) comes from the
		// archive, with the restore_command setStandby wrote.
		rewindArgs = append(rewindArgs, "--restore-target-wal")
	}
	pgRewind := func(args ...string) error {
		args = append(slices.Clone(rewindArgs), args...)
		out, err := s.runToolOutput(ctx, source.Password, "pg_rewind", append([]string{"--target-pgdata", dir,
			"--source-server", source.conninfo(s.cfg.name+"_rewind", "postgres", false), "--no-ensure-shutdown"}, args...)...)
		if err != nil {
			for _, m := range rewindImpossible {
				if strings.Contains(out, m) {
					return fmt.Errorf("%w: %w", ErrRewindImpossible, err)
				}
			}
			return err
		}
		return parseRewind(out, &res)
	}
	// A dry run first: it says where the histories diverged and changes
	// nothing, so that the WAL the rewind discards can still be read.
	if err := pgRewind("--dry-run"); err != nil {
		res.Took = time.Since(start)
		return res, err
	}
	if res.Rewound {
		res.Discarded, res.DiscardedErr = s.summarizeLocalWAL(ctx, cd, cd.Timeline, res.DivergedAt)
		// pg_rewind stopped half way (killed, its source gone) leaves
		// pages of both histories: the marker, outside the directory it
		// rewrites, outlives this process, and only a new copy clears it.
		if err := s.cfg.writeFile(s.rewindMarker(), []byte("pg_rewind from "+source.String()+" began at "+time.Now().UTC().Format(time.RFC3339)+"\n")); err != nil {
			return res, err
		}
		if err := pgRewind(); err != nil {
			res.Took = time.Since(start)
			return res, err
		}
		if err := os.Remove(s.rewindMarker()); err != nil {
			return res, err
		}
		// pg_rewind copied the source's configuration files.
		if err := s.setStandby(up); err != nil {
			return res, err
		}
	}
	res.Took = time.Since(start)
	s.log.Info("rewound the data directory", "source", source.String(), "upstream", up.String(), "rewound", res.Rewound,
		"diverged_at", res.DivergedAt.String(), "diverged_timeline", res.DivergedTimeline,
		"target_end", res.TargetEnd.String(), "target_timeline", res.TargetTimeline, "took", res.Took.Round(time.Millisecond))
	return res, nil
}

// singleUserRecovery runs postgres in single-user mode on the data
// directory, which runs crash recovery and shuts down cleanly when its
// input ends, as pg_rewind itself would. A standby.signal is set aside
// meanwhile: single-user mode refuses standby mode.
func (s *Server) singleUserRecovery(ctx context.Context, state string) error {
	signal := filepath.Join(s.cfg.dataDir, standbySignal)
	if err := os.Remove(signal); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := s.cfg.writeConfig(); err != nil {
		return err
	}
	s.log.Info("the data directory was not shut down cleanly; running crash recovery in single-user mode", "state", state)
	if err := s.runTool(ctx, "", "postgres", "--single", "-F", "-D", s.cfg.dataDir, "template1"); err != nil {
		return fmt.Errorf("crash recovery in single-user mode: %w", err)
	}
	return nil
}
