package galera

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
)

// Keys of a Galera database in etcd, under /haven/CLUSTER/galera/NAME/.
func dbPrefix(cluster, name string) string { return fmt.Sprintf("/haven/%s/galera/%s/", cluster, name) }

// MembersPrefix is where each node's MemberState lives (members/NODE).
func MembersPrefix(cluster, name string) string { return dbPrefix(cluster, name) + "members/" }

// BootstrapKey is the bootstrap claim's key (the only one under
// bootstrap/, which the nodes watch).
func BootstrapKey(cluster, name string) string { return dbPrefix(cluster, name) + "bootstrap/claim" }

// WriterPrefix is the writer's ownership record (coord.OwnerPrefix).
func WriterPrefix(cluster, name string) string { return coord.OwnerPrefix(cluster, "galera", name) }

// Timings of a node's agent.
const (
	// memberTTL is the lease of a member's state: a dead agent's state
	// disappears this long after its last keepalive.
	memberTTL = 5 * time.Second
	// claimTTL is the lease of a bootstrap claim: a claimant whose agent
	// died frees it this long after.
	claimTTL = 5 * time.Second
	// restartMin and restartMax bound the wait before starting a server
	// whose last start failed (doubling).
	restartMin = time.Second
	restartMax = 30 * time.Second
)

// NodeConfig configures one node's side of a Galera cluster.
type NodeConfig struct {
	Client *clientv3.Client
	// Alternates are further clients for the writer record's writes
	// (coord.OwnerConfig.Alternates).
	Alternates []*clientv3.Client
	Cluster    string
	// Name is the database's name in etcd.
	Name string
	Node string
	// Nodes are every node of the cluster, in haven.yaml's order.
	Nodes  []string
	Server *Server
	// Host and Port are where clients reach this node's server.
	Host string
	Port int
	// GroupAddrs are each node's group communication address
	// (HOST:PORT): a node in this one's component whose address refuses
	// connections has lost its server, and is evicted at once.
	GroupAddrs map[string]string
	// CheckInterval is how often the server's state is read.
	CheckInterval time.Duration
	// Grace is how long a running server must be outside a primary
	// component before the cluster counts as down.
	Grace time.Duration
	// DonorServes keeps a donor in the pools.
	DonorServes bool
	// Writer: compete for the writer record (writers: one), held for
	// Lease at a time, preferred by Priority.
	Writer   bool
	Lease    time.Duration
	Priority int
	Logger   *slog.Logger
	// Registerer exports the node's metrics.
	Registerer prometheus.Registerer
}

// Node runs one node's side of a Galera cluster: it supervises the server,
// publishes its state, joins, waits or bootstraps as decide says, and
// competes for the writer record while its server serves.
type Node struct {
	cfg     NodeConfig
	log     *slog.Logger
	srv     *Server
	state   *coord.Entry[MemberState]
	owner   *coord.Owner // nil unless cfg.Writer
	metrics *metrics

	kick  chan struct{}
	force chan chan error // ForceBootstrap's requests, for Run's goroutine

	mu      sync.Mutex
	members map[string]MemberState
	claim   BootstrapRecord
	watched [2]bool // members, claim listed once
	last    Decision

	// Only Run's goroutine uses these.
	pos             Position
	posKnown        bool
	nonPrimarySince time.Time
	claimLease      clientv3.LeaseID // non-zero while this node holds the claim
	claimCancel     context.CancelFunc
	bootRun         <-chan struct{} // the server a bootstrap under the claim started
	failures        int
	nextStart       time.Time
	evicted         map[string]bool // gcomm UUIDs this node evicted
}

