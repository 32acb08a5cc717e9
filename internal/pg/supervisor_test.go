package pg

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haven-ha/haven/internal/testenv"
)

func TestRestartPolicyDefaults(t *testing.T) {
	p, err := RestartPolicy{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	want := RestartPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second,
		GiveUpAfter: 30 * time.Second, MaxRestarts: 5, Window: 10 * time.Minute}
	if p != want {
		t.Errorf("defaults = %+v; want %+v", p, want)
	}
}

func TestRestartPolicyErrors(t *testing.T) {
	for _, tc := range []struct {
		p    RestartPolicy
		want string
	}{
		{RestartPolicy{InitialBackoff: -time.Second}, "pg: restart policy: InitialBackoff -1s is negative; want a positive duration, or 0 for the default 100ms"},
		{RestartPolicy{MaxBackoff: -1}, "MaxBackoff -1ns is negative"},
		{RestartPolicy{GiveUpAfter: -time.Minute}, "GiveUpAfter -1m0s is negative"},
		{RestartPolicy{Window: -time.Minute}, "Window -1m0s is negative"},
		{RestartPolicy{MaxRestarts: -2}, "MaxRestarts -2 is negative; want a positive count, or 0 for the default 5"},
		{RestartPolicy{InitialBackoff: 10 * time.Second}, "InitialBackoff 10s is longer than MaxBackoff 5s"},
	} {
		_, err := tc.p.withDefaults()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v; want %q in it", tc.p, err, tc.want)
		}
	}
}

func TestBackoff(t *testing.T) {
	p := RestartPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	ms := time.Millisecond
	for failures, want := range []time.Duration{0, 100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second} {
		if got := p.backoff(failures); got != want {
			t.Errorf("backoff(%d) = %v; want %v", failures, got, want)
		}
	}
	if got := p.backoff(1 << 20); got != time.Second {
		t.Errorf("backoff(1<<20) = %v; want the maximum", got)
	}
}

// step is an event for the state machine at a time (from t0) and what must
// follow.
type step struct {
	at    time.Duration
	event string // begin, started, fail, exit, tick, stop
	state State
	delay time.Duration // the wait returned by fail and exit
	// giveUp is the give-up deadline after the step, from t0; -1 for none.
	giveUp time.Duration
}

