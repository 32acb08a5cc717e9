package gtm

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/health"
)

// DefaultListen is where the traffic manager answers when haven.yaml's
// traffic.listen is not set.
const DefaultListen = ":53"

// Service is one node's traffic manager: the server and the health
// checks of the managed names' targets.
type Service struct {
	srv      *Server
	monitors []*targetMonitor
	log      *slog.Logger
	listen   string
	views    *views                  // nil without coordination
	etcd     func() *clientv3.Client // for views

	mu    sync.Mutex      // guards local and serialises apply
	local map[string]bool // this instance's verdicts, by viewKey
}

// targetMonitor checks one target of one managed name.
type targetMonitor struct {
	name, target string // as SetHealth takes them
	mon          *health.Monitor
}

// ServiceOptions are what a Service needs besides the configuration.
type ServiceOptions struct {
	Logger        *slog.Logger
	HealthMetrics *health.Metrics // nil: none
	// OnTransition, if set, is called for every target health transition.
	OnTransition func(health.Event)
	// Etcd returns the coordination client, nil until connected. Set, the
	// instances share their views (a target is down when most see it
	// down); nil, the instance answers by its own checks alone.
	Etcd func() *clientv3.Client
	// Cluster names the cluster's keys in etcd.
	Cluster string
}

// viewKey names a target in the views.
func viewKey(rel, target string) string { return rel + "/" + target }

