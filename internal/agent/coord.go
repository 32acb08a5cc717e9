package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/vip"
	"github.com/haven-ha/haven/internal/web"
)

// coordination is this node's part in the etcd cluster: its embedded
// member if it is one, a client, its membership record, and the floating
// addresses of its balancers. It starts once, with the agent; changes to
// these sections need a restart.
type coordination struct {
	a      *Agent
	cfg    *config.Config
	member *coord.Member

	fence *vip.Fence
	vips  []*vipRole

	db         *dbRole // nil unless this node is a database node
	dbPassword string
	router     *dbRouter // nil unless this node is a database router

	mu     sync.Mutex
	client *clientv3.Client
	// ownerClient talks to this node's own member only, when it is one:
	// it answers at once, or fails fast when it has lost its quorum. The
	// alternates talk to one other member each; owners send every other
	// write through them, so that a renewal held up behind a lost packet
	// on one member's connections does not hold back the next (see
	// coord.OwnerConfig.Alternates).
	ownerClient *clientv3.Client
	alternates  []*clientv3.Client
	members     map[string]coord.MemberInfo
	cancel      context.CancelFunc
	wg          sync.WaitGroup
	memberW     sync.WaitGroup
	stopMem     context.CancelFunc
}

// vipRole is one floating address of one balancer on this node.
type vipRole struct {
	balancer string
	cfg      *config.VIP
	prefix   netip.Prefix
	mgr      *vip.Manager
	owner    *coord.Owner
	ownerW   sync.WaitGroup
}

// How often a floating address's eligibility (its balancer is ready) is
// re-read, and how long a starting agent waits for etcd per attempt.
const (
	eligibilityPeriod = 50 * time.Millisecond
	connectTimeout    = 5 * time.Second
)