// NewNode checks cfg; it starts nothing.
func NewNode(cfg NodeConfig) (*Node, error) {
	if cfg.Client == nil || cfg.Server == nil || cfg.Node == "" || len(cfg.Nodes) == 0 {
		return nil, errors.New("galera: node: client, server, node and nodes are required")
	}
	if cfg.CheckInterval <= 0 {
		cfg.CheckInterval = 500 * time.Millisecond
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	n := &Node{cfg: cfg, log: log.With("component", "galera"), srv: cfg.Server, kick: make(chan struct{}, 1), force: make(chan chan error)}
	var err error
	n.state, err = coord.NewEntry(coord.EntryConfig[MemberState]{
		Client: cfg.Client,
		Key:    MembersPrefix(cfg.Cluster, cfg.Name) + cfg.Node,
		Value:  n.base(),
		TTL:    memberTTL,
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("galera: %w", err)
	}
	if cfg.Writer {
		n.owner, err = coord.NewOwner(coord.OwnerConfig{
			Client:     cfg.Client,
			Alternates: cfg.Alternates,
			Prefix:     WriterPrefix(cfg.Cluster, cfg.Name),
			Node:       cfg.Node,
			Priority:   cfg.Priority,
			Lease:      cfg.Lease,
			Guard:      writerGuard{},
			Logger:     log.With("component", "galera", "singleton", "writer"),
			Registerer: cfg.Registerer,
		})
		if err != nil {
			return nil, fmt.Errorf("galera: writer: %w", err)
		}
	}
	if n.metrics, err = newMetrics(cfg.Registerer); err != nil {
		return nil, err
	}
	return n, nil
}

// writerGuard: the writer record moves clients, nothing on the node acts
// on it (every node of a primary component can take writes).
type writerGuard struct{}

func (writerGuard) Acquire(int64, time.Time) {}
func (writerGuard) Extend(time.Time)         {}
func (writerGuard) Release(string)           {}

func (n *Node) base() MemberState {
	return MemberState{Node: n.cfg.Node, Host: n.cfg.Host, Port: n.cfg.Port, Server: ServerStopped}
}

// Run takes part in the cluster until ctx ends; then it stops the server
// cleanly (the node leaves the group) and withdraws its state.
func (n *Node) Run(ctx context.Context) error {
	// A server left by this node's previous agent (which died: the
	// kernel asked its server to shut down) must be gone before this one
	// reads the data directory or starts another.
	if err := n.srv.WaitStale(ctx); err != nil {
		return err
	}
	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	defer func() {
		n.lameduck()
		n.releaseClaim(context.Background())
		stopCtx, stopCancel := context.WithTimeout(context.Background(), stopTimeout+5*time.Second)
		defer stopCancel()
		if err := n.srv.Stop(stopCtx); err != nil {
			n.log.Warn("stop mariadbd", "err", err)
		}
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { _ = n.state.Run(runCtx) })
	if n.owner != nil {
		wg.Go(func() { _ = n.owner.Run(runCtx) })
	}
	wg.Go(func() {
		_ = coord.WatchPrefix(runCtx, n.cfg.Client, MembersPrefix(n.cfg.Cluster, n.cfg.Name), func(m map[string]MemberState) {
			n.mu.Lock()
			n.members, n.watched[0] = m, true
			n.mu.Unlock()
			n.poke()
		})
	})
	wg.Go(func() { n.watchClaim(runCtx) })
	t := time.NewTicker(n.cfg.CheckInterval)
	defer t.Stop()
	for {
		n.round(ctx)
		var exited <-chan struct{} // the running server's exit, seen at once
		if n.srv.Running() {
			exited = n.srv.Done()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-n.kick:
		case <-exited:
		case done := <-n.force:
			ok, err := n.takeClaim(ctx, true)
			if err == nil && !ok {
				err = errors.New("another node holds the bootstrap claim, or the members changed meanwhile: try again")
			}
			done <- err
		}
	}
}

// lameduck takes the node out of the routes before its server stops: it
// gives up the writer record and publishes that it does not serve, each
// bounded, so that the routers move before the server refuses.
func (n *Node) lameduck() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if n.owner != nil {
		n.owner.SetEligible(false)
		_ = n.owner.WaitFor(ctx, func(s coord.OwnerStatus) bool { return !s.Acting })
	}
	n.state.Update(func(st *MemberState) {
		st.Serving, st.Why = false, "the agent is stopping"
	})
	_ = n.state.Sync(ctx)
}

func (n *Node) poke() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// watchClaim follows the bootstrap claim.
func (n *Node) watchClaim(ctx context.Context) {
	_ = coord.WatchPrefix(ctx, n.cfg.Client, dbPrefix(n.cfg.Cluster, n.cfg.Name)+"bootstrap/", func(m map[string]BootstrapRecord) {
		n.mu.Lock()
		n.claim, n.watched[1] = m["claim"], true
		n.mu.Unlock()
		n.poke()
	})
}

// round looks at the server, publishes what it sees, and acts.
func (n *Node) round(ctx context.Context) {
	st := n.observe(ctx)
	n.state.Set(st)
	n.metrics.set(st, n.Writer())
	if n.owner != nil {
		n.owner.SetEligible(st.Serving)
	}
	n.mu.Lock()
	ready := n.watched[0] && n.watched[1]
	members, claim := n.members, n.claim
	n.mu.Unlock()
	if !ready {
		return
	}
	members = withSelf(members, st)
	if st.inPrimary() {
		n.clearEvictions(ctx, st, members)
		n.evictDead(ctx, st, members)
	}
	held := n.claimLease != 0
	if held {
		claim = BootstrapRecord{Node: n.cfg.Node}
	}
	switch {
	case held && st.inPrimary():
		// The bootstrap is done: the others see a primary component
		// before the claim goes.
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := n.state.Sync(sctx)
		cancel()
		if err == nil {
			n.releaseClaim(ctx)
		}
		return
	case held && n.bootRun != nil && closed(n.bootRun):
		// The bootstrap's server exited: the claim goes, and the
		// decision is made again from the positions (this node's is read
		// again).
		n.log.Warn("the bootstrap failed: mariadbd exited; releasing the claim", "event", "database", "err", n.srv.ExitErr())
		n.releaseClaim(ctx)
		return
	}
	if st.Server == ServerStarting || st.Server == ServerRunning && st.Status.Primary() {
		n.setDecision(Decision{Wait, st.Plan})
		return
	}
	d := decide(n.cfg.Node, n.cfg.Nodes, members, claim, n.cfg.Grace)
	n.setDecision(d)
	switch d.Action {
	case Restart:
		n.log.Warn("restarting mariadbd: it left the group and Galera does not take it back", "event", "database", "why", d.Reason)
		n.metrics.restarts.Inc()
		sctx, cancel := context.WithTimeout(ctx, stopTimeout)
		defer cancel()
		if err := n.srv.Stop(sctx); err != nil {
			n.log.Error("stopping mariadbd", "err", err)
		}
		// Stopped, its position is read again and it joins (decide).
	case Join:
		if n.primaryGone(ctx, members) {
			n.setDecision(Decision{Wait, "etcd says another node is in a primary component, but its group port refuses connections: waiting for its agent to say what it is now"})
			return
		}
		n.start(false, d.Reason)
	case Bootstrap, Promote:
		if !held {
			ok, err := n.takeClaim(ctx, false)
			if err != nil {
				n.log.Warn("bootstrap claim", "err", err)
			}
			if !ok {
				return
			}
		}
		if d.Action == Bootstrap {
			if n.start(true, d.Reason) {
				n.bootRun = n.srv.Done()
			}
			return
		}
		n.log.Info("making this node's component primary", "event", "database", "why", d.Reason)
		if err := n.srv.Exec(ctx, "SET GLOBAL wsrep_provider_options='pc.bootstrap=YES'"); err != nil {
			n.log.Warn("pc.bootstrap", "err", err)
			n.releaseClaim(ctx)
		}
	}
}

// evictDead evicts from this node's primary component every other node
// whose server is gone for certain: its group port refuses connections
// (its machine answers, no process listens). Galera would evict it after
// failure_detection; meanwhile every commit in the component waits for
// it. A node that is silent (a lost machine, a cut link) is left to
// Galera's failure detection: silence is not proof of death.
func (n *Node) evictDead(ctx context.Context, self MemberState, members map[string]MemberState) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var dead []MemberState
	for name, m := range members {
		addr, ok := n.cfg.GroupAddrs[name]
		client := net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
		if name == n.cfg.Node || !ok || !gcommUUID.MatchString(m.Status.GcommUUID) || n.evicted[m.Status.GcommUUID] ||
			!slices.Contains(self.Status.IncomingAddresses, client) {
			continue
		}
		wg.Go(func() {
			if refused(ctx, addr) {
				mu.Lock()
				dead = append(dead, m)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, m := range dead {
		if n.evicted == nil {
			n.evicted = map[string]bool{}
		}
		n.evicted[m.Status.GcommUUID] = true
		n.log.Info("evicting a node whose server is gone (its group port refuses connections)", "event", "database", "peer", m.Node, "uuid", m.Status.GcommUUID)
		if err := n.srv.Exec(ctx, "SET GLOBAL wsrep_provider_options='evs.evict="+m.Status.GcommUUID+"'"); err != nil {
			n.log.Warn("evict", "peer", m.Node, "err", err)
			continue
		}
		n.metrics.evictions.Inc()
	}
}

// refused reports whether a group port refuses connections: its machine
// answers and no server listens. A timeout is not a refusal.
func refused(ctx context.Context, addr string) bool {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

// primaryGone reports whether every other node that etcd says is in a
// primary component refuses connections on its group port. Those states
// are then a stopped cluster's last words: the last node to stop cannot
// publish that it stopped once etcd has lost its quorum, and etcd,
// coming back, extends the leases its states live on. Joining on them
// waits for nobody until Galera gives up (pc.wait_prim_timeout, 30 s),
// while the node that should bootstrap waits for this one.
func (n *Node) primaryGone(ctx context.Context, members map[string]MemberState) bool {
	var addrs []string
	for name, m := range members {
		if name != n.cfg.Node && m.inPrimary() {
			if addr, ok := n.cfg.GroupAddrs[name]; ok {
				addrs = append(addrs, addr)
			}
		}
	}
	if len(addrs) == 0 {
		return false
	}
	var gone atomic.Int32
	var wg sync.WaitGroup
	for _, addr := range addrs {
		wg.Go(func() {
			if refused(ctx, addr) {
				gone.Add(1)
			}
		})
	}
	wg.Wait()
	return int(gone.Load()) == len(addrs)
}

// clearEvictions empties this server's eviction list once no node in it
// may still be in its view. Galera's nodes agree on a new view only when
// their eviction lists agree too: a list that keeps a node evicted long
// ago, which a node that joined since has never heard of, holds up the
// next eviction until failure detection decides it. An evicted UUID
// cannot come back (a restarted server has a new one), so the list has
// done its work.
//
// The list is the server's (wsrep_evs_evict_list), not the evictions
// this agent made: a server also keeps those its peers' join messages
// carry, for a day (evs.view_forget_timeout). A writer that rejoined
// while a peer still listed its killed predecessor kept that UUID after
// the others had dropped it, and at the next view change (a partition)
// the messages naming it took a peer's group layer down ("node ... not
// found from known map", CI 2026-12-07).
func (n *Node) clearEvictions(ctx context.Context, self MemberState, members map[string]MemberState) {
	if len(self.Status.EvictList) == 0 {
		return
	}
	for _, uuid := range self.Status.EvictList {
		for _, m := range members {
			addr := net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
			if m.Node != self.Node && m.Status.GcommUUID == uuid && slices.Contains(self.Status.IncomingAddresses, addr) {
				return // the view may still have it: its agent still names it
			}
		}
	}
	n.log.Info("clearing the eviction list: no node in it is in the view", "event", "database", "evicted", self.Status.EvictList)
	if err := n.srv.Exec(ctx, "SET GLOBAL wsrep_provider_options='evs.evict='"); err != nil {
		n.log.Warn("clear the eviction list", "err", err)
	}
}

// gcommUUID is a group member's identity; only such a string goes into
// the evict statement.
var gcommUUID = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func withSelf(m map[string]MemberState, self MemberState) map[string]MemberState {
	out := make(map[string]MemberState, len(m)+1)
	for k, v := range m {
		out[k] = v
	}
	out[self.Node] = self
	return out
}

func (n *Node) setDecision(d Decision) {
	n.mu.Lock()
	changed := d != n.last
	n.last = d
	n.mu.Unlock()
	if changed && d.Action == Wait && d.Reason != "" {
		n.log.Info("galera: waiting", "why", d.Reason)
	}
}

// observe reads the server's state: its wsrep status when it answers,
// its position when it is stopped (once per stop).
func (n *Node) observe(ctx context.Context) MemberState {
	st := n.base()
	now := time.Now()
	if n.srv.Running() {
		s, err := n.srv.Status(ctx)
		if err != nil {
			st.Server, st.Why = ServerStarting, "the server does not answer yet: "+err.Error()
			st.Plan = "starting (a state transfer or crash recovery)"
			n.nonPrimarySince = time.Time{}
			return st
		}
		n.posKnown, n.failures = false, 0
		st.Server, st.Status = ServerRunning, s
		st.Position, st.PositionKnown = Position{UUID: s.StateUUID, Seqno: s.LastCommitted}, true
		st.Serving, st.Why = s.Serving(n.cfg.DonorServes)
		if s.Primary() {
			n.nonPrimarySince = time.Time{}
		} else {
			if n.nonPrimarySince.IsZero() {
				n.nonPrimarySince = now
			}
			st.NonPrimaryFor = now.Sub(n.nonPrimarySince)
		}
		return st
	}
	n.nonPrimarySince = time.Time{}
	st.Why = "the server does not run"
	if err := n.srv.ExitErr(); err != nil {
		st.Why = err.Error()
	}
	if !n.srv.Initialized() {
		if now.Before(n.nextStart) {
			return st
		}
		if err := n.srv.Init(ctx); err != nil {
			n.log.Error("cannot initialise the data directory", "err", err)
			st.Why = err.Error()
			n.failed(now)
			return st
		}
	}
	if !n.posKnown {
		p, err := n.srv.Position(ctx)
		if err != nil {
			n.log.Warn("cannot read this node's position", "err", err)
			st.Why = err.Error()
			return st
		}
		n.pos, n.posKnown = p, true
	}
	st.Position, st.PositionKnown = n.pos, true
	return st
}

// start starts the server, unless its last start failed too recently,
// and says whether it did.
func (n *Node) start(bootstrap bool, why string) bool {
	now := time.Now()
	if now.Before(n.nextStart) {
		return false
	}
	kind := "joining the cluster"
	if bootstrap {
		kind = "bootstrapping the cluster"
	}
	n.log.Info("starting mariadbd: "+kind, "event", "database", "why", why)
	var from Position
	if n.posKnown {
		from = n.pos
	}
	n.posKnown = false // what the next stop leaves is read again
	n.failed(now)      // the next attempt waits, in case this one fails
	if err := n.srv.Start(bootstrap, from); err != nil {
		n.log.Error("cannot start mariadbd", "err", err)
		return false
	}
	if bootstrap {
		n.metrics.bootstraps.Inc()
	}
	return true
}

// failed delays the next attempt, in case this one fails: doubling from
// restartMin to restartMax; an answering server resets it.
func (n *Node) failed(now time.Time) {
	wait := restartMin << min(n.failures, 5)
	n.failures++
	n.nextStart = now.Add(min(wait, restartMax))
}

// takeClaim claims the bootstrap for this node, on a lease of its own:
// only if nobody holds it and the members are as this node read them when
// it decided (their keys' revisions unchanged), so no member can have
// joined a primary component or changed its position since.
func (n *Node) takeClaim(ctx context.Context, forced bool) (bool, error) {
	n.releaseClaim(ctx) // a claim of this node's whose key is gone
	cli := n.cfg.Client
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	prefix := MembersPrefix(n.cfg.Cluster, n.cfg.Name)
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return false, err
	}
	members := map[string]MemberState{}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(BootstrapKey(n.cfg.Cluster, n.cfg.Name)), "=", 0)}
	for _, kv := range resp.Kvs {
		var m MemberState
		if json.Unmarshal(kv.Value, &m) != nil {
			continue
		}
		members[string(kv.Key[len(prefix):])] = m
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(string(kv.Key)), "=", kv.ModRevision))
	}
	self := members[n.cfg.Node]
	if !forced {
		d := decide(n.cfg.Node, n.cfg.Nodes, members, BootstrapRecord{}, n.cfg.Grace)
		if d.Action != Bootstrap && d.Action != Promote {
			return false, nil
		}
	} else {
		for name, m := range members {
			if m.inPrimary() {
				return false, fmt.Errorf("%s is in a primary component: a forced bootstrap would start a second cluster; the node joins it by itself", name)
			}
		}
	}
	lease, err := cli.Grant(ctx, int64(claimTTL/time.Second))
	if err != nil {
		return false, err
	}
	rec, _ := json.Marshal(BootstrapRecord{Node: n.cfg.Node, Position: self.Position, At: time.Now(), Forced: forced})
	key := BootstrapKey(n.cfg.Cluster, n.cfg.Name)
	tr, err := cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, string(rec), clientv3.WithLease(lease.ID))).Else(clientv3.OpGet(key)).Commit()
	if err != nil || !tr.Succeeded {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_, _ = cli.Revoke(rctx, lease.ID)
		cancel()
		if err == nil && forced {
			if kvs := tr.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
				var other BootstrapRecord
				_ = json.Unmarshal(kvs[0].Value, &other)
				return false, fmt.Errorf("%s holds the bootstrap claim since %s (it is starting the cluster; its claim ends with its agent or its failed start)", other.Node, other.At.Format(time.RFC3339))
			}
		}
		return false, err
	}
	kaCtx, kaCancel := context.WithCancel(context.Background())
	ka, err := cli.KeepAlive(kaCtx, lease.ID)
	if err != nil {
		kaCancel()
		return false, err
	}
	go func() {
		for range ka {
		}
	}()
	n.claimLease, n.claimCancel = lease.ID, kaCancel
	n.log.Info("claimed the bootstrap", "event", "database", "position", self.Position.String(), "forced", forced)
	return true, nil
}

