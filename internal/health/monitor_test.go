package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/clock"
	"github.com/haven-ha/haven/internal/testenv"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// testSpec has distinct intervals so that every wait says which one was
// chosen. The timeout is long because probe deadlines run on the real clock.
var testSpec = Spec{
	Interval:     10 * time.Second,
	FastInterval: time.Second,
	DownInterval: 5 * time.Second,
	Timeout:      time.Hour,
	Rise:         2,
	Fall:         3,
}

// scriptProber returns scripted results, 'P' pass and 'F' fail, then blocks
// until its context ends.
type scriptProber struct {
	script string
	calls  atomic.Int32
}

func (p *scriptProber) Probe(ctx context.Context, target string) error {
	i := int(p.calls.Add(1)) - 1
	if i >= len(p.script) {
		<-ctx.Done()
		return ctx.Err()
	}
	if p.script[i] == 'P' {
		return nil
	}
	return fmt.Errorf("probe %d failed", i)
}

// recorder collects the events handed to OnTransition.
type recorder struct {
	mu     sync.Mutex
	events []Event
	ch     chan Event
}

func newRecorder() *recorder { return &recorder{ch: make(chan Event, 100)} }

func (r *recorder) add(ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	r.ch <- ev
}

func (r *recorder) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...)
}

// next waits for the next event.
func (r *recorder) next(t *testing.T) Event {
	t.Helper()
	select {
	case ev := <-r.ch:
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no transition within 5s")
		return Event{}
	}
}

// settled waits until the monitor has run probe number n and armed the
// timer for the next one.
func settled(t *testing.T, fc *clock.Fake, p *scriptProber, n int) {
	t.Helper()
	testenv.Poll(t, 5*time.Second, fmt.Sprintf("probe %d and the next timer", n), func() (bool, string) {
		calls, waiters := int(p.calls.Load()), fc.Waiters()
		return calls == n && waiters == 1, fmt.Sprintf("%d probes, %d timers", calls, waiters)
	})
}

func TestRiseFall(t *testing.T) {
	s, f, d := 10*time.Second, time.Second, 5*time.Second // stable, fast, down
	tests := []struct {
		name       string
		rise, fall int
		script     string
		waits      []time.Duration // after each probe
		want       []string        // "probe#:from->to"
	}{
		{"first pass is up", 0, 0, "P", []time.Duration{s}, []string{"0:unknown->up"}},
		{"first fail is down", 0, 0, "F", []time.Duration{d}, []string{"0:unknown->down"}},
		{"fall failures take it down", 0, 0, "PFFF", []time.Duration{s, f, f, d},
			[]string{"0:unknown->up", "3:up->down"}},
		{"a pass resets the failures", 0, 0, "PFFPFFF", []time.Duration{s, f, f, s, f, f, d},
			[]string{"0:unknown->up", "6:up->down"}},
		{"rise passes bring it up", 0, 0, "FPP", []time.Duration{d, f, s},
			[]string{"0:unknown->down", "2:down->up"}},
		{"a failure resets the passes", 0, 0, "FPFPP", []time.Duration{d, f, d, f, s},
			[]string{"0:unknown->down", "4:down->up"}},
		{"stays down", 0, 0, "FFF", []time.Duration{d, d, d}, []string{"0:unknown->down"}},
		{"stays up", 0, 0, "PPP", []time.Duration{s, s, s}, []string{"0:unknown->up"}},
		{"rise 1 fall 1", 1, 1, "PFPF", []time.Duration{s, d, s, d},
			[]string{"0:unknown->up", "1:up->down", "2:down->up", "3:up->down"}},
		{"rise 3", 3, 1, "FPPFPPP", []time.Duration{d, f, f, d, f, f, s},
			[]string{"0:unknown->down", "6:down->up"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testSpec
			if tt.rise > 0 {
				spec.Rise, spec.Fall = tt.rise, tt.fall
			}
			fc := clock.NewFake(epoch)
			p := &scriptProber{script: tt.script}
			rec := newRecorder()
			m := NewMonitor(Options{Check: "web", Target: "127.0.0.1:8080", Spec: spec,
				Prober: p, Clock: fc, OnTransition: rec.add})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error)
			go func() { done <- m.Run(ctx) }()

			// probeAt[i] is when probe i ran.
			probeAt := make([]time.Time, len(tt.script))
			for i := range tt.script {
				settled(t, fc, p, i+1)
				probeAt[i] = fc.Now()
				// The timer must not fire a nanosecond early...
				fc.Advance(tt.waits[i] - time.Nanosecond)
				if got := int(p.calls.Load()); got != i+1 || fc.Waiters() != 1 {
					t.Fatalf("after probe %d: fired before %v", i, tt.waits[i])
				}
				// ...and must fire on time.
				fc.Advance(time.Nanosecond)
			}
			testenv.Poll(t, 5*time.Second, "the probe after the script", func() (bool, string) {
				n := int(p.calls.Load())
				return n == len(tt.script)+1, fmt.Sprintf("%d probes", n)
			})
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}

			var got []string
			for _, ev := range rec.all() {
				i := probeIndex(probeAt, ev.At)
				got = append(got, fmt.Sprintf("%d:%s->%s", i, ev.From, ev.To))
				if ev.Check != "web" || ev.Target != "127.0.0.1:8080" || ev.Passive {
					t.Errorf("event %+v: wrong check, target or passive flag", ev)
				}
				if ev.To == Down && ev.Reason != fmt.Sprintf("probe %d failed", i) {
					t.Errorf("event %+v: reason should be probe %d's error", ev, i)
				}
			}
			if strings.Join(got, " ") != strings.Join(tt.want, " ") {
				t.Errorf("transitions = %v, want %v", got, tt.want)
			}
			if evs := m.Events(); len(evs) != len(rec.all()) {
				t.Errorf("Events() has %d, OnTransition saw %d", len(evs), len(rec.all()))
			}
		})
	}
}