func TestMachine(t *testing.T) {
	policy := RestartPolicy{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 2 * time.Second,
		GiveUpAfter: 10 * time.Second, MaxRestarts: 2, Window: time.Minute}
	s := time.Second
	ms := time.Millisecond
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a crash restarted in place", []step{
			{0, "begin", StateStarting, 0, 10 * s},
			{s, "started", StateRunning, 0, -1},
			{5 * s, "exit", StateRestarting, 0, 15 * s},
			{6 * s, "started", StateRunning, 0, -1},
		}},
		{"start fails until GiveUpAfter, then recovers", []step{
			{0, "begin", StateStarting, 0, 10 * s},
			{100 * ms, "fail", StateRestarting, 100 * ms, 10 * s},
			{300 * ms, "fail", StateRestarting, 200 * ms, 10 * s},
			{600 * ms, "fail", StateRestarting, 400 * ms, 10 * s},
			{9 * s, "tick", StateRestarting, 0, 10 * s},
			{10 * s, "tick", StateFailed, 0, -1},
			{11 * s, "fail", StateFailed, 2 * s, -1},
			{13 * s, "started", StateRunning, 0, -1},
		}},
		{"a failed start past GiveUpAfter fails at once", []step{
			{0, "begin", StateStarting, 0, 10 * s},
			{12 * s, "fail", StateFailed, 2 * s, -1},
		}},
		{"a crash loop", []step{
			{0, "begin", StateStarting, 0, 10 * s},
			{s, "started", StateRunning, 0, -1},
			{10 * s, "exit", StateRestarting, 0, 20 * s},
			{11 * s, "started", StateRunning, 0, -1},
			{20 * s, "exit", StateRestarting, 0, 30 * s},
			{21 * s, "started", StateRunning, 0, -1},
			{30 * s, "exit", StateFailed, 2 * s, -1},
			{32 * s, "started", StateRunning, 0, -1},
			// The first two exits left the window.
			{80 * s, "exit", StateRestarting, 0, 90 * s},
		}},
		{"stop", []step{
			{0, "begin", StateStarting, 0, 10 * s},
			{s, "fail", StateRestarting, 100 * ms, 10 * s},
			{2 * s, "stop", StateStopped, 0, -1},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
			m := machine{p: policy}
			restarts, failures := 0, 0
			for i, st := range tc.steps {
				now := t0.Add(st.at)
				var delay time.Duration
				before := m.st.State
				switch st.event {
				case "begin":
					m.begin(now, false)
				case "started":
					m.started(now)
				case "fail":
					failures++
					delay = m.startFailed(now, errors.New("port in use"))
				case "exit":
					restarts++
					delay = m.exited(now, errors.New("killed"))
				case "tick":
					m.tick(now)
				case "stop":
					m.stopped(now)
				}
				if m.st.State != st.state || delay != st.delay {
					t.Fatalf("step %d (%s at %v): %v, wait %v; want %v, wait %v", i, st.event, st.at, m.st.State, delay, st.state, st.delay)
				}
				if before != m.st.State && !m.st.Since.Equal(now) {
					t.Errorf("step %d: Since = %v; want %v", i, m.st.Since, now)
				}
				want := time.Time{}
				if st.giveUp >= 0 {
					want = t0.Add(st.giveUp)
				}
				if got := m.giveUpAt(); !got.Equal(want) {
					t.Errorf("step %d: give-up deadline %v; want %v", i, got, want)
				}
				if (m.st.State == StateFailed) != (m.st.Reason != "") {
					t.Errorf("step %d: state %v with reason %q", i, m.st.State, m.st.Reason)
				}
				if m.st.State == StateRunning && !m.st.DownSince.IsZero() {
					t.Errorf("step %d: running, and down since %v", i, m.st.DownSince)
				}
				if m.st.Restarts != restarts || m.st.StartFailures != failures {
					t.Errorf("step %d: %d restarts, %d start failures; want %d, %d", i, m.st.Restarts, m.st.StartFailures, restarts, failures)
				}
			}
		})
	}
}

func TestMachineReasons(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	m := machine{p: RestartPolicy{GiveUpAfter: time.Second, MaxBackoff: time.Second, MaxRestarts: 1, Window: time.Minute}}
	m.begin(t0, false)
	m.tick(t0.Add(1500 * time.Millisecond))
	if want := "postgres has been down since 2025-01-02T03:04:05Z, for 1.5s (GiveUpAfter)"; m.st.Reason != want {
		t.Errorf("reason = %q; want %q", m.st.Reason, want)
	}
	m.started(t0.Add(2 * time.Second))
	m.exited(t0.Add(3*time.Second), errors.New("killed"))
	m.started(t0.Add(4 * time.Second))
	m.exited(t0.Add(5*time.Second), errors.New("killed"))
	if want := "postgres exited 2 times within 1m0s, more than MaxRestarts 1: a crash loop"; m.st.Reason != want {
		t.Errorf("reason = %q; want %q", m.st.Reason, want)
	}
}

func TestSupervisorMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := newSupervisorMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := newSupervisorMetrics(reg); err != nil || again.up != m.up || again.state != m.state {
		t.Errorf("newSupervisorMetrics on the same registry = %v; want its collectors reused", err)
	}
	m.set(Status{}, Status{})
	m.set(Status{}, Status{State: StateRunning})
	m.set(Status{State: StateRunning}, Status{State: StateRestarting, Restarts: 1})
	m.set(Status{State: StateRestarting, Restarts: 1}, Status{State: StateFailed, Restarts: 1, StartFailures: 3})

	for _, c := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"up", m.up, 0},
		{"restarts_total", m.restarts, 1},
		{"start_failures_total", m.startFailures, 3},
		{"state{state=failed}", m.state.WithLabelValues("failed"), 1},
		{"state{state=restarting}", m.state.WithLabelValues("restarting"), 0},
		{"state{state=running}", m.state.WithLabelValues("running"), 0},
		{"state{state=starting}", m.state.WithLabelValues("starting"), 0},
		{"state{state=stopped}", m.state.WithLabelValues("stopped"), 0},
	} {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("haven_pg_server_%s = %v; want %v", c.name, got, c.want)
		}
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 8 {
		t.Errorf("the registry holds %d series (%v); want exactly 8", n, err)
	}

	testenv.LintMetrics(t, reg)
}

func TestNewSupervisorErrors(t *testing.T) {
	if _, err := NewSupervisor(nil, RestartPolicy{}, nil, nil); err == nil || err.Error() != "pg: supervisor: no server" {
		t.Errorf("NewSupervisor(nil) = %v", err)
	}
	s := &Server{cfg: &settings{dataDir: "/x"}}
	if _, err := NewSupervisor(s, RestartPolicy{MaxRestarts: -1}, nil, nil); err == nil || !strings.Contains(err.Error(), "MaxRestarts -1") {
		t.Errorf("NewSupervisor with a bad policy = %v", err)
	}
	if _, err := NewSupervisor(s, RestartPolicy{}, nil, nil); err != nil {
		t.Errorf("NewSupervisor without registerer = %v", err)
	}
}

// supervised is a Supervisor under test, with the states it reported.
type supervised struct {
	*Supervisor
	mu     sync.Mutex
	states []Status
	done   chan error // Run's result
	cancel context.CancelFunc
}

// supervise runs a Supervisor of s with policy until the test ends.
func supervise(t *testing.T, s *testServer, policy RestartPolicy) *supervised {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	sup, err := NewSupervisor(s.Server, policy, slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug})), reg)
	if err != nil {
		t.Fatal(err)
	}
	v := &supervised{Supervisor: sup, done: make(chan error, 1)}
	sup.OnChange(func(st Status) {
		v.mu.Lock()
		defer v.mu.Unlock()
		v.states = append(v.states, st)
	})
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	go func() { v.done <- sup.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-v.done
	})
	return v
}

// gauges returns haven_pg_server_up and haven_pg_server_state for state.
func (v *supervised) gauges(state State) (up, inState float64) {
	return testutil.ToFloat64(v.metrics.up), testutil.ToFloat64(v.metrics.state.WithLabelValues(state.String()))
}

// initSupervised initializes a testServer made with edit and supervises it
// with policy.
func initSupervised(t *testing.T, edit func(*Config), policy RestartPolicy) (*testServer, *supervised) {
	t.Helper()
	s := newTestServer(t, edit)
	if err := s.Init(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	return s, supervise(t, s, policy)
}

// seen returns the states reported so far.
func (v *supervised) seen() []State {
	v.mu.Lock()
	defer v.mu.Unlock()
	var out []State
	for _, st := range v.states {
		out = append(out, st.State)
	}
	return out
}

// reported returns the statuses reported so far.
func (v *supervised) reported() []Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.states)
}

// waitState waits until the Supervisor has reported state (OnChange runs
// just after Status changes) and is in it.
func (v *supervised) waitState(t *testing.T, state State) Status {
	t.Helper()
	var st Status
	waitFor(t, "state "+state.String(), func() (string, bool) {
		st = v.Status()
		seen := v.seen()
		return st.State.String() + ", reported " + formatStates(seen) + ", last error: " + errString(st.LastError),
			st.State == state && len(seen) > 0 && seen[len(seen)-1] == state
	})
	return st
}

