package keeper

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pg"
)

// publish reads postgres's position and publishes the node's state, then
// decides whether the node may lead.
func (k *Keeper) publish(ctx context.Context) {
	st := k.baseState(RoleStopped)
	switch k.sup.Status().State {
	case pg.StateFailed:
		st.Role = RoleFailed
	case pg.StateRunning:
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		pos, err := k.srv.Position(qctx)
		if err == nil {
			st.SystemID, err = k.srv.SystemIdentifier(qctx)
		}
		cancel()
		if err != nil {
			break
		}
		st.Timeline, st.Replayed = pos.Timeline, pos.Replayed
		if pos.InRecovery {
			// A replica that stops streaming reports its last
			// restartpoint's timeline, which may be older than the WAL
			// it received: publish the newest it has shown.
			k.timeline = max(k.timeline, pos.Timeline)
			st.Timeline = k.timeline
			st.Role, st.LSN = RoleReplica, max(pos.Received, pos.Replayed)
			st.LagSeconds = pos.ReplayDelay.Seconds()
			st.Upstream = k.following
			st.Streaming = pos.Received != 0 && k.following != ""
		} else {
			st.Role, st.LSN = RolePrimary, pos.Current
			k.timeline = pos.Timeline
		}
	}
	k.mu.Lock()
	members, sync, primary := k.members, k.sync, k.primary
	k.mu.Unlock()
	if st.Role == RoleReplica && primary.LSN > st.LSN {
		st.Lag = uint64(primary.LSN - st.LSN)
	}
	if st.Role == RolePrimary && !k.guard.isActing() {
		st.Role = RoleStopped // being demoted: nobody may route writes here
	}
	if f := k.cfg.Fence; f != nil && st.Role == RoleReplica && !k.guard.isActing() {
		// A replica serves reads: out of the fence.
		if err := f.Unfence(); err != nil {
			k.log.Warn("write fence", "error", err)
		}
	}
	var ok bool
	var why string
	switch {
	case time.Now().Before(k.vetoUntil):
		why = k.vetoWhy
	case k.guard.isActing():
		ok = !k.cfg.NoFailover && k.sup.Status().State != pg.StateFailed
		why = "postgres failed, or the node is tagged nofailover"
	case !k.initialized(ctx):
		ok = !k.cfg.NoFailover // bootstrap: any node may initialise
		why = "tagged nofailover"
	default:
		ok, why = promotable(st, members, sync, primary, failoverPolicy{mode: k.cfg.Mode, maxLag: k.cfg.MaxLagOnFailover})
	}
	if ok {
		why = ""
	}
	st.NotPromotable = why
	if st.Role != RolePrimary {
		st.LastPrimaryLSN = pg.LSN(k.finalLSN.Load())
	}
	k.state.Set(st)
	k.setMetrics(st, ok)
	if why != k.whyNot {
		if why != "" {
			k.log.Info("may not lead", "why", why)
		} else {
			k.log.Info("may lead")
		}
		k.whyNot = why
	}
	k.owner.SetEligible(ok)
}

func (k *Keeper) setMetrics(st MemberState, promotable bool) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	primary := st.Role == RolePrimary && k.guard.fenceOpen()
	k.m.primary.Set(b(primary))
	k.m.lsn.Set(float64(st.LSN))
	k.m.lag.Set(float64(st.Lag))
	k.m.lagSeconds.Set(st.LagSeconds)
	k.m.timeline.Set(float64(st.Timeline))
	k.m.promotable.Set(b(promotable && !primary))
	if !primary {
		k.m.syncK.Set(0)
		k.m.syncDegraded.Set(0)
	}
}

// initialized reports whether the cluster has been initialised (InitKey
// exists); on an error it assumes so, the safe answer.
func (k *Keeper) initialized(ctx context.Context) bool {
	k.mu.Lock()
	for _, m := range k.members {
		if m.SystemID != 0 {
			k.mu.Unlock()
			return true
		}
	}
	k.mu.Unlock()
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := k.cfg.Client.Get(qctx, InitKey(k.cfg.Cluster, k.cfg.Name), clientv3.WithCountOnly())
	return err != nil || resp.Count > 0
}

// publishFinal publishes, before the record is released, where the stopped
// primary's WAL ends (its latest checkpoint, the shutdown checkpoint after
// a clean stop), and waits until etcd has it: a successor reads it right
// before promoting and must have received that far (within
// max_lag_on_failover, which is 0 outside async mode), so a planned
// handover loses nothing even when sync mode had degraded to async.
// Bounded: it is on the way out.
func (k *Keeper) publishFinal() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	cd, err := k.srv.ControlData(ctx)
	if err != nil || cd.Checkpoint == 0 {
		k.log.Warn("final WAL position unknown", "error", err)
		return
	}
	k.finalLSN.Store(uint64(cd.Checkpoint))
	k.state.Update(func(st *MemberState) {
		st.Role, st.LastPrimaryLSN = RoleStopped, cd.Checkpoint
	})
	if err := k.state.Sync(ctx); err != nil {
		k.log.Warn("publishing the final WAL position", "error", err)
	}
}
