// Package agent runs the roles that haven.yaml assigns to one node, wires
// them to the admin server, reloads them on request and stops them in order.
package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/events"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/opstate"
	"github.com/haven-ha/haven/internal/vip"
	"github.com/haven-ha/haven/internal/web"
)

// Options configure an Agent.
type Options struct {
	ConfigPath string
	Node       string
	Logger     *slog.Logger
	Version    string
	// Started, when set, is called once the node's roles have started:
	// systemd's READY=1.
	Started func()
}

// Agent is one node's haven.
type Agent struct {
	opt   Options
	log   *slog.Logger
	reg   *prometheus.Registry
	lbm   *lb.Metrics
	hm    *health.Metrics
	vipm  *vip.Metrics
	admin *web.Server
	// timeline is the cluster's event timeline as this node sees it.
	timeline *events.Log
	console  *consoleHub // the dashboard's views
	reloads  *reloadMetrics

	reloadMu    sync.Mutex // serialises reloads
	mu          sync.Mutex // guards what follows
	cfg         *config.Config
	ctx         context.Context
	running     map[string]*runningBalancer
	failed      map[string]bool // balancers whose last start failed: not ready
	events      []health.Event
	roles       roles
	traffic     *trafficRole   // set by Run on a name server
	faults      *fault.Manager // set by Run when drills.enabled
	drillm      *drillMetrics
	drillSchedm *drillSchedMetrics
	drillSched  *drillScheduler // set by Run when drills.schedule runs here
	// overrides are the operator's records (drains, weights) as last
	// read from etcd; overridesSeen is set once they have been read.
	overrides     []opstate.Record
	overridesSeen bool
	dnsDrains     map[string]time.Time // the traffic names' drains in etcd, by gtm.DrainKey
	dnsApplyMu    sync.Mutex           // serialises applyDNSDrains
	applyMu       sync.Mutex           // serialises applyOverrides
	// started is when New ran, in /api/v1/status: a restarted agent keeps
	// its pid and answers with a later one. restartc carries a restart
	// asked through the admin API to Run.
	started    time.Time
	restartc   chan struct{}
	restarting atomic.Bool // a restart was accepted
}

// roles are the parts of the agent that start once, with Run, when
// haven.yaml gives them to the node (nil otherwise); a change to their
// sections needs a restart. Handlers read them through current.
type roles struct {
	coord   *coordination // the coordination section: the node's region's scope
	global  *coordination // the global scope, when the node has a part in it
	vips    *floating     // this node's balancers' floating addresses
	db      *dbRole       // a database node (PostgreSQL)
	galera  *galeraRole   // a database node (Galera)
	backup  *backupRole   // a database node with backup repositories
	router  *dbRouter     // a database router
	volumes *volumeRole   // a storage or mount node of a volume
}

type runningBalancer struct {
	b      *lb.Balancer
	cancel context.CancelFunc
	done   chan error
}

const maxEvents = 200