func probeIndex(at []time.Time, t time.Time) int {
	for i := len(at) - 1; i >= 0; i-- {
		if !at[i].After(t) {
			return i
		}
	}
	return -1
}

func TestFirstProbeIsImmediateWithSmallJitter(t *testing.T) {
	spec := testSpec
	spec.Jitter = 0.1
	m := NewMonitor(Options{Target: "t", Spec: spec, Prober: &scriptProber{}, Rand: rand.New(rand.NewPCG(1, 2))})
	limit := time.Duration(0.1 * float64(spec.FastInterval))
	for range 1000 {
		if d := m.startDelay(); d < 0 || d >= limit {
			t.Fatalf("startDelay = %v, want in [0, %v)", d, limit)
		}
	}
}

func TestJitterIsBoundedAndDeterministic(t *testing.T) {
	spec := testSpec
	spec.Jitter = 0.2
	newM := func() *Monitor {
		return NewMonitor(Options{Target: "t", Spec: spec, Prober: &scriptProber{}, Rand: rand.New(rand.NewPCG(7, 7))})
	}
	a, b := newM(), newM()
	lo, hi := 8*time.Second, 12*time.Second
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := a.jitter(10 * time.Second)
		if d < lo || d > hi {
			t.Fatalf("jitter(10s) = %v, want within ±20%%", d)
		}
		if e := b.jitter(10 * time.Second); e != d {
			t.Fatalf("same seed gave %v and %v", d, e)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("only %d distinct waits in 1000: jitter is not spreading", len(seen))
	}
}

func TestProbeTimeIsPartOfTheWait(t *testing.T) {
	// A probe that takes 300ms (on the fake clock) leaves 9.7s of a 10s
	// interval: probes are spaced start to start.
	fc := clock.NewFake(epoch)
	var calls atomic.Int32
	p := ProberFunc(func(ctx context.Context, _ string) error {
		if calls.Add(1) > 1 {
			<-ctx.Done()
			return ctx.Err()
		}
		fc.Advance(300 * time.Millisecond)
		return nil
	})
	m := NewMonitor(Options{Target: "t", Spec: testSpec, Prober: p, Clock: fc})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	testenv.Poll(t, 5*time.Second, "first probe", func() (bool, string) { return fc.Waiters() == 1, fmt.Sprint(fc.Waiters()) })
	fc.Advance(9700*time.Millisecond - time.Nanosecond)
	if calls.Load() != 1 {
		t.Fatal("second probe came early")
	}
	fc.Advance(time.Nanosecond)
	testenv.Poll(t, 5*time.Second, "second probe", func() (bool, string) { return calls.Load() == 2, fmt.Sprint(calls.Load()) })
	cancel()
	<-done
	if got := m.Last().Duration; got != 300*time.Millisecond {
		t.Errorf("Last().Duration = %v, want 300ms", got)
	}
}