// releaseClaim deletes this node's bootstrap claim, with its lease.
func (n *Node) releaseClaim(ctx context.Context) {
	if n.claimCancel == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := n.cfg.Client.Revoke(ctx, n.claimLease); err != nil {
		n.log.Warn("release the bootstrap claim (it expires with its lease)", "err", err)
	}
	n.claimCancel()
	n.claimCancel, n.claimLease, n.bootRun = nil, 0, nil
	n.log.Info("released the bootstrap claim")
}

// ForceBootstrap claims the bootstrap for this node as an operator's
// choice, without every node's position: the node starts the cluster
// from its own data at its next round. It is refused while any member is
// in a primary component (that node's cluster would be a second one).
func (n *Node) ForceBootstrap(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case n.force <- done:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Writer reports whether this node holds the writer record now.
func (n *Node) Writer() bool {
	return n.owner != nil && n.owner.Status().Acting
}

// State is what this node publishes now.
func (n *Node) State() MemberState { return n.state.Value() }

// Members are the members' states as this node last saw them.
func (n *Node) Members() map[string]MemberState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.members
}

// Decision is what this node's agent last decided about its server.
func (n *Node) Decision() Decision {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.last
}

// WriterStatus is the writer record as this node sees it (zero when the
// cluster has writers: all).
func (n *Node) WriterStatus() coord.OwnerStatus {
	if n.owner == nil {
		return coord.OwnerStatus{}
	}
	return n.owner.Status()
}

// WriterCleanSince is since when this node's writes of the writer record
// through the etcd member at endpoint have all gone cleanly
// (coord.Owner.CleanSince; zero without a writer record).
func (n *Node) WriterCleanSince(endpoint string) time.Time {
	if n.owner == nil {
		return time.Time{}
	}
	return n.owner.CleanSince(endpoint)
}
