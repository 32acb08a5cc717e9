package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/peerroute"
)

// coordination is this node's part in the etcd cluster: its embedded
// member if it is one, and its clients. The roles that need etcd (the
// floating addresses' owners, the database keeper, the router's routes)
// start once it answers: they register with onConnected before start. It
// starts once, with the agent; changes to its section need a restart.
type coordination struct {
	a   *Agent
	cfg *config.Config
	// scope is the etcd cluster this coordination reaches: the node's
	// region's (config.CoordinationOf), or the global scope that spans
	// the regions (global set), which holds the active-region record.
	scope  *config.Coordination
	global bool
	// forceMu serialises forceAlone.
	forceMu sync.Mutex
	// diskSlow is set while this node's member's disk does not keep up
	// (see steerLeader).
	diskSlow atomic.Bool

	mu sync.Mutex
	// member is this node's embedded member (nil unless it is one), and
	// memberStop how to stop its run: forceAlone replaces both.
	member     *coord.Member
	memberStop func()
	// removed is set, and gone closed, once the member finds it was
	// removed from its cluster (memberRemoved).
	removed bool
	gone    chan struct{}
	// up is closed once a run of the member first serves.
	up        chan struct{}
	upOnce    sync.Once
	clients   *etcdClients  // nil until connected
	connected chan struct{} // closed once clients is set
	members   map[string]coord.MemberInfo

	starters []func(ctx context.Context, cl *etcdClients)
	cancel   context.CancelFunc
	wg       sync.WaitGroup // connect, and everything it starts
}

// etcdClients are the agent's connections to etcd once it answers.
type etcdClients struct {
	// all talks to every member.
	all *clientv3.Client
	// own talks to this node's own member only, when it is one: it
	// answers at once, or fails fast when it has lost its quorum (all
	// otherwise). The others talk to one other member each: owners send
	// every write through own and them at once (see
	// coord.OwnerConfig.Alternates).
	own    *clientv3.Client
	others []*clientv3.Client
}

func (cl *etcdClients) close() {
	if cl.own != cl.all {
		cl.own.Close()
	}
	for _, c := range cl.others {
		c.Close()
	}
	cl.all.Close()
}

// How long a starting agent waits for etcd per attempt.
const connectTimeout = 5 * time.Second

// newCoordination is the node's coordination in its region's scope.
func newCoordination(a *Agent, cfg *config.Config) *coordination {
	return &coordination{a: a, cfg: cfg, scope: cfg.CoordinationOf(a.opt.Node), connected: make(chan struct{}), gone: make(chan struct{}), up: make(chan struct{}), members: map[string]coord.MemberInfo{}}
}

// newGlobalCoordination is the node's coordination in the global scope, or
// nil when the node has no part in it: it is neither one of its members,
// nor a database node or a name server (which follows the active region)
// of a database that spans two regions.
func newGlobalCoordination(a *Agent, cfg *config.Config) *coordination {
	g := cfg.GlobalCoordination()
	if g == nil || !slices.Contains(g.Members, a.opt.Node) && !cfg.IsDatabaseNode(a.opt.Node) && !cfg.IsNameserver(a.opt.Node) {
		return nil
	}
	return &coordination{a: a, cfg: cfg, scope: g, global: true, connected: make(chan struct{}), gone: make(chan struct{}), up: make(chan struct{}), members: map[string]coord.MemberInfo{}}
}

// what names the scope in logs and readiness checks.
func (c *coordination) what(s string) string {
	if c.global {
		return s + " (global scope)"
	}
	return s
}

// onConnected registers a role to start once etcd answers; it runs until
// the coordination stops.
func (c *coordination) onConnected(start func(ctx context.Context, cl *etcdClients)) {
	c.starters = append(c.starters, start)
}

