package keeper

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/haven-ha/haven/internal/pg"
)

// follow makes this node a replica of the holder, doing what the machine's
// follow says: stop a former primary, clone when it has no data, rewind
// when it diverged, follow otherwise.
func (k *Keeper) follow(ctx context.Context, v view) error {
	d := k.m.follow(v)
	if d.act == followDemote {
		k.log.Warn("not the leader but postgres is a primary: stopping it", "event", "demotion")
		k.m.demote()
		return k.stopPostgres()
	}
	if d.noLeader != k.lastNoLeader {
		if d.noLeader != "" {
			k.log.Info("no primary to follow yet", "why", d.noLeader)
		}
		k.lastNoLeader = d.noLeader
	}
	up := k.upstream(v, d.leader)
	switch d.act {
	case followReadOnly:
		if err := k.srv.SetStandby(pg.Upstream{}); err != nil {
			return err
		}
		k.m.startedReadOnly()
		k.startSupervisor(ctx)
	case followClone:
		if v.standbyLeader && k.cfg.RestoreBackup != nil {
			// A new standby region is seeded from the newest base backup
			// and the archive, not by copying the primary over the WAN.
			err := k.cloneWith(ctx, d.leader.Node, v.standbyLeader, up, k.cfg.RestoreBackup)
			if err == nil || !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			k.log.Warn("no base backup to seed the standby region from yet: copying the active primary instead (haven backup run takes one)", "err", err)
			if err := os.RemoveAll(k.srv.DataDir()); err != nil {
				return err
			}
		}
		return k.clone(ctx, d.leader.Node, v.standbyLeader, up)
	case followRewind:
		src, ok := k.rewindSource(v, d.leader, up)
		if !ok {
			if why := "waiting to learn the active region's primary before rewinding against it"; why != k.lastNoLeader {
				k.log.Info(why+": a standby leader is no source for pg_rewind", "leader", d.leader.Node)
				k.lastNoLeader = why
			}
			return nil
		}
		return k.rewind(ctx, d.leader.Node, v.standbyLeader, src, up)
	case followStart:
		if err := k.srv.SetStandby(up); err != nil {
			return err
		}
		k.startSupervisor(ctx)
	case followSwitch:
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := k.srv.Follow(fctx, up, d.leader.Timeline); err != nil {
			return fmt.Errorf("follow %s (attempt %d): %w", d.leader.Node, k.m.followFailed(), err)
		}
		k.m.followed(d.leader.Node)
		k.log.Info("following the primary", "event", "database", "primary", d.leader.Node, "timeline", d.leader.Timeline)
	}
	if !v.acting && v.running() && v.inRecovery {
		k.dropOwnSlots(ctx)
	}
	return nil
}

// dropOwnSlots drops, on a replica that nobody streams from, the slots it
// made as a primary (createSlots: one per node, one per region; the
// archiver's is the agent's archive role's to drop): a standby keeps every
// WAL segment from the oldest slot's restart_lsn, and
// those slots, which pg_rewind leaves in place, no longer move, so a former
// primary's pg_wal kept every segment since it last led, until its disk
// was full (a soak's 2 GiB disk, 21 minutes after it led). It leads again
// with new ones (createSlots). A slot in use is left alone.
func (k *Keeper) dropOwnSlots(ctx context.Context) {
	if !k.ownSlotsLeft {
		return
	}
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	slots, err := k.srv.Slots(qctx)
	if err != nil {
		k.log.Warn("listing the replication slots left from when this node led", "err", err)
		return
	}
	own := k.slotNames(true)
	left := false
	for _, sl := range slots {
		if !slices.Contains(own, sl.Name) {
			continue
		}
		if sl.Active {
			left = true
			continue
		}
		if err := k.srv.DropSlot(qctx, sl.Name); err != nil {
			k.log.Warn("dropping a replication slot left from when this node led", "slot", sl.Name, "err", err)
			left = true
			continue
		}
		k.log.Info("dropped a replication slot left from when this node led: a replica's slots keep its WAL", "slot", sl.Name, "restart_lsn", sl.RestartLSN)
	}
	k.ownSlotsLeft = left
}