// startCoordination prepares the node's floating addresses (silent until
// held), starts its etcd member and connects in the background. Errors that
// an operator must fix (no interface for an address, no nftables) fail the
// start.
func (a *Agent) startCoordination(cfg *config.Config) (*coordination, error) {
	c := &coordination{a: a, cfg: cfg}
	if cfg.Coordination == nil {
		return c, nil
	}
	if err := c.prepareVIPs(); err != nil {
		c.cleanupVIPs()
		return nil, err
	}
	if err := c.prepareDatabase(context.Background()); err != nil {
		c.cleanupVIPs()
		return nil, err
	}
	if err := c.prepareRouter(); err != nil {
		c.cleanupVIPs()
		return nil, err
	}
	memCtx, stopMem := context.WithCancel(context.Background())
	c.stopMem = stopMem
	if slices.Contains(cfg.Coordination.Members, a.opt.Node) {
		m, err := coord.NewMember(c.memberConfig())
		if err != nil {
			c.cleanupVIPs()
			return nil, err
		}
		c.member = m
		a.admin.AddReadiness("etcd member", c.memberReady)
		c.memberW.Go(func() {
			if err := m.Run(memCtx); err != nil {
				a.log.Error("etcd member stopped", "err", err)
			}
		})
	}
	a.admin.AddReadiness("coordination", func() error {
		if c.etcd() == nil {
			return fmt.Errorf("not connected to etcd at %s", strings.Join(c.endpoints(), ", "))
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Go(func() { c.connect(ctx) })
	return c, nil
}

func (c *coordination) memberReady() error {
	select {
	case <-c.member.Ready():
		return nil
	default:
		return errors.New("etcd member has not joined its cluster yet")
	}
}

func (c *coordination) etcd() *clientv3.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client
}

// nodeFile replaces {node} in a configured path.
func (c *coordination) nodeFile(p string) string {
	return config.NodePath(p, c.a.opt.Node)
}

func (c *coordination) tls() *coord.TLSFiles {
	t := c.cfg.Coordination.TLS
	if t == nil {
		return nil
	}
	return &coord.TLSFiles{CA: c.nodeFile(t.CA), Cert: c.nodeFile(t.Cert), Key: c.nodeFile(t.Key)}
}

func (c *coordination) scheme() string {
	if c.cfg.Coordination.TLS != nil {
		return "https"
	}
	return "http"
}

func (c *coordination) memberConfig() coord.MemberConfig {
	cc := c.cfg.Coordination
	initial := map[string]string{}
	for _, name := range cc.Members {
		n, _ := c.cfg.Node(name)
		initial[name] = c.scheme() + "://" + net.JoinHostPort(n.Address, strconv.Itoa(cc.PeerPort))
	}
	self, _ := c.cfg.Node(c.a.opt.Node)
	return coord.MemberConfig{
		Name:              c.a.opt.Node,
		DataDir:           c.nodeFile(cc.DataDir),
		PeerURL:           initial[c.a.opt.Node],
		ClientURL:         c.scheme() + "://" + net.JoinHostPort(self.Address, strconv.Itoa(cc.ClientPort)),
		InitialCluster:    initial,
		ClusterToken:      c.cfg.Cluster,
		TLS:               c.tls(),
		HeartbeatInterval: cc.Heartbeat.D(),
		ElectionTimeout:   cc.ElectionTimeout.D(),
		JoinTimeout:       cc.JoinTimeout.D(),
		Logger:            c.a.log,
	}
}

// endpoints lists the cluster's client URLs, this node's own member first.
func (c *coordination) endpoints() []string {
	cc := c.cfg.Coordination
	if len(cc.Endpoints) > 0 {
		return cc.Endpoints
	}
	var eps []string
	for _, name := range cc.Members {
		n, _ := c.cfg.Node(name)
		ep := c.scheme() + "://" + net.JoinHostPort(n.Address, strconv.Itoa(cc.ClientPort))
		if name == c.a.opt.Node {
			eps = append([]string{ep}, eps...)
		} else {
			eps = append(eps, ep)
		}
	}
	return eps
}

// connect retries until it has a client, then starts what needs one.
func (c *coordination) connect(ctx context.Context) {
	log := c.a.log
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		cctx, cancel := context.WithTimeout(ctx, connectTimeout)
		cli, err := coord.NewClient(cctx, coord.ClientConfig{Endpoints: c.endpoints(), TLS: c.tls(), DialTimeout: connectTimeout, Logger: log})
		cancel()
		if err == nil {
			c.mu.Lock()
			c.client = cli
			c.mu.Unlock()
			log.Info("connected to etcd", "endpoints", c.endpoints())
			break
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("cannot reach etcd yet; retrying", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
	c.ownerClient = c.client
	if c.member != nil {
		select {
		case <-c.member.Ready():
		case <-ctx.Done():
			return
		}
		local, err := coord.NewClient(ctx, coord.ClientConfig{Endpoints: c.endpoints()[:1], TLS: c.tls(), DialTimeout: connectTimeout, Logger: log})
		if err != nil {
			log.Warn("cannot connect to this node's own etcd member; floating addresses use every member", "err", err)
		} else {
			c.ownerClient = local
			c.alternates = c.memberClients(ctx, c.endpoints()[1:])
		}
	}
	c.wg.Go(func() { c.publish(ctx) })
	c.wg.Go(func() {
		_ = coord.WatchMembers(ctx, c.client, c.cfg.Cluster, func(m map[string]coord.MemberInfo) {
			c.mu.Lock()
			c.members = m
			c.mu.Unlock()
		})
	})
	for _, v := range c.vips {
		c.startOwner(ctx, v)
	}
	if c.db != nil {
		c.startKeeper(ctx)
	}
	if c.router != nil {
		c.wg.Go(func() { c.watchRoutes(ctx) })
	}
	if c.member != nil && len(c.vips) > 0 {
		c.wg.Go(func() { c.keepLeaderAway(ctx) })
	}
}

// keepLeaderAway moves etcd's leadership off this node while it holds a
// floating address. Otherwise one crash takes both the address's holder
// and etcd's leader, and the takeover waits for an etcd election on top of
// the lease.
func (c *coordination) keepLeaderAway(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	// whole is since when every member has answered: from the start, until
	// a check finds one that does not.
	whole := time.Now()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		holding := false
		for _, r := range c.vips {
			holding = holding || r.mgr.Status().State == vip.StateHolder
		}
		if !holding {
			continue
		}
		if err := c.moveLeader(ctx, &whole); err != nil {
			c.a.log.Debug("move etcd leadership away", "err", err)
		}
	}
}

// Leadership moves only to a follower this close to the leader's log, and
// only once every member has answered for leaderMoveSettle (since the start,
// or since a check last found one that did not): raft drops proposals while
// a transfer waits for its target to catch up, and the renewals of the
// address this node holds would stall past their deadline. After a
// partition heals, a rejoining member catches up first.
const (
	leaderMoveSettle = 900 * time.Millisecond
	leaderMoveMaxLag = 64 // raft entries
)

func (c *coordination) moveLeader(ctx context.Context, whole *time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cli := c.etcd()
	self := c.member.Endpoints()[0]
	st, err := cli.Status(ctx, self)
	if err != nil || st.Leader != st.Header.MemberId {
		return err // not the leader: nothing to do
	}
	list, err := cli.MemberList(ctx)
	if err != nil {
		return err
	}
	var target *etcdserverpb.Member
	for _, m := range list.Members {
		if len(m.ClientURLs) == 0 {
			*whole = time.Time{}
			return fmt.Errorf("member %s has no client URL yet", m.Name)
		}
		ms, err := cli.Status(ctx, m.ClientURLs[0])
		if err != nil {
			*whole = time.Time{}
			return fmt.Errorf("member %s is not healthy: %w", m.Name, err)
		}
		if m.ID != st.Header.MemberId && !m.IsLearner && target == nil && st.RaftIndex-min(st.RaftIndex, ms.RaftIndex) <= leaderMoveMaxLag {
			target = m
		}
	}
	if whole.IsZero() {
		*whole = time.Now()
	}
	if since := time.Since(*whole); since < leaderMoveSettle {
		return fmt.Errorf("cluster whole for only %v", since.Round(time.Millisecond))
	}
	if target == nil {
		return errors.New("no follower caught up to move etcd leadership to")
	}
	// MoveLeader must reach the leader itself: the owners' client of this
	// node's member alone.
	if c.ownerClient == cli {
		return errors.New("no client of this node's own etcd member (see the earlier warning)")
	}
	if _, err := c.ownerClient.MoveLeader(ctx, target.ID); err != nil {
		return fmt.Errorf("move etcd leadership to %s: %w", target.Name, err)
	}
	c.a.log.Info("moved etcd leadership off this node while it holds a floating address", "to", target.Name)
	return nil
}

func (c *coordination) publish(ctx context.Context) {
	self, _ := c.cfg.Node(c.a.opt.Node)
	p, err := coord.NewPublisher(coord.PublisherConfig{
		Client:  c.client,
		Cluster: c.cfg.Cluster,
		Info: coord.MemberInfo{
			Node: c.a.opt.Node, Region: self.Region, Zone: self.Zone, Roles: c.roles(),
			Version: c.a.opt.Version, Address: self.Address,
		},
		Logger: c.a.log,
	})
	if err != nil {
		c.a.log.Error("membership", "err", err)
		return
	}
	c.wg.Go(func() {
		// Publish the node's state, which traffic targets may follow
		// (traffic.records.*.targets[].follows): each balancer is up when
		// it is ready, each floating address when this node holds it, the
		// database when this node is its serving primary.
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			for _, st := range c.a.Balancers() {
				b, err := c.a.balancer(st.Name)
				p.SetCheck(coord.BalancerState(st.Name), upDown(err == nil && b.Ready() == nil))
			}
			for _, r := range c.vips {
				p.SetCheck(coord.VIPState(r.balancer), upDown(r.mgr != nil && r.mgr.Status().State == vip.StateHolder))
			}
			if c.db != nil {
				p.SetCheck(coord.DatabaseState, upDown(c.servesPrimary()))
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	})
	if err := p.Run(ctx); err != nil {
		c.a.log.Error("membership", "err", err)
	}
}

func upDown(up bool) string {
	if up {
		return coord.CheckUp
	}
	return coord.CheckDown
}

// servesPrimary reports whether this node holds the database's primary
// record and its postgres runs as the primary.
func (c *coordination) servesPrimary() bool {
	k := c.db.keeper.Load()
	if k == nil || !k.Owner().Status().Acting {
		return false
	}
	return k.Members()[c.a.opt.Node].Role == keeper.RolePrimary
}

func (c *coordination) roles() []string {
	var roles []string
	if slices.Contains(c.cfg.Coordination.Members, c.a.opt.Node) {
		roles = append(roles, "etcd")
	}
	for _, b := range c.cfg.BalancersOn(c.a.opt.Node) {
		roles = append(roles, "balancer/"+b.Name)
		if b.VIP != nil {
			roles = append(roles, "vip/"+b.Name)
		}
	}
	return roles
}

// prepareVIPs installs the fence and makes every floating address of this
// node silent, removing a copy a crashed agent left on its interface.
func (c *coordination) prepareVIPs() error {
	var managed []netip.Addr
	var roles []*vipRole
	for _, b := range c.cfg.BalancersOn(c.a.opt.Node) {
		if b.VIP == nil {
			continue
		}
		p, err := netip.ParsePrefix(b.VIP.Address)
		if err != nil {
			return fmt.Errorf("vip %s: %w", b.Name, err)
		}
		managed = append(managed, p.Addr())
		roles = append(roles, &vipRole{balancer: b.Name, cfg: b.VIP, prefix: p})
	}
	if len(roles) == 0 {
		return nil
	}
	c.fence = vip.NewFence(vip.FenceConfig{})
	if err := c.fence.Install(managed); err != nil {
		return fmt.Errorf("vip: install the fence (needs root or CAP_NET_ADMIN and nftables in the kernel): %w", err)
	}
	for _, r := range roles {
		m, err := vip.NewManager(vip.ManagerConfig{
			Name: r.balancer, Node: c.a.opt.Node, Prefix: r.prefix, Interface: r.cfg.Interface,
			Notify: r.cfg.Notify, Fence: c.fence, Logger: c.a.log, Metrics: c.a.vipm,
		})
		if err != nil {
			return err
		}
		r.mgr = m
		c.vips = append(c.vips, r)
	}
	return nil
}

// memberClients makes a client of each of the given members, connecting
// in the background: a member that is down now is used once it is back.
func (c *coordination) memberClients(ctx context.Context, eps []string) []*clientv3.Client {
	var clis []*clientv3.Client
	for _, ep := range eps {
		cli, err := coord.NewClient(ctx, coord.ClientConfig{Endpoints: []string{ep}, TLS: c.tls(), DialTimeout: connectTimeout, Logger: c.a.log, Lazy: true})
		if err != nil {
			c.a.log.Warn("no second route to etcd through this member", "member", ep, "err", err)
			continue
		}
		clis = append(clis, cli)
	}
	return clis
}

// startOwner competes for a floating address's record while its balancer
// is ready.
func (c *coordination) startOwner(ctx context.Context, r *vipRole) {
	o, err := coord.NewOwner(coord.OwnerConfig{
		Client:     c.ownerClient,
		Alternates: c.alternates,
		Prefix:     coord.OwnerPrefix(c.cfg.Cluster, "vip", r.balancer),
		Node:       c.a.opt.Node,
		Priority:   r.cfg.Priority[c.a.opt.Node],
		Preempt:    *r.cfg.Preempt,
		Lease:      r.cfg.Lease.D(),
		Guard:      r.mgr,
		Logger:     c.a.log.With("component", "vip", "balancer", r.balancer),
	})
	if err != nil {
		c.a.log.Error("vip", "balancer", r.balancer, "err", err)
		return
	}
	c.mu.Lock()
	r.owner = o
	c.mu.Unlock()
	octx, stop := context.WithCancel(context.Background())
	r.ownerW.Go(func() { _ = o.Run(octx) })
	c.wg.Go(func() {
		defer func() {
			// Hand over before the balancer stops: Run releases the
			// record when its context ends.
			stop()
			r.ownerW.Wait()
		}()
		t := time.NewTicker(eligibilityPeriod)
		defer t.Stop()
		for {
			b, err := c.a.balancer(r.balancer)
			ok := err == nil && b.Ready() == nil && r.mgr.Healthy() == nil
			r.mgr.SetEligible(ok)
			o.SetEligible(ok)
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	})
}

// stop hands over held addresses, stops the owners and the membership
// record, and removes the addresses; the member stops in stopMember, after
// the balancers.
func (c *coordination) stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	if c.db != nil {
		c.db.done.Wait()
	}
	if c.router != nil {
		c.router.close()
	}
	c.cleanupVIPs()
	if cli := c.etcd(); cli != nil {
		if c.ownerClient != nil && c.ownerClient != cli {
			c.ownerClient.Close()
		}
		for _, alt := range c.alternates {
			alt.Close()
		}
		cli.Close()
	}
}

func (c *coordination) cleanupVIPs() {
	for _, r := range c.vips {
		if r.mgr != nil {
			r.mgr.Cleanup()
		}
	}
	if c.fence != nil {
		if err := c.fence.Remove(); err != nil {
			c.a.log.Warn("remove the fence", "err", err)
		}
	}
}

func (c *coordination) stopMember() {
	if c.stopMem != nil {
		c.stopMem()
	}
	c.memberW.Wait()
}

// Status is the coordination part of /api/v1/status.
type CoordinationStatus struct {
	Endpoints []string                    `json:"endpoints"`
	Connected bool                        `json:"connected"`
	Member    *MemberStatus               `json:"member,omitempty"`
	Etcd      []EndpointHealth            `json:"etcd,omitempty"`
	Members   map[string]coord.MemberInfo `json:"members"`
	VIPs      []VIPStatus                 `json:"vips"`
	Database  *DatabaseStatus             `json:"database,omitempty"`
}

// MemberStatus is this node's embedded etcd member.
type MemberStatus struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// EndpointHealth is one etcd member as its endpoint reports it.
type EndpointHealth struct {
	Endpoint string `json:"endpoint"`
	Healthy  bool   `json:"healthy"`
	Leader   bool   `json:"leader,omitempty"`
	RaftTerm uint64 `json:"raft_term,omitempty"`
	Error    string `json:"error,omitempty"`
}

// VIPStatus is one floating address: this node's state and the record's
// holder and epoch.
type VIPStatus struct {
	vip.Status
	Holder     string            `json:"holder"`
	HeldEpoch  int64             `json:"held_epoch"`
	Candidates []coord.Candidate `json:"candidates"`
}

func (c *coordination) status(ctx context.Context) *CoordinationStatus {
	if c.cfg.Coordination == nil {
		return nil
	}
	s := &CoordinationStatus{Endpoints: c.endpoints(), Members: map[string]coord.MemberInfo{}}
	if c.member != nil {
		s.Member = &MemberStatus{Name: c.a.opt.Node, Ready: c.memberReady() == nil}
	}
	cli := c.etcd()
	c.mu.Lock()
	for k, v := range c.members {
		s.Members[k] = v
	}
	c.mu.Unlock()
	s.VIPs = c.vipStatuses()
	s.Database = c.databaseStatus()
	if cli == nil {
		return s
	}
	s.Connected = true
	// Ask every member at once: a dead one costs its timeout once, not
	// once per member.
	s.Etcd = make([]EndpointHealth, len(s.Endpoints))
	var wg sync.WaitGroup
	for i, ep := range s.Endpoints {
		wg.Go(func() {
			h := EndpointHealth{Endpoint: ep}
			sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			st, err := cli.Status(sctx, ep)
			cancel()
			if err != nil {
				h.Error = err.Error()
			} else {
				h.Healthy = len(st.Errors) == 0
				h.Leader = st.Leader == st.Header.MemberId
				h.RaftTerm = st.RaftTerm
				if len(st.Errors) > 0 {
					h.Error = strings.Join(st.Errors, "; ")
				}
			}
			s.Etcd[i] = h
		})
	}
	wg.Wait()
	return s
}

// vipStatuses reports this node's floating addresses, without asking etcd.
func (c *coordination) vipStatuses() []VIPStatus {
	out := []VIPStatus{}
	for _, r := range c.vips {
		vs := VIPStatus{Status: r.mgr.Status()}
		c.mu.Lock()
		o := r.owner
		c.mu.Unlock()
		if o != nil {
			os := o.Status()
			vs.Holder, vs.HeldEpoch, vs.Candidates = os.Holder, os.Epoch, os.Candidates
		}
		out = append(out, vs)
	}
	return out
}

// moveVIP serves POST /api/v1/vips/{balancer}/move?to=NODE: it asks the
// holder, through etcd, to hand over, and waits until to holds it.
func (c *coordination) moveVIP(w http.ResponseWriter, r *http.Request) {
	name, to := r.PathValue("balancer"), r.URL.Query().Get("to")
	var role *vipRole
	for _, v := range c.vips {
		if v.balancer == name {
			role = v
		}
	}
	switch {
	case role == nil:
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("balancer %q has no floating address on node %s", name, c.a.opt.Node))
		return
	case to == "":
		web.WriteError(w, http.StatusBadRequest, errors.New("say which node: ?to=NODE"))
		return
	case !slices.Contains(c.balancerNodes(name), to):
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("%s is not one of balancer %s's nodes (%s)", to, name, strings.Join(c.balancerNodes(name), ", ")))
		return
	}
	cli := c.etcd()
	c.mu.Lock()
	o := role.owner
	c.mu.Unlock()
	if cli == nil || o == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("not connected to etcd yet"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if st := o.Status(); st.Holder == to {
		web.WriteJSON(w, http.StatusOK, map[string]any{"holder": to, "epoch": st.Epoch, "result": "already there"})
		return
	}
	if !slices.ContainsFunc(o.Status().Candidates, func(c coord.Candidate) bool { return c.Node == to && c.Eligible }) {
		web.WriteError(w, http.StatusConflict, fmt.Errorf("%s is not an eligible candidate for %s's address: its agent must run and its balancer be ready", to, name))
		return
	}
	if err := coord.RequestHandover(ctx, cli, coord.OwnerPrefix(c.cfg.Cluster, "vip", name), to); err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	if err := o.WaitFor(ctx, func(s coord.OwnerStatus) bool { return s.Holder == to }); err != nil {
		web.WriteError(w, http.StatusGatewayTimeout, fmt.Errorf("%s did not take the address within 5s (is it eligible? its balancer must be ready): %w", to, err))
		return
	}
	st := o.Status()
	web.WriteJSON(w, http.StatusOK, map[string]any{"holder": st.Holder, "epoch": st.Epoch, "took_ms": time.Since(start).Milliseconds()})
}

func (c *coordination) balancerNodes(name string) []string {
	for _, b := range c.cfg.BalancersOn(c.a.opt.Node) {
		if b.Name == name {
			return b.Nodes
		}
	}
	return nil
}
