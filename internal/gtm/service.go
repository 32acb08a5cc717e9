package gtm

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

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
	monitors []*targetMonitor  // every target of every name
	checks   []*health.Monitor // the distinct monitors (by check and address)
	log      *slog.Logger
	listen   string
	views    *views                  // nil without coordination
	etcd     func() *clientv3.Client // for views
	geo      *GeoDB                  // nil without traffic.geoip

	mu    sync.Mutex      // guards what follows and serialises apply
	local map[string]bool // this instance's verdicts, by viewKey
	// answered is what the server answers for each target; differing
	// marks since when the verdict has differed from it (for the
	// failover and failback delays); drained holds an operator's drains
	// and when they end.
	answered  map[string]bool
	differing map[string]time.Time
	drained   map[string]time.Time
	delays    map[string][2]time.Duration // by name: failover, failback
	timer     *time.Timer                 // the next apply a delay or drain needs
	// applied holds the monitors whose first verdict is in the answers.
	applied map[*health.Monitor]bool
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
	s := &Service{log: opt.Logger.With("component", "gtm"), listen: t.Listen, local: map[string]bool{}, etcd: opt.Etcd,
		answered: map[string]bool{}, differing: map[string]time.Time{}, drained: map[string]time.Time{}, delays: map[string][2]time.Duration{},
		applied: map[*health.Monitor]bool{}}
	if s.listen == "" {
		s.listen = DefaultListen
	}
	type pending struct {
		rel, target string
		check       *config.Check
		addr        string // the target's address, or its CNAME's name
	}
	var checks []pending
	for rel, rec := range t.Records {
		n := Name{Policy: Policy(rec.Policy), TTL: rec.TTL.D(), AllDown: AllDown(rec.AllDown)}
		if rec.MaxAnswers != nil {
			n.MaxAnswers = *rec.MaxAnswers
		}
		for i, b := range rec.Backup {
			tg := Target{Name: fmt.Sprint("backup", i)}
			if a, err := netip.ParseAddr(b); err == nil {
				tg.Addr = a
			} else {
				tg.CNAME = b
			}
			n.Backups = append(n.Backups, tg)
		}
		s.delays[rel] = [2]time.Duration{rec.FailoverDelay.D(), rec.FailbackDelay.D()}
		for _, tg := range rec.Targets {
			target := Target{Name: tg.Name, CNAME: tg.CNAME, Weight: tg.Weight, Countries: tg.Countries, Continents: tg.Continents}
			probeAt := strings.TrimSuffix(tg.CNAME, ".")
			if tg.CNAME == "" {
				addr, err := netip.ParseAddr(tg.Address)
				if err != nil {
					return nil, fmt.Errorf("gtm: %s target %s: %w", rel, tg.Name, err)
				}
				target.Addr, probeAt = addr, addr.String()
			}
			for _, sn := range tg.Subnets {
				pfx, err := netip.ParsePrefix(sn)
				if err != nil {
					return nil, fmt.Errorf("gtm: %s target %s: subnet %q: %w", rel, tg.Name, sn, err)
				}
				target.Subnets = append(target.Subnets, pfx.Masked())
			}
			n.Targets = append(n.Targets, target)
			var ch *config.Check
			if tg.Check != "" {
				var ok bool
				if ch, ok = cfg.Check(tg.Check); !ok {
					return nil, fmt.Errorf("gtm: %s target %s: no check %q", rel, tg.Name, tg.Check)
				}
			}
			checks = append(checks, pending{rel, tg.Name, ch, probeAt})
		}
		z.Names[rel] = n
	}
	sopt := Options{Logger: opt.Logger, ID: node}
	if k := t.TSIG; k != nil {
		b, err := os.ReadFile(k.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("gtm: traffic.tsig.secret_file: %w", err)
		}
		sopt.TSIG = map[string]string{dns.CanonicalName(k.Name): strings.TrimSpace(string(b))}
	}
	if t.GeoIP != "" {
		db, err := OpenGeoDB(t.GeoIP)
		if err != nil {
			return nil, err
		}
		z.Geo, s.geo = db, db
	}
	srv, err := New(z, sopt)
	if err != nil {
		if s.geo != nil {
			s.geo.Close()
		}
		return nil, err
	}
	s.srv = srv
	srv.viewMode.Store(string(Standalone))
	if opt.Etcd != nil {
		s.views = newViews(node, opt.Cluster, s.log, s.apply)
		srv.viewMode.Store(string(Isolated))
	}
	// One monitor per check and address: records that name the same target
	// share its verdicts, so they never disagree about it, and it is
	// probed once.
	shared := map[[2]string]*health.Monitor{}
	users := map[*health.Monitor][]*targetMonitor{}
	for _, p := range checks {
		tm := &targetMonitor{name: p.rel, target: p.target}
		s.monitors = append(s.monitors, tm)
		if p.check == nil {
			continue // always up; only a drain takes it out
		}
		key := [2]string{p.check.Name, p.addr}
		if mon := shared[key]; mon != nil {
			tm.mon = mon
			users[mon] = append(users[mon], tm)
			continue
		}
		prober, err := health.NewProber(p.check)
		if err != nil {
			return nil, fmt.Errorf("gtm: %s target %s: %w", p.rel, p.target, err)
		}
		var mon *health.Monitor
		mon = health.NewMonitor(health.Options{
			Check:  p.check.Name,
			Target: p.addr,
			Spec:   health.SpecFromConfig(p.check),
			Prober: prober,
			// The monitor adds component=health and target=ADDRESS itself.
			Logger:  opt.Logger.With("component", "gtm"),
			Metrics: opt.HealthMetrics,
			OnTransition: func(ev health.Event) {
				s.setLocal(users[mon], ev.To != health.Down)
				s.mu.Lock()
				s.applied[mon] = true
				s.mu.Unlock()
				if opt.OnTransition != nil {
					opt.OnTransition(ev)
				}
			},
		})
		shared[key], tm.mon = mon, mon
		users[mon] = append(users[mon], tm)
		s.checks = append(s.checks, mon)
	}
	return s, nil
}

