package agent

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/galera"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

// dbRouter proxies the database's clients on a router node: a TCP
// balancer per pool (primary, replicas) whose backends follow etcd. While
// a pool has no node (a failover, or before the first routes) it holds new
// connections for database.router_hold and hands them to the node that
// arrives; a connection being made to a node that leaves the pool moves at
// once (lb does both: RouterBalancer sets the hold).
type dbRouter struct {
	a      *Agent
	cfg    *config.Config // as the agent started: a change needs a restart
	pools  []*routerPool
	mu     sync.Mutex
	routes keeper.Routes
	served sync.WaitGroup
	cancel context.CancelFunc
	// primaryChanges counts the primary pool's changes of node.
	primaryChanges atomic.Uint64
}

// routerPool is one of the router's balancers and its listener.
type routerPool struct {
	name   string // primary | replicas
	listen string
	bc     *config.Balancer // as haven.yaml makes it, without backends
	b      *lb.Balancer
	ln     net.Listener // bound by start
}

// newRouter makes the router's balancers when haven.yaml makes this node
// a router, and returns nil otherwise. It binds nothing yet.
func newRouter(a *Agent, cfg *config.Config) (*dbRouter, error) {
	if !cfg.RoutesOn(a.opt.Node) {
		return nil, nil
	}
	r := &dbRouter{a: a, cfg: cfg}
	for _, name := range []string{"primary", "replicas"} {
		bc := cfg.Database.RouterBalancer(name)
		if bc == nil {
			continue
		}
		b, err := lb.New(bc, nil, lb.Options{Logger: a.log, Metrics: a.lbm})
		if err != nil {
			return nil, err
		}
		r.pools = append(r.pools, &routerPool{name: name, listen: bc.Listen, bc: bc, b: b})
	}
	return r, nil
}

