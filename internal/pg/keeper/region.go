package keeper

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/pg"
)

// A database that spans two regions (database.dr) is two clusters of
// keepers, one per region, each with its own ownership record for its
// region's lead in its region's etcd: failovers inside a region are as fast
// as without a second region. Which region is active, takes the writes, is
// one more ownership record, held by a region (coord.OwnerConfig.Member:
// renewed by whichever node leads the region's database now), in the
// global scope: an etcd that spans the regions and a witness, with a lease
// of seconds. The leader of the active region is its primary, and writes
// only while both records say so: the write fence closes at the earlier of
// the two deadlines. The leader of the other region is the standby leader:
// a replica of the active primary (found through the global scope), with a
// restore_command that replays the archive when streaming breaks or falls
// behind; the other nodes of its region replicate from it. When its region
// takes the record (the active region lost it, and dr.failover is
// automatic and the standby's last known lag was within dr.max_lag), the
// standby leader promotes; the former active region's leader, whose
// region deadline passed on its own clock first, stops its postgres and
// comes back as the new standby leader (pg_rewind against the new
// primary).

// DefaultRegionLease is the active-region record's default lease.
const DefaultRegionLease = 10 * time.Second

// RegionConfig makes a Keeper one region's side of a database that spans
// two regions.
type RegionConfig struct {
	// Name is this node's region; Regions every region of the database,
	// this one included (the primary keeps a replication slot for each
	// other region's standby leader, RegionSlot).
	Name    string
	Regions []string
	// Client reaches the global scope; Alternates are clients of its
	// other members (see coord.OwnerConfig).
	Client     *clientv3.Client
	Alternates []*clientv3.Client
	// Lease is the active-region record's lease (default
	// DefaultRegionLease).
	Lease time.Duration
	// Home: this is the region of database.nodes, which takes the record
	// when nobody holds it (a new database, or one released to nobody).
	Home bool
	// Automatic (dr.failover: automatic): the region takes the record from
	// an active region that stopped renewing it, when its standby's last
	// known lag was at most MaxLag. Otherwise only an operator promotes
	// it.
	Automatic bool
	MaxLag    time.Duration
	// Sync (dr.mode: sync): every commit waits for the other region's
	// standby leader as well; a standby region named so when the active
	// one was lost has every acknowledged commit and takes over whatever
	// its lag.
	Sync bool
	// RestoreCommand is the standbys' restore_command (the backup archive),
	// or "" when the database has no backups.
	RestoreCommand string
}

// RegionState is what every node of a two-region database publishes in the
// global scope, under RegionStatePrefix: whether it leads its region, and
// as what.
type RegionState struct {
	Node   string `json:"node"`
	Region string `json:"region"`
	// Leader: the node leads its region's database; Active: its region
	// holds the active-region record under RegionEpoch and the node acts
	// for it.
	Leader      bool  `json:"leader"`
	Active      bool  `json:"active"`
	RegionEpoch int64 `json:"region_epoch,omitempty"`
	// Member is the node's database state as its region sees it.
	Member MemberState `json:"member"`
	// LagBytes and LagSeconds are, on a standby leader, how far it was
	// behind the active primary when it last heard from it: the data a
	// region failover would lose.
	LagBytes   uint64  `json:"lag_bytes,omitempty"`
	LagSeconds float64 `json:"lag_seconds,omitempty"`
	// Final and FinalEnd are, on a primary whose region handed the record
	// over (a planned switchover), where its shutdown checkpoint starts
	// and ends: its last WAL, written under region epoch FinalEpoch. The
	// successor promotes only once it has received that far.
	// SyncDR is, on the active primary, the standby leader every commit
	// waits for (dr.mode: sync), published before commits stop waiting
	// for it.
	SyncDR     string `json:"sync_dr,omitempty"`
	Final      pg.LSN `json:"final,omitempty"`
	FinalEnd   pg.LSN `json:"final_end,omitempty"`
	FinalEpoch int64  `json:"final_epoch,omitempty"`
}