// startMember runs this node's embedded etcd member, when it is one, and
// returns how to stop it.
func (c *coordination) startMember() (func(), error) {
	if !slices.Contains(c.scope.Members, c.a.opt.Node) {
		return func() {}, nil
	}
	cfg := c.memberConfig()
	if coord.Removed(cfg.DataDir) {
		// Removed from its cluster (haven dr promote --force elsewhere):
		// the node goes on as the scope's client only.
		c.a.log.Warn(c.what("this node's etcd member was removed from its cluster; the node runs without it, as a client"), "data_dir", cfg.DataDir)
		return func() {}, nil
	}
	m, err := coord.NewMember(cfg)
	if err != nil {
		return nil, err
	}
	// Until its first run starts, the member is this one, not running
	// (its Endpoints are the runs'; it is never Ready).
	c.mu.Lock()
	c.member = m
	c.mu.Unlock()
	c.a.admin.AddReadiness(c.what("etcd member"), c.memberReady)
	c.runMember(cfg)
	return c.stopMember, nil
}

// runMember runs this node's member until stopMember, started again when
// it stops on its own (coord.Keep). The channel it returns is closed once
// the member serves; up is closed then too.
func (c *coordination) runMember(cfg coord.MemberConfig) <-chan struct{} {
	ctx, cancel := context.WithCancel(context.Background())
	done, ready := make(chan struct{}), make(chan struct{})
	var once sync.Once
	started := func(m *coord.Member) {
		c.mu.Lock()
		c.member = m
		c.mu.Unlock()
		go func() {
			select {
			case <-m.Ready():
				once.Do(func() { close(ready) })
				c.upOnce.Do(func() { close(c.up) })
			case <-ctx.Done():
			}
		}()
	}
	go func() {
		defer close(done)
		if err := coord.Keep(ctx, cfg, started); err != nil {
			c.a.log.Error(c.what("etcd member stopped"), "err", err)
			if errors.Is(err, coord.ErrRemoved) {
				c.memberRemoved()
			}
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.memberStop = func() { cancel(); <-done }
	return ready
}

// stopMember stops this node's member, if it runs, and waits for it.
func (c *coordination) stopMember() {
	c.mu.Lock()
	stop := c.memberStop
	c.memberStop = nil
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// memberRemoved turns this node into a client of its scope once its member
// was removed from it: the client of its own member talks to the others
// instead, and connect stops waiting for the member.
func (c *coordination) memberRemoved() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.removed {
		return
	}
	c.removed = true
	close(c.gone)
	if cl := c.clients; cl != nil && cl.own != cl.all {
		cl.own.SetEndpoints(c.endpoints()[1:]...)
	}
}

// ownMember returns this node's member, nil if it is none.
func (c *coordination) ownMember() *coord.Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.member
}

// errHasQuorum refuses forceAlone while the scope still has a quorum.
var errHasQuorum = errors.New("the scope has a quorum")

// forceAlone restarts this node's member, from its data, as the whole of
// its scope, every other member removed (coord.MemberConfig's
// ForceNewCluster), once the operator has decided that the scope's
// quorum is lost for good; it returns the removed members' names once the
// member serves again. It refuses while the member still reaches a
// quorum. The removed members stop when they reach it again (their data
// must then be wiped); the configuration still lists them, and until they
// are added back the scope has one member.
func (c *coordination) forceAlone(ctx context.Context) ([]string, error) {
	c.forceMu.Lock()
	defer c.forceMu.Unlock()
	if c.ownMember() == nil {
		return nil, fmt.Errorf("node %s runs no member of %s", c.a.opt.Node, c.what("etcd"))
	}
	own := c.endpoints()[:1]
	check, cancel := context.WithTimeout(ctx, connectTimeout)
	cli, err := coord.NewClient(check, coord.ClientConfig{Endpoints: own, TLS: c.tls(), DialTimeout: connectTimeout, Logger: c.a.log})
	cancel()
	if err == nil {
		cli.Close()
		return nil, fmt.Errorf("%w: this node's member answers with a leader", errHasQuorum)
	}
	removed := slices.DeleteFunc(slices.Clone(c.scope.Members), func(n string) bool { return n == c.a.opt.Node })
	c.a.log.Warn(c.what("forcing a new etcd cluster of this member alone: the operator declared the others lost"), "removed", removed, "quorum_check", err)
	cfg := c.memberConfig()
	cfg.ForceNewCluster = true
	c.stopMember()
	select {
	case <-c.runMember(cfg):
		return removed, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("the forced member did not serve in time (see the agent's log): %w", ctx.Err())
	}
}

// startPeerRoutes gives the routes to the coordination peers TCP's short
// retransmission floor (coordination.rto_min; see package peerroute) and
// returns how to take them back. Without the privilege it logs why and
// goes on with the kernel's default.
func (c *coordination) startPeerRoutes() (func(), error) {
	rto := c.scope.RTOMin.D()
	peers := c.peerAddrs()
	if rto >= config.KernelRTOMin || len(peers) == 0 {
		return func() {}, nil
	}
	r, err := peerroute.New(peerroute.Config{Peers: peers, RTOMin: rto, Logger: c.a.log})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := r.Run(ctx); err != nil {
			c.a.log.Warn("coordination.rto_min not applied: lost packets between the nodes wait out TCP's default 200ms floor", "err", err)
		}
	})
	return func() { cancel(); wg.Wait() }, nil
}

