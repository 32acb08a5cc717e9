package keeper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/haven-ha/haven/internal/pg"
)

// follow makes this node a replica of the holder, doing what the machine's
// follow says: stop a former primary, clone when it has no data, rewind
// when it diverged, follow otherwise.
func (k *Keeper) follow(ctx context.Context, v view) error {
	d := k.m.follow(v)
	if d.act == followDemote {
		k.log.Warn("not the leader but postgres is a primary: stopping it")
		k.m.demote()
		return k.stopPostgres()
	}
	if d.noLeader != k.lastNoLeader {
		if d.noLeader != "" {
			k.log.Info("no primary to follow yet", "why", d.noLeader)
		}
		k.lastNoLeader = d.noLeader
	}
	up := k.cfg.Replication
	up.Host, up.Port, up.Slot = d.leader.Host, d.leader.Port, pg.SlotName(k.cfg.Node)
	switch d.act {
	case followReadOnly:
		if err := k.srv.SetStandby(pg.Upstream{}); err != nil {
			return err
		}
		k.m.startedReadOnly()
		k.startSupervisor(ctx)
	case followClone:
		return k.clone(ctx, d.leader.Node, up)
	case followRewind:
		return k.rewind(ctx, d.leader.Node, up)
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
		k.log.Info("following the primary", "primary", d.leader.Node, "timeline", d.leader.Timeline)
	}
	return nil
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
	k.m.replaced(leader)
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
		aside := k.srv.DataDir() + ".diverged-" + k.clk.Now().UTC().Format("20060102T150405")
		k.log.Error("rewind impossible: moving the data directory aside and cloning again", "err", err, "moved_to", aside)
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
	k.m.replaced(leader)
	k.finalLSN.Store(0)
	k.startSupervisor(ctx)
	return nil
}