// SwitchoverIntent asks for region To to hold the active-region record, as
// long as the record is still held under Epoch (a request outlives nothing
// else): a planned switchover (the active region hands the record over
// once To's standby leader streams), or, with Promote, an operator's
// promotion of a region whose failover is manual or whose standby lags
// more than max_lag (To takes the record once the active region stops
// renewing it).
type SwitchoverIntent struct {
	To      string `json:"to"`
	Epoch   int64  `json:"epoch"`
	Promote bool   `json:"promote,omitempty"`
}

// regionSwitchoverKey is the key of the switchover intent of database
// name, in the global scope.
func regionSwitchoverKey(cluster, name string) string {
	return regionSwitchoverPrefix(cluster, name) + "intent"
}

func regionSwitchoverPrefix(cluster, name string) string {
	return "/haven/" + cluster + "/dr/" + name + "/switchover/"
}

// RoleStandbyLeader is the role of the leader of the standby region: a
// replica of the active region's primary that the other nodes of its
// region replicate from.
const RoleStandbyLeader = "standby_leader"

// RegionOwnerPrefix is the key prefix of the active-region record of
// database name, in the global scope.
func RegionOwnerPrefix(cluster, name string) string {
	return coord.OwnerPrefix(cluster, "region", name)
}

// RegionStatePrefix is the key prefix under which the nodes of database
// name publish their RegionState, in the global scope.
func RegionStatePrefix(cluster, name string) string {
	return "/haven/" + cluster + "/dr/" + name + "/nodes/"
}

// RegionSlot is the replication slot the primary keeps for the standby
// leader of region, whichever node that is.
func RegionSlot(region string) string { return pg.SlotName("haven_dr_" + region) }

// regionPart is a Keeper's side of the active-region record.
type regionPart struct {
	cfg     RegionConfig
	metrics *regionMetrics
	owner   *coord.Owner
	guard   *regionGuard
	entry   *coord.Entry[RegionState]

	mu     sync.Mutex
	states map[string]RegionState
	// active is the state of the active region's primary, as last
	// published (zero when none is known); lsns are its positions as this
	// node saw them arrive, for the lag in time.
	active RegionState
	lsns   lagClock
	// lagOf is the primary whose positions lsns holds: the active one, or
	// the last one heard from.
	lagOf RegionState
	// whyNot is why the node may not take the record, as last logged.
	whyNot string
	// intent is the switchover asked for, as last seen; prevEpoch the
	// epoch under which another region last held the record.
	intent    SwitchoverIntent
	prevEpoch int64
	// waitEpoch and waitSince: under the lead of waitEpoch, since
	// waitSince, the node has waited for the former primary's last WAL
	// (awaitFinal; the keeper's loop only).
	waitEpoch int64
	waitSince time.Time
	// final is where this node's WAL ended when its region handed the
	// record over, published until it leads an active region again.
	final RegionState
}

func newRegionPart(k *Keeper, cfg RegionConfig) (*regionPart, error) {
	if cfg.Lease == 0 {
		cfg.Lease = DefaultRegionLease
	}
	r := &regionPart{cfg: cfg, states: map[string]RegionState{}}
	r.guard = &regionGuard{k: k}
	m, err := newRegionMetrics(k.cfg.Registerer)
	if err != nil {
		return nil, err
	}
	r.metrics = m
	owner, err := coord.NewOwner(coord.OwnerConfig{
		Client:     cfg.Client,
		Alternates: cfg.Alternates,
		Prefix:     RegionOwnerPrefix(k.cfg.Cluster, k.cfg.Name),
		Node:       cfg.Name,
		Member:     k.cfg.Node,
		Priority:   map[bool]int{true: 100, false: 50}[cfg.Home],
		Lease:      cfg.Lease,
		Guard:      r.guard,
		Logger:     k.log.With("record", "active region"),
		Registerer: k.cfg.Registerer,
	})
	if err != nil {
		return nil, err
	}
	r.owner = owner
	entry, err := coord.NewEntry(coord.EntryConfig[RegionState]{
		Client: cfg.Client,
		Key:    RegionStatePrefix(k.cfg.Cluster, k.cfg.Name) + k.cfg.Node,
		Value:  RegionState{Node: k.cfg.Node, Region: cfg.Name},
		TTL:    cfg.Lease,
		Logger: k.log,
	})
	if err != nil {
		return nil, err
	}
	r.entry = entry
	return r, nil
}

