// Package agent runs the roles that haven.yaml assigns to one node, wires
// them to the admin server, reloads them on request and stops them in order.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/vip"
	"github.com/haven-ha/haven/internal/web"
)

// Options configure an Agent.
type Options struct {
	ConfigPath string
	Node       string
	Logger     *slog.Logger
	Version    string
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

	reloadMu sync.Mutex // serialises reloads
	mu       sync.Mutex // guards what follows
	cfg      *config.Config
	ctx      context.Context
	running  map[string]*runningBalancer
	failed   map[string]bool // balancers whose last start failed: not ready
	events   []health.Event
	coord    *coordination // set by Run
	traffic  *trafficRole  // set by Run on a name server
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
	log := opt.Logger.With("node", opt.Node)
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "haven_build_info",
		Help:        "Always 1; labels tell the version and Go version of the running haven.",
		ConstLabels: prometheus.Labels{"version": opt.Version, "goversion": runtime.Version(), "node": opt.Node},
	})
	info.Set(1)
	reg.MustRegister(info)
	a := &Agent{
		opt:     opt,
		log:     log,
		reg:     reg,
		lbm:     lb.NewMetrics(reg),
		hm:      health.NewMetrics(reg),
		vipm:    vip.NewMetrics(reg),
		cfg:     cfg,
		running: make(map[string]*runningBalancer),
		failed:  make(map[string]bool),
	}
	a.admin, err = web.New(web.Options{
		Addr:      node.Admin,
		TokenFile: cfg.Admin.TokenFile,
		Gatherer:  reg,
		Logger:    log,
		Info:      map[string]any{"node": opt.Node, "cluster": cfg.Cluster, "version": opt.Version, "config": opt.ConfigPath},
	})
	if err != nil {
		return nil, err
	}
	a.routes()
	return a, nil
}

// Run starts the node's roles and the admin server and runs until ctx ends;
// then it announces lameduck and stops the roles gracefully.
func (a *Agent) Run(ctx context.Context) error {
	roleCtx, stopRoles := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRoles()
	adminCtx, stopAdmin := context.WithCancel(context.WithoutCancel(ctx))
	defer stopAdmin()
	adminDone := make(chan error, 1)
	go func() { adminDone <- a.admin.Run(adminCtx) }()

	// Holding reloadMu, a reload (SIGHUP) that arrives meanwhile waits for
	// the first apply instead of starting the same balancers a second time.
	a.reloadMu.Lock()
	a.mu.Lock()
	a.ctx = roleCtx
	cfg := a.cfg
	a.mu.Unlock()
	if err := a.apply(cfg); err != nil {
		a.stopRoles()
		a.reloadMu.Unlock()
		stopAdmin()
		<-adminDone
		return err
	}
	co, err := a.startCoordination(cfg)
	if err != nil {
		a.stopRoles()
		a.reloadMu.Unlock()
		stopAdmin()
		<-adminDone
		return err
	}
	tr, err := a.startTraffic(cfg)
	if err != nil {
		co.stop()
		a.stopRoles()
		co.stopMember()
		a.reloadMu.Unlock()
		stopAdmin()
		<-adminDone
		return err
	}
	a.mu.Lock()
	a.coord = co
	a.traffic = tr
	a.mu.Unlock()
	a.reloadMu.Unlock()
	balancers := cfg.BalancersOn(a.opt.Node)
	if len(balancers) == 0 && cfg.Coordination == nil && tr == nil {
		a.log.Warn("this node has no role yet: it only serves its admin API", "admin", a.nodeAdmin())
	}
	select {
	case <-ctx.Done():
	case err = <-adminDone:
		adminDone <- nil
	}
	a.log.Info("agent stopping")
	a.admin.SetLameduck()
	a.reloadMu.Lock() // a reload may have started or stopped the traffic role
	a.mu.Lock()
	tr, a.traffic = a.traffic, nil
	a.mu.Unlock()
	a.reloadMu.Unlock()
	tr.stop(a)
	// Floating addresses go first, handed over while this node's
	// balancers still serve; etcd goes last, after the balancers.
	co.stop()
	a.reloadMu.Lock()
	a.stopRoles()
	a.reloadMu.Unlock()
	co.stopMember()
	stopAdmin()
	<-adminDone
	a.log.Info("agent stopped")
	return err
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
	cfg, err := config.Load(a.opt.ConfigPath)
	if err != nil {
		a.log.Error("reload rejected: the running configuration stays", "err", err)
		return fmt.Errorf("reload rejected, the running configuration stays: %w", err)
	}
	if _, ok := cfg.Node(a.opt.Node); !ok {
		err := fmt.Errorf("reload rejected, the running configuration stays: node %q is no longer in %s", a.opt.Node, a.opt.ConfigPath)
		a.log.Error(err.Error())
		return err
	}
	a.mu.Lock()
	running := a.ctx != nil
	if !running {
		a.cfg = cfg // not running (yet, or any more): Run applies it
	}
	a.mu.Unlock()
	if !running {
		a.log.Info("configuration reloaded; nothing runs yet")
		return nil
	}
	if err := a.apply(cfg); err != nil {
		a.log.Error("reload failed", "err", err)
		return err
	}
	trafficRestart, err := a.reloadTraffic(cfg)
	if err != nil {
		a.log.Error("reload failed: the traffic manager keeps its configuration", "err", err)
		return fmt.Errorf("reload: traffic: %w", err)
	}
	a.mu.Lock()
	if changed := append(restartOnly(a.cfg, cfg, a.opt.Node), trafficRestart...); len(changed) > 0 {
		a.log.Warn("reload: these changes take effect when the agent restarts", "changed", changed)
	}
	a.cfg = cfg
	a.mu.Unlock()
	a.log.Info("configuration reloaded")
	return nil
}

