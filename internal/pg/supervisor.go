package pg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// supervisorStopTimeout bounds the fast shutdown of a Supervisor whose Run
// ends; Stop then escalates to an immediate shutdown and SIGKILL.
const supervisorStopTimeout = 10 * time.Second

// The defaults of RestartPolicy.
const (
	// DefaultInitialBackoff is RestartPolicy.InitialBackoff's default.
	DefaultInitialBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff is RestartPolicy.MaxBackoff's default.
	DefaultMaxBackoff = 5 * time.Second
	// DefaultGiveUpAfter is RestartPolicy.GiveUpAfter's default.
	DefaultGiveUpAfter = 30 * time.Second
	// DefaultMaxRestarts is RestartPolicy.MaxRestarts's default.
	DefaultMaxRestarts = 5
	// DefaultRestartWindow is RestartPolicy.Window's default.
	DefaultRestartWindow = 10 * time.Minute
)

// RestartPolicy says how a Supervisor restarts postgres. A zero field takes
// its default.
type RestartPolicy struct {
	// InitialBackoff is the wait after the first failed start; it doubles
	// after each further failure, up to MaxBackoff. After an exit of a
	// running postgres the first attempt is immediate. Default 100ms.
	InitialBackoff time.Duration
	// MaxBackoff is the longest wait between attempts, and the wait in
	// StateFailed. Default 5s.
	MaxBackoff time.Duration
	// GiveUpAfter is how long postgres may be down (from its exit, or
	// from Run's start) before the Supervisor reports StateFailed.
	// Default 30s.
	GiveUpAfter time.Duration
	// MaxRestarts is how many restarts after an exit of a running postgres
	// Window allows: one more within Window is a crash loop, reported as
	// StateFailed at once. Default 5.
	MaxRestarts int
	// Window is the sliding window of MaxRestarts. Default 10m.
	Window time.Duration
}

// withDefaults fills the zero fields of p and checks the result.
func (p RestartPolicy) withDefaults() (RestartPolicy, error) {
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"InitialBackoff", &p.InitialBackoff, DefaultInitialBackoff},
		{"MaxBackoff", &p.MaxBackoff, DefaultMaxBackoff},
		{"GiveUpAfter", &p.GiveUpAfter, DefaultGiveUpAfter},
		{"Window", &p.Window, DefaultRestartWindow},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return p, fmt.Errorf("pg: restart policy: %s %v is negative; want a positive duration, or 0 for the default %v", d.name, *d.v, d.def)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	if p.MaxRestarts < 0 {
		return p, fmt.Errorf("pg: restart policy: MaxRestarts %d is negative; want a positive count, or 0 for the default %d", p.MaxRestarts, DefaultMaxRestarts)
	}
	if p.MaxRestarts == 0 {
		p.MaxRestarts = DefaultMaxRestarts
	}
	if p.InitialBackoff > p.MaxBackoff {
		return p, fmt.Errorf("pg: restart policy: InitialBackoff %v is longer than MaxBackoff %v; want InitialBackoff <= MaxBackoff", p.InitialBackoff, p.MaxBackoff)
	}
	return p, nil
}

// backoff returns the wait before the next start attempt after failures
// consecutive failed ones: none after an exit (0 failures), then
// InitialBackoff, doubling up to MaxBackoff.
func (p RestartPolicy) backoff(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	d := p.InitialBackoff
	for i := 1; i < failures && d < p.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.MaxBackoff)
}

// State is what a Supervisor knows of its postgres.
type State int

// The states of a Supervisor.
const (
	// StateStopped: Run is not running (before it, after it returned).
	StateStopped State = iota
	// StateStarting: Run is starting postgres for the first time.
	StateStarting
	// StateRunning: postgres accepts connections.
	StateRunning
	// StateRestarting: postgres exited, or failed to start, less than
	// GiveUpAfter ago; the Supervisor is starting it again.
	StateRestarting
	// StateFailed: postgres has been down for GiveUpAfter, or crashed more
	// than MaxRestarts times within Window. The Supervisor keeps trying
	// every MaxBackoff and goes to StateRunning when a start succeeds.
	StateFailed
)

// allStates lists the states, for the metrics.
var allStates = [...]State{StateStopped, StateStarting, StateRunning, StateRestarting, StateFailed}