func TestRunStopsWithContext(t *testing.T) {
	fc := clock.NewFake(epoch)
	m := NewMonitor(Options{Target: "t", Spec: testSpec, Prober: &scriptProber{script: "P"}, Clock: fc})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	testenv.Poll(t, 5*time.Second, "first probe", func() (bool, string) { return fc.Waiters() == 1, fmt.Sprint(fc.Waiters()) })
	if err := m.Run(ctx); err == nil {
		t.Error("a second concurrent Run should fail")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if fc.Waiters() != 0 {
		t.Errorf("Run left %d timers armed", fc.Waiters())
	}
}

func TestProbeCutByShutdownIsDropped(t *testing.T) {
	// The probe blocks until Run's context ends; the cancelled probe must
	// not count as a failure.
	m := NewMonitor(Options{Target: "t", Spec: testSpec, Prober: &scriptProber{}, Clock: clock.NewFake(epoch)})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	testenv.Poll(t, 5*time.Second, "probe start", func() (bool, string) {
		return m.prober.(*scriptProber).calls.Load() == 1, ""
	})
	cancel()
	<-done
	if s := m.State(); s != Unknown {
		t.Errorf("State = %v after a probe cut by shutdown, want unknown", s)
	}
	if !m.Last().At.IsZero() {
		t.Errorf("Last = %+v, want none", m.Last())
	}
}

func TestEventsKeepsTheLatest(t *testing.T) {
	fc := clock.NewFake(epoch)
	spec := testSpec
	spec.Rise, spec.Fall = 1, 1
	m := NewMonitor(Options{Target: "t", Spec: spec, Prober: &scriptProber{}, Clock: fc})
	for i := range 40 {
		fc.Advance(time.Second)
		var err error
		if i%2 == 1 {
			err = errors.New("refused")
		}
		m.record(Result{At: fc.Now(), Err: err})
	}
	evs := m.Events()
	if len(evs) != maxEvents {
		t.Fatalf("len(Events) = %d, want %d", len(evs), maxEvents)
	}
	if want := epoch.Add(9 * time.Second); !evs[0].At.Equal(want) {
		t.Errorf("oldest event at %v, want %v (the 9th of 40)", evs[0].At, want)
	}
	for i := 1; i < len(evs); i++ {
		if !evs[i].At.After(evs[i-1].At) {
			t.Fatalf("events not oldest first: %v then %v", evs[i-1].At, evs[i].At)
		}
	}
}

func TestSnapshot(t *testing.T) {
	fc := clock.NewFake(epoch)
	m := NewMonitor(Options{Check: "web", Target: "10.0.0.1:80", Spec: testSpec, Prober: &scriptProber{}, Clock: fc})
	m.record(Result{At: fc.Now(), Duration: 1500 * time.Microsecond})
	fc.Advance(time.Second)
	m.record(Result{At: fc.Now(), Err: errors.New("http: GET /: status 500, want 200")})

	s := m.Snapshot()
	if s.State != Up || s.ConsecutiveFail != 1 || s.ConsecutiveOK != 0 || !s.Since.Equal(epoch) {
		t.Errorf("Snapshot = %+v", s)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`"state":"up"`, `"consecutive_fail":1`, `"error":"http: GET /: status 500, want 200"`,
		`"from":"unknown","to":"up"`, `"passive_ejected":false`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
	}
}

func TestOnTransitionMayCallBack(t *testing.T) {
	// OnTransition runs outside the Monitor's locks: calling back must not
	// deadlock, and it sees the new state.
	var m *Monitor
	var seen State
	m = NewMonitor(Options{Target: "t", Spec: testSpec, Prober: &scriptProber{}, Clock: clock.NewFake(epoch),
		OnTransition: func(ev Event) { seen = m.Snapshot().State; _ = m.Events() }})
	m.record(Result{At: epoch})
	if seen != Up {
		t.Errorf("OnTransition saw %v, want up", seen)
	}
}

func TestStateText(t *testing.T) {
	for _, s := range allStates {
		b, _ := s.MarshalText()
		var back State
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("%v round-trips to %v, %v", s, back, err)
		}
	}
	if State(9).String() != "state(9)" {
		t.Errorf("State(9) = %q", State(9).String())
	}
	var s State
	if err := s.UnmarshalText([]byte("UP")); err == nil {
		t.Error("UnmarshalText(UP) should fail")
	}
}
