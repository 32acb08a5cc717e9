package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/pg"
)

// DefaultLease is the database primary's default ownership lease.
const DefaultLease = 2 * time.Second

// degradeAfter is how long a sync primary keeps commits waiting with no
// replica streaming before it degrades to async: long enough for replicas
// to reconnect after the primary restarted in place (PostgreSQL retries a
// stream every wal_retrieve_retry_interval, 5 s by default).
const degradeAfter = 10 * time.Second

// keeperTick is how often the keeper looks at postgres and etcd when
// nothing wakes it sooner.
const keeperTick = 250 * time.Millisecond

// Config configures a Keeper.
type Config struct {
	// Server is this node's postgres, configured (Config.Name set) and
	// not started: the keeper starts, stops, clones and rewinds it.
	Server *pg.Server
	// Client reaches etcd; Alternates are clients of the other members
	// (see coord.OwnerConfig).
	Client     *clientv3.Client
	Alternates []*clientv3.Client
	// Cluster is the haven cluster's name, Name the database's ("main").
	Cluster, Name string
	// Node is this node's name, Nodes every database node's (slots are
	// kept for each).
	Node  string
	Nodes []string
	// Host is the address the other nodes and the balancers reach this
	// node's postgres at.
	Host string
	// Lease is the primary's ownership lease (default DefaultLease).
	Lease time.Duration
	// Mode, SyncStandbys and MaxLagOnFailover are haven.yaml's
	// database.replication settings.
	Mode             Mode
	SyncStandbys     int
	MaxLagOnFailover uint64
	// Replication is the role replicas connect as (User, Password); Host,
	// Port and Slot are filled in per primary.
	Replication pg.Upstream
	// Priority and NoFailover are the node's tags.
	Priority   int
	NoFailover bool
	// Fence, when set, is the primary's kernel write fence (installed by
	// Run): opened until the lease deadline at every renewal, closed
	// before anything else when the node lets go. Without it a frozen
	// agent's postgres keeps taking connections past the lease.
	Fence      *pg.WriteFence
	Restart    pg.RestartPolicy
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Keeper runs one node's side of the database cluster: it keeps postgres
// running as the primary while the node holds the database's ownership
// record, and as a replica of the holder otherwise; it initialises the
// cluster when it is the first node to lead, clones, follows a new primary,
// and rewinds itself after it lost the lead. Create it with New, run
// it with Run.
type Keeper struct {
	cfg   Config
	srv   *pg.Server
	sup   *pg.Supervisor
	owner *coord.Owner
	state *coord.Entry[MemberState]
	guard *keeperGuard
	log   *slog.Logger
	m     *keeperMetrics

	mu      sync.Mutex
	members map[string]MemberState
	sync    SyncState
	primary MemberState // the last state a primary published

	// session is the supervisor session, while postgres should run.
	supMu   sync.Mutex
	session *supSession

	wake chan struct{}
	// following is the primary this replica streams from, once Follow,
	// Clone or Rewind said so; "" while it does not know.
	following string
	// demoted is set when the node stopped acting as the primary: its
	// data may have diverged, and it rewinds before it follows anyone.
	demoted atomic.Bool
	// vetoUntil and vetoWhy keep the node from leading for a while after a
	// promotion that its peers' answers ruled out.
	vetoUntil time.Time
	vetoWhy   string
	// lastNoLeader is why there was no primary to follow, as last logged.
	lastNoLeader string
	// finalLSN is where this node's WAL ended when it last let go of the
	// primary, published until it follows a new one.
	finalLSN atomic.Uint64
	// noStandbySince is when the primary last saw its replicas all gone
	// (zero while one streams).
	noStandbySince time.Time
	// setUpEpoch is the lead (fencing epoch) for which the replication role
	// and the replicas' slots were last set up.
	setUpEpoch int64
	// timeline is the newest timeline this node's postgres has shown since
	// its data directory was last replaced (clone, rewind).
	timeline uint32
	// whyNot is why the node may not lead, as last logged ("" when it may).
	whyNot string
	// failedFollows counts Follow attempts that did not stream, to fall
	// back to a rewind.
	failedFollows int
}

// New checks cfg and fills its defaults; it starts nothing.
func New(cfg Config) (*Keeper, error) {
	switch {
	case cfg.Server == nil:
		return nil, errors.New("pg: keeper: no server")
	case cfg.Server.Name() == "":
		return nil, fmt.Errorf("pg: keeper: %w", pg.ErrNoName)
	case cfg.Node == "":
		return nil, errors.New("pg: keeper: no node name")
	case cfg.Host == "":
		return nil, errors.New("pg: keeper: no host: the address other nodes reach this node's postgres at")
	case cfg.Client == nil:
		return nil, errors.New("pg: keeper: no etcd client")
	}
	if cfg.Name == "" {
		cfg.Name = "main"
	}
	if cfg.Lease == 0 {
		cfg.Lease = DefaultLease
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeAsync
	}
	if cfg.Mode != ModeAsync {
		if cfg.SyncStandbys < 1 {
			cfg.SyncStandbys = 1
		}
		// A sync cluster that degraded to async may lose nothing more on
		// failover: only a replica level with the primary's last
		// published position may be promoted then.
		cfg.MaxLagOnFailover = 0
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "keeper", "node", cfg.Node, "database", cfg.Name)
	k := &Keeper{
		cfg:     cfg,
		srv:     cfg.Server,
		log:     log,
		members: map[string]MemberState{},
		wake:    make(chan struct{}, 1),
	}
	k.guard = &keeperGuard{k: k}
	m, err := newKeeperMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("pg: keeper: %w", err)
	}
	k.m = m
	sup, err := pg.NewSupervisor(cfg.Server, cfg.Restart, log, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	k.sup = sup
	sup.OnChange(func(pg.Status) { k.poke() })
	owner, err := coord.NewOwner(coord.OwnerConfig{
		Client:     cfg.Client,
		Alternates: cfg.Alternates,
		Prefix:     coord.OwnerPrefix(cfg.Cluster, "pg", cfg.Name),
		Node:       cfg.Node,
		Priority:   cfg.Priority,
		Lease:      cfg.Lease,
		Guard:      k.guard,
		Logger:     log,
	})
	if err != nil {
		return nil, fmt.Errorf("pg: keeper: %w", err)
	}
	k.owner = owner
	owner.SetEligible(false) // until it knows where its data stands
	state, err := coord.NewEntry(coord.EntryConfig[MemberState]{
		Client: cfg.Client,
		Key:    StatePrefix(cfg.Cluster, cfg.Name) + cfg.Node,
		Value:  k.baseState(RoleStopped),
		TTL:    5 * time.Second,
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("pg: keeper: %w", err)
	}
	k.state = state
	return k, nil
}

func (k *Keeper) baseState(role string) MemberState {
	return MemberState{
		Node: k.cfg.Node, Host: k.cfg.Host, Port: k.srv.Port(), Role: role,
		NoFailover: k.cfg.NoFailover, Priority: k.cfg.Priority,
	}
}

func (k *Keeper) poke() {
	select {
	case k.wake <- struct{}{}:
	default:
	}
}

// Owner is the database's ownership record as this node takes part in it
// (for status, switchover and the health endpoints).
func (k *Keeper) Owner() *coord.Owner { return k.owner }

// Leader reports whether this node acts as the primary now
// (pg.NodeState).
func (k *Keeper) Leader() bool { return k.guard.isActing() }

// State returns what the keeper publishes about its node now.
func (k *Keeper) State() MemberState { return k.state.Value() }

// Switchover asks the primary of database name, whichever node holds it,
// to hand it over to node to ("" for the best candidate), through etcd:
// `haven pg switchover` works from any node. The primary stops postgres (a
// fast shutdown, which sends the replicas all of its WAL) before it releases
// the record, so the successor promotes with every commit.
func Switchover(ctx context.Context, cli *clientv3.Client, cluster, name, to string) error {
	if err := coord.RequestHandover(ctx, cli, coord.OwnerPrefix(cluster, "pg", name), to); err != nil {
		return fmt.Errorf("pg: switchover of %s to %q: %w", name, to, err)
	}
	return nil
}

// HealthHandler returns the node's Patroni-compatible health endpoints.
func (k *Keeper) HealthHandler() *pg.HealthHandler { return pg.NewHealthHandler(k.srv, k.sup, k, 0) }

// PrimaryLSN is the last WAL position the primary published, for
// /replica?lag= (pg.PrimaryLSNer).
func (k *Keeper) PrimaryLSN() (pg.LSN, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.primary.LSN, k.primary.LSN != 0
}

// Sync returns the leader's sync record as last seen.
func (k *Keeper) Sync() SyncState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sync
}

// Members returns the states every keeper published, as last seen.
func (k *Keeper) Members() map[string]MemberState {
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.members)
}