// String returns the state's name as the metrics and logs spell it.
func (s State) String() string {
	switch s {
	case StateStopped:
		return "stopped"
	case StateStarting:
		return "starting"
	case StateRunning:
		return "running"
	case StateRestarting:
		return "restarting"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Status is a Supervisor's view of its postgres.
type Status struct {
	// State is where postgres is.
	State State
	// Since is when State was entered.
	Since time.Time
	// DownSince is when postgres went down (its exit, or Run's start);
	// zero while it runs and when stopped.
	DownSince time.Time
	// Restarts counts the exits of a running postgres that the Supervisor
	// did not ask for, each followed by a restart in place.
	Restarts int
	// StartFailures counts the start attempts that failed.
	StartFailures int
	// LastError is the last unexpected exit (an *ExitError) or failed
	// start; it stays after postgres runs again.
	LastError error
	// Reason says why State is StateFailed; empty in the other states.
	Reason string
}

// machine is the Supervisor's state machine: pure, driven by events and
// the time they happened, so that tests need no clock.
type machine struct {
	p        RestartPolicy
	st       Status
	failures int         // consecutive failed start attempts
	exits    []time.Time // exits of a running postgres within Window
}

// enter moves to state s at now.
func (m *machine) enter(s State, now time.Time) {
	if m.st.State != s {
		m.st.State = s
		m.st.Since = now
	}
	if s != StateFailed {
		m.st.Reason = ""
	}
}

// fail enters StateFailed for reason.
func (m *machine) fail(now time.Time, reason string) {
	m.enter(StateFailed, now)
	m.st.Reason = reason
}

// begin is Run's start: postgres already runs (adopted) or is starting.
func (m *machine) begin(now time.Time, running bool) {
	m.failures = 0
	if running {
		m.started(now)
		return
	}
	m.st.DownSince = now
	m.enter(StateStarting, now)
}

// started is a start that succeeded.
func (m *machine) started(now time.Time) {
	m.failures = 0
	m.st.DownSince = time.Time{}
	m.enter(StateRunning, now)
}

// startFailed is a failed start; it returns the wait before the next.
func (m *machine) startFailed(now time.Time, err error) time.Duration {
	m.failures++
	m.st.StartFailures++
	m.st.LastError = err
	m.tick(now)
	if m.st.State == StateFailed {
		return m.p.MaxBackoff
	}
	m.enter(StateRestarting, now)
	return m.p.backoff(m.failures)
}

// exited is an exit of a running postgres that the Supervisor did not ask
// for; it returns the wait before the restart.
func (m *machine) exited(now time.Time, err error) time.Duration {
	m.failures = 0
	m.st.Restarts++
	m.st.LastError = err
	m.st.DownSince = now
	kept := m.exits[:0]
	for _, t := range m.exits {
		if now.Sub(t) < m.p.Window {
			kept = append(kept, t)
		}
	}
	m.exits = append(kept, now)
	if n := len(m.exits); n > m.p.MaxRestarts {
		m.fail(now, fmt.Sprintf("postgres exited %d times within %v, more than MaxRestarts %d: a crash loop", n, m.p.Window, m.p.MaxRestarts))
		return m.p.MaxBackoff
	}
	m.enter(StateRestarting, now)
	return m.p.backoff(0)
}

// restartAsked is the exit of a postgres that Restart stopped: down, and
// starting again at once, neither a crash nor a failure.
func (m *machine) restartAsked(now time.Time) {
	m.failures = 0
	m.st.DownSince = now
	m.enter(StateRestarting, now)
}

// giveUpAt returns when a down postgres turns into StateFailed, or zero
// when no such deadline is pending.
func (m *machine) giveUpAt() time.Time {
	if s := m.st.State; s != StateStarting && s != StateRestarting {
		return time.Time{}
	}
	return m.st.DownSince.Add(m.p.GiveUpAfter)
}

// tick enters StateFailed when postgres has been down for GiveUpAfter.
func (m *machine) tick(now time.Time) {
	if at := m.giveUpAt(); !at.IsZero() && !now.Before(at) {
		m.fail(now, fmt.Sprintf("postgres has been down since %s, for %v (GiveUpAfter)",
			m.st.DownSince.Format(time.RFC3339Nano), now.Sub(m.st.DownSince).Round(time.Millisecond)))
	}
}

// stopped is the end of Run.
func (m *machine) stopped(now time.Time) {
	m.failures = 0
	m.st.DownSince = time.Time{}
	m.enter(StateStopped, now)
}

// Supervisor keeps one Server running: it starts it, restarts it in place
// when it exits without being asked to (a crash, kill -9), with a backoff
// between failed attempts, reports it as failed once it has been down for
// the policy's GiveUpAfter, and stops it when Run's context ends.
//
// Stop postgres by ending Run, not with Server.Stop: the Supervisor
// restarts a postgres that Server.Stop ended.
type Supervisor struct {
	srv     *Server
	log     *slog.Logger
	metrics *supervisorMetrics

	running atomic.Bool // Run is running
	// restartAsked is set by Restart before it stops postgres: the exit
	// that follows is a restart, not a crash.
	restartAsked atomic.Bool

	mu       sync.Mutex
	m        machine // m.p, the policy, is set by NewSupervisor and never changes: read it without mu
	onChange func(Status)
}

// NewSupervisor returns a Supervisor of srv with policy, logging to log
// (nil: discard) and registering its metrics on reg (nil: not exported).
// It starts nothing.
func NewSupervisor(srv *Server, policy RestartPolicy, log *slog.Logger, reg prometheus.Registerer) (*Supervisor, error) {
	if srv == nil {
		return nil, errors.New("pg: supervisor: no server")
	}
	p, err := policy.withDefaults()
	if err != nil {
		return nil, err
	}
	metrics, err := newSupervisorMetrics(reg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Supervisor{
		srv:     srv,
		log:     log.With("component", "pg", "datadir", srv.DataDir()),
		metrics: metrics,
		m:       machine{p: p},
	}
	metrics.set(s.m.st, s.m.st)
	return s, nil
}

// Policy returns the restart policy, defaults filled in.
func (s *Supervisor) Policy() RestartPolicy { return s.m.p }

// Status returns the Supervisor's view of postgres.
func (s *Supervisor) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m.st
}

// OnChange makes f receive the Status after every change of State, in
// order, from Run's goroutine: f must not block. A keeper gives up
// leadership as soon as the state is not StateRunning, and declares the
// node ineligible in StateFailed. Nil removes it.
func (s *Supervisor) OnChange(f func(Status)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onChange = f
}

// apply runs an event on the state machine, and reports a change to the
// metrics, the log and OnChange's function. Only Run calls it, so the
// reports are in order.
func (s *Supervisor) apply(event func(m *machine, now time.Time)) Status {
	s.mu.Lock()
	before := s.m.st
	event(&s.m, time.Now())
	after := s.m.st
	f := s.onChange
	s.mu.Unlock()
	s.metrics.set(before, after)
	if after.State == before.State {
		return after
	}
	switch after.State {
	case StateFailed:
		s.log.Error("postgres failed", "reason", after.Reason, "err", after.LastError,
			"restarts", after.Restarts, "retry_every", s.m.p.MaxBackoff)
	case StateRunning:
		if !before.DownSince.IsZero() && before.State != StateStarting {
			s.log.Info("postgres runs again", "down_for", after.Since.Sub(before.DownSince).Round(time.Millisecond),
				"restarts", after.Restarts, "pid", s.srv.PID())
		}
	}
	s.log.Debug("supervisor state", "from", before.State.String(), "to", after.State.String())
	if f != nil {
		f(after)
	}
	return after
}

// Run starts postgres (or adopts it when it already runs, after Clone or
// Rewind) and keeps it running until ctx ends: it restarts it in place
// after an exit nobody asked for, right away, then with the policy's
// backoff while starts fail; it reports StateFailed once postgres has been
// down for GiveUpAfter, and keeps trying every MaxBackoff. A start that
// takes long (crash recovery) is not cut short.
//
// When ctx ends Run stops postgres with a fast shutdown, bounded (an
// immediate shutdown, then SIGKILL, after 10s), and returns nil, or the
// error of a shutdown that had to escalate. Run may be called again after
// it returned, not while it runs.
func (s *Supervisor) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("pg: supervisor: Run is already running")
	}
	defer s.running.Store(false)
	defer s.apply(func(m *machine, now time.Time) { m.stopped(now) })
	// A restart asked for as the session ended is moot: the next session
	// must not take its first crash for it.
	defer s.restartAsked.Store(false)

	up := s.srv.PID() != 0
	if up {
		s.log.Info("supervising a running postgres", "pid", s.srv.PID())
	}
	s.apply(func(m *machine, now time.Time) { m.begin(now, up) })
	var delay time.Duration
	for {
		if !up {
			if !s.await(ctx, delay, nil) {
				return s.shutdown()
			}
			err := s.attempt(ctx)
			if ctx.Err() != nil {
				return s.shutdown()
			}
			if err != nil {
				st := s.apply(func(m *machine, now time.Time) { delay = m.startFailed(now, err) })
				lvl := slog.LevelWarn
				if st.State == StateFailed {
					lvl = slog.LevelDebug
				}
				s.log.Log(ctx, lvl, "cannot start postgres", "err", err, "attempt", st.StartFailures, "retry_in", delay)
				continue
			}
			s.apply(func(m *machine, now time.Time) { m.started(now) })
			up = true
		}
		select {
		case <-ctx.Done():
			return s.shutdown()
		case <-s.srv.Done():
		}
		err := s.srv.Wait()
		if s.restartAsked.Load() {
			s.apply(func(m *machine, now time.Time) { m.restartAsked(now) })
			s.restartAsked.Store(false)
			s.log.Info("postgres stopped for a restart, as asked: starting it again")
			up, delay = false, 0
			continue
		}
		if err == nil {
			err = errors.New("pg: postgres was stopped by a Server.Stop the supervisor did not ask for")
		}
		st := s.apply(func(m *machine, now time.Time) { delay = m.exited(now, err) })
		s.log.Warn("postgres exited unexpectedly; restarting it in place", "err", err,
			"restarts", st.Restarts, "state", st.State.String(), "in", delay)
		up = false
	}
}