// run keeps the record, the node's entry and the watch of the others'
// until ctx ends.
func (r *regionPart) run(ctx context.Context, k *Keeper) error {
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	wg.Go(func() { errc <- r.entry.Run(ctx) })
	wg.Go(func() { errc <- r.watchIntent(ctx, k) })
	wg.Go(func() {
		errc <- coord.WatchPrefix(ctx, r.cfg.Client, RegionStatePrefix(k.cfg.Cluster, k.cfg.Name), func(m map[string]RegionState) {
			r.setStates(k.clk.Now(), m)
			k.poke()
		})
	})
	err := r.owner.Run(ctx)
	wg.Wait()
	close(errc)
	for e := range errc {
		if err == nil && ctx.Err() == nil {
			err = e
		}
	}
	return err
}

// watchIntent follows the switchover intent until ctx ends.
func (r *regionPart) watchIntent(ctx context.Context, k *Keeper) error {
	prefix := regionSwitchoverPrefix(k.cfg.Cluster, k.cfg.Name)
	for ctx.Err() == nil {
		err := coord.WatchPrefix(ctx, r.cfg.Client, prefix, func(m map[string]SwitchoverIntent) {
			r.mu.Lock()
			r.intent = m["intent"]
			r.mu.Unlock()
			k.poke()
		})
		if err != nil && ctx.Err() == nil {
			k.log.Warn("watching the region switchover intent", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// setStates takes the nodes' published states: the active primary is the
// one of another region that acts for the newest region epoch, and of
// those the one on the newest timeline. A failover inside the active
// region keeps the region's epoch, and the old primary's state (cut off,
// it cannot say it stopped) lasts until its entry expires: without the
// timeline, which of the two was followed was up to a map's order, and a
// standby leader went back to the old primary and stayed behind.
func (r *regionPart) setStates(now time.Time, m map[string]RegionState) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = m
	var best RegionState
	for _, s := range m {
		if s.Active && s.Member.Role == RolePrimary && newerPrimary(s, best) {
			best = s
		}
	}
	if best.Region == r.cfg.Name {
		best = RegionState{}
	}
	if best.Node == "" {
		// The active primary's entry expired (its region is lost, or it
		// stopped): what was last heard from it stays the known lag.
		r.active = best
		return
	}
	if best.Node != r.lagOf.Node || best.Member.Timeline != r.lagOf.Member.Timeline {
		r.lsns.reset()
	}
	r.active, r.lagOf = best, best
	r.lsns.seen(now, best.Member.LSN)
}

// newerPrimary reports whether a is the later of two active primaries:
// the newer region epoch, then the newer timeline, then the WAL further
// on.
func newerPrimary(a, b RegionState) bool {
	if a.RegionEpoch != b.RegionEpoch {
		return a.RegionEpoch > b.RegionEpoch
	}
	if a.Member.Timeline != b.Member.Timeline {
		return a.Member.Timeline > b.Member.Timeline
	}
	return a.Member.LSN > b.Member.LSN
}

// activePrimary returns the active region's primary, when it is another
// region's, and its positions as seen.
func (r *regionPart) activePrimary() RegionState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.active
}

// knownLag is how far a standby that has received WAL to received was
// behind the active primary when it last heard from it.
func (r *regionPart) knownLag(received pg.LSN) (bytes uint64, seconds time.Duration, known bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lsns.lag(received)
}

// want says whether the node may hold (or join) the active-region record
// now, and if not why: it must lead its region's database; its region
// holds the record already, or the record is free and this is the home
// region, or was handed to this region, or the active region stopped
// renewing it and failover is automatic with the standby's known lag
// within max_lag.
func (r *regionPart) want(v view, st MemberState) (bool, string) {
	rs := r.owner.Status()
	switch {
	case !v.acting:
		return false, "does not lead its region's database"
	case rs.Holder == r.cfg.Name:
		return true, ""
	case rs.Holder == "" && rs.Next == r.cfg.Name:
		return true, ""
	case rs.Holder == "" && rs.Next == "" && r.cfg.Home:
		return true, ""
	case st.Role != RoleStandbyLeader:
		return false, "postgres is " + st.Role + ", not a standby of the active region"
	case r.intentFor(rs.Epoch, st):
		return true, "" // a planned switchover or an operator's promotion
	case rs.Holder == "":
		return false, "the active-region record is free, and this is not the home region: promote it with haven dr promote"
	case !r.cfg.Automatic:
		return false, "dr.failover is manual: promote this region with haven dr promote"
	}
	if r.cfg.Sync && r.syncedTo(st.Node) {
		return true, "" // every acknowledged commit waited for this node
	}
	b, lag, known := r.knownLag(st.LSN)
	switch {
	case !known:
		return false, "has not heard from the active region's primary yet"
	case lag > r.cfg.MaxLag:
		return false, fmt.Sprintf("%s (%d bytes) behind the active region's primary when last heard from, more than dr.max_lag (%s)", lag.Round(time.Millisecond), b, r.cfg.MaxLag)
	}
	return true, ""
}

// intentFor reports whether an intent asks for this region while the
// record is held under epoch: a promotion, or a switchover once the
// standby leader streams.
func (r *regionPart) intentFor(epoch int64, st MemberState) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := r.intent
	return i.To == r.cfg.Name && i.Epoch == epoch && (i.Promote || st.Streaming)
}

// publish publishes the node's region state and tells the record whether
// the node may hold it.
func (r *regionPart) publish(k *Keeper, v view, st MemberState) {
	if os := r.owner.Status(); os.Holder != "" && os.Holder != r.cfg.Name {
		r.prevEpoch = os.Epoch
	}
	ok, why := r.want(v, st)
	rs := RegionState{Node: k.cfg.Node, Region: r.cfg.Name, Leader: v.acting, Active: v.acting && v.regionActing, Member: st}
	if rs.Active {
		rs.RegionEpoch = v.regionEpoch
		rs.SyncDR = k.Sync().DR
	}
	if st.Role == RoleStandbyLeader {
		b, lag, _ := r.knownLag(st.LSN)
		rs.LagBytes, rs.LagSeconds = b, lag.Seconds()
	}
	r.mu.Lock()
	if rs.Active {
		r.final = RegionState{}
	}
	rs.Final, rs.FinalEnd, rs.FinalEpoch = r.final.Final, r.final.FinalEnd, r.final.FinalEpoch
	r.mu.Unlock()
	r.entry.Set(rs)
	b := map[bool]float64{true: 1, false: 0}
	r.metrics.active.Set(b[rs.Active && st.Role == RolePrimary])
	r.metrics.epoch.Set(float64(r.owner.Status().Epoch))
	r.metrics.lagBytes.Set(float64(rs.LagBytes))
	r.metrics.lagSeconds.Set(rs.LagSeconds)
	r.metrics.promotable.Set(b[ok && st.Role == RoleStandbyLeader])
	if !sameReason(why, r.whyNot) {
		if why != "" && v.acting {
			// With the record as this node saw it: a refusal right after
			// the node took the record (seen once in a forced promotion)
			// cannot be explained from the reason alone.
			rec := r.owner.Status()
			k.log.Info("may not take the active-region record", "why", why, "holder", rec.Holder, "next", rec.Next, "epoch", rec.Epoch)
		}
		r.whyNot = why
	}
	r.owner.SetEligible(ok)
}

// handedOver publishes, in the global scope, where the WAL of this node's
// stopped primary ends (as publishFinal found it), written under the region's epoch: the successor
// region promotes once it has received that far. Bounded: the region may
// be cut off, and then nobody would read it anyway.
func (r *regionPart) handedOver(k *Keeper, epoch int64) {
	f := k.final.Load() // regionLost's stopPrimary published it
	if f == nil {
		return
	}
	r.mu.Lock()
	r.final = RegionState{Final: f.checkpoint, FinalEnd: f.end, FinalEpoch: epoch}
	r.mu.Unlock()
	r.entry.Update(func(cur *RegionState) {
		cur.Active, cur.RegionEpoch, cur.Member.Role = false, 0, RoleStopped
		cur.Final, cur.FinalEnd, cur.FinalEpoch = f.checkpoint, f.end, epoch
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := r.entry.Sync(ctx); err != nil {
		k.log.Warn("publishing where the primary's WAL ended for the next active region", "err", err)
	}
}

// finalWait bounds how long a region that took the record over waits to
// receive the WAL the former active primary published as its last before
// it promotes anyway.
const finalWait = 10 * time.Second

// awaitFinal says whether the standby leader, with WAL received to self,
// waits before promoting: the primary of the region it took over from
// stopped cleanly and published where its WAL ends (a planned
// switchover), and self is short of it. From the first round it waits
// under this lead, it waits at most finalWait, then promotes with what it
// has, logging what may be lost.
func (r *regionPart) awaitFinal(ctx context.Context, k *Keeper, epoch int64, self pg.LSN) (bool, error) {
	qctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	resp, err := r.cfg.Client.Get(qctx, RegionStatePrefix(k.cfg.Cluster, k.cfg.Name), clientv3.WithPrefix())
	if err != nil {
		return false, fmt.Errorf("read the regions' states before promoting: %w", err)
	}
	var last RegionState
	for _, kv := range resp.Kvs {
		var s RegionState
		if json.Unmarshal(kv.Value, &s) == nil && s.Region != r.cfg.Name && s.Final != 0 && s.FinalEpoch == r.prevEpoch && s.Final > last.Final {
			last = s
		}
	}
	end := max(last.FinalEnd, last.Final)
	if last.Node == "" || self >= end {
		return false, nil
	}
	now := k.clk.Now()
	if r.waitEpoch != epoch {
		r.waitEpoch, r.waitSince = epoch, now
		k.log.Info("waiting to receive the former active primary's last WAL before promoting", "from", last.Node, "final", end, "received", self, "up_to", finalWait)
	}
	if now.Sub(r.waitSince) < finalWait {
		return true, nil
	}
	k.log.Error("promoting without the former active primary's last WAL: it was not received in time; what it wrote past the received position is lost", "event", "promotion",
		"from", last.Node, "final", end, "received", self, "missing_bytes", uint64(end-self))
	return false, nil
}

// RegionStatus is a node's view of a database that spans two regions.
type RegionStatus struct {
	// Region is this node's; Record the active-region record as this
	// node last saw it.
	Region string            `json:"region"`
	Record coord.OwnerStatus `json:"record"`
	// States are every node's published region states, by node.
	States map[string]RegionState `json:"states"`
	// Intent is the switchover or promotion asked for, if any.
	Intent *SwitchoverIntent `json:"intent,omitempty"`
}

// RegionStatus returns the node's view of the regions; false in a
// database of one region.
func (k *Keeper) RegionStatus() (RegionStatus, bool) {
	r := k.region
	if r == nil {
		return RegionStatus{}, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	st := RegionStatus{Region: r.cfg.Name, Record: r.owner.Status(), States: maps.Clone(r.states)}
	if r.intent.To != "" {
		i := r.intent
		st.Intent = &i
	}
	return st, true
}

// RegionClient is the keeper's client of the global scope (nil in a
// database of one region).
func (k *Keeper) RegionClient() *clientv3.Client {
	if k.region == nil {
		return nil
	}
	return k.region.cfg.Client
}

// PromoteRegion asks for region to to take the active-region record once
// the active region stops renewing it, whatever its standby's lag and
// dr.failover say (haven dr promote). It returns the record as it was
// asked under; the request lapses once the record changes.
func PromoteRegion(ctx context.Context, cli *clientv3.Client, cluster, name, to string) (coord.Record, error) {
	rec, err := readRegionRecord(ctx, cli, RegionOwnerPrefix(cluster, name))
	if err != nil || rec.Holder == to {
		return rec, err
	}
	epoch := rec.Epoch
	if rec.Holder == "" {
		epoch = 0 // a free record has no epoch (coord.OwnerStatus)
	}
	b, _ := json.Marshal(SwitchoverIntent{To: to, Epoch: epoch, Promote: true})
	if _, err := cli.Put(ctx, regionSwitchoverKey(cluster, name), string(b)); err != nil {
		return rec, fmt.Errorf("dr: promote %s: %w", to, err)
	}
	return rec, nil
}

// ForceRegion is PromoteRegion for an active region declared gone by an
// operator (haven dr promote --force), once the global scope serves again
// without it: it releases the record to region to at once, instead of
// waiting out the lease of a holder that will never renew it, and asks
// for the promotion. The old region's primary stopped writing at its own
// deadline, as for any loss of the record. It returns the record as it
// was first read.
func ForceRegion(ctx context.Context, cli *clientv3.Client, cluster, name, to string) (coord.Record, error) {
	prefix := RegionOwnerPrefix(cluster, name)
	var before *coord.Record
	// The record may change under the release once the scope serves
	// again: region to taking it by itself (dr.failover automatic). Look
	// again then.
	for attempt := 0; ; attempt++ {
		rec, rev, err := readRegionRecordRev(ctx, cli, prefix)
		if err != nil {
			return coord.Record{}, err
		}
		if before == nil {
			before = &rec
		}
		if rec.Holder == "" || rec.Holder == to {
			break
		}
		released, _ := json.Marshal(coord.Record{LeaseMS: rec.LeaseMS, Next: to})
		key := prefix + "/record"
		tr, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, string(released))).Commit()
		if err != nil {
			return *before, fmt.Errorf("dr: release the active-region record to %s: %w", to, err)
		}
		if tr.Succeeded {
			break
		}
		if attempt == 2 {
			return *before, fmt.Errorf("dr: the active-region record keeps changing while it is released to %s (is region %s still renewing it? then it is not lost: use haven dr switchover)", to, rec.Holder)
		}
	}
	if _, err := PromoteRegion(ctx, cli, cluster, name, to); err != nil {
		return *before, err
	}
	return *before, nil
}

// standbyLeader is the other region's standby leader, as published ("" if
// none).
func (r *regionPart) standbyLeader() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.states {
		if s.Region != r.cfg.Name && s.Leader && s.Member.Role == RoleStandbyLeader {
			return s.Node
		}
	}
	return ""
}

// syncedTo reports whether the active primary, when last heard from,
// made every commit wait for node.
func (r *regionPart) syncedTo(node string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lagOf.SyncDR == node
}

// publishSyncDR publishes, and waits until the global scope has it, the
// standby leader every commit waits for ("" for none).
func (r *regionPart) publishSyncDR(ctx context.Context, dr string) error {
	r.entry.Update(func(cur *RegionState) { cur.SyncDR = dr })
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return r.entry.Sync(ctx)
}

// freeSlots, on the active primary, ends the stream through another
// region's slot to a node that is no longer that region's standby leader,
// while the standby leader does not stream: a standby leader cut off
// without closing its connection would otherwise hold the slot until
// wal_sender_timeout, and its successor could not stream through it.
func (r *regionPart) freeSlots(ctx context.Context, k *Keeper) {
	r.mu.Lock()
	var waiting []RegionState
	for _, s := range r.states {
		if s.Region != r.cfg.Name && s.Leader && s.Member.Role == RoleStandbyLeader && (!s.Member.Streaming || s.Member.Upstream != k.cfg.Node) {
			waiting = append(waiting, s)
		}
	}
	r.mu.Unlock()
	for _, s := range waiting {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		ended, err := k.srv.FreeSlot(qctx, RegionSlot(s.Region), s.Node)
		cancel()
		switch {
		case err != nil:
			k.log.Warn("freeing another region's slot for its standby leader", "region", s.Region, "err", err)
		case ended:
			k.log.Warn("ended the stream of a former standby leader through its region's slot, for the new one", "region", s.Region, "standby_leader", s.Node)
		}
	}
}

// regionGuard is the Guard of the active-region record on one node.
type regionGuard struct {
	k *Keeper

	mu       sync.Mutex
	acting   bool
	epoch    int64
	deadline time.Time
}

// Acquire records the region's holding and lets the keeper promote, or
// go on as the primary.
func (g *regionGuard) Acquire(epoch int64, deadline time.Time) {
	g.mu.Lock()
	g.acting, g.epoch, g.deadline = true, epoch, deadline
	g.mu.Unlock()
	g.k.guard.refreshFence()
	g.k.poke()
}

// Extend moves the region's deadline, and with it the write fence's.
func (g *regionGuard) Extend(deadline time.Time) {
	g.mu.Lock()
	g.deadline = deadline
	g.mu.Unlock()
	g.k.guard.refreshFence()
}

// Release ends the region's holding on this node: a primary stops taking
// writes now (as when it loses its own record), and comes back as the
// standby leader.
func (g *regionGuard) Release(reason string) {
	g.mu.Lock()
	was, epoch := g.acting, g.epoch
	g.acting = false
	g.mu.Unlock()
	if !was {
		return
	}
	if g.k.guard.regionLost("the active-region record: " + reason) {
		g.k.region.handedOver(g.k, epoch)
	}
}

// lead reports whether the region acts now on this node, and its epoch
// and deadline.
func (g *regionGuard) lead() (acting bool, epoch int64, deadline time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.acting && g.k.clk.Now().Before(g.deadline), g.epoch, g.deadline
}

// lagClock keeps the active primary's positions as they were seen arrive,
// to tell how long ago the oldest WAL a standby lacks was written.
type lagClock struct {
	samples []lsnSample
	last    time.Time // when the latest position was seen
}

type lsnSample struct {
	at  time.Time
	lsn pg.LSN
}

// maxLagSamples bounds the positions kept: at a keeper's tick, a minute.
const maxLagSamples = 240

func (c *lagClock) reset() { c.samples, c.last = nil, time.Time{} }

func (c *lagClock) seen(now time.Time, lsn pg.LSN) {
	c.last = now
	if n := len(c.samples); n > 0 && c.samples[n-1].lsn >= lsn {
		return
	}
	if len(c.samples) == maxLagSamples {
		c.samples = slices.Delete(c.samples, 0, 1)
	}
	c.samples = append(c.samples, lsnSample{at: now, lsn: lsn})
}

// lag is how far received was behind when the primary was last heard
// from: the bytes to its latest position, and the time from when the
// first position beyond received was seen to when the latest was.
func (c *lagClock) lag(received pg.LSN) (uint64, time.Duration, bool) {
	n := len(c.samples)
	if n == 0 {
		return 0, 0, false
	}
	i, _ := slices.BinarySearchFunc(c.samples, received+1, func(s lsnSample, l pg.LSN) int {
		return cmpLSN(s.lsn, l)
	})
	if i == n {
		return 0, 0, true
	}
	c.samples = c.samples[i:] // what is received no longer counts
	return uint64(c.samples[len(c.samples)-1].lsn - received), c.last.Sub(c.samples[0].at), true
}

func cmpLSN(a, b pg.LSN) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// SwitchoverRegion moves the active region of database name to region to
// through the global scope (cli), losing no acknowledged write: it asks
// for the switchover, waits until region to's standby leader streams and
// takes part (its candidacy is eligible), then asks the active region to
// hand the record over. The active primary stops (a fast shutdown, which
// sends its standbys every WAL record) and publishes where its WAL ends
// before it releases the record; to's standby leader promotes once it has
// received that far. It returns once the record names to, or ctx ends.
func SwitchoverRegion(ctx context.Context, cli *clientv3.Client, cluster, name, to string) error {
	prefix := RegionOwnerPrefix(cluster, name)
	rec, err := readRegionRecord(ctx, cli, prefix)
	switch {
	case err != nil:
		return err
	case rec.Holder == to:
		return nil
	case rec.Holder == "":
		return fmt.Errorf("dr: switchover to %s: no region is active; promote one with haven dr promote", to)
	}
	b, _ := json.Marshal(SwitchoverIntent{To: to, Epoch: rec.Epoch})
	key := regionSwitchoverKey(cluster, name)
	if _, err := cli.Put(ctx, key, string(b)); err != nil {
		return fmt.Errorf("dr: switchover to %s: %w", to, err)
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_, _ = cli.Delete(dctx, key)
	}()
	ready := func() (bool, error) {
		resp, err := cli.Get(ctx, prefix+"/candidates/"+to+"/", clientv3.WithPrefix())
		if err != nil {
			return false, err
		}
		for _, kv := range resp.Kvs {
			var c coord.Candidate
			if json.Unmarshal(kv.Value, &c) == nil && c.Eligible {
				return true, nil
			}
		}
		return false, nil
	}
	if err := pollUntil(ctx, ready); err != nil {
		return fmt.Errorf("dr: switchover to %s: its standby leader does not take part (is it streaming from the active primary?): %w", to, err)
	}
	if err := coord.RequestHandover(ctx, cli, prefix, to); err != nil {
		return err
	}
	moved := func() (bool, error) {
		rec, err := readRegionRecord(ctx, cli, prefix)
		return rec.Holder == to, err
	}
	if err := pollUntil(ctx, moved); err != nil {
		return fmt.Errorf("dr: switchover to %s: the record does not name it yet: %w", to, err)
	}
	return nil
}

// readRegionRecord reads the active-region record, its epoch filled in.
func readRegionRecord(ctx context.Context, cli *clientv3.Client, prefix string) (coord.Record, error) {
	rec, _, err := readRegionRecordRev(ctx, cli, prefix)
	return rec, err
}

// readRegionRecordRev is readRegionRecord with the record's etcd revision
// (0 when it does not exist), for a compare-and-swap.
func readRegionRecordRev(ctx context.Context, cli *clientv3.Client, prefix string) (coord.Record, int64, error) {
	resp, err := cli.Get(ctx, prefix+"/record")
	if err != nil {
		return coord.Record{}, 0, fmt.Errorf("dr: read the active-region record: %w", err)
	}
	var rec coord.Record
	if len(resp.Kvs) == 0 {
		return rec, 0, nil
	}
	rev := resp.Kvs[0].ModRevision
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return rec, rev, fmt.Errorf("dr: the active-region record: %w", err)
	}
	if rec.Epoch == 0 {
		rec.Epoch = rev
	}
	return rec, rev, nil
}

// pollUntil calls cond every 100ms until it holds, fails, or ctx ends.
func pollUntil(ctx context.Context, cond func() (bool, error)) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
