package gtm

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/clock"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/health"
)

// DefaultListen is where the traffic manager answers when haven.yaml's
// traffic.listen is not set.
const DefaultListen = ":53"

// Service is one node's traffic manager: the server and the health
// checks of the managed names' targets.
//
// This file is its lifecycle (NewService, Listen, Run, Close); plan.go
// reads haven.yaml's traffic section, probes.go makes the monitors and
// records their verdicts, apply.go turns verdicts, delays and drains into
// answers, drain.go is the operator's drains, status.go the status API
// and reload.go a new configuration in place. quorum.go shares verdicts
// between instances, follows.go reads haven's own state.
type Service struct {
	srv    *Server
	opt    ServiceOptions
	log    *slog.Logger
	clock  clock.Clock
	listen string
	views  *views                                          // nil without coordination
	etcd   func(context.Context) (*clientv3.Client, error) // for views and followed state
	geo    *GeoDB                                          // nil without traffic.geoip

	mu sync.Mutex // guards what follows and serialises apply
	// queryLog is traffic.query_log as last loaded; Run opens it.
	queryLog *config.QueryLog
	// monitors are every target of every name; probes the distinct
	// monitors, by check and address.
	monitors []*targetMonitor
	probes   map[probeKey]*probe
	// running is Run's context and goroutines, for monitors a reload adds.
	running context.Context
	wg      sync.WaitGroup
	local   map[string]bool // this instance's verdicts, by viewKey
	// votes are the shared views behind the answers, as apply last
	// decided them (nil unless shared).
	votes map[string]Votes
	// members is haven's state as the agents last published it, for the
	// targets that follow it (nil until first read).
	members map[string]coord.MemberInfo
	// activeRegion is the region that holds the active-region record, as
	// ActiveRegion last said (nil until it says, and without it).
	activeRegion *string
	// differing marks since when a target's verdict has differed from
	// what the server answers (for the failover and failback delays);
	// drained holds an operator's drains and when they end; recorded
	// those kept in etcd (SetRecordedDrains).
	differing map[string]time.Time
	drained   map[string]time.Time
	recorded  map[string]time.Time
	delays    map[string][2]time.Duration // by name: failover, failback
	reapply   *reapply                    // the next apply a delay or drain needs
	closed    bool                        // by Close: nothing is scheduled any more
	// verdictIn is signalled when a monitor's first verdict is in the
	// answers, or haven's state is first read; Run waits on it.
	verdictIn chan struct{}
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
	// Etcd returns the coordination client once connected: it blocks
	// until then or until ctx ends. Set, the instances share their views
	// (a target is down when most see it down); nil, the instance answers
	// by its own checks alone.
	Etcd func(ctx context.Context) (*clientv3.Client, error)
	// Cluster names the cluster's keys in etcd.
	Cluster string
	// ActiveRegion, set for a database that spans two regions
	// (database.dr), follows the active region: it calls fn with the
	// region that holds the active-region record ("" when none does) now
	// and at every change, until ctx ends. A target that follows the
	// database in a region is up while that region is the active one.
	ActiveRegion func(ctx context.Context, fn func(region string))
	// Clock times the failover and failback delays, the drains, the wait
	// for first verdicts and the checks' probes. nil: clock.Real.
	Clock clock.Clock
}

// NewService builds node's traffic manager from haven.yaml: the zone's
// name servers are the traffic.nameservers nodes (NS <node>.<zone>, glue
// their addresses), and each target with a check is probed at its address.
func NewService(cfg *config.Config, node string, opt ServiceOptions) (*Service, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Clock == nil {
		opt.Clock = clock.Real
	}
	p, err := planFrom(cfg)
	if err != nil {
		return nil, err
	}
	s := &Service{log: opt.Logger.With("component", "gtm"), opt: opt, clock: opt.Clock, listen: p.listen, local: map[string]bool{}, etcd: opt.Etcd,
		differing: map[string]time.Time{}, drained: map[string]time.Time{},
		delays: p.delays, probes: map[probeKey]*probe{}, verdictIn: make(chan struct{}, 1), queryLog: p.queryLog}
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
	s.mu.Lock()
	ql := s.queryLog
	s.mu.Unlock()
	if err := s.srv.SetQueryLog(ql); err != nil {
		return err
	}
	defer s.srv.SetQueryLog(nil)
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
		if s.opt.ActiveRegion != nil {
			s.wg.Go(func() { s.watchActiveRegion(monCtx) })
		}
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

// waitFirstVerdicts returns when every monitor's first verdict is in the
// answers and haven's state has been read (if a target follows it), when
// firstVerdictWait has passed, or when ctx ends.
func (s *Service) waitFirstVerdicts(ctx context.Context) {
	t := s.clock.NewTimer(firstVerdictWait)
	defer t.Stop()
	for s.awaitingVerdicts() {
		select {
		case <-s.verdictIn:
		case <-ctx.Done():
			return
		case <-t.C():
			s.log.Warn("answering before every target has a first verdict: those are answered as up", "waited", firstVerdictWait)
			return
		}
	}
}

// awaitingVerdicts reports whether a first verdict is not in the answers
// yet. A verdict counts once it is in the answers, not when the monitor
// has it: the monitor records its state before it tells us.
func (s *Service) awaitingVerdicts() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pr := range s.probes {
		if !pr.applied {
			return true
		}
	}
	return s.follower() != nil && s.members == nil // haven's state not read yet
}

// verdictArrived wakes waitFirstVerdicts, which counts again.
func (s *Service) verdictArrived() {
	select {
	case s.verdictIn <- struct{}{}:
	default: // a wake-up is already pending
	}
}

// Close releases the monitors' metrics and stops a pending delay's timer.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	s.schedule(time.Time{}, time.Time{}) // calls off a pending apply, arms none
	probes := slices.Collect(maps.Values(s.probes))
	s.mu.Unlock()
	for _, pr := range probes {
		pr.mon.Close()
	}
	if s.geo != nil {
		s.geo.Close()
	}
}
