package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/pg"
)

// degradeAfter is how long a sync primary keeps commits waiting with no
// replica streaming before it degrades to async: long enough for replicas
// to reconnect after the primary restarted in place (PostgreSQL retries a
// stream every wal_retrieve_retry_interval, 5 s by default).
const degradeAfter = 10 * time.Second

// lead makes this node the primary, doing in order what the machine's
// lead says: initialise the cluster if nobody has, start postgres, promote
// a replica, set up the replication role and the replicas' slots, keep the
// synchronous standbys.
func (k *Keeper) lead(ctx context.Context, v view) error {
	for _, s := range k.m.lead(v) {
		var err error
		switch s {
		case leadBootstrap:
			return k.bootstrap(ctx)
		case leadStart:
			// false: the lead was lost meanwhile, and the next round
			// follows. Either way the supervisor's change of state
			// wakes the keeper.
			k.startPrimary(ctx)
			return nil
		case leadPromote:
			var promoted bool
			if promoted, err = k.promote(ctx, v); err == nil && !promoted {
				return nil
			}
		case leadSetUp:
			err = k.bounded(ctx, func(ctx context.Context) error { return k.setUp(ctx, v.epoch) })
		case leadSync:
			err = k.bounded(ctx, func(ctx context.Context) error { return k.manageSync(ctx, v) })
		}

		if err != nil {
			return err
		}
	}
	if v.running() && !v.inRecovery && k.m.setUpEpoch == v.epoch {
		k.keepSlots(ctx, k.region != nil)
	}
	if r := k.region; r != nil && v.running() {
		r.freeSlots(ctx, k)
	}
	return nil
}

// slotCheckEvery is how often the primary makes sure the slots it keeps
// exist: what a replica waits, at most, once its slot went missing.
const slotCheckEvery = 5 * time.Second

// keepSlots creates, on the primary or a standby leader, the slots of its
// set-up (withRegions as createSlots) that have gone missing since (a
// primary restored from a backup has none; an operator may drop one):
// without its slot a replica, or another region's standby leader, cannot
// stream at all, and PostgreSQL only says so in the replica's log. As
// Patroni does, every few seconds.
func (k *Keeper) keepSlots(ctx context.Context, withRegions bool) {
	now := k.clk.Now()
	if now.Sub(k.slotsChecked) < slotCheckEvery {
		return
	}
	k.slotsChecked = now
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	slots, err := k.srv.Slots(qctx)
	if err != nil {
		k.log.Warn("listing the replication slots to keep", "err", err)
		return
	}
	for _, name := range k.slotNames(withRegions) {
		if slices.ContainsFunc(slots, func(s pg.Slot) bool { return s.Name == name }) {
			continue
		}
		if err := k.srv.CreateSlot(qctx, name); err != nil {
			k.log.Warn("creating a missing replication slot", "slot", name, "err", err)
			continue
		}
		k.log.Warn("created a missing replication slot: its replica could not stream without it", "slot", name)
	}
}

// bounded runs a step of the lead that talks to postgres within half of
// hangAfter: a postgres that freezes while the step waits for it (a
// query, a reload reaching the WAL senders) must not hold the keeper's
// loop, whose next rounds measure the silence and give up the lead of a
// hung primary. Seen in TestDrillRun: a 16 s freeze that struck while
// the sync step asked pg_stat_replication was waited out, not failed over.
func (k *Keeper) bounded(ctx context.Context, step func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, hangAfter(k.cfg.Lease)/2)
	defer cancel()
	return step(ctx)
}

// promote confirms with the other replicas that this node may promote,
// waits a while for the old primary's shutdown checkpoint if it lacks it,
// then promotes it; it reports false when the replicas ruled it out, or
// while it waits.
func (k *Keeper) promote(ctx context.Context, v view) (bool, error) {
	start := k.clk.Now()
	pos, err := k.srv.Position(ctx)
	if err != nil {
		return false, err
	}
	self := max(pos.Received, pos.Replayed)
	if r := k.region; r != nil {
		if wait, err := r.awaitFinal(ctx, k, v.epoch, self); wait || err != nil {
			return false, err
		}
	}
	if k.m.forcedHere(v) {
		return k.promoteForced(ctx, v, self, start)
	}
	states, err := k.confirmPromotion(ctx, v, self)
	if err != nil {
		// Stand down for a while: the published states said yes, the
		// replicas themselves say no.
		k.m.refused(k.clk.Now(), err.Error())
		k.log.Warn("not promoting; handing the lead back", "err", err)
		k.owner.SetEligible(false)
		return false, nil
	}
	g := k.m.awaitCheckpoint(k.clk.Now(), v.epoch, self, states)
	args := []any{"old_primary", g.from, "checkpoint", g.start, "checkpoint_end", g.end, "received", g.self}
	switch {
	case g.wait && g.waited == 0:
		k.log.Info("waiting to receive the old primary's shutdown checkpoint before promoting, so that it can follow without pg_rewind",
			append(args, "up_to", checkpointWait)...)
		return false, nil
	case g.wait:
		return false, nil
	case g.waited > 0:
		k.log.Warn("promoting without the old primary's shutdown checkpoint: it was not received in time; the old primary will need pg_rewind, which discards only that checkpoint",
			append(args, "waited", g.waited.Round(time.Millisecond))...)
	}
	return k.promoteNow(ctx, v, start)
}