// peerAddrs are the addresses this node talks to etcd with: on a member,
// every other node (each one's agent is a client of this member); on any
// other node, the members, or the external endpoints given by address.
func (c *coordination) peerAddrs() []netip.Addr {
	cc := c.scope
	var hosts []string
	switch {
	case slices.Contains(cc.Members, c.a.opt.Node):
		for _, name := range c.cfg.NodeNames() {
			if name != c.a.opt.Node && c.reaches(name) {
				n, _ := c.cfg.Node(name)
				hosts = append(hosts, n.Address)
			}
		}
	case len(cc.Members) > 0:
		for _, name := range cc.Members {
			n, _ := c.cfg.Node(name)
			hosts = append(hosts, n.Address)
		}
	default:
		for _, ep := range cc.Endpoints {
			if u, err := url.Parse(ep); err == nil {
				hosts = append(hosts, u.Hostname())
			}
		}
	}
	var addrs []netip.Addr
	for _, h := range hosts {
		if a, err := netip.ParseAddr(h); err == nil && !slices.Contains(addrs, a.Unmap()) {
			addrs = append(addrs, a.Unmap())
		}
	}
	return addrs
}

// reaches reports whether node is a client of this scope: a node of a
// region that coordinates through it, or, for the global scope, one of its
// members or a database node.
func (c *coordination) reaches(node string) bool {
	if c.global {
		return slices.Contains(c.scope.Members, node) || c.cfg.IsDatabaseNode(node) || c.cfg.IsNameserver(node)
	}
	return c.cfg.CoordinationOf(node) == c.scope
}