// upstream is how the node reaches leader: with its own slot there, or,
// as the standby leader of a region, with its region's slot on the active
// region's primary; in a database that spans two regions, with the
// archive's restore_command for when streaming breaks or falls behind.
func (k *Keeper) upstream(v view, leader MemberState) pg.Upstream {
	up := k.cfg.Replication
	up.Host, up.Port, up.Slot = leader.Host, leader.Port, pg.SlotName(k.cfg.Node)
	if r := k.region; r != nil {
		if v.standbyLeader {
			up.Slot = RegionSlot(r.cfg.Name)
		}
		up.RestoreCommand = r.cfg.RestoreCommand
	}
	return up
}

func (k *Keeper) clone(ctx context.Context, leader string, standbyLeader bool, up pg.Upstream) error {
	return k.cloneWith(ctx, leader, standbyLeader, up, nil)
}

// cloneWith makes the empty data directory a replica of leader: a copy of
// the primary (pg_basebackup) when restore is nil, else what restore puts
// there (a base backup) brought up to date from the archive and the
// primary. It stops when another node leads (whileLeading).
func (k *Keeper) cloneWith(ctx context.Context, leader string, standbyLeader bool, up pg.Upstream, restore func(context.Context, string) error) error {
	if k.supRunning() {
		if err := k.stopPostgres(); err != nil {
			return err
		}
	}
	cctx, stop := k.whileLeading(ctx, leader, standbyLeader)
	defer stop()
	var err error
	if restore != nil {
		k.log.Info("restoring the newest backup as a replica", "primary", leader)
		err = k.srv.RestoreStandby(cctx, up, restore)
	} else {
		k.log.Info("cloning the primary", "primary", leader)
		err = k.srv.Clone(cctx, up)
	}
	if err != nil && k.srv.PID() == 0 {
		return withCause(cctx, err)
	}
	// A copy that runs is a replica of leader, streaming or not yet:
	// the supervisor adopts it, and the next rounds follow whoever leads.
	k.m.replaced(leader)
	k.final.Store(nil)
	k.startSupervisor(ctx)
	return withCause(cctx, err)
}

// whileLeading is ctx until a node other than leader leads: the holder of
// the database's record, or for a standby leader the active region's
// primary. A clone or a rewind from a node that no longer leads makes a
// replica of a history nobody writes, and one from a paused node would
// wait on it for ever (a paused server's kernel still acknowledges).
func (k *Keeper) whileLeading(ctx context.Context, leader string, standbyLeader bool) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		for {
			t := k.clk.NewTimer(keeperTick)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C():
			}
			now := k.owner.Status().Holder
			if standbyLeader {
				now = k.region.activePrimary().Member.Node
			}
			if now != "" && now != leader {
				cancel(fmt.Errorf("%s leads now, not %s", now, leader))
				return
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}

// withCause adds to err why ctx, from whileLeading, ended, if it did.
func withCause(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%w (stopped: %v)", err, cause)
	}
	return err
}

// rewindSource is the server to rewind against when following leader at
// up: up itself when leader is a primary, but when it is its region's
// standby leader, the active region's primary, whose history the whole
// region follows (a standby is no source for pg_rewind: see
// pg.Server.RewindFrom); false while that primary is not known.
func (k *Keeper) rewindSource(v view, leader MemberState, up pg.Upstream) (pg.Upstream, bool) {
	r := k.region
	if r == nil || leader.Role == RolePrimary {
		return up, true
	}
	a := r.activePrimary()
	if a.Node == "" {
		return pg.Upstream{}, false
	}
	src := up
	src.Host, src.Port = a.Member.Host, a.Member.Port
	return src, true
}