// promoteForced promotes this node on the operator's force record,
// without the other replicas' confirmation or the wait for the old
// primary's shutdown checkpoint, saying what it may lose; then it removes
// the record.
func (k *Keeper) promoteForced(ctx context.Context, v view, self pg.LSN, start time.Time) (bool, error) {
	var behind uint64
	if p := v.primary.LSN; p > self {
		behind = uint64(p - self)
	}
	k.log.Warn("forced failover: promoting without the failover rules' checks, as the operator asked; what this node had not received is lost", "event", "promotion",
		"by", v.force.Owner, "received", self, "last_primary_position", v.primary.LSN, "behind_bytes", behind)
	promoted, err := k.promoteNow(ctx, v, start)
	if promoted {
		// A veto from a promotion the replicas refused before the force
		// would hand the lead away again once the record is gone.
		k.m.vetoUntil, k.m.vetoWhy = time.Time{}, ""
		k.clearForce(ctx)
	}
	return promoted, err
}

// promoteNow promotes postgres, the checks done.
func (k *Keeper) promoteNow(ctx context.Context, v view, start time.Time) (bool, error) {
	if !k.guard.fenceOpen() {
		return false, errors.New("not promoting: the write fence could not be opened (nftables refused it; its error is logged above); fix nftables, or set database.write_fence: false")
	}
	if a := k.cfg.SyncArchive; a != "" {
		// The first commit on the new timeline must wait for the archive
		// too: name the archiver before the promotion (a replica ignores
		// the setting), not in the sync step after it. Until the archiver
		// of this node streams, commits wait.
		if _, err := k.srv.SetSynchronousStandbys(ctx, 1, []string{a}); err != nil {
			return false, fmt.Errorf("not promoting: commits could not be made to wait for the WAL archive: %w", err)
		}
		k.metrics.syncArchive.Set(1)
	}
	tl, err := k.srv.Promote(ctx)
	if err != nil {
		return false, fmt.Errorf("promote: %w", err)
	}
	k.m.promoted()
	k.metrics.promotions.Inc()
	k.log.Warn("promoted to primary", "event", "promotion", "timeline", tl, "epoch", v.epoch, "took", k.clk.Now().Sub(start).Round(time.Millisecond))
	return true, nil
}

// setUp creates the replication role and a slot for every other node, once
// per lead: the role's ALTER and the grants write WAL.
func (k *Keeper) setUp(ctx context.Context, epoch int64) error {
	// Without a password there is a single node (New checks): no replica
	// connects as the role, and pg_rewind has nobody to rewind from.
	if k.cfg.Replication.Password != "" {
		if err := k.srv.EnsureReplicationUser(ctx, k.cfg.Replication.User, k.cfg.Replication.Password); err != nil {
			return err
		}
	}
	// Every lead round of a node in a region acts for the active region
	// (step), so its set-up makes the other regions' slots too; asked of
	// the live record instead, a set-up that ran as the record was let go
	// made none, and none came when it was taken back under the same
	// epoch (TestRegionForcedPromotion: east's standby leader could not
	// stream).
	if err := k.createSlots(ctx, k.region != nil); err != nil {
		return err
	}
	k.m.setUp(epoch)
	return nil
}

// createSlots creates a slot for every other node of the region and,
// withRegions (on the active region's primary), for the standby leader of
// every other region.
func (k *Keeper) createSlots(ctx context.Context, withRegions bool) error {
	k.ownSlotsLeft = true // dropped once it follows again (dropOwnSlots)
	for _, s := range k.slotNames(withRegions) {
		if err := k.srv.CreateSlot(ctx, s); err != nil {
			return err
		}
	}
	return nil
}

