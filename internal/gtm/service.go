package gtm

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/health"
)

// DefaultListen is where the traffic manager answers when haven.yaml's
// traffic.listen is not set.
const DefaultListen = ":53"

// Service is one node's traffic manager: the server and the health
// checks of the managed names' targets.
type Service struct {
	srv    *Server
	opt    ServiceOptions
	log    *slog.Logger
	listen string
	views  *views                  // nil without coordination
	etcd   func() *clientv3.Client // for views
	geo    *GeoDB                  // nil without traffic.geoip

	mu sync.Mutex // guards what follows and serialises apply
	// monitors are every target of every name; probes the distinct
	// monitors, by check and address.
	monitors []*targetMonitor
	probes   map[probeKey]*probe
	// running is Run's context and goroutines, for monitors a reload adds.
	running context.Context
	wg      sync.WaitGroup
	local   map[string]bool // this instance's verdicts, by viewKey
	// members is haven's state as the agents last published it, for the
	// targets that follow it (nil until first read).
	members map[string]coord.MemberInfo
	// differing marks since when a target's verdict has differed from
	// what the server answers (for the failover and failback delays);
	// drained holds an operator's drains and when they end.
	differing map[string]time.Time
	drained   map[string]time.Time
	delays    map[string][2]time.Duration // by name: failover, failback
	timer     *time.Timer                 // the next apply a delay or drain needs
}

// targetMonitor checks one target of one managed name.
type targetMonitor struct {
	name, target string // as SetHealth takes them
	mon          *health.Monitor
	follows      *config.Follows // instead of mon: haven's state in etcd
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
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	p, err := planFrom(cfg)
	if err != nil {
		return nil, err
	}
	s := &Service{log: opt.Logger.With("component", "gtm"), opt: opt, listen: p.listen, local: map[string]bool{}, etcd: opt.Etcd,
		differing: map[string]time.Time{}, drained: map[string]time.Time{},
		delays: p.delays, probes: map[probeKey]*probe{}}
	if p.geoip != "" {
		if s.geo, err = OpenGeoDB(p.geoip); err != nil {
			return nil, err
		}
		p.zone.Geo = s.geo
	}
	srv, err := New(p.zone, Options{Logger: opt.Logger, ID: node, TSIG: p.tsig})
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
	if _, _, err := s.wire(p.checks); err != nil {
		s.Close()
		return nil, err
	}
	if tm := s.follower(); tm != nil && opt.Etcd == nil {
		s.Close()
		return nil, fmt.Errorf("gtm: %s target %s follows haven's state, which is in etcd: run it with haven agent and a coordination section (haven dns serve reads no etcd)", tm.name, tm.target)
	}
	return s, nil
}

// plan is what haven.yaml's traffic section asks of a node.
type plan struct {
	zone   Zone
	checks []pending
	delays map[string][2]time.Duration // by name: failover, failback
	tsig   map[string]string
	geoip  string
	listen string
}

// pending is a target to check, before its monitor exists.
type pending struct {
	rel, target string
	check       *config.Check // nil: not checked
	addr        string        // the target's address, or its CNAME's name
	follows     *config.Follows
}