// attempt runs Start, entering StateFailed at the give-up deadline if the
// start still runs then. When ctx ends, Start stops postgres and returns.
func (s *Supervisor) attempt(ctx context.Context) error {
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = s.srv.Start(ctx)
	}()
	s.await(ctx, -1, done)
	<-done
	return err
}

// await waits for d (d < 0: no limit), for done to close, or for ctx to
// end, entering StateFailed at the give-up deadline meanwhile. It returns
// false when ctx ended.
func (s *Supervisor) await(ctx context.Context, d time.Duration, done <-chan struct{}) bool {
	var wait <-chan time.Time
	if d >= 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		wait = t.C
	}
	for {
		s.mu.Lock()
		at := s.m.giveUpAt()
		s.mu.Unlock()
		var giveUp *time.Timer
		var giveUpC <-chan time.Time
		if !at.IsZero() {
			giveUp = time.NewTimer(time.Until(at))
			giveUpC = giveUp.C
		}
		select {
		case <-ctx.Done():
		case <-wait:
		case <-done:
		case <-giveUpC:
			s.apply(func(m *machine, now time.Time) { m.tick(now) })
			continue
		}
		if giveUp != nil {
			giveUp.Stop()
		}
		return ctx.Err() == nil
	}
}

// Restart stops the running postgres with a fast shutdown and waits until
// Run has started it again and it accepts connections (StateRunning), or
// ctx ends: to apply settings that need a restart. Unlike an exit nobody
// asked for, it counts neither as a restart nor as a failure.
func (s *Supervisor) Restart(ctx context.Context) error {
	if !s.running.Load() || s.Status().State != StateRunning {
		return fmt.Errorf("pg: restart: postgres is %s, not running under the supervisor", s.Status().State)
	}
	s.restartAsked.Store(true)
	if err := s.srv.Stop(ctx, StopFast); err != nil {
		s.restartAsked.Store(false)
		return fmt.Errorf("pg: restart: %w", err)
	}
	for {
		switch st := s.Status(); {
		case st.State == StateRunning && !s.restartAsked.Load():
			// Run clears the flag once it has left StateRunning.
			return nil
		case st.State == StateFailed:
			return fmt.Errorf("pg: restart: postgres did not start again: %s", st.Reason)
		case st.State == StateStopped || !s.running.Load():
			return errors.New("pg: restart: the supervisor stopped postgres meanwhile (the keeper ended its session)")
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("pg: restart: postgres stopped; not running again yet: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// shutdown stops postgres at the end of Run.
func (s *Supervisor) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), supervisorStopTimeout)
	defer cancel()
	if err := s.srv.Stop(ctx, StopFast); err != nil {
		return fmt.Errorf("pg: supervisor: %w", err)
	}
	return nil
}