// NewService builds node's traffic manager from haven.yaml: the zone's
// name servers are the traffic.nameservers nodes (NS <node>.<zone>, glue
// their addresses), and each target with a check is probed at its address.
func NewService(cfg *config.Config, node string, opt ServiceOptions) (*Service, error) {
	t := cfg.Traffic
	if t == nil {
		return nil, fmt.Errorf("gtm: haven.yaml has no traffic section")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	z := Zone{Origin: t.Zone, Names: map[string]Name{}}
	for _, n := range t.Nameservers {
		nd, ok := cfg.Node(n)
		if !ok {
			return nil, fmt.Errorf("gtm: name server %s is not a node", n)
		}
		addr, err := netip.ParseAddr(nd.Address)
		if err != nil {
			return nil, fmt.Errorf("gtm: name server %s: address %q: %w", n, nd.Address, err)
		}
		z.Nameservers = append(z.Nameservers, Nameserver{Name: n, Addr: addr})
	}
	s := &Service{log: opt.Logger.With("component", "gtm"), listen: t.Listen, local: map[string]bool{}, etcd: opt.Etcd}
	if s.listen == "" {
		s.listen = DefaultListen
	}
	type pending struct {
		rel, target string
		check       *config.Check
		addr        netip.Addr
	}
	var checks []pending
	for rel, rec := range t.Records {
		n := Name{Policy: Policy(rec.Policy), TTL: rec.TTL.D()}
		for _, tg := range rec.Targets {
			addr, err := netip.ParseAddr(tg.Address)
			if err != nil {
				return nil, fmt.Errorf("gtm: %s target %s: %w", rel, tg.Name, err)
			}
			n.Targets = append(n.Targets, Target{Name: tg.Name, Addr: addr, Weight: tg.Weight})
			if tg.Check != "" {
				ch, ok := cfg.Check(tg.Check)
				if !ok {
					return nil, fmt.Errorf("gtm: %s target %s: no check %q", rel, tg.Name, tg.Check)
				}
				checks = append(checks, pending{rel, tg.Name, ch, addr})
			}
		}
		z.Names[rel] = n
	}
	srv, err := New(z, Options{Logger: opt.Logger, ID: node})
	if err != nil {
		return nil, err
	}
	s.srv = srv
	srv.viewMode.Store(string(Standalone))
	if opt.Etcd != nil {
		s.views = newViews(node, opt.Cluster, s.log, s.apply)
		srv.viewMode.Store(string(Isolated))
	}
	for _, p := range checks {
		prober, err := health.NewProber(p.check)
		if err != nil {
			return nil, fmt.Errorf("gtm: %s target %s: %w", p.rel, p.target, err)
		}
		tm := &targetMonitor{name: p.rel, target: p.target}
		tm.mon = health.NewMonitor(health.Options{
			Check:   p.check.Name,
			Target:  p.addr.String(),
			Spec:    health.SpecFromConfig(p.check),
			Prober:  prober,
			Logger:  s.log.With("name", p.rel, "target", p.target),
			Metrics: opt.HealthMetrics,
			OnTransition: func(ev health.Event) {
				s.setLocal(tm.name, tm.target, ev.To != health.Down)
				if opt.OnTransition != nil {
					opt.OnTransition(ev)
				}
			},
		})
		s.monitors = append(s.monitors, tm)
	}
	return s, nil
}

// setLocal records this instance's verdict on a target and applies it.
func (s *Service) setLocal(rel, target string, up bool) {
	s.mu.Lock()
	s.local[viewKey(rel, target)] = up
	local := maps.Clone(s.local)
	s.mu.Unlock()
	if s.views != nil {
		s.views.publish(local)
	}
	s.apply()
}

// apply sets the server's answers from the verdicts: this instance's own,
// or the majority of the instances' views.
func (s *Service) apply() {
	s.mu.Lock()
	defer s.mu.Unlock()
	eff, mode := s.local, Standalone
	if s.views != nil {
		eff, mode = s.views.decide(s.local)
	}
	s.srv.viewMode.Store(string(mode))
	for _, tm := range s.monitors {
		if up, ok := eff[viewKey(tm.name, tm.target)]; ok {
			s.srv.SetHealth(tm.name, tm.target, up)
		}
	}
}

// Server returns the DNS server, for tests and status.
func (s *Service) Server() *Server { return s.srv }

// Listen binds the UDP and TCP listeners, so that a busy port fails the
// agent's start rather than a background goroutine.
func (s *Service) Listen() (net.PacketConn, net.Listener, error) {
	tcp, err := net.Listen("tcp", s.listen)
	if err != nil {
		return nil, nil, fmt.Errorf("gtm: listen tcp %s: %w", s.listen, err)
	}
	udp, err := net.ListenPacket("udp", tcp.Addr().String())
	if err != nil {
		tcp.Close()
		return nil, nil, fmt.Errorf("gtm: listen udp %s: %w", s.listen, err)
	}
	return udp, tcp, nil
}

// Run starts the health checks, waits until every checked target has a
// first verdict (or firstVerdictWait passed), then answers on udp and tcp
// until ctx ends. Answering only after the first verdicts means the first
// answer after a restart already reflects the checks.
func (s *Service) Run(ctx context.Context, udp net.PacketConn, tcp net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	monCtx, stop := context.WithCancel(ctx)
	defer stop()
	for _, tm := range s.monitors {
		wg.Go(func() { _ = tm.mon.Run(monCtx) })
	}
	if s.views != nil {
		wg.Go(func() { s.views.run(monCtx, s.etcd) })
	}
	s.waitFirstVerdicts(ctx)
	return s.srv.Serve(ctx, udp, tcp)
}

// firstVerdictWait bounds how long a starting traffic manager waits for
// its checks: a target still without a verdict after it is answered as up.
const firstVerdictWait = 10 * time.Second

func (s *Service) waitFirstVerdicts(ctx context.Context) {
	deadline := time.Now().Add(firstVerdictWait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pending := 0
		for _, tm := range s.monitors {
			if tm.mon.State() == health.Unknown {
				pending++
			}
		}
		if pending == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.log.Warn("answering before every target has a first verdict: those are answered as up", "waited", firstVerdictWait)
}

// Status is the traffic manager in the status API: what each managed name
// answers now, and each target's health.
type Status struct {
	Zone string `json:"zone"`
	// Views says whose verdicts the answers follow (standalone, shared,
	// isolated), and Peers how many other instances publish a view.
	Views ViewMode     `json:"views"`
	Peers int          `json:"peers"`
	Names []NameStatus `json:"names"`
}

// NameStatus is one managed name.
type NameStatus struct {
	Name    string         `json:"name"`
	Policy  Policy         `json:"policy"`
	Answers []string       `json:"answers"` // the addresses it may answer with now
	Targets []TargetStatus `json:"targets"`
}

// TargetStatus is one target of a managed name.
type TargetStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Up      bool   `json:"up"`
	// Health is the check's state; nil for a target without a check.
	Health *health.Status `json:"health,omitempty"`
}

// Status reports every managed name.
func (s *Service) Status() Status {
	mons := map[[2]string]*health.Monitor{}
	for _, tm := range s.monitors {
		mons[[2]string{tm.name, tm.target}] = tm.mon
	}
	st := Status{Zone: s.srv.zone.Origin, Views: ViewMode(s.srv.viewMode.Load().(string))}
	if s.views != nil {
		st.Peers = s.views.peerCount()
	}
	for _, ns := range s.srv.names() {
		for i, tg := range ns.Targets {
			if m := mons[[2]string{ns.rel, tg.Name}]; m != nil {
				h := m.Snapshot()
				ns.Targets[i].Health = &h
			}
		}
		st.Names = append(st.Names, ns.NameStatus)
	}
	return st
}

// Close releases the monitors' metrics.
func (s *Service) Close() {
	for _, tm := range s.monitors {
		tm.mon.Close()
	}
}
