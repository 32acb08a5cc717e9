package keeper

import (
	"context"
	"regexp"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pg"
)

// publish reads postgres's position and publishes the node's state, then
// tells the ownership record whether the node may lead (the machine's
// member and eligible). It asks postgres even when the round's first query
// went unanswered: on a loaded machine the second often answers, and a
// node without a reading publishes itself stopped (no primary to route
// to) for the round.
func (k *Keeper) publish(ctx context.Context) {
	v := k.look()
	r := reading{server: v.server}
	if r.server == pg.StateRunning {
		asked := k.clk.Now()
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		pos, err := k.srv.Position(qctx)
		var id uint64
		if err == nil {
			id, err = k.srv.SystemIdentifier(qctx)
		}
		cancel()
		r.ok, r.pos, r.systemID = err == nil, pos, id
		if err != nil {
			k.noAnswer(asked)
		}
	}
	var final finalWAL
	if f := k.final.Load(); f != nil {
		final = *f
	}
	st := k.m.member(k.baseState(RoleStopped), r, v.primaryLead(), v.primary, final)
	if st.Role == RoleReplica && v.acting && !v.primaryLead() {
		st.Role = RoleStandbyLeader
	}
	if f := k.cfg.Fence; f != nil && (st.Role == RoleReplica || st.Role == RoleStandbyLeader) && !v.primaryLead() {
		// A replica serves reads: out of the fence.
		if err := f.Unfence(); err != nil {
			k.log.Warn("write fence", "err", err)
		}
	}
	// Measured now, after the query: a hung postgres's rounds are two
	// query timeouts long, and the look's time is one behind.
	v.silence = k.silence(k.clk.Now(), r)
	ok, why := k.m.eligible(v, k.initialized(ctx, v.members), st)
	st.NotPromotable = why
	st.PendingRestart, st.PendingLowered = k.pendingNames(ctx)
	k.state.Set(st)
	k.setMetrics(st, ok)
	if !sameReason(why, k.whyNot) {
		if why != "" {
			k.log.Info("may not lead", "why", why)
		} else {
			k.log.Info("may lead")
		}
		k.whyNot = why
	}
	k.owner.SetEligible(ok)
	if k.region != nil {
		k.region.publish(k, v, st)
	}
}

// noAnswer notes that postgres left a query asked at asked unanswered.
func (k *Keeper) noAnswer(asked time.Time) {
	if k.silentSince.IsZero() {
		k.silentSince = asked
	}
}

// silence is how long the running postgres has not answered the keeper:
// since the first query it left unanswered was asked, not since the keeper
// noticed (a round's timeout later), so that a hung primary gives up the
// lead hangAfter into its silence. It is 0 while postgres answers, or
// when it does not run.
func (k *Keeper) silence(now time.Time, r reading) time.Duration {
	if r.server != pg.StateRunning || r.ok {
		k.silentSince = time.Time{}
		return 0
	}
	if k.silentSince.IsZero() {
		k.silentSince = now
	}
	return now.Sub(k.silentSince)
}

func (k *Keeper) setMetrics(st MemberState, promotable bool) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	primary := st.Role == RolePrimary && k.guard.fenceOpen()
	k.metrics.primary.Set(b(primary))
	k.metrics.lsn.Set(float64(st.LSN))
	k.metrics.lag.Set(float64(st.Lag))
	k.metrics.lagSeconds.Set(st.LagSeconds)
	k.metrics.timeline.Set(float64(st.Timeline))
	k.metrics.promotable.Set(b(promotable && !primary))
	k.metrics.paused.Set(b(k.Paused() != nil))
	if !primary {
		k.metrics.syncK.Set(0)
		k.metrics.syncDegraded.Set(0)
		k.metrics.syncArchive.Set(0)
	}
}

// initialized reports whether the cluster has been initialised: a member
// published a system identifier, or InitKey exists. On an error it assumes
// so, the safe answer.
func (k *Keeper) initialized(ctx context.Context, members map[string]MemberState) bool {
	for _, m := range members {
		if m.SystemID != 0 {
			return true
		}
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := k.cfg.Client.Get(qctx, InitKey(k.cfg.Cluster, k.cfg.Name), clientv3.WithCountOnly())
	return err != nil || resp.Count > 0
}

// publishFinal publishes, before the record is released, where the stopped
// primary's WAL ends, and waits until etcd has it. A successor reads it
// right before promoting. It must have received up to the latest
// checkpoint's start (within max_lag_on_failover, which is 0 outside async
// mode), so a planned handover loses nothing even when sync mode had
// degraded to async. After a clean stop that checkpoint is the shutdown
// checkpoint, the last record, and its end is published too: the
// successor waits a while to have received that far, so that it forks its
// timeline after the checkpoint and this node follows it without
// pg_rewind (awaitCheckpoint). A node that led but never promoted (its
// peers' answers ruled it out) publishes nothing: its WAL is what it
// received. Bounded: it is on the way out.
func (k *Keeper) publishFinal() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if cd, err := k.srv.ControlData(ctx); err == nil && cd.State == "shut down in recovery" {
		// It led but never promoted (its peers' answers ruled it out):
		// its WAL is what it received, nothing of its own.
		return
	}
	start, end, err := k.srv.ShutdownCheckpoint(ctx)
	if start == 0 {
		k.log.Warn("final WAL position unknown", "err", err)
		return
	}
	if err != nil {
		k.log.Warn("where the WAL ends is unknown: the successor will not wait for this node's last checkpoint", "checkpoint", start, "err", err)
	}
	k.final.Store(&finalWAL{checkpoint: start, end: end})
	k.state.Update(func(st *MemberState) {
		st.Role, st.LastPrimaryLSN, st.LastPrimaryEnd = RoleStopped, start, end
	})
	if err := k.state.Sync(ctx); err != nil {
		k.log.Warn("publishing the final WAL position", "err", err)
	}
}

// numbers are the measurements a reason quotes: seconds, bytes, LSNs.
var numbers = regexp.MustCompile(`\b[0-9][0-9A-Fa-f./]*`)

// sameReason says whether two reasons not to lead are the same but for
// the numbers they quote, which change every round ("27.03s behind",
// "27.06s behind"): a reason is logged when it changes, not when its
// measurement does.
func sameReason(a, b string) bool {
	return numbers.ReplaceAllString(a, "#") == numbers.ReplaceAllString(b, "#")
}
