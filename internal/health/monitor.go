package health

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haven-ha/haven/internal/clock"
)

// maxEvents is how many transitions a Monitor remembers.
const maxEvents = 32

// Options configure a Monitor. Only Target is required.
type Options struct {
	Check  string // check name, for events, logs and metrics
	Target string // "HOST:PORT" or "HOST"; a probe's own port overrides PORT
	Spec   Spec   // zero fields take haven.yaml's defaults; see SpecFromConfig
	// Prober runs the active checks. nil means passive health only: the
	// target starts Up, as an unchecked server does in HAProxy.
	Prober  Prober
	Clock   clock.Clock  // default clock.Real
	Logger  *slog.Logger // default: discard
	Metrics *Metrics     // nil: no metrics
	// OnTransition is called for every transition, in order, outside the
	// Monitor's locks, so it may call the Monitor back. It should be quick:
	// it runs on the probing goroutine or on the request that ejected.
	OnTransition func(Event)
	// Group caps passive ejections across a pool. NewMonitor adds the
	// Monitor to it and Close removes it. nil: no cap, no panic threshold.
	Group   *Group
	Passive PassiveSpec
	// Rand drives jitter; tests pass a seeded one. Used by Run only.
	Rand *rand.Rand
}

// Monitor keeps the health state of one target. Its methods are safe for
// concurrent use; State, ObserveSuccess and ObserveFailure are meant for the
// request path.
type Monitor struct {
	check, target string
	spec          Spec
	passive       PassiveSpec
	prober        Prober
	clock         clock.Clock
	log           *slog.Logger
	metrics       *Metrics
	onTransition  func(Event)
	group         *Group
	rand          *rand.Rand

	state        atomic.Int32 // a State; read lock-free on the request path
	ejected      atomic.Bool  // down by passive health, not yet back up
	passiveFails atomic.Int64 // current run of failures in live traffic
	ejectedCh    chan struct{}
	running      atomic.Bool

	// metricsMu orders updates of the target's series against Close, so
	// that a Run still finishing after Close cannot recreate them.
	metricsMu sync.Mutex
	closed    bool

	mu             sync.Mutex // guards the fields below
	since          time.Time
	last           Result
	okRun, failRun int
	events         []Event // ring of the latest maxEvents, oldest first
	pending        []Event // transitions not yet announced, in order
	announcing     bool    // a goroutine is draining pending
}

// NewMonitor returns a Monitor for o.Target. It starts nothing: call Run.
func NewMonitor(o Options) *Monitor {
	m := &Monitor{
		check:        o.Check,
		target:       o.Target,
		spec:         o.Spec.withDefaults(),
		passive:      o.Passive.withDefaults(),
		prober:       o.Prober,
		clock:        o.Clock,
		log:          o.Logger,
		metrics:      o.Metrics,
		onTransition: o.OnTransition,
		group:        o.Group,
		rand:         o.Rand,
		ejectedCh:    make(chan struct{}, 1),
	}
	if m.clock == nil {
		m.clock = clock.Real
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	m.log = m.log.With("component", "health", "check", m.check, "target", m.target)
	if m.rand == nil {
		m.rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if m.prober == nil {
		m.state.Store(int32(Up))
	}
	m.since = m.clock.Now()
	if m.group != nil {
		m.group.Add(m)
	}
	return m
}

// Check returns the check name the Monitor was created with.
func (m *Monitor) Check() string { return m.check }

// Target returns the target the Monitor watches.
func (m *Monitor) Target() string { return m.target }

// State returns the current verdict. It is one atomic load.
func (m *Monitor) State() State { return State(m.state.Load()) }

// Last returns the latest active probe result (zero before the first).
func (m *Monitor) Last() Result {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Events returns the latest transitions, at most 32, oldest first.
func (m *Monitor) Events() []Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Event(nil), m.events...)
}

// Snapshot returns the Monitor's state for the admin API.
func (m *Monitor) Snapshot() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Status{
		Check:           m.check,
		Target:          m.target,
		State:           m.State(),
		Since:           m.since,
		Last:            resultStatus(m.last),
		ConsecutiveOK:   m.okRun,
		ConsecutiveFail: m.failRun,
		PassiveEjected:  m.ejected.Load(),
		PassiveFailures: m.passiveFails.Load(),
		Events:          append([]Event{}, m.events...),
	}
}