// New loads the configuration and checks that it assigns roles to the
// node; nothing starts until Run.
func New(opt Options) (*Agent, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	cfg, err := config.Load(opt.ConfigPath)
	if err != nil {
		return nil, err
	}
	node, ok := cfg.Node(opt.Node)
	if !ok {
		return nil, fmt.Errorf("agent: node %q is not in %s (nodes: %v)", opt.Node, opt.ConfigPath, cfg.NodeNames())
	}
	reg := prometheus.NewRegistry()
	timeline := events.New(events.Options{Cluster: cfg.Cluster, Node: opt.Node, Registerer: reg})
	if cfg.Coordination == nil {
		timeline.KeepLocal() // no etcd to keep the cluster's
	}
	// Every log record marked as an event is in the timeline too.
	log := slog.New(events.Tee(opt.Logger.Handler(), timeline)).With("node", opt.Node)
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "haven_build_info",
		Help:        "Always 1; labels tell the version and Go version of the running haven.",
		ConstLabels: prometheus.Labels{"version": opt.Version, "goversion": runtime.Version(), "node": opt.Node},
	})
	info.Set(1)
	reg.MustRegister(info)
	a := &Agent{
		opt:      opt,
		log:      log,
		timeline: timeline,
		reg:      reg,
		lbm:      lb.NewMetrics(reg),
		hm:       health.NewMetrics(reg),
		vipm:     vip.NewMetrics(reg),
		cfg:      cfg,
		running:  make(map[string]*runningBalancer),
		failed:   make(map[string]bool),
		started:  time.Now(),
		restartc: make(chan struct{}, 1),
	}
	adminTLS, err := adminServerTLS(cfg, opt.Node)
	if err != nil {
		return nil, err
	}
	a.admin, err = web.New(web.Options{
		Addr:              node.Admin,
		TokenFile:         cfg.Admin.TokenFile,
		ReadTokenFile:     cfg.Admin.ReadTokenFile,
		AuthenticateReads: cfg.Admin.AuthenticateReads,
		TLS:               adminTLS,
		Gatherer: prometheus.Gatherers{reg, etcdGatherer{g: prometheus.DefaultGatherer, member: func() bool {
			rs := a.current()
			return rs.coord != nil && rs.coord.ownMember() != nil
		}}},
		Logger: log,
		Info: map[string]any{"node": opt.Node, "cluster": cfg.Cluster, "version": opt.Version, "config": opt.ConfigPath,
			"pid": os.Getpid(), "started": a.started},
	})
	if err != nil {
		return nil, err
	}
	reg.MustRegister(newObjectivesCollector(a))
	a.reloads = newReloadMetrics(reg, a.started)
	reg.MustRegister(newCertCollector(a))
	a.drillm = newDrillMetrics(reg, a)
	a.drillSchedm = newDrillSchedMetrics(reg)
	a.routes()
	return a, nil
}

// Run starts the node's roles and the admin server and runs until ctx ends;
// then it announces lameduck and stops the roles gracefully, last started
// first (see stack).
func (a *Agent) Run(ctx context.Context) error {
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAdmin()
	adminDone := make(chan error, 1)
	go func() { adminDone <- a.admin.Run(adminCtx) }()

	st := &stack{log: a.log}
	err := a.start(st)
	if err == nil {
		if a.opt.Started != nil {
			a.opt.Started()
		}
		a.log.Info("agent started", "event", "agent", "version", a.opt.Version, "pid", os.Getpid())
		select {
		case <-ctx.Done():
		case <-a.restartc:
			err = ErrRestart
		case err = <-adminDone:
			adminDone <- nil
		}
		a.log.Info("agent stopping", "event", "agent", "restart", errors.Is(err, ErrRestart))
		a.admin.SetLameduck()
	}
	st.unwind()
	stopAdmin()
	<-adminDone
	if err == nil || errors.Is(err, ErrRestart) {
		a.log.Info("agent stopped", "restart", err != nil)
	}
	return err
}

