package keeper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/haven-ha/haven/internal/pg"
)

// follow makes this node a replica of the holder: stop a former primary,
// clone when it has no data, rewind when it diverged, follow otherwise.
func (k *Keeper) follow(ctx context.Context) error {
	running := k.supRunning() && k.sup.Status().State == pg.StateRunning
	if running {
		inRecovery, err := k.srv.IsInRecovery(ctx)
		if err != nil {
			return err
		}
		if !inRecovery {
			// A primary without the lead: stop it now.
			k.log.Warn("not the leader but postgres is a primary: stopping it")
			k.demoted.Store(true)
			return k.stopPostgres()
		}
	}
	leader, ok := k.leader()
	if why := k.noLeader(ok); why != "" {
		k.log.Info("no primary to follow yet", "why", why)
	}
	if !ok {
		if !running && k.srv.HasData() && !k.supRunning() {
			// Start read-only, replaying its own WAL, so that the node
			// knows and publishes its position.
			if err := k.srv.SetStandby(pg.Upstream{}); err != nil {
				return err
			}
			k.following = ""
			k.startSupervisor(ctx)
		}
		return nil
	}
	up := k.cfg.Replication
	up.Host, up.Port, up.Slot = leader.Host, leader.Port, pg.SlotName(k.cfg.Node)
	switch {
	case !k.srv.HasData():
		return k.clone(ctx, leader.Node, up)
	case k.demoted.Load() || k.failedFollows >= 3:
		return k.rewind(ctx, leader.Node, up)
	case k.following == leader.Node:
		return nil
	case !running:
		if k.supRunning() {
			return nil // starting
		}
		if err := k.srv.SetStandby(up); err != nil {
			return err
		}
		k.startSupervisor(ctx)
		return nil
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := k.srv.Follow(fctx, up, leader.Timeline); err != nil {
		k.failedFollows++
		return fmt.Errorf("follow %s (attempt %d): %w", leader.Node, k.failedFollows, err)
	}
	k.following, k.failedFollows = leader.Node, 0
	k.log.Info("following the primary", "primary", leader.Node, "timeline", leader.Timeline)
	return nil
}

// noLeader returns, once per change, why there is no primary to follow.
func (k *Keeper) noLeader(ok bool) string {
	why := ""
	if !ok {
		holder := k.owner.Status().Holder
		k.mu.Lock()
		m, seen := k.members[holder]
		k.mu.Unlock()
		switch {
		case holder == "":
			why = "nobody holds the record"
		case !seen:
			why = holder + " holds the record but publishes no state"
		default:
			why = holder + " holds the record but its postgres is " + m.Role
		}
	}
	if why == k.lastNoLeader {
		return ""
	}
	k.lastNoLeader = why
	return why
}

// leader returns the published state of the record's holder when it runs
// as the primary.
func (k *Keeper) leader() (MemberState, bool) {
	holder := k.owner.Status().Holder
	if holder == "" || holder == k.cfg.Node {
		return MemberState{}, false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	m, ok := k.members[holder]
	if !ok || m.Role != RolePrimary {
		return MemberState{}, false
	}
	return m, true
}

func (k *Keeper) clone(ctx context.Context, leader string, up pg.Upstream) error {
	if k.supRunning() {
		if err := k.stopPostgres(); err != nil {
			return err
		}
	}
	k.log.Info("cloning the primary", "primary", leader)
	if err := k.srv.Clone(ctx, up); err != nil {
		return err
	}
	k.following, k.failedFollows, k.timeline = leader, 0, 0
	k.demoted.Store(false)
	k.finalLSN.Store(0)
	k.startSupervisor(ctx) // adopts the running clone
	return nil
}

func (k *Keeper) rewind(ctx context.Context, leader string, up pg.Upstream) error {
	if err := k.stopPostgres(); err != nil {
		return err
	}
	k.log.Warn("rejoining as a replica: rewinding", "primary", leader)
	res, err := k.srv.Rewind(ctx, up)
	if errors.Is(err, pg.ErrRewindImpossible) {
		_ = k.srv.Stop(ctx, pg.StopFast)
		aside := k.srv.DataDir() + ".diverged-" + time.Now().UTC().Format("20060102T150405")
		k.log.Error("rewind impossible: moving the data directory aside and cloning again", "error", err, "moved_to", aside)
		if rerr := os.Rename(k.srv.DataDir(), aside); rerr != nil {
			return errors.Join(err, rerr)
		}
		return k.clone(ctx, leader, up)
	}
	if err != nil {
		_ = k.srv.Stop(ctx, pg.StopFast)
		return fmt.Errorf("rewind: %w", err)
	}
	if res.Rewound {
		k.log.Warn("rewound: transactions the new primary never had are gone",
			"diverged_at", res.DivergedAt, "diverged_timeline", res.DivergedTimeline,
			"lost_wal_end", res.TargetEnd, "took", res.Took.Round(time.Millisecond))
	}
	k.following, k.failedFollows, k.timeline = leader, 0, 0
	k.demoted.Store(false)
	k.finalLSN.Store(0)
	k.startSupervisor(ctx)
	return nil
}