// apply brings the running balancers in line with cfg.
func (a *Agent) apply(cfg *config.Config) error {
	want := map[string]*config.Balancer{}
	for _, bc := range cfg.BalancersOn(a.opt.Node) {
		want[bc.Name] = bc
	}
	a.mu.Lock()
	var stop []string
	for name, rb := range a.running {
		if bc, ok := want[name]; !ok || !rb.b.SameListener(bc) {
			stop = append(stop, name)
		}
	}
	for name := range a.failed {
		if want[name] == nil {
			delete(a.failed, name)
			a.admin.RemoveReadiness("balancer " + name)
		}
	}
	a.mu.Unlock()
	for _, name := range stop {
		a.stopBalancer(name)
	}
	var errs []error
	for name, bc := range want {
		check, _ := cfg.Check(bc.Check)
		a.mu.Lock()
		rb := a.running[name]
		a.mu.Unlock()
		if rb != nil {
			errs = append(errs, rb.b.Reload(bc, check))
			continue
		}
		errs = append(errs, a.startBalancer(bc, check))
	}
	return errors.Join(errs...)
}

func (a *Agent) startBalancer(bc *config.Balancer, check *config.Check) error {
	b, err := lb.New(bc, check, lb.Options{
		Logger:        a.log,
		Metrics:       a.lbm,
		HealthMetrics: a.hm,
		OnTransition:  a.recordEvent,
	})
	if err != nil {
		return err
	}
	// Bind here rather than in b.Run, so that a busy or invalid address
	// fails the start or the reload instead of leaving a balancer that
	// looks configured and never listens.
	ln, err := lb.Listen(bc.Listen)
	if err != nil {
		err = fmt.Errorf("lb: balancer %s: listen %s: %w", bc.Name, bc.Listen, err)
		a.mu.Lock()
		a.failed[bc.Name] = true
		a.mu.Unlock()
		a.admin.AddReadiness("balancer "+bc.Name, func() error { return err })
		return err
	}
	a.mu.Lock()
	delete(a.failed, bc.Name)
	ctx, cancel := context.WithCancel(a.ctx)
	rb := &runningBalancer{b: b, cancel: cancel, done: make(chan error, 1)}
	a.running[bc.Name] = rb
	a.mu.Unlock()
	go func() {
		err := b.Serve(ctx, ln)
		if err != nil {
			a.log.Error("balancer stopped with an error", "balancer", bc.Name, "err", err)
		}
		rb.done <- err
	}()
	a.admin.AddReadiness("balancer "+bc.Name, b.Ready)
	return nil
}

func (a *Agent) stopBalancer(name string) {
	a.mu.Lock()
	rb := a.running[name]
	delete(a.running, name)
	a.mu.Unlock()
	if rb == nil {
		return
	}
	a.admin.RemoveReadiness("balancer " + name)
	rb.cancel()
	<-rb.done
}

// stopRoles stops every balancer at once, so their lameduck periods
// overlap, and makes later reloads only record the configuration.
func (a *Agent) stopRoles() {
	a.mu.Lock()
	a.ctx = nil
	names := make([]string, 0, len(a.running))
	for n := range a.running {
		names = append(names, n)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Add(1)
		go func() { defer wg.Done(); a.stopBalancer(n) }()
	}
	wg.Wait()
}

func (a *Agent) recordEvent(ev health.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.events) >= maxEvents {
		a.events = slices.Delete(a.events, 0, len(a.events)-maxEvents+1)
	}
	a.events = append(a.events, ev)
}

// Events returns the recent health transitions of this node's targets.
func (a *Agent) Events() []health.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