// start starts the node's roles, pushing each one's stop on st. Holding
// reloadMu, a reload (SIGHUP) that arrives meanwhile waits for the first
// apply instead of starting the same balancers a second time.
func (a *Agent) start(st *stack) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	roleCtx, stopRoles := context.WithCancel(context.Background())
	a.mu.Lock()
	a.ctx = roleCtx
	cfg := a.cfg
	a.mu.Unlock()
	st.push("roles context", stopRoles)

	var rs roles
	if cfg.Coordination != nil {
		rs.coord = newCoordination(a, cfg)
		stopRoutes, err := rs.coord.startPeerRoutes()
		if err != nil {
			return err
		}
		st.push("peer routes", stopRoutes)
		stopMember, err := rs.coord.startMember()
		if err != nil {
			return err
		}
		// The member stops last: the balancers' addresses are handed over
		// through it, and their clients drain meanwhile.
		st.push("etcd member", stopMember)
		if rs.global = newGlobalCoordination(a, cfg); rs.global != nil {
			stopGlobal, err := rs.global.startMember()
			if err != nil {
				return err
			}
			st.push("etcd member (global scope)", stopGlobal)
		}
	}
	st.push("balancers", func() {
		a.reloadMu.Lock()
		defer a.reloadMu.Unlock()
		a.stopBalancers()
	})
	if rs.coord != nil && len(cfg.BalancersOn(a.opt.Node)) > 0 {
		// The operator's drains before the balancers take traffic.
		a.preloadOverrides(rs.coord)
	}
	if err := a.apply(cfg); err != nil {
		return err
	}
	if rs.coord != nil {
		if err := a.startCoordinated(cfg, &rs, st); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.roles = rs
	a.mu.Unlock()

	if cfg.Traffic != nil && slices.Contains(cfg.Traffic.Nameservers, a.opt.Node) {
		// The operator's drains before the name server answers.
		if c := a.dnsScope(); c != nil {
			a.preloadDNSDrains(c)
		}
	}
	tr, err := a.startTraffic(cfg)
	if err != nil {
		return err
	}
	a.setTraffic(tr)
	st.push("traffic manager", func() {
		a.reloadMu.Lock() // a reload may have started or stopped the role
		a.mu.Lock()
		tr, a.traffic = a.traffic, nil
		a.mu.Unlock()
		a.reloadMu.Unlock()
		tr.stop(a)
	})
	if len(cfg.BalancersOn(a.opt.Node)) == 0 && cfg.Coordination == nil && tr == nil {
		a.log.Warn("this node has no role yet: it only serves its admin API", "admin", a.nodeAdmin())
	}
	return a.startDrills(cfg, st)
}

// startCoordinated starts the roles that coordinate through etcd: the
// floating addresses (silent until held), the database's postgres, the
// database router, and then the connection to etcd, which starts their
// owners, keeper and routes once etcd answers. Errors an operator must fix
// (no interface for an address, no nftables, no PostgreSQL) fail it.
func (a *Agent) startCoordinated(cfg *config.Config, rs *roles, st *stack) error {
	var err error
	if rs.vips, err = newFloating(a, cfg); err != nil {
		return err
	}
	if rs.vips != nil {
		if err := rs.vips.start(); err != nil {
			return err
		}
		st.push("floating addresses", rs.vips.stop)
		rs.coord.onConnected(rs.vips.compete)
	}
	rs.coord.onConnected(a.watchOverrides)
	rs.coord.onConnected(a.runTimeline)
	if rs.coord.ownMember() != nil {
		rs.coord.onConnected(func(ctx context.Context, cl *etcdClients) {
			// rs is complete by the time etcd answers.
			rs.coord.steerLeader(ctx, cl, rs.heldSingletons)
		})
	}
	if s := newDrillScheduler(a, cfg); s != nil {
		a.mu.Lock()
		a.drillSched = s
		a.mu.Unlock()
		rs.coord.onConnected(s.run)
	}
	if rs.db, err = newDatabase(context.Background(), a, cfg); err != nil {
		return err
	}
	if rs.db != nil {
		rs.db.global = rs.global
	}
	if rs.db != nil {
		rs.coord.onConnected(rs.db.keep)
		archive, err := newArchive(a, cfg, rs.db)
		if err != nil {
			return err
		}
		if archive != nil {
			rs.coord.onConnected(archive.run)
		}
		if rs.backup, err = newBackup(a, cfg, rs.db); err != nil {
			return err
		}
		if rs.backup != nil {
			if archive != nil {
				// One claim of the repository for the archiver and the
				// backups alike.
				rs.backup.arch, archive.claim = archive, rs.backup.claim
			}
			rs.coord.onConnected(rs.backup.run)
		}
	}
	if rs.galera, err = newGalera(a, cfg); err != nil {
		return err
	}
	if rs.galera != nil {
		rs.coord.onConnected(rs.galera.run)
	}
	if rs.router, err = newRouter(a, cfg); err != nil {
		return err
	}
	if rs.router != nil {
		if err := rs.router.start(); err != nil {
			return err
		}
		// One router per agent: its role starts once.
		if err := a.reg.Register(newRouterCollector(rs.router)); err != nil {
			a.log.Warn("database router: metrics not registered", "err", err)
		}
		st.push("database router", rs.router.close)
		rs.coord.onConnected(rs.router.follow)
	}
	if rs.volumes, err = newVolumes(a, cfg); err != nil {
		return err
	}
	if rs.volumes != nil {
		st.push("volumes", rs.volumes.start(rs.coord))
	}
	if rs.global != nil {
		if cfg.Traffic != nil && slices.Contains(cfg.Traffic.Nameservers, a.opt.Node) {
			rs.global.onConnected(a.watchDNSDrains)
		}
		// Stopped after the region's roles: the keeper leaves the
		// active-region record on its way out.
		rs.global.start()
		st.push("coordination (global scope)", rs.global.stop)
	}
	// Stopped first of these: the owners hand over while the balancers
	// still serve, and the keeper stops postgres.
	rs.coord.start()
	st.push("coordination", rs.coord.stop)
	return nil
}