// Close takes the Monitor out of its Group and deletes its metric series,
// for a target removed by a reload. It is idempotent, and safe while Run is
// still stopping: nothing recreates the series afterwards.
func (m *Monitor) Close() {
	m.metricsMu.Lock()
	defer m.metricsMu.Unlock()
	if m.closed {
		return
	}
	m.closed = true
	if m.group != nil {
		m.group.Remove(m)
	}
	m.metrics.deleteTarget(m.check, m.target)
}

// targetMetrics runs f, which updates the target's series, unless the
// Monitor is closed.
func (m *Monitor) targetMetrics(f func(*Metrics)) {
	if m.metrics == nil {
		return
	}
	m.metricsMu.Lock()
	defer m.metricsMu.Unlock()
	if !m.closed {
		f(m.metrics)
	}
}

// Run probes the target until ctx ends, then returns nil. The first probe
// starts at once, delayed only by up to Jitter×FastInterval so that a fleet
// booting together does not probe in lockstep. Without a Prober, Run only
// times the return of passively ejected targets. Run may not be called
// twice concurrently.
func (m *Monitor) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return fmt.Errorf("health: %s %s: monitor is already running", m.check, m.target)
	}
	defer m.running.Store(false)
	m.targetMetrics(func(x *Metrics) { x.initTarget(m.check, m.target, m.State(), m.prober != nil) })

	var probeT, ejectT clock.Timer // nil: not armed
	defer func() { stop(probeT); stop(ejectT) }()
	if m.prober != nil {
		probeT = m.clock.NewTimer(m.startDelay())
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timerC(probeT):
			started := m.clock.Now()
			m.probeOnce(ctx)
			if ctx.Err() != nil {
				return nil
			}
			// Waits run from probe start to probe start, so a slow probe
			// does not stretch the detection time (see docs/health.md).
			wait := m.nextWait() - m.clock.Now().Sub(started)
			probeT = m.clock.NewTimer(max(wait, 0))
		case <-m.ejectedCh:
			stop(ejectT)
			ejectT = m.clock.NewTimer(m.passive.EjectFor)
		case <-timerC(ejectT):
			ejectT = nil
			m.endEjection()
		}
	}
}

func timerC(t clock.Timer) <-chan time.Time {
	if t == nil {
		return nil // blocks forever in a select
	}
	return t.C()
}

func stop(t clock.Timer) {
	if t != nil {
		t.Stop()
	}
}

// probeOnce runs one probe and applies its result. A probe cut short by ctx
// ending is not the target's fault and is dropped.
func (m *Monitor) probeOnce(ctx context.Context) {
	pctx, cancel := withProbeTimeout(ctx, m.spec.Timeout)
	start := m.clock.Now()
	err := m.prober.Probe(pctx, m.target)
	cancel()
	if ctx.Err() != nil {
		return
	}
	res := Result{At: start, Duration: m.clock.Now().Sub(start), Err: err}
	m.metrics.probe(m.check, res)
	if err != nil {
		m.log.LogAttrs(ctx, slog.LevelDebug, "probe failed", slog.Any("err", err))
	}
	m.record(res)
}