func (k *Keeper) rewind(ctx context.Context, leader string, standbyLeader bool, source, up pg.Upstream) error {
	if err := k.stopPostgres(); err != nil {
		return err
	}
	k.log.Warn("rejoining as a replica: rewinding", "event", "database", "follow", leader, "rewind_source", source.Host)
	rctx, stop := k.whileLeading(ctx, leader, standbyLeader)
	defer stop()
	res, err := k.srv.RewindFrom(rctx, source, up)
	if errors.Is(err, pg.ErrRewindImpossible) {
		_ = k.srv.Stop(ctx, pg.StopFast)
		aside := k.srv.DataDir() + divergedSuffix + k.clk.Now().UTC().Format("20060102T150405")
		k.log.Error("rewind impossible: moving the data directory aside and cloning again", "err", err, "moved_to", aside)
		removed, rerr := removeDiverged(k.srv.DataDir())
		for _, d := range removed {
			k.log.Warn("removed an older diverged copy of the data directory: one is kept, the newest", "removed", d)
		}
		if rerr != nil {
			k.log.Warn("older diverged copies of the data directory", "err", rerr)
		}
		if rerr := os.Rename(k.srv.DataDir(), aside); rerr != nil {
			return errors.Join(err, rerr)
		}
		return k.clone(ctx, leader, standbyLeader, up)
	}
	if err != nil && k.srv.PID() == 0 {
		return fmt.Errorf("rewind: %w", withCause(rctx, err))
	}
	// Rewound, and running: a replica of leader's history, streaming or
	// not yet (the next rounds follow whoever leads).
	if res.Rewound {
		k.logRewind(leader, res)
	}
	k.m.replaced(leader)
	k.final.Store(nil)
	k.startSupervisor(ctx)
	if err != nil {
		return fmt.Errorf("rewind: %w", withCause(rctx, err))
	}
	return nil
}

// logRewind says what a rewind discarded: the WAL from where this node's
// history left the new primary's to where it ended, and whether it ended
// any transaction. Often it ended none: a checkpoint written after the new
// primary forked (a shutdown checkpoint it did not receive) is enough to
// need pg_rewind, and loses nothing.
func (k *Keeper) logRewind(leader string, res pg.RewindResult) {
	d := res.Discarded
	args := []any{"primary", leader, "diverged_at", res.DivergedAt, "diverged_timeline", res.DivergedTimeline,
		"discarded_bytes", d.Bytes(), "discarded_records", d.Records, "discarded", d.String(),
		"took", res.Took.Round(time.Millisecond)}
	switch {
	case res.DiscardedErr != nil:
		k.metrics.rewinds.WithLabelValues("unknown").Inc()
		k.log.Warn("rewound: WAL the new primary never had is gone; what it held could not be read",
			"primary", leader, "diverged_at", res.DivergedAt, "diverged_timeline", res.DivergedTimeline,
			"took", res.Took.Round(time.Millisecond), "err", res.DiscardedErr)
	case d.Transactions == 0:
		k.metrics.rewinds.WithLabelValues("none").Inc()
		k.log.Warn("rewound: WAL the new primary never had is gone, but it ended no transaction", args...)
	default:
		k.metrics.rewinds.WithLabelValues("lost").Inc()
		k.log.Warn("rewound: transactions the new primary never had are gone",
			append(args, "discarded_transactions", d.Transactions, "event", "database")...)
	}
}

// divergedSuffix and a time name a data directory moved aside because it
// could not be rewound.
const divergedSuffix = ".diverged-"

// removeDiverged removes the copies of dataDir moved aside before, so that
// a node that cannot rewind again and again keeps one copy of its
// database beside the new one, not one per failed rewind until its disk is
// full (an hour of random faults left three on a node). The copy about to
// be made is the newest, and its writes, never acknowledged by a
// synchronous cluster, are what a person would look at.
func removeDiverged(dataDir string) ([]string, error) {
	old, err := filepath.Glob(dataDir + divergedSuffix + "*")
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, d := range old {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, d)
	}
	return removed, errors.Join(errs...)
}