// slotNames are the slots a leading node keeps: one for every other node
// of the region and, withRegions, one for every other region's standby
// leader.
func (k *Keeper) slotNames(withRegions bool) []string {
	var slots []string
	for _, n := range k.cfg.Nodes {
		if n != k.cfg.Node {
			slots = append(slots, pg.SlotName(n))
		}
	}
	if r := k.region; r != nil && withRegions {
		for _, other := range r.cfg.Regions {
			if other != r.cfg.Name {
				slots = append(slots, RegionSlot(other))
			}
		}
	}
	return slots
}

// setUpStandby creates, once per lead, the slots the other nodes of the
// standby region replicate from the standby leader with (a standby takes
// physical slots; it cannot create the role, which comes from the active
// primary).
func (k *Keeper) setUpStandby(ctx context.Context, v view) error {
	if !v.running() || !v.inRecovery {
		return nil
	}
	if k.m.standbySetUpEpoch == v.epoch {
		k.keepSlots(ctx, false)
		return nil
	}
	if err := k.createSlots(ctx, false); err != nil {
		return err
	}
	if v.sync.Leader != k.cfg.Node || v.sync.K != 0 || len(v.sync.Standbys) != 0 {
		// A standby region's commits wait for nobody here: a sync record
		// left from when the region was active would hold its leader's
		// promotion to standbys that no longer replicate from a primary.
		if err := k.putSync(ctx, SyncState{Leader: k.cfg.Node}); err != nil {
			return err
		}
	}
	k.m.standbySetUpEpoch = v.epoch
	return nil
}

// bootstrap initialises the cluster: only the first leader of a cluster
// with no InitKey does; a node without data in an initialised cluster
// hands the lead over and clones.
func (k *Keeper) bootstrap(ctx context.Context) error {
	resp, err := k.cfg.Client.Get(ctx, InitKey(k.cfg.Cluster, k.cfg.Name))
	if err != nil {
		return err
	}
	if len(resp.Kvs) > 0 {
		k.owner.SetEligible(false)
		return errors.New("leads without data in an initialised cluster; handing over")
	}
	k.log.Info("initialising the database cluster")
	if err := k.srv.Init(ctx); err != nil && !errors.Is(err, pg.ErrInitialized) {
		return err
	}
	if !k.startPrimary(ctx) {
		return errors.New("lost the lead while initialising")
	}
	if err := k.waitRunning(ctx); err != nil {
		return err
	}
	id, err := k.srv.SystemIdentifier(ctx)
	if err != nil {
		return err
	}
	key := InitKey(k.cfg.Cluster, k.cfg.Name)
	txn, err := k.cfg.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.FormatUint(id, 10))).
		Commit()
	if err != nil {
		return err
	}
	if !txn.Succeeded {
		return errors.New("another node initialised the cluster meanwhile")
	}
	k.log.Warn("initialised the database cluster", "event", "database", "system_id", id)
	return nil
}

// manageSync keeps synchronous_standby_names and the sync record in step
// with the healthy replicas (the machine's syncTarget), in the order that
// keeps the record a superset of what commits wait for: widen the record
// first, narrow postgres first.
func (k *Keeper) manageSync(ctx context.Context, v view) error {
	standbys, err := k.srv.Replication(ctx)
	if err != nil {
		return err
	}
	want, hold := k.m.syncTarget(k.clk.Now(), standbys, v.sync)
	if hold {
		return nil
	}
	if r := k.region; r != nil {
		want = k.m.withDR(k.clk.Now(), want, standbys, v.sync, r.standbyLeader())
	}
	k.metrics.syncK.Set(float64(want.K))
	k.metrics.syncDegraded.Set(0)
	k.metrics.syncArchive.Set(0)
	if want.Archive != "" {
		k.metrics.syncArchive.Set(1)
	}
	if k.cfg.Mode == ModeSync && want.K == 0 {
		k.metrics.syncDegraded.Set(1)
	}
	widened, change := syncChange(v.sync, want)
	if !change {
		return nil
	}
	if want.K == 0 && v.sync.K > 0 {
		if want.Archive != "" {
			k.log.Error("no healthy synchronous standby: commits no longer wait for a replica (sync mode degrades to async); they still wait for the WAL archive", "event", "database")
		} else {
			k.log.Error("no healthy synchronous standby: commits no longer wait for a replica (sync mode degrades to async)", "event", "database")
		}
	}
	if v.sync.DR != "" && want.DR != v.sync.DR {
		// The standby region learns that commits stop waiting for its
		// leader before they do: until then it may take over as one with
		// every acknowledged commit.
		if err := k.region.publishSyncDR(ctx, want.DR); err != nil {
			return fmt.Errorf("commits keep waiting for %s: the global scope could not be told they stop: %w", v.sync.DR, err)
		}
		if want.DR == "" {
			k.log.Error("the standby region's leader does not stream: commits no longer wait for it (dr.mode sync degrades); a region failover now may lose what it lacks", "event", "database", "standby_leader", v.sync.DR)
		}
	}
	if err := k.putSync(ctx, widened); err != nil {
		return err
	}
	n, names := syncNames(want)
	if _, err := k.srv.SetSynchronousStandbys(ctx, n, names); err != nil {
		return err
	}
	k.log.Info("synchronous standbys set", "event", "database", "standbys", strings.Join(names, ","), "wait_for", n)
	if want.DR != "" && v.sync.DR == "" {
		k.log.Info("commits wait for the standby region's leader: it holds every acknowledged commit", "standby_leader", want.DR)
	}
	if want.Archive != "" && v.sync.Archive == "" {
		k.log.Info("commits wait for the WAL archive: the repository holds every acknowledged commit", "archiver", want.Archive, "replicas", want.Standbys)
	}
	if want.K > 0 && len(want.Standbys) < len(widened.Standbys) {
		if err := k.awaitCatchUp(ctx, want); err != nil {
			return err // the record stays widened: the next round tries again
		}
	}
	return k.putSync(ctx, want)
}