// Run keeps the node's part of the cluster until ctx ends; then it hands
// the primary over (when it holds it) and stops postgres.
func (k *Keeper) Run(ctx context.Context) error {
	if k.srv.HasData() && !k.srv.HasStandbySignal() {
		// It was a primary: its WAL may go past where the next primary's
		// timeline forked. Rewind before following anyone.
		k.demoted.Store(true)
	}
	if f := k.cfg.Fence; f != nil {
		if err := f.Install(); err != nil {
			return err
		}
		defer func() {
			if err := f.Remove(); err != nil {
				k.log.Warn("remove the write fence", "error", err)
			}
		}()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	run("state", k.state.Run)
	run("watch", k.watch)
	ownerCtx, ownerCancel := context.WithCancel(context.WithoutCancel(ctx))
	ownerDone := make(chan error, 1)
	go func() { ownerDone <- k.owner.Run(ownerCtx) }()

	err := k.loop(ctx)

	// Hand over first (the successor promotes while this node still
	// follows the record), then stop postgres.
	ownerCancel()
	if oerr := <-ownerDone; oerr != nil {
		err = errors.Join(err, oerr)
	}
	if serr := k.stopPostgres(); serr != nil {
		err = errors.Join(err, serr)
	}
	cancel()
	wg.Wait()
	close(errc)
	for e := range errc {
		err = errors.Join(err, e)
	}
	return err
}

// watch follows the other keepers' states and the leader's sync record.
func (k *Keeper) watch(ctx context.Context) error {
	go func() {
		// The sync record is the one entry directly under the database's
		// prefix that decodes as a SyncState (InitKey holds a number).
		_ = coord.WatchPrefix(ctx, k.cfg.Client, dbPrefix(k.cfg.Cluster, k.cfg.Name), func(m map[string]SyncState) {
			k.mu.Lock()
			k.sync = m[syncName]
			k.mu.Unlock()
			k.poke()
		})
	}()
	return coord.WatchPrefix(ctx, k.cfg.Client, StatePrefix(k.cfg.Cluster, k.cfg.Name), func(m map[string]MemberState) {
		k.mu.Lock()
		k.members = m
		for _, s := range m {
			if s.Role == RolePrimary && (s.Timeline > k.primary.Timeline || s.Timeline == k.primary.Timeline && s.LSN > k.primary.LSN) {
				k.primary = s
			}
		}
		k.mu.Unlock()
		k.poke()
	})
}

func (k *Keeper) loop(ctx context.Context) error {
	t := time.NewTicker(keeperTick)
	defer t.Stop()
	for {
		if err := k.step(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("keeper step", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-k.wake:
		}
	}
}

// step does one round: lead or follow, then publish and decide
// eligibility.
func (k *Keeper) step(ctx context.Context) error {
	var err error
	if k.guard.isActing() {
		err = k.lead(ctx)
	} else {
		err = k.follow(ctx)
	}
	k.publish(ctx)
	return err
}

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

// startSupervisor starts a supervisor session unless one runs.
func (k *Keeper) startSupervisor(ctx context.Context) { k.startSupervisorIf(ctx, nil) }

// startPrimary starts a supervisor session for a primary, only while the
// node leads. Release clears the lead before it stops the session, under
// the same lock, so a primary never starts after its node let go.
func (k *Keeper) startPrimary(ctx context.Context) bool {
	return k.startSupervisorIf(ctx, k.guard.isActing)
}

func (k *Keeper) startSupervisorIf(ctx context.Context, cond func() bool) bool {
	k.supMu.Lock()
	defer k.supMu.Unlock()
	if k.session != nil {
		return true
	}
	if cond != nil && !cond() {
		return false
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s := &supSession{cancel: cancel, done: make(chan struct{})}
	k.session = s
	go func() {
		s.err = k.sup.Run(sctx)
		close(s.done)
	}()
	return true
}

// supSession is one run of the Supervisor.
type supSession struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Run returned, with err
	err    error
}

func (k *Keeper) supRunning() bool {
	k.supMu.Lock()
	defer k.supMu.Unlock()
	return k.session != nil
}

// stopPostgres ends the supervisor session, a fast shutdown that ends every
// session at once, and returns when postgres has stopped. Concurrent
// callers all wait; no new session starts until the old one has ended.
func (k *Keeper) stopPostgres() error {
	k.supMu.Lock()
	s := k.session
	k.supMu.Unlock()
	if s == nil {
		return nil
	}
	s.cancel()
	<-s.done
	k.supMu.Lock()
	if k.session == s {
		k.session = nil
	}
	k.supMu.Unlock()
	return s.err
}

// waitRunning waits until the supervisor session that bootstrap started
// runs postgres. It gives up when the session ends: Release stops it when
// the node lets go of the lead, and no state it waits for comes then.
func (k *Keeper) waitRunning(ctx context.Context) error {
	for k.sup.Status().State != pg.StateRunning {
		if k.sup.Status().State == pg.StateFailed {
			return fmt.Errorf("postgres failed to start after initdb; see %s", k.srv.LogFile())
		}
		if !k.supRunning() {
			return errors.New("postgres was stopped before it accepted connections: the node let go of the lead while initialising")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// keeperGuard is the Guard of the database's ownership record. The owner
// calls it from its own goroutine: Acquire and Extend only record and wake
// the keeper, which promotes; Release fences.
type keeperGuard struct {
	k *Keeper

	mu       sync.Mutex
	acting   bool
	epoch    int64
	deadline time.Time
	open     bool // the write fence is open until deadline (or there is none)
}

// Acquire opens the write fence until the deadline, then lets the keeper
// promote.
func (g *keeperGuard) Acquire(epoch int64, deadline time.Time) {
	open := g.openFence(deadline, true)
	g.mu.Lock()
	g.acting, g.epoch, g.deadline, g.open = true, epoch, deadline, open
	g.mu.Unlock()
	g.k.poke()
}

// Extend moves the write fence's deadline with the lease's.
func (g *keeperGuard) Extend(deadline time.Time) {
	open := g.openFence(deadline, false)
	g.mu.Lock()
	g.deadline, g.open = deadline, open
	g.mu.Unlock()
}

// openFence fences postgres's port (when acquiring) and opens it until
// deadline; it reports whether the fence is open (true without a fence).
func (g *keeperGuard) openFence(deadline time.Time, acquire bool) bool {
	f := g.k.cfg.Fence
	if f == nil {
		return true
	}
	if acquire {
		if err := f.Fence(); err != nil {
			g.k.log.Error("write fence", "error", err)
			return false
		}
	}
	if err := f.OpenUntil(deadline); err != nil {
		g.k.log.Error("write fence", "error", err)
		return false
	}
	return true
}

// Release stops postgres before it returns (a fast shutdown: sessions end
// at once, and the WAL written so far goes to the connected replicas), so
// that on a planned handover the successor, which may take over as soon as
// the record is released, has every commit; then it closes the write
// fence. It blocks the owner for as long as the stop takes; the supervisor
// bounds it, and the fence closes by itself at the deadline meanwhile.
func (g *keeperGuard) Release(reason string) {
	g.mu.Lock()
	was := g.acting
	g.acting, g.open = false, false
	g.mu.Unlock()
	if !was {
		return
	}
	g.k.log.Warn("lost the lead: stopping postgres", "reason", reason)
	g.k.demoted.Store(true)
	// postgres first: its fast shutdown sends the replicas the WAL written
	// so far, through the fence, which is open until the deadline and
	// closes by itself then if the stop takes longer.
	if err := g.k.stopPostgres(); err != nil {
		g.k.log.Error("stopping postgres after losing the lead", "error", err)
	}
	g.k.publishFinal()
	if f := g.k.cfg.Fence; f != nil {
		if err := f.Close(); err != nil {
			g.k.log.Error("closing the write fence", "error", err)
		}
	}
	g.k.poke()
}

// fenceOpen reports whether the write fence is open for the current lead.
func (g *keeperGuard) fenceOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.acting && g.open
}

// isActing reports whether the node holds the record and its deadline has
// not passed on the local clock.
func (g *keeperGuard) isActing() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.acting && time.Now().Before(g.deadline)
}

func (g *keeperGuard) currentEpoch() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.epoch
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