func (a *Agent) balancer(name string) (*lb.Balancer, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rb := a.running[name]
	if rb == nil {
		names := make([]string, 0, len(a.running))
		for n := range a.running {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("no balancer %q runs on node %s (running: %v)", name, a.opt.Node, names)
	}
	return rb.b, nil
}

// Balancers returns the status of every balancer on this node.
func (a *Agent) Balancers() []lb.Status {
	a.mu.Lock()
	bs := make([]*lb.Balancer, 0, len(a.running))
	for _, rb := range a.running {
		bs = append(bs, rb.b)
	}
	a.mu.Unlock()
	out := make([]lb.Status, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.Status())
	}
	slices.SortFunc(out, func(x, y lb.Status) int { return cmpString(x.Name, y.Name) })
	return out
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (a *Agent) routes() {
	a.admin.SetStatus("balancers", func() any { return a.Balancers() })
	a.admin.SetStatus("events", func() any { return a.Events() })
	a.admin.HandleRead("GET /api/v1/balancers", func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, a.Balancers())
	})
	a.admin.HandleMutating("POST /api/v1/balancers/{balancer}/backends/{backend}/{action}", a.backendAction)
	a.admin.HandleMutating("POST /api/v1/balancers/{balancer}/backends/{backend}/weight/{weight}", a.backendWeight)
	a.admin.SetStatus("coordination", func() any {
		if co := a.coordination(); co != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			return co.status(ctx)
		}
		return nil
	})
	a.admin.HandleRead("GET /api/v1/vips", func(w http.ResponseWriter, r *http.Request) {
		vips := []VIPStatus{}
		if co := a.coordination(); co != nil {
			vips = co.vipStatuses()
		}
		web.WriteJSON(w, http.StatusOK, vips)
	})
	a.admin.HandleMutating("POST /api/v1/vips/{balancer}/move", a.withCoordination((*coordination).moveVIP))
	a.admin.HandleMutating("POST /api/v1/database/switchover", a.withCoordination((*coordination).switchover))
	a.admin.HandleMutating("POST /api/v1/traffic/{name}/{target}/{action}", a.trafficAction)
	a.databaseRoutes()
	a.pprofRoutes()
	a.admin.HandleMutating("POST /api/v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := a.Reload(); err != nil {
			web.WriteError(w, http.StatusUnprocessableEntity, err)
			return
		}
		web.WriteJSON(w, http.StatusOK, map[string]string{"result": "reloaded"})
	})
}

// pprofRoutes serves Go's profiler on the admin port while admin.pprof
// is set (a reload turns it on or off): CPU and heap profiles, goroutines
// and traces of a running agent, to find where time goes under load. Off
// loopback it needs the admin token, as a mutating call does: a profile
// costs CPU and shows the process's internals.
func (a *Agent) pprofRoutes() {
	on := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			enabled := a.cfg.Admin.Pprof
			a.mu.Unlock()
			if !enabled {
				web.WriteError(w, http.StatusNotFound, errors.New("the profiler is off: set admin.pprof: true in haven.yaml and reload"))
				return
			}
			h(w, r)
		}
	}
	a.admin.HandleMutating("GET /debug/pprof/", on(pprof.Index))
	a.admin.HandleMutating("GET /debug/pprof/cmdline", on(pprof.Cmdline))
	a.admin.HandleMutating("GET /debug/pprof/profile", on(pprof.Profile))
	a.admin.HandleMutating("GET /debug/pprof/symbol", on(pprof.Symbol))
	a.admin.HandleMutating("GET /debug/pprof/trace", on(pprof.Trace))
}

// withCoordination serves h with the node's coordination, or 503 while the
// agent is starting.
func (a *Agent) withCoordination(h func(*coordination, http.ResponseWriter, *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		co := a.coordination()
		if co == nil {
			web.WriteError(w, http.StatusServiceUnavailable, errors.New("the agent is starting"))
			return
		}
		h(co, w, r)
	}
}

func (a *Agent) backendAction(w http.ResponseWriter, r *http.Request) {
	b, err := a.balancer(r.PathValue("balancer"))
	if err != nil {
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	st, ok := lb.ParseAdminState(r.PathValue("action"))
	if !ok {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("action %q is not one of drain, maint, enable", r.PathValue("action")))
		return
	}
	if err := b.SetState(r.PathValue("backend"), st); err != nil {
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	a.writeBackend(w, b, r.PathValue("backend"))
}

func (a *Agent) backendWeight(w http.ResponseWriter, r *http.Request) {
	b, err := a.balancer(r.PathValue("balancer"))
	if err != nil {
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	n, err := strconv.Atoi(r.PathValue("weight"))
	if err != nil || n < 0 || n > 256 {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("weight %q is not a number 0-256", r.PathValue("weight")))
		return
	}
	if err := b.SetWeight(r.PathValue("backend"), n); err != nil {
		// The weight is in range: what is wrong is the backend's name.
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	a.writeBackend(w, b, r.PathValue("backend"))
}

func (a *Agent) writeBackend(w http.ResponseWriter, b *lb.Balancer, name string) {
	for _, bs := range b.Status().Backends {
		if bs.Name == name || bs.Address == name {
			web.WriteJSON(w, http.StatusOK, bs)
			return
		}
	}
	web.WriteJSON(w, http.StatusOK, map[string]string{"result": "ok"})
}

// restartOnly lists what differs between old and cfg that a reload does
// not apply: coordination, and this node's floating addresses.
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
	return changed
}

func (a *Agent) coordination() *coordination {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.coord
}

// NotReady lists the components that are not ready, as /readyz does, for
// tests and the demo.
func (a *Agent) NotReady() []string { return a.admin.NotReady() }