// start connects in the background and then starts the registered roles.
func (c *coordination) start() {
	c.a.admin.AddReadiness(c.what("coordination"), func() error {
		if c.etcd() == nil {
			return fmt.Errorf("not connected to etcd at %s", strings.Join(c.endpoints(), ", "))
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Go(func() { c.connect(ctx) })
}

// stop stops the roles started on connection (owners hand over, the keeper
// stops postgres) and the membership record, then closes the clients. The
// member stops separately, after the balancers.
func (c *coordination) stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
	c.mu.Lock()
	cl := c.clients
	c.mu.Unlock()
	if cl != nil {
		cl.close()
	}
}

func (c *coordination) memberReady() error {
	select {
	case <-c.ownMember().Ready():
		return nil
	case <-c.gone:
		// Removed: the node works on as a client of its scope.
		return nil
	default:
		return errors.New("etcd member has not joined its cluster yet")
	}
}

// etcd returns the client of every member, or nil before it answers.
func (c *coordination) etcd() *clientv3.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.clients == nil {
		return nil
	}
	return c.clients.all
}

// waitClients returns the clients once etcd answers, or ctx's error if it
// ends first.
func (c *coordination) waitClients(ctx context.Context) (*etcdClients, error) {
	select {
	case <-c.connected:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.clients, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// waitEtcd returns the client of every member once etcd answers, or ctx's
// error if it ends first.
func (c *coordination) waitEtcd(ctx context.Context) (*clientv3.Client, error) {
	select {
	case <-c.connected:
		return c.etcd(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// nodeFile replaces {node} in a configured path.
func (c *coordination) nodeFile(p string) string {
	return config.NodePath(p, c.a.opt.Node)
}

func (c *coordination) tls() *coord.TLSFiles {
	t := c.scope.TLS
	if t == nil {
		return nil
	}
	return &coord.TLSFiles{CA: c.nodeFile(t.CA), Cert: c.nodeFile(t.Cert), Key: c.nodeFile(t.Key)}
}

func (c *coordination) scheme() string {
	if c.scope.TLS != nil {
		return "https"
	}
	return "http"
}

func (c *coordination) memberConfig() coord.MemberConfig {
	cc := c.scope
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
		ClusterToken:      c.clusterToken(),
		TLS:               c.tls(),
		HeartbeatInterval: cc.Heartbeat.D(),
		ElectionTimeout:   cc.ElectionTimeout.D(),
		JoinTimeout:       cc.JoinTimeout.D(),
		Logger:            c.a.log,
	}
}

// clusterToken tells the scopes' etcd clusters apart: a member of one
// never joins another by mistake.
func (c *coordination) clusterToken() string {
	switch {
	case c.global:
		return c.cfg.Cluster + "-global"
	case c.scope != c.cfg.Coordination:
		self, _ := c.cfg.Node(c.a.opt.Node)
		return c.cfg.Cluster + "-" + self.Region
	}
	return c.cfg.Cluster
}

// endpoints lists the cluster's client URLs, this node's own member first.
func (c *coordination) endpoints() []string {
	cc := c.scope
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

// connect retries until etcd answers, then starts what needs it.
func (c *coordination) connect(ctx context.Context) {
	log := c.a.log
	var all *clientv3.Client
	for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		cctx, cancel := context.WithTimeout(ctx, connectTimeout)
		cli, err := coord.NewClient(cctx, coord.ClientConfig{Endpoints: c.endpoints(), TLS: c.tls(), DialTimeout: connectTimeout, Logger: log})
		cancel()
		if err == nil {
			all = cli
			log.Info(c.what("connected to etcd"), "endpoints", c.endpoints())
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
	cl := &etcdClients{all: all, own: all}
	if c.ownMember() != nil {
		select {
		case <-c.up:
		case <-c.gone:
		case <-ctx.Done():
			all.Close()
			return
		}
		own, err := coord.NewClient(ctx, coord.ClientConfig{Endpoints: c.endpoints()[:1], TLS: c.tls(), DialTimeout: connectTimeout, Logger: log})
		if err != nil {
			log.Warn("cannot connect to this node's own etcd member; owners write through every member", "err", err)
		} else {
			cl.own = own
			cl.others = c.memberClients(ctx, c.endpoints()[1:])
		}
	}
	c.mu.Lock()
	if c.removed && cl.own != cl.all {
		cl.own.SetEndpoints(c.endpoints()[1:]...)
	}
	c.clients = cl
	c.mu.Unlock()
	close(c.connected)
	if c.global {
		// The membership records stay in each region's scope.
		for _, start := range c.starters {
			c.wg.Go(func() { start(ctx, cl) })
		}
		return
	}
	c.wg.Go(func() { c.publish(ctx, all) })
	c.wg.Go(func() {
		_ = coord.WatchMembers(ctx, all, c.cfg.Cluster, func(m map[string]coord.MemberInfo) {
			c.mu.Lock()
			c.members = m
			c.mu.Unlock()
		})
	})
	for _, start := range c.starters {
		c.wg.Go(func() { start(ctx, cl) })
	}
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

// publish keeps this node's membership record, with the state of its roles
// that traffic targets may follow (traffic.records.*.targets[].follows),
// until ctx ends.
func (c *coordination) publish(ctx context.Context, cli *clientv3.Client) {
	self, _ := c.cfg.Node(c.a.opt.Node)
	p, err := coord.NewPublisher(coord.PublisherConfig{
		Client:  cli,
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
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			for name, up := range c.a.followedStates() {
				p.SetCheck(name, upDown(up))
			}
			if c.ownMember() != nil {
				p.SetCheck(coord.EtcdDiskState, upDown(!c.diskSlow.Load()))
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

// roles lists what this node does, for its membership record.
func (c *coordination) roles() []string {
	var roles []string
	if slices.Contains(c.scope.Members, c.a.opt.Node) {
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
