package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/pg"
)

// degradeAfter is how long a sync primary keeps commits waiting with no
// replica streaming before it degrades to async: long enough for replicas
// to reconnect after the primary restarted in place (PostgreSQL retries a
// stream every wal_retrieve_retry_interval, 5 s by default).
const degradeAfter = 10 * time.Second

// lead makes this node the primary: initialise the cluster if nobody has,
// promote a replica, keep the replicas' slots and the synchronous standbys.
func (k *Keeper) lead(ctx context.Context) error {
	if !k.srv.HasData() {
		return k.bootstrap(ctx)
	}
	if !k.startPrimary(ctx) {
		return nil // lost the lead meanwhile
	}
	if k.sup.Status().State != pg.StateRunning {
		return nil // starting; the next round goes on
	}
	inRecovery, err := k.srv.IsInRecovery(ctx)
	if err != nil {
		return err
	}
	if inRecovery {
		start := time.Now()
		pos, err := k.srv.Position(ctx)
		if err != nil {
			return err
		}
		if err := k.confirmPromotion(ctx, max(pos.Received, pos.Replayed)); err != nil {
			// Stand down for a while: the published states said yes,
			// the replicas themselves say no.
			k.vetoUntil, k.vetoWhy = time.Now().Add(2*k.cfg.Lease), err.Error()
			k.log.Warn("not promoting; handing the lead back", "why", err)
			k.owner.SetEligible(false)
			return nil
		}
		if !k.guard.fenceOpen() {
			return errors.New("not promoting: the write fence could not be opened (nftables refused it; its error is logged above); fix nftables, or set database.write_fence: false")
		}
		tl, err := k.srv.Promote(ctx)
		if err != nil {
			return fmt.Errorf("promote: %w", err)
		}
		k.following, k.failedFollows = "", 0
		k.demoted.Store(false)
		k.m.promotions.Inc()
		k.log.Warn("promoted to primary", "timeline", tl, "epoch", k.guard.currentEpoch(), "took", time.Since(start).Round(time.Millisecond))
	}
	// Once per lead: the role's ALTER and the grants write WAL.
	if epoch := k.guard.currentEpoch(); k.setUpEpoch != epoch {
		if err := k.srv.EnsureReplicationUser(ctx, k.cfg.Replication.User, k.cfg.Replication.Password); err != nil {
			return err
		}
		for _, n := range k.cfg.Nodes {
			if n != k.cfg.Node {
				if err := k.srv.CreateSlot(ctx, pg.SlotName(n)); err != nil {
					return err
				}
			}
		}
		k.setUpEpoch = epoch
	}
	return k.manageSync(ctx)
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
	k.log.Warn("initialised the database cluster", "system_id", id)
	return nil
}

// manageSync keeps synchronous_standby_names and the sync record in step
// with the healthy replicas, in the order that keeps the record a superset
// of what commits wait for.
func (k *Keeper) manageSync(ctx context.Context) error {
	if k.cfg.Mode == ModeAsync {
		return nil
	}
	standbys, err := k.srv.Replication(ctx)
	if err != nil {
		return err
	}
	var healthy []string
	for _, s := range standbys {
		if s.State == "streaming" && slices.Contains(k.cfg.Nodes, s.Name) {
			healthy = append(healthy, s.Name)
		}
	}
	slices.Sort(healthy)
	if len(healthy) > 0 {
		k.noStandbySince = time.Time{}
	} else if k.cfg.Mode == ModeSync {
		// Replicas reconnect a few seconds after a restart of the
		// primary: commits wait for them that long before sync mode
		// degrades to async.
		if k.noStandbySince.IsZero() {
			k.noStandbySince = time.Now()
		}
		if time.Since(k.noStandbySince) < degradeAfter {
			return nil
		}
	}
	want := SyncState{Leader: k.cfg.Node, K: min(k.cfg.SyncStandbys, len(healthy)), Standbys: healthy}
	if k.cfg.Mode == ModeStrict {
		// Never fewer than k: with no healthy standby, keep waiting for
		// the last ones named, and writes block.
		k.mu.Lock()
		prev := k.sync
		k.mu.Unlock()
		want.K = k.cfg.SyncStandbys
		if len(healthy) < k.cfg.SyncStandbys && prev.Leader == k.cfg.Node {
			want.Standbys = union(prev.Standbys, healthy)
		}
		if len(want.Standbys) == 0 {
			want.Standbys = others(k.cfg.Nodes, k.cfg.Node)
		}
	}
	k.mu.Lock()
	cur := k.sync
	k.mu.Unlock()
	k.m.syncK.Set(float64(want.K))
	k.m.syncDegraded.Set(0)
	if k.cfg.Mode == ModeSync && want.K == 0 {
		k.m.syncDegraded.Set(1)
	}
	if cur.Leader == want.Leader && cur.K == want.K && slices.Equal(cur.Standbys, want.Standbys) {
		return nil
	}
	if want.K == 0 && cur.K > 0 {
		k.log.Error("no healthy synchronous standby: commits no longer wait for a replica (sync mode degrades to async)")
	}
	// Widen the record first, narrow postgres first.
	if err := k.putSync(ctx, SyncState{Leader: want.Leader, K: want.K, Standbys: union(cur.Standbys, want.Standbys)}); err != nil {
		return err
	}
	if _, err := k.srv.SetSynchronousStandbys(ctx, want.K, want.Standbys); err != nil {
		return err
	}
	return k.putSync(ctx, want)
}

func (k *Keeper) putSync(ctx context.Context, s SyncState) error {
	data, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = k.cfg.Client.Put(ctx, SyncKey(k.cfg.Cluster, k.cfg.Name), string(data))
	if err == nil {
		k.mu.Lock()
		k.sync = s
		k.mu.Unlock()
	}
	return err
}

func union(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

func others(nodes []string, self string) []string {
	var out []string
	for _, n := range nodes {
		if n != self {
			out = append(out, n)
		}
	}
	return out
}