// planFrom reads the traffic section.
func planFrom(cfg *config.Config) (plan, error) {
	t := cfg.Traffic
	if t == nil {
		return plan{}, fmt.Errorf("gtm: haven.yaml has no traffic section: add one (docs/traffic.md)")
	}
	p := plan{zone: Zone{Origin: t.Zone, Names: map[string]Name{}}, delays: map[string][2]time.Duration{}, geoip: t.GeoIP, listen: t.Listen}
	if p.listen == "" {
		p.listen = DefaultListen
	}
	for _, n := range t.Nameservers {
		nd, ok := cfg.Node(n)
		if !ok {
			return p, fmt.Errorf("gtm: name server %s is not a node", n)
		}
		addr, err := netip.ParseAddr(nd.Address)
		if err != nil {
			return p, fmt.Errorf("gtm: name server %s: address %q: %w", n, nd.Address, err)
		}
		p.zone.Nameservers = append(p.zone.Nameservers, Nameserver{Name: n, Addr: addr})
	}
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
		p.delays[rel] = [2]time.Duration{rec.FailoverDelay.D(), rec.FailbackDelay.D()}
		for _, tg := range rec.Targets {
			target, probeAt, err := targetFrom(rel, tg)
			if err != nil {
				return p, err
			}
			n.Targets = append(n.Targets, target)
			var ch *config.Check
			if tg.Check != "" {
				var ok bool
				if ch, ok = cfg.Check(tg.Check); !ok {
					return p, fmt.Errorf("gtm: %s target %s: no check %q", rel, tg.Name, tg.Check)
				}
			}
			var follows *config.Follows
			if tg.Follows != nil {
				f := *tg.Follows // a copy: the caller's config may change under a reload
				follows = &f
			}
			p.checks = append(p.checks, pending{rel, tg.Name, ch, probeAt, follows})
		}
		p.zone.Names[rel] = n
	}
	if k := t.TSIG; k != nil {
		b, err := os.ReadFile(k.SecretFile)
		if err != nil {
			return p, fmt.Errorf("gtm: traffic.tsig.secret_file: %w", err)
		}
		p.tsig = map[string]string{dns.CanonicalName(k.Name): strings.TrimSpace(string(b))}
	}
	return p, nil
}

// targetFrom is one configured target, and where its check probes it.
func targetFrom(rel string, tg *config.Target) (Target, string, error) {
	target := Target{Name: tg.Name, CNAME: tg.CNAME, Weight: tg.Weight, Countries: tg.Countries, Continents: tg.Continents}
	probeAt := strings.TrimSuffix(tg.CNAME, ".")
	if tg.CNAME == "" {
		addr, err := netip.ParseAddr(tg.Address)
		if err != nil {
			return target, "", fmt.Errorf("gtm: %s target %s: %w", rel, tg.Name, err)
		}
		target.Addr, probeAt = addr, addr.String()
	}
	for _, sn := range tg.Subnets {
		pfx, err := netip.ParsePrefix(sn)
		if err != nil {
			return target, "", fmt.Errorf("gtm: %s target %s: subnet %q: %w", rel, tg.Name, sn, err)
		}
		target.Subnets = append(target.Subnets, pfx.Masked())
	}
	return target, probeAt, nil
}

// probeKey names a monitor: one per check and address, so that records
// naming the same target share its verdicts, never disagree about it,
// and probe it once.
type probeKey struct{ check, addr string }

// probe is one health monitor and the targets that follow it.
type probe struct {
	mon     *health.Monitor
	check   config.Check // as configured: a reload that changes it replaces the monitor
	users   []*targetMonitor
	applied bool               // its first verdict is in the answers
	cancel  context.CancelFunc // stops its Run; nil before Run
}

// wire makes the targets' monitors from checks, keeping the running ones
// whose check and address are unchanged (with their state), and returns
// the monitors to start and those to stop. Called before Run, or by
// Reload; s.mu must not be held.
func (s *Service) wire(checks []pending) (start, stop []*probe, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	probes := map[probeKey]*probe{}
	var monitors []*targetMonitor
	for _, p := range checks {
		tm := &targetMonitor{name: p.rel, target: p.target, follows: p.follows}
		monitors = append(monitors, tm)
		if p.check == nil {
			continue // always up; only a drain takes it out
		}
		key := probeKey{p.check.Name, p.addr}
		pr := probes[key]
		if pr == nil {
			if old := s.probes[key]; old != nil && reflect.DeepEqual(old.check, *p.check) {
				pr, old.users = old, nil
			} else if pr, err = s.newProbe(p); err != nil {
				for _, n := range start {
					n.mon.Close()
				}
				return nil, nil, err
			} else {
				start = append(start, pr)
			}
			probes[key] = pr
		}
		tm.mon = pr.mon
		pr.users = append(pr.users, tm)
	}
	for key, old := range s.probes {
		if probes[key] != old {
			stop = append(stop, old)
		}
	}
	s.probes, s.monitors = probes, monitors
	return start, stop, nil
}