// stop cancels Run and checks that it returns nil with postgres gone.
func (v *supervised) stop(t *testing.T) {
	t.Helper()
	pid := v.srv.PID()
	var pids []int
	if pid != 0 {
		pids = append(childrenOf(pid), pid)
	}
	v.cancel()
	select {
	case err := <-v.done:
		if err != nil {
			t.Errorf("Run after cancel = %v; want nil", err)
		}
		v.done <- err // for the cleanup
	case <-time.After(testTimeout):
		t.Fatalf("Run still runs %v after cancel", testTimeout)
	}
	for _, p := range pids {
		if !gone(p) {
			t.Errorf("process %d of postgres (postmaster %d) still runs after Run returned", p, pid)
		}
	}
	if st := v.Status(); st.State != StateStopped {
		t.Errorf("state after Run = %v; want stopped", st.State)
	}
	if up, stopped := v.gauges(StateStopped); up != 0 || stopped != 1 {
		t.Errorf("metrics after Run: up %v, state{stopped} %v; want 0, 1", up, stopped)
	}
}

func formatStates(ss []State) string {
	var out []string
	for _, s := range ss {
		out = append(out, s.String())
	}
	return strings.Join(out, "→")
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

func TestSupervisorRestartsInPlace(t *testing.T) {
	t.Parallel()
	s, v := initSupervised(t, nil, RestartPolicy{})
	v.waitState(t, StateRunning)
	s.exec(t, "CREATE TABLE acknowledged (v int); INSERT INTO acknowledged VALUES (42)")

	pid := s.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "running again", func() (string, bool) {
		seen := v.seen()
		return formatStates(seen), len(seen) >= 3 && seen[len(seen)-1] == StateRunning
	})
	if got, want := formatStates(v.seen()), "starting→running→restarting→running"; got != want {
		t.Errorf("states %s; want %s", got, want)
	} else {
		r := v.reported()
		t.Logf("down for %v (kill -9 to accepting connections, crash recovery included)", r[3].Since.Sub(r[2].Since))
	}
	st := v.Status()
	if st.Restarts != 1 || st.StartFailures != 0 {
		t.Errorf("%d restarts, %d start failures; want 1, 0", st.Restarts, st.StartFailures)
	}
	var exit *ExitError
	if !errors.As(st.LastError, &exit) || exit.PID != pid || !strings.Contains(st.LastError.Error(), "signal: killed") {
		t.Errorf("LastError = %v; want the *ExitError of pid %d", st.LastError, pid)
	}
	if npid := s.PID(); npid == 0 || npid == pid {
		t.Errorf("PID after the restart = %d; want a new postmaster (the old one was %d)", npid, pid)
	}
	if v := s.queryString(t, "SELECT v::text FROM acknowledged"); v != "42" {
		t.Errorf("after the restart in place the row holds %q; want 42", v)
	}
	if log := s.log.String(); !strings.Contains(log, "restarting it in place") || !strings.Contains(log, "last log lines") {
		t.Errorf("the exit is not logged with postgres's last lines:\n%s", log)
	}
	if up, running := v.gauges(StateRunning); up != 1 || running != 1 || testutil.ToFloat64(v.metrics.restarts) != 1 {
		t.Errorf("metrics after the restart: up %v, state{running} %v, restarts_total %v; want 1, 1, 1", up, running, testutil.ToFloat64(v.metrics.restarts))
	}

	v.stop(t)
	if got, want := formatStates(v.seen()), "starting→running→restarting→running→stopped"; got != want {
		t.Errorf("states %s; want %s", got, want)
	}
	// Stopped with a fast shutdown: clean, no crash recovery next time.
	cd, err := s.ControlData(testCtx(t))
	if err != nil || cd.State != "shut down" {
		t.Errorf("ControlData after Run = %q, %v; want shut down", cd.State, err)
	}
}