// heldSingletons are this node's roles that hold a singleton whose
// takeover must not wait for an etcd election too.
func (rs *roles) heldSingletons() []heldSingleton {
	var out []heldSingleton
	if rs.vips != nil {
		out = append(out, rs.vips)
	}
	if rs.galera != nil {
		out = append(out, rs.galera)
	}
	return out
}

// current returns the roles Run started (all nil before).
func (a *Agent) current() roles {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.roles
}

// config returns the configuration in force.
func (a *Agent) config() *config.Config {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cfg
}

// followedStates is the state of this node's roles that traffic targets
// may follow: each balancer is up when it is ready, each floating address
// when this node holds it, the database when this node is its serving
// primary.
func (a *Agent) followedStates() map[string]bool {
	states := map[string]bool{}
	for _, st := range a.Balancers() {
		b, err := a.balancer(st.Name)
		states[coord.BalancerState(st.Name)] = err == nil && b.Ready() == nil
	}
	rs := a.current()
	if rs.vips != nil {
		for _, r := range rs.vips.roles {
			states[coord.VIPState(r.balancer)] = r.mgr.Status().State == vip.StateHolder
		}
	}
	if rs.db != nil {
		states[coord.DatabaseState] = rs.db.servesPrimary()
	}
	if rs.galera != nil {
		states[coord.DatabaseState] = rs.galera.serves()
	}
	return states
}

func (a *Agent) nodeAdmin() string {
	n, _ := a.cfg.Node(a.opt.Node)
	return n.Admin
}

// Reload reads the configuration again and applies it: balancers are
// added, removed, reconfigured in place (keeping connections and health
// state) or restarted when their listener changed; the traffic manager
// changes its names in place. An invalid file is
// rejected and the running configuration stays.
func (a *Agent) Reload() error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	err := a.reload()
	a.reloads.record(err, time.Now())
	return err
}