// newProbe makes the monitor of a check at an address.
func (s *Service) newProbe(p pending) (*probe, error) {
	prober, err := health.NewProber(p.check)
	if err != nil {
		return nil, fmt.Errorf("gtm: %s target %s: %w", p.rel, p.target, err)
	}
	pr := &probe{check: *p.check}
	pr.mon = health.NewMonitor(health.Options{
		Check:  p.check.Name,
		Target: p.addr,
		Spec:   health.SpecFromConfig(p.check),
		Prober: prober,
		// The monitor adds component=health and target=ADDRESS itself.
		Logger:  s.opt.Logger.With("component", "gtm"),
		Metrics: s.opt.HealthMetrics,
		OnTransition: func(ev health.Event) {
			s.mu.Lock()
			users := pr.users
			s.mu.Unlock()
			s.setLocal(users, ev.To != health.Down)
			s.mu.Lock()
			pr.applied = true
			s.mu.Unlock()
			if s.opt.OnTransition != nil {
				s.opt.OnTransition(ev)
			}
		},
	})
	return pr, nil
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
				s.srv.SetHealth(tm.name, tm.target, false)
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
				if cur, known := s.srv.answered(tm.name, tm.target); known && !cur {
					s.srv.SetHealth(tm.name, tm.target, true) // a drain ended before the first verdict
				}
				continue
			}
		}
		cur, known := s.srv.answered(tm.name, tm.target)
		if !known || cur == up {
			delete(s.differing, key)
			s.srv.SetHealth(tm.name, tm.target, up)
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
			s.srv.SetHealth(tm.name, tm.target, up)
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
	s.mu.Lock()
	defer s.mu.Unlock()
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
	s.mu.Lock()
	defer s.mu.Unlock()
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
	defer s.wg.Wait()
	monCtx, stop := context.WithCancel(ctx)
	defer stop()
	s.mu.Lock()
	s.running = monCtx
	for _, pr := range s.probes {
		s.startProbe(pr)
	}
	s.mu.Unlock()
	if s.views != nil {
		s.wg.Go(func() { s.views.run(monCtx, s.etcd) })
		s.wg.Go(func() { s.watchState(monCtx) })
	}
	s.waitFirstVerdicts(ctx)
	return s.srv.Serve(ctx, udp, tcp)
}

// startProbe runs a monitor until Run ends or a reload drops it. s.mu is
// held, and Run has started.
func (s *Service) startProbe(pr *probe) {
	ctx, cancel := context.WithCancel(s.running)
	pr.cancel = cancel
	s.wg.Go(func() { _ = pr.mon.Run(ctx) })
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
		pending := 0
		for _, pr := range s.probes {
			if !pr.applied {
				pending++
			}
		}
		if s.follower() != nil && s.members == nil {
			pending++ // haven's state not read yet
		}
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
	// Follows is the haven state the target follows instead of a check,
	// such as "balancer web" or "database in east".
	Follows string `json:"follows,omitempty"`
	// DrainedUntil is when an operator's drain ends (zero: not drained).
	DrainedUntil time.Time `json:"drained_until,omitzero"`
}