func TestSupervisorGivesUpAndRecovers(t *testing.T) {
	t.Parallel()
	l, port := holdPort(t)
	s, v := initSupervised(t, func(c *Config) { c.Port = port }, RestartPolicy{InitialBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, GiveUpAfter: time.Second})
	st := v.waitState(t, StateFailed)
	if got, want := formatStates(v.seen()), "starting→restarting→failed"; got != want {
		t.Errorf("states %s; want %s", got, want)
	}
	if st.LastError == nil || !strings.Contains(st.LastError.Error(), "Address already in use") {
		t.Errorf("LastError = %v; want the port named in use", st.LastError)
	}
	if !strings.Contains(st.Reason, "(GiveUpAfter)") || st.StartFailures < 1 || st.Restarts != 0 {
		t.Errorf("failed with reason %q after %d start failures and %d restarts", st.Reason, st.StartFailures, st.Restarts)
	}
	if up, failed := v.gauges(StateFailed); up != 0 || failed != 1 || testutil.ToFloat64(v.metrics.startFailures) < 1 {
		t.Errorf("metrics when failed: up %v, state{failed} %v, start_failures_total %v; want 0, 1, >= 1", up, failed, testutil.ToFloat64(v.metrics.startFailures))
	}

	// The operator frees the port: the next attempt succeeds.
	l.Close()
	st = v.waitState(t, StateRunning)
	if got, want := formatStates(v.seen()), "starting→restarting→failed→running"; got != want {
		t.Errorf("states %s; want %s", got, want)
	}
	if st.Reason != "" || !st.DownSince.IsZero() {
		t.Errorf("running with reason %q, down since %v", st.Reason, st.DownSince)
	}
	if got := s.queryString(t, "SELECT 'up'"); got != "up" {
		t.Errorf("SELECT 'up' = %q", got)
	}
	v.stop(t)
}

func TestSupervisorRunTwice(t *testing.T) {
	t.Parallel()
	s, v := initSupervised(t, nil, RestartPolicy{})
	v.waitState(t, StateRunning)
	if err := v.Run(testCtx(t)); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("a second Run = %v; want it refused", err)
	}
	v.stop(t)

	// A postgres started by hand (as Clone or Rewind do) is adopted.
	if err := s.Start(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	v = supervise(t, s, RestartPolicy{})
	v.waitState(t, StateRunning)
	if s.PID() != pid {
		t.Errorf("PID %d after Run; want the adopted %d", s.PID(), pid)
	}
	v.stop(t)
	if got, want := formatStates(v.seen()), "running→stopped"; got != want {
		t.Errorf("states %s; want %s", got, want)
	}
}

// TestSupervisorRestartAsAsked: Restart stops postgres cleanly and starts
// it again, returning once it runs: a new postmaster with the data, and
// neither a restart nor a failure in the counts an alert watches.
func TestSupervisorRestartAsAsked(t *testing.T) {
	t.Parallel()
	s, v := initSupervised(t, nil, RestartPolicy{})
	v.waitState(t, StateRunning)
	s.exec(t, "CREATE TABLE acknowledged (v int); INSERT INTO acknowledged VALUES (42)")
	pid := s.PID()
	if err := v.Restart(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if npid := s.PID(); npid == 0 || npid == pid || v.Status().State != StateRunning {
		t.Fatalf("after Restart: pid %d (was %d), state %s; want a new running postmaster", npid, pid, v.Status().State)
	}
	if got, want := formatStates(v.seen()), "starting→running→restarting→running"; got != want {
		t.Errorf("states %s; want %s", got, want)
	}
	if st := v.Status(); st.Restarts != 0 || st.StartFailures != 0 || st.LastError != nil {
		t.Errorf("after a restart as asked: %d restarts, %d start failures, last error %v; want none", st.Restarts, st.StartFailures, st.LastError)
	}
	if got := s.queryString(t, "SELECT v::text FROM acknowledged"); got != "42" {
		t.Errorf("after the restart the row holds %q; want 42", got)
	}
	v.stop(t)
	if err := v.Restart(testCtx(t)); err == nil {
		t.Error("Restart of a stopped supervisor succeeded")
	}
}