func (a *Agent) reload() error {
	cfg, err := config.Load(a.opt.ConfigPath)
	if err != nil {
		a.log.Error("reload rejected: the running configuration stays", "event", "reload", "err", err)
		return fmt.Errorf("reload rejected, the running configuration stays: %w", err)
	}
	if _, ok := cfg.Node(a.opt.Node); !ok {
		err := fmt.Errorf("reload rejected, the running configuration stays: node %q is no longer in %s", a.opt.Node, a.opt.ConfigPath)
		a.log.Error(err.Error(), "event", "reload")
		return err
	}
	a.mu.Lock()
	running := a.ctx != nil
	if !running {
		a.cfg = cfg // not running (yet, or any more): Run applies it
	}
	a.mu.Unlock()
	if !running {
		a.log.Info("configuration reloaded; nothing runs yet", "event", "reload")
		return nil
	}
	if err := a.apply(cfg); err != nil {
		a.log.Error("reload failed", "event", "reload", "err", err)
		return err
	}
	if db := a.current().db; db != nil && cfg.IsDatabaseNode(a.opt.Node) {
		if err := db.reconfigure(cfg); err != nil {
			a.log.Error("reload failed: postgres keeps its settings", "event", "reload", "err", err)
			return fmt.Errorf("reload: %w", err)
		}
	}
	trafficRestart, err := a.reloadTraffic(cfg)
	if err != nil {
		a.log.Error("reload failed: the traffic manager keeps its configuration", "event", "reload", "err", err)
		return fmt.Errorf("reload: traffic: %w", err)
	}
	a.mu.Lock()
	if changed := append(restartOnly(a.cfg, cfg, a.opt.Node), trafficRestart...); len(changed) > 0 {
		a.log.Warn("reload: these changes take effect when the agent restarts", "event", "reload", "changed", changed)
	}
	a.cfg = cfg
	a.mu.Unlock()
	a.log.Info("configuration reloaded", "event", "reload")
	return nil
}

// restartOnly lists what differs between old and cfg that a reload does
// not apply: coordination, this node's floating addresses, the database
// section but for its settings, and the volumes.
func restartOnly(old, cfg *config.Config, node string) []string {
	var changed []string
	if !reflect.DeepEqual(old.Coordination, cfg.Coordination) {
		changed = append(changed, "coordination")
	}
	vips := func(c *config.Config) map[string]*config.VIP {
		m := map[string]*config.VIP{}
		for _, b := range c.BalancersOn(node) {
			m[b.Name] = b.VIP
		}
		return m
	}
	if !reflect.DeepEqual(vips(old), vips(cfg)) {
		changed = append(changed, "vip")
	}
	switch {
	case cfg.Database != nil && cfg.Database.Engine == "galera":
		// A Galera node's my.cnf is written from the configuration it
		// started with: every change waits for the agent's restart.
		if !reflect.DeepEqual(old.Database, cfg.Database) {
			changed = append(changed, "database (a Galera node applies every change at its agent's restart)")
		}
	case databaseRestartOnly(old.Database, cfg.Database):
		changed = append(changed, "database (all but settings and hba, which a reload applies)")
	}
	if !reflect.DeepEqual(old.Volumes, cfg.Volumes) {
		changed = append(changed, "volumes")
	}
	return changed
}

// adminServerTLS is the admin listener's TLS configuration: node's
// certificate from admin.tls, nil without it.
func adminServerTLS(cfg *config.Config, node string) (*tls.Config, error) {
	t := cfg.Admin.TLS
	if t == nil {
		return nil, nil
	}
	pair, err := tls.LoadX509KeyPair(config.NodePath(t.Cert, node), config.NodePath(t.Key, node))
	if err != nil {
		return nil, fmt.Errorf("admin.tls: node %s's certificate: %w (haven certs -c haven.yaml -o certs/ makes it; copy it to the node)", node, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, nil
}

// Alive says whether the agent's state lock can be taken within ctx: a
// goroutine stuck holding it stalls every reload, status and admin call,
// and the systemd watchdog stops its keep-alives on that. It sees only
// that lock: a role's own loop that hangs is its readiness's business.
// Not ready is not dead: a node whose roles are not ready yet is alive.
func (a *Agent) Alive(ctx context.Context) error {
	for {
		if a.mu.TryLock() {
			a.mu.Unlock()
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("the agent's state lock has been held longer than the watchdog allows")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// NotReady lists the components that are not ready, as /readyz does, for
// tests and the demo.
func (a *Agent) NotReady() []string { return a.admin.NotReady() }