// Status reports every managed name.
func (s *Service) Status() Status {
	mons := map[[2]string]*health.Monitor{}
	follows := map[[2]string]string{}
	s.mu.Lock()
	for _, tm := range s.monitors {
		if tm.mon != nil {
			mons[[2]string{tm.name, tm.target}] = tm.mon
		}
		if f := tm.follows; f != nil {
			follows[[2]string{tm.name, tm.target}] = stateKey(f)
			if f.Region != "" {
				follows[[2]string{tm.name, tm.target}] += " in " + f.Region
			}
		}
	}
	drained := maps.Clone(s.drained)
	s.mu.Unlock()
	st := Status{Zone: s.srv.Zone().Origin, Views: ViewMode(s.srv.viewMode.Load().(string))}
	if s.views != nil {
		st.Peers = s.views.peerCount()
	}
	for _, ns := range s.srv.names() {
		for i, tg := range ns.Targets {
			if m := mons[[2]string{ns.rel, tg.Name}]; m != nil {
				h := m.Snapshot()
				ns.Targets[i].Health = &h
			}
			ns.Targets[i].DrainedUntil = drained[viewKey(ns.rel, tg.Name)]
			ns.Targets[i].Follows = follows[[2]string{ns.rel, tg.Name}]
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
	probes := slices.Collect(maps.Values(s.probes))
	s.mu.Unlock()
	for _, pr := range probes {
		pr.mon.Close()
	}
	if s.geo != nil {
		s.geo.Close()
	}
}

// Reload applies a new traffic section without a restart: names, targets,
// policies, TTLs, delays, the name servers and the geo database (read
// again, so a refreshed file is picked up) change in place; a monitor
// whose check and address are unchanged keeps running with its state, so
// nothing is re-probed from scratch. A configuration the server cannot
// answer with is an error and changes nothing. It returns what still
// needs a restart (the listener, the TSIG key).
func (s *Service) Reload(cfg *config.Config) (restart []string, err error) {
	p, err := planFrom(cfg)
	if err != nil {
		return nil, err
	}
	var geo *GeoDB
	if p.geoip != "" {
		if geo, err = OpenGeoDB(p.geoip); err != nil {
			return nil, err
		}
		p.zone.Geo = geo
	}
	z, err := p.zone.normalize()
	if err != nil {
		if geo != nil {
			geo.Close()
		}
		return nil, err
	}
	start, stop, err := s.wire(p.checks)
	if err != nil {
		if geo != nil {
			geo.Close()
		}
		return nil, err
	}
	s.mu.Lock()
	s.delays = p.delays
	keep := map[string]bool{}
	for _, tm := range s.monitors {
		keep[viewKey(tm.name, tm.target)] = true
	}
	maps.DeleteFunc(s.local, func(k string, _ bool) bool { return !keep[k] })
	for _, m := range []map[string]time.Time{s.differing, s.drained} {
		maps.DeleteFunc(m, func(k string, _ time.Time) bool { return !keep[k] })
	}
	s.followVerdicts()
	// A new monitor has no verdict yet: its targets keep what they are
	// answered as until it has one, not the verdict of a check or address
	// they no longer have.
	for _, pr := range start {
		for _, tm := range pr.users {
			delete(s.local, viewKey(tm.name, tm.target))
		}
	}
	// A kept monitor's verdict applies to the targets that now follow it.
	for _, pr := range s.probes {
		if st := pr.mon.State(); st != health.Unknown {
			for _, tm := range pr.users {
				s.local[viewKey(tm.name, tm.target)] = st != health.Down
			}
		}
	}
	if s.running != nil {
		for _, pr := range start {
			s.startProbe(pr)
		}
	}
	local := maps.Clone(s.local)
	// The old database is unmapped by its reader's cleanup once no table
	// (a query in flight) refers to it any more.
	s.geo = geo
	s.mu.Unlock()
	for _, pr := range stop {
		if pr.cancel != nil {
			pr.cancel()
		}
		pr.mon.Close()
	}
	s.srv.setZone(z)
	if s.views != nil {
		s.views.publish(local)
	}
	s.apply()
	if p.listen != s.listen {
		restart = append(restart, "traffic.listen")
	}
	if !maps.Equal(p.tsig, s.srv.tsig) {
		restart = append(restart, "traffic.tsig")
	}
	s.log.Info("traffic configuration reloaded", "names", len(z.Names), "monitors started", len(start), "stopped", len(stop))
	return restart, nil
}