// start binds the router's listeners, so that a busy address fails the
// start, and serves them: with empty pools (connections are held, then
// closed) until the first routes arrive from etcd.
func (r *dbRouter) start() error {
	for _, p := range r.pools {
		ln, err := lb.Listen(p.listen)
		if err != nil {
			r.close()
			return fmt.Errorf("database.listen.%s: listen %s: %w", p.name, p.listen, err)
		}
		p.ln = ln
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	for _, p := range r.pools {
		r.served.Go(func() {
			if err := p.b.Serve(ctx, p.ln); err != nil {
				r.a.log.Error("database router stopped", "pool", p.name, "err", err)
			}
		})
	}
	return nil
}

// follow feeds the router's pools from etcd until ctx ends.
func (r *dbRouter) follow(ctx context.Context, cl *etcdClients) {
	db := r.cfg.Database
	if db.Engine == "galera" {
		_ = galera.WatchRoutes(ctx, cl.all, r.cfg.Cluster, dbName, db.Galera.Writers == "all", func(g galera.Routes) {
			r.set(galeraRoutes(g))
		})
		return
	}
	_ = keeper.WatchRoutes(ctx, cl.all, r.cfg.Cluster, dbName, uint64(db.ReplicaMaxLag), r.set)
}

// galeraRoutes are a Galera database's routes as the router's pools take
// them: the writer (or every writer) in the primary pool, every serving
// node in the replicas pool.
func galeraRoutes(g galera.Routes) keeper.Routes {
	rt := keeper.Routes{Replicas: g.Readers, Addrs: g.ReaderAddrs}
	if len(g.Writers) > 0 {
		rt.Primary, rt.PrimaryAddr = g.Writers[0], g.WriterAddrs[0]
		rt.MoreWriters, rt.MoreWriterAddrs = g.Writers[1:], g.WriterAddrs[1:]
	}
	return rt
}

// set gives the pools their new backends. The primary's pool closes the
// connections it still has to a former primary, moves those it is still
// making to it, and hands the connections it holds to the new one.
func (r *dbRouter) set(rt keeper.Routes) {
	r.mu.Lock()
	old := r.routes
	r.routes = rt
	r.mu.Unlock()
	for _, p := range r.pools {
		if err := p.b.Reload(poolConfig(p.name, p.bc, rt, r.cfg.Database.DR), nil); err != nil {
			r.a.log.Error("database router: cannot apply the routes", "pool", p.name, "err", err)
		}
	}
	if old.Primary != rt.Primary {
		r.primaryChanges.Add(1)
		r.a.log.Info("database router: primary changed", "event", "database", "from", old.Primary, "to", rt.Primary, "replicas", rt.Replicas)
	}
}

// routerCollector exports where the router sends clients now: the
// pools' own traffic is in the haven_lb_ families (balancers
// database-primary and database-replicas).
type routerCollector struct {
	r                          *dbRouter
	primary, replicas, changes *prometheus.Desc
}

func newRouterCollector(r *dbRouter) *routerCollector {
	return &routerCollector{
		r: r,
		primary: prometheus.NewDesc("haven_router_primary",
			"1 for the node the database router's primary pool sends clients to now; absent while it has none (clients are held, then refused).", []string{"node"}, nil),
		replicas: prometheus.NewDesc("haven_router_replicas",
			"Replicas the database router's replicas pool sends clients to now (running, within database.replica_max_lag).", nil, nil),
		changes: prometheus.NewDesc("haven_router_primary_changes_total",
			"Times the database router's primary pool changed its node (failovers and switchovers as this router saw them).", nil, nil),
	}
}

func (c *routerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.primary
	ch <- c.replicas
	ch <- c.changes
}

func (c *routerCollector) Collect(ch chan<- prometheus.Metric) {
	rt := c.r.Routes()
	if rt.Primary != "" && rt.PrimaryAddr != "" {
		ch <- prometheus.MustNewConstMetric(c.primary, prometheus.GaugeValue, 1, rt.Primary)
	}
	ch <- prometheus.MustNewConstMetric(c.replicas, prometheus.GaugeValue, float64(len(rt.Replicas)))
	ch <- prometheus.MustNewConstMetric(c.changes, prometheus.CounterValue, float64(c.r.primaryChanges.Load()))
}

// poolConfig is the router pool's balancer bc with the backends the routes
// rt give it: the primary, or the replicas close enough behind it. In a
// standby region (database.dr) the primary pool is empty and refuses at
// once rather than hold connections for a primary that will not come
// (clients go to the active region, by the traffic manager's answer or
// their own list), and the replicas pool serves the standby cluster only
// with dr.read_only_pool.
func poolConfig(pool string, bc *config.Balancer, rt keeper.Routes, dr *config.DR) *config.Balancer {
	c := *bc
	c.Backends = nil
	switch {
	case pool == "primary" && rt.PrimaryAddr != "":
		c.Backends = append(c.Backends, routeBackend(rt.Primary, rt.PrimaryAddr))
		for i, n := range rt.MoreWriters {
			c.Backends = append(c.Backends, routeBackend(n, rt.MoreWriterAddrs[i]))
		}
	case pool == "replicas" && (!rt.Standby || dr != nil && dr.ReadOnlyPool):
		for i, n := range rt.Replicas {
			c.Backends = append(c.Backends, routeBackend(n, rt.Addrs[i]))
		}
	}
	if rt.Standby {
		c.Hold = 0
	}
	return &c
}

func routeBackend(node, addr string) *config.Backend {
	return &config.Backend{Name: node, Address: addr, Weight: new(1)}
}

// Routes returns the routes the router applies now.
func (r *dbRouter) Routes() keeper.Routes {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.routes
}

func (r *dbRouter) statuses() []lb.Status {
	var out []lb.Status
	for _, p := range r.pools {
		out = append(out, p.b.Status())
	}
	return out
}

// close stops the pools: their client connections are closed (a router
// that stops cannot keep routing them), then the listeners.
func (r *dbRouter) close() {
	for _, p := range r.pools {
		if r.cancel == nil {
			if p.ln != nil {
				p.ln.Close() // never served
			}
			continue
		}
		_ = p.b.SetBackends(nil)
	}
	if r.cancel != nil {
		r.cancel()
	}
	r.served.Wait()
}