// record applies one probe result to the rise/fall state machine.
func (m *Monitor) record(res Result) {
	m.mu.Lock()
	m.last = res
	pass := res.Err == nil
	if pass {
		m.okRun, m.failRun = m.okRun+1, 0
	} else {
		m.okRun, m.failRun = 0, m.failRun+1
	}
	cur := m.State()
	switch {
	case cur == Unknown && pass:
		m.transitionLocked(Up, "first probe passed", false)
	case cur == Unknown:
		m.transitionLocked(Down, res.Err.Error(), false)
	case cur == Up && !pass && m.failRun >= m.spec.Fall:
		m.transitionLocked(Down, res.Err.Error(), false)
	case cur == Down && pass && m.okRun >= m.spec.Rise:
		m.transitionLocked(Up, fmt.Sprintf("%d consecutive probes passed", m.okRun), false)
	}
	m.mu.Unlock()
	m.announce()
}

// nextWait is the jittered wait before the next probe, chosen like HAProxy:
// inter while stably up, fastinter while undecided, downinter while down.
func (m *Monitor) nextWait() time.Duration {
	m.mu.Lock()
	d := m.spec.Interval
	switch m.State() {
	case Unknown:
		d = m.spec.FastInterval
	case Up:
		if m.failRun > 0 {
			d = m.spec.FastInterval
		}
	case Down:
		d = m.spec.DownInterval
		if m.okRun > 0 {
			d = m.spec.FastInterval
		}
	}
	m.mu.Unlock()
	return m.jitter(d)
}

// jitter returns d moved by a uniform random amount in ±Jitter×d.
func (m *Monitor) jitter(d time.Duration) time.Duration {
	if m.spec.Jitter == 0 {
		return d
	}
	off := (2*m.rand.Float64() - 1) * m.spec.Jitter * float64(d)
	return max(d+time.Duration(off), 0)
}

// startDelay is the wait before the first probe: short, so that targets are
// known soon after boot, but spread.
func (m *Monitor) startDelay() time.Duration {
	return time.Duration(m.rand.Float64() * m.spec.Jitter * float64(m.spec.FastInterval))
}

// transitionLocked moves to state to and queues the event for announce.
// m.mu must be held.
func (m *Monitor) transitionLocked(to State, reason string, passive bool) {
	now := m.clock.Now()
	ev := Event{
		Check: m.check, Target: m.target,
		From: m.State(), To: to,
		At: now, Reason: reason, Passive: passive,
	}
	m.state.Store(int32(to))
	m.since = now
	if to == Up {
		m.ejected.Store(false)
		// A run of passive failures from before the target went down
		// must not count against it now that it is back.
		m.passiveFails.Store(0)
	}
	if len(m.events) == maxEvents {
		copy(m.events, m.events[1:])
		m.events = m.events[:maxEvents-1]
	}
	m.events = append(m.events, ev)
	m.pending = append(m.pending, ev)
}

// announce logs, counts and hands out queued events, outside m.mu. Only one
// goroutine drains at a time, so OnTransition sees events in order even when
// a probe and a passive ejection race; a concurrent caller leaves its event
// to the goroutine already draining.
func (m *Monitor) announce() {
	m.mu.Lock()
	if m.announcing {
		m.mu.Unlock()
		return
	}
	m.announcing = true
	for len(m.pending) > 0 {
		ev := m.pending[0]
		m.pending = m.pending[1:]
		m.mu.Unlock()
		m.publish(ev)
		m.mu.Lock()
	}
	m.pending = nil
	m.announcing = false
	m.mu.Unlock()
}

func (m *Monitor) publish(ev Event) {
	level := slog.LevelInfo
	if ev.To == Down {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("from", ev.From.String()),
		slog.String("to", ev.To.String()),
		slog.String("reason", ev.Reason),
		slog.Bool("passive", ev.Passive),
	}
	// A change is an event of the cluster's timeline (internal/events);
	// a target's first verdict of up is what was expected, not news.
	if ev.From != Unknown || ev.To != Up {
		attrs = append(attrs, slog.String("event", "health"))
	}
	m.log.LogAttrs(context.Background(), level, "target is "+ev.To.String(), attrs...)
	m.targetMetrics(func(x *Metrics) { x.transition(ev) })
	if m.onTransition != nil {
		m.onTransition(ev)
	}
}