// setLocal records this instance's verdict on the targets a monitor
// checks and applies it.
func (s *Service) setLocal(tms []*targetMonitor, up bool) {
	s.mu.Lock()
	for _, tm := range tms {
		s.local[viewKey(tm.name, tm.target)] = up
	}
	local := maps.Clone(s.local)
	s.mu.Unlock()
	if s.views != nil {
		s.views.publish(local)
	}
	s.apply()
}

// apply sets the server's answers from the verdicts (this instance's own,
// or the majority of the instances' views), the failover and failback
// delays, and the drains.
func (s *Service) apply() {
	s.mu.Lock()
	defer s.mu.Unlock()
	eff, mode := s.local, Standalone
	if s.views != nil {
		eff, mode = s.views.decide(s.local)
	}
	s.srv.viewMode.Store(string(mode))
	now := time.Now()
	var next time.Time // the earliest moment a delay or drain ends
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, tm := range s.monitors {
		key := viewKey(tm.name, tm.target)
		if until, ok := s.drained[key]; ok {
			if now.Before(until) {
				s.setAnswered(tm, false)
				later(until)
				continue
			}
			delete(s.drained, key)
			s.log.Info("drain ended", "name", tm.name, "target", tm.target)
		}
		up, ok := eff[key]
		if !ok {
			// No verdict yet (or no check): answered as up.
			up = true
			if tm.mon != nil {
				if cur, known := s.answered[key]; known && !cur {
					s.setAnswered(tm, true) // a drain ended before the first verdict
				}
				continue
			}
		}
		cur, known := s.answered[key]
		if !known || cur == up {
			delete(s.differing, key)
			s.setAnswered(tm, up)
			continue
		}
		since, ok := s.differing[key]
		if !ok {
			since = now
			s.differing[key] = now
		}
		delay := s.delays[tm.name][1] // failback
		if !up {
			delay = s.delays[tm.name][0]
		}
		if now.Sub(since) >= delay {
			delete(s.differing, key)
			s.setAnswered(tm, up)
		} else {
			later(since.Add(delay))
		}
	}
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	if !next.IsZero() {
		s.timer = time.AfterFunc(time.Until(next)+time.Millisecond, s.apply)
	}
}

