package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/clock"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/pg"
)

// DefaultLease is the database primary's default ownership lease.
const DefaultLease = 2 * time.Second

// queryTimeout bounds each of the keeper's own queries to its postgres.
const queryTimeout = time.Second

// hangAfter is how long a primary's postgres may run without answering the
// keeper before the node gives up the lead: a server frozen (stuck I/O, a
// SIGSTOP) while its agent lives would otherwise keep the lead, and every
// write would wait for it. Five leases, and never less than 5s, so that a
// slow moment on a loaded machine does not fail over.
func hangAfter(lease time.Duration) time.Duration { return max(5*lease, 5*time.Second) }

// keeperTick is how often the keeper looks at postgres and etcd when
// nothing wakes it sooner. The watches, the guard and the supervisor wake
// it on every change they see, but postgres tells nobody when its WAL
// moves on: the rounds in between publish how far it has gone.
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
	// SyncArchive is the application_name of the WAL archiver that every
	// commit waits for, besides the replicas the mode asks for, in every
	// mode (database.backup.archive: synchronous): an acknowledged commit
	// is in the repository. Empty: commits do not wait for the archive.
	// The archiver connects to the primary on its own; while it does not
	// stream, commits wait.
	SyncArchive string
	// Priority and NoFailover are the node's tags.
	Priority   int
	NoFailover bool
	// RestoreBackup, when set, fills an empty data directory from the
	// newest base backup, with a restore_command that fetches the
	// archive's WAL: Reinit's fromBackup. Nil: the cluster has no backups.
	RestoreBackup func(ctx context.Context, dataDir string) error
	// Fence, when set, is the primary's kernel write fence (installed by
	// Run): opened until the lease deadline at every renewal, closed
	// before anything else when the node lets go. Without it a frozen
	// agent's postgres keeps taking connections past the lease.
	Fence *pg.WriteFence
	// Region, when set, makes the cluster one region's side of a database
	// that spans two regions (database.dr; region.go).
	Region  *RegionConfig
	Restart pg.RestartPolicy
	// Clock is the keeper's time (nil: clock.Real): when each round
	// happens, and so the veto after a refused promotion and how long a
	// sync primary has had no standby, and whether the lease deadline the
	// ownership record gave the guard has passed. coord.Owner sets that
	// deadline on the real clock: a keeper that runs needs a clock that
	// agrees with it.
	Clock      clock.Clock
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
	// region is the node's side of the active-region record; nil in a
	// database of one region.
	region *regionPart
	log    *slog.Logger
	clk    clock.Clock

	metrics *keeperMetrics
	// m makes the decisions; only the loop's goroutine touches it.
	m *machine
	// syncRev is the sync record's revision as this keeper last wrote or
	// saw it (putSync; the loop's goroutine only).
	syncRev int64

	mu      sync.Mutex
	members map[string]MemberState
	sync    SyncState
	paused  *Pause      // the operator's pause record, nil when not paused
	force   *Force      // the operator's forced failover, nil when none
	primary MemberState // the last state a primary published

	// session is the supervisor session, while postgres should run.
	supMu   sync.Mutex
	session *supSession
	// changed closes at the supervisor's next change of state.
	changeMu sync.Mutex
	changed  chan struct{}

	wake chan struct{}
	// letGo is set by the guard's Release, for the machine's next view.
	letGo atomic.Bool
	// lastNoLeader is why there was no primary to follow, as last logged.
	lastNoLeader string
	// final is where this node's WAL ended when it last let go of the
	// primary, published until it follows a new one (nil: nowhere).
	final atomic.Pointer[finalWAL]
	// whyNot is why the node may not lead, as last logged ("" when it may).
	whyNot string
	// silentSince is when the first of the keeper's queries that its
	// running postgres left unanswered was asked (zero while it answers): a
	// primary silent for hangAfter gives up the lead (see publish).
	silentSince time.Time
	// ownSlotsLeft says the node may still hold replication slots it made
	// while it led (true at start: it may have led before); dropOwnSlots
	// drops them once it follows.
	ownSlotsLeft bool
	// slotsChecked is when the primary last made sure that the slots it
	// keeps exist (keepSlots).
	slotsChecked time.Time
	// stepWarnings logs a round's error once while it comes back round
	// after round.
	stepWarnings *repeats
	// pending are the settings postgres applies only at its next start.
	pending atomic.Pointer[pendingRestart]
	// reinits are Reinit's requests, for the loop's next round.
	reinits chan reinitRequest
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
	case cfg.Replication.Password == "" && len(cfg.Nodes) > 1:
		// A single node has no replica to connect as the role; more do.
		return nil, fmt.Errorf("pg: keeper: replication: a password is required with %d nodes", len(cfg.Nodes))
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
	if cfg.Clock == nil {
		cfg.Clock = clock.Real
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
		clk:     cfg.Clock,
		members: map[string]MemberState{},
		wake:    make(chan struct{}, 1),
		reinits: make(chan reinitRequest, 1),
		changed: make(chan struct{}),
		// It may have led before this start, and kept slots since.
		ownSlotsLeft: true,
		m: &machine{cfg: machineConfig{
			node: cfg.Node, nodes: cfg.Nodes, lease: cfg.Lease, mode: cfg.Mode,
			syncStandbys: cfg.SyncStandbys, maxLag: cfg.MaxLagOnFailover, noFailover: cfg.NoFailover,
			archive: cfg.SyncArchive, drSync: cfg.Region != nil && cfg.Region.Sync,
		}},
	}
	k.guard = &keeperGuard{k: k}
	k.stepWarnings = &repeats{log: log}
	m, err := newKeeperMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("pg: keeper: %w", err)
	}
	k.metrics = m
	sup, err := pg.NewSupervisor(cfg.Server, cfg.Restart, log, cfg.Registerer)
	if err != nil {
		return nil, err
	}
	k.sup = sup
	sup.OnChange(k.onSupervisorChange)
	owner, err := coord.NewOwner(coord.OwnerConfig{
		Client:     cfg.Client,
		Alternates: cfg.Alternates,
		Prefix:     coord.OwnerPrefix(cfg.Cluster, "pg", cfg.Name),
		Node:       cfg.Node,
		Priority:   cfg.Priority,
		Lease:      cfg.Lease,
		Guard:      k.guard,
		Logger:     log,
		Registerer: cfg.Registerer,
	})
	if err != nil {
		return nil, fmt.Errorf("pg: keeper: %w", err)
	}
	k.owner = owner
	owner.SetEligible(false) // until it knows where its data stands
	if cfg.Region != nil {
		if cfg.Region.Client == nil {
			return nil, errors.New("pg: keeper: region: no client of the global scope")
		}
		if k.region, err = newRegionPart(k, *cfg.Region); err != nil {
			return nil, fmt.Errorf("pg: keeper: region: %w", err)
		}
	}
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
		k.m.demoted = true
	}
	if f := k.cfg.Fence; f != nil {
		if err := f.Install(); err != nil {
			return err
		}
		defer func() {
			if err := f.Remove(); err != nil {
				k.log.Warn("remove the write fence", "err", err)
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
	if r := k.region; r != nil {
		// Stopped with the database's record, after the loop: the region
		// keeps its record while another node of it takes the lead.
		run("region", func(ctx context.Context) error { return r.run(ctx, k) })
	}
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
		// The sync record and the pause record, two of the entries
		// directly under the database's prefix.
		_ = coord.WatchPrefix(ctx, k.cfg.Client, dbPrefix(k.cfg.Cluster, k.cfg.Name), func(m map[string]json.RawMessage) {
			var rec SyncState
			if b, ok := m[syncName]; ok {
				if err := json.Unmarshal(b, &rec); err != nil {
					k.log.Warn("the sync record does not decode", "key", SyncKey(k.cfg.Cluster, k.cfg.Name), "err", err)
				}
			}
			k.mu.Lock()
			k.sync = rec
			k.paused = decodePause(m)
			k.force = decodeForce(m)
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
	for {
		start := k.clk.Now()
		switch err := k.step(ctx); {
		case err == nil:
			k.stepWarnings.ok(k.clk.Now())
		case ctx.Err() == nil:
			k.stepWarnings.warn(k.clk.Now(), "keeper step", err)
		}
		// keeperTick after the round started: a round that took longer is
		// followed by the next at once.
		t := k.clk.NewTimer(keeperTick - k.clk.Now().Sub(start))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		case <-k.wake:
			t.Stop()
		}
	}
}

// step does one round: look, lead or follow, then publish and decide
// eligibility.
func (k *Keeper) step(ctx context.Context) error {
	select {
	case req := <-k.reinits:
		req.done <- k.reinit(ctx, req.fromBackup)
	default:
	}
	v := k.look()
	// After look: Release sets letGo before a view can show the lead gone.
	v.letGo = k.letGo.Swap(false)
	k.m.observe(v)
	var err error
	if v.running() {
		// Bounded: a hung postgres must not hold the keeper's round, which
		// publishes that it is hung.
		asked := k.clk.Now()
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		v.inRecovery, err = k.srv.IsInRecovery(qctx)
		cancel()
		if err != nil {
			k.noAnswer(asked)
		}
	}
	switch {
	case err != nil:
	case v.acting && (!v.regional || v.regionActing):
		err = k.lead(ctx, v)
	case v.acting:
		if err = k.follow(ctx, k.activeRegionView(v)); err == nil {
			err = k.setUpStandby(ctx, v)
		}
	default:
		err = k.follow(ctx, v)
	}
	k.publish(ctx)
	return err
}

// activeRegionView is v as the standby leader follows the active region's
// primary: that primary is the holder to follow, the only member.
func (k *Keeper) activeRegionView(v view) view {
	a := k.region.activePrimary()
	v.standbyLeader = true
	self, ok := v.members[k.cfg.Node]
	v.holder, v.members = a.Member.Node, map[string]MemberState{}
	if ok {
		v.members[k.cfg.Node] = self
	}
	if a.Node != "" {
		v.members[a.Member.Node] = a.Member
	}
	return v
}

// look returns what the keeper sees now, but for what it must ask postgres
// (inRecovery) and what happened since the last step (letGo).
func (k *Keeper) look() view {
	st := k.sup.Status()
	v := view{now: k.clk.Now(), hasData: k.srv.HasData(), session: k.supRunning(), server: st.State,
		pastFork: errors.Is(st.LastError, pg.ErrPastFork), halfRewound: k.srv.RewindIncomplete()}
	v.acting, v.epoch = k.guard.lead()
	v.holder = k.owner.Status().Holder
	if r := k.region; r != nil {
		v.regional = true
		v.regionActing, v.regionEpoch, _ = r.guard.lead()
	}
	k.mu.Lock()
	v.members, v.sync, v.primary = k.members, k.sync, k.primary
	v.paused, v.force = k.paused, k.force
	k.mu.Unlock()
	return v
}