// catchUpWait bounds how long a narrowing of the sync record waits, in one
// round, for the standbys it keeps to catch up (awaitCatchUp).
const catchUpWait = 500 * time.Millisecond

// awaitCatchUp returns once want.K of want.Standbys have flushed the WAL
// written so far. A standby dropped from the record may hold commits the
// ones kept lack: with ANY 1 (db2, db3), a commit acknowledged by db2 alone
// is on db2 alone. Postgres already waits for want's standbys only; until
// they have every earlier commit, the record names the dropped standbys
// too, so that a promotion still asks them (len(Standbys)-K+1 must
// answer). Named in the record once K of them have this WAL, any
// len(Standbys)-K+1 of them include one that has every acknowledged
// commit.
func (k *Keeper) awaitCatchUp(ctx context.Context, want SyncState) error {
	pos, err := k.srv.Position(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, catchUpWait)
	defer cancel()
	for {
		standbys, err := k.srv.Replication(ctx)
		n, behind := flushedTo(standbys, want.Standbys, pos.Current)
		if err != nil {
			behind = err.Error()
		} else if n >= want.K {
			return nil
		}
		t := k.clk.NewTimer(10 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("the sync record keeps naming the standbys postgres no longer waits for until %d of %s have the WAL written before (to %s), which may hold commits only those acknowledged; behind: %s (haven pg status shows their lag)",
				want.K, strings.Join(want.Standbys, ", "), pos.Current, behind)
		case <-t.C():
		}
	}
}

// flushedTo counts those of names whose replicas have flushed WAL to lsn,
// and says where the others are. A standby streaming twice (a reconnect
// whose old sender has not ended yet) counts by its furthest.
func flushedTo(standbys []pg.Standby, names []string, lsn pg.LSN) (int, string) {
	n := 0
	var behind []string
	for _, name := range names {
		var flush pg.LSN
		streams := false
		for _, s := range standbys {
			if s.Name == name {
				streams, flush = true, max(flush, s.Flush)
			}
		}
		switch {
		case !streams:
			behind = append(behind, name+" does not stream")
		case flush >= lsn:
			n++
		default:
			behind = append(behind, fmt.Sprintf("%s has flushed to %s", name, flush))
		}
	}
	return n, strings.Join(behind, ", ")
}

// putSync writes the sync record fenced by the revision this keeper last
// wrote or saw (coord.FencedPut): a late record naming fewer standbys than
// postgres waits for would let a node outside the real set be promoted.
// Found at a newer revision (another leader's, or a late write of this
// one's), it writes again, once.
func (k *Keeper) putSync(ctx context.Context, s SyncState) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	key := SyncKey(k.cfg.Cluster, k.cfg.Name)
	err = coord.FencedPut(ctx, k.cfg.Client, key, string(data), &k.syncRev)
	if errors.Is(err, coord.ErrKeyMoved) {
		err = coord.FencedPut(ctx, k.cfg.Client, key, string(data), &k.syncRev)
	}
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.sync = s
	k.mu.Unlock()
	return nil
}