// setAnswered sets what the server answers for a target.
func (s *Service) setAnswered(tm *targetMonitor, up bool) {
	s.answered[viewKey(tm.name, tm.target)] = up
	s.srv.SetHealth(tm.name, tm.target, up)
}

// Drain takes a target of the managed name rel out of the answers for d,
// whatever its health, as if it were down (a planned maintenance); the
// answers take it back when d ends or Enable is called.
func (s *Service) Drain(rel, target string, d time.Duration) error {
	if s.monitor(rel, target) == nil {
		return s.noTarget(rel, target)
	}
	if d <= 0 {
		return fmt.Errorf("gtm: a drain needs a positive duration, not %v", d)
	}
	s.mu.Lock()
	s.drained[viewKey(rel, target)] = time.Now().Add(d)
	s.mu.Unlock()
	s.log.Info("target drained", "name", rel, "target", target, "for", d)
	s.apply()
	return nil
}

// Enable ends a drain.
func (s *Service) Enable(rel, target string) error {
	if s.monitor(rel, target) == nil {
		return s.noTarget(rel, target)
	}
	s.mu.Lock()
	delete(s.drained, viewKey(rel, target))
	s.mu.Unlock()
	s.log.Info("target enabled", "name", rel, "target", target)
	s.apply()
	return nil
}

func (s *Service) monitor(rel, target string) *targetMonitor {
	for _, tm := range s.monitors {
		if tm.name == rel && tm.target == target {
			return tm
		}
	}
	return nil
}

// noTarget says that rel has no target called target, and which it has.
func (s *Service) noTarget(rel, target string) error {
	var have []string
	for _, tm := range s.monitors {
		if tm.name == rel {
			have = append(have, tm.target)
		}
	}
	if len(have) == 0 {
		return fmt.Errorf("gtm: traffic.records has no name %q", rel)
	}
	return fmt.Errorf("gtm: %s has no target %q (its targets: %s)", rel, target, strings.Join(have, ", "))
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
	for _, mon := range s.checks {
		wg.Go(func() { _ = mon.Run(monCtx) })
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
		// A verdict counts once it is in the answers, not when the monitor
		// has it: the monitor records its state before it tells us.
		s.mu.Lock()
		pending := len(s.checks) - len(s.applied)
		s.mu.Unlock()
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
	Name    string   `json:"name"`
	Policy  Policy   `json:"policy"`
	Answers []string `json:"answers"` // the addresses (or CNAMEs) it may answer with now
	// Servfail: no target is healthy and the name is closed.
	Servfail bool           `json:"servfail,omitempty"`
	Targets  []TargetStatus `json:"targets"`
}

// TargetStatus is one target of a managed name.
type TargetStatus struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	Up      bool   `json:"up"`
	// Health is the check's state; nil for a target without a check.
	Health *health.Status `json:"health,omitempty"`
	// DrainedUntil is when an operator's drain ends (zero: not drained).
	DrainedUntil time.Time `json:"drained_until,omitzero"`
}

// Status reports every managed name.
func (s *Service) Status() Status {
	mons := map[[2]string]*health.Monitor{}
	for _, tm := range s.monitors {
		if tm.mon != nil {
			mons[[2]string{tm.name, tm.target}] = tm.mon
		}
	}
	st := Status{Zone: s.srv.zone.Origin, Views: ViewMode(s.srv.viewMode.Load().(string))}
	if s.views != nil {
		st.Peers = s.views.peerCount()
	}
	s.mu.Lock()
	drained := maps.Clone(s.drained)
	s.mu.Unlock()
	for _, ns := range s.srv.names() {
		for i, tg := range ns.Targets {
			if m := mons[[2]string{ns.rel, tg.Name}]; m != nil {
				h := m.Snapshot()
				ns.Targets[i].Health = &h
			}
			ns.Targets[i].DrainedUntil = drained[viewKey(ns.rel, tg.Name)]
		}
		st.Names = append(st.Names, ns.NameStatus)
	}
	return st
}

// Close releases the monitors' metrics and stops a pending delay's timer.
func (s *Service) Close() {
	s.mu.Lock()
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.mu.Unlock()
	for _, mon := range s.checks {
		mon.Close()
	}
	if s.geo != nil {
		s.geo.Close()
	}
}
