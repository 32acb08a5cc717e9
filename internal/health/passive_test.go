package health

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/clock"
	"github.com/haven-ha/haven/internal/testenv"
)

var testPassive = PassiveSpec{ConsecutiveFailures: 3, EjectFor: 30 * time.Second}

func fail(m *Monitor, n int) {
	for range n {
		m.ObserveFailure("502 bad gateway")
	}
}

func TestPassiveConsecutiveFailures(t *testing.T) {
	rec := newRecorder()
	m := NewMonitor(Options{Check: "web", Target: "a", Passive: testPassive, Clock: clock.NewFake(epoch), OnTransition: rec.add})
	if m.State() != Up {
		t.Fatalf("a monitor without prober starts %v, want up", m.State())
	}
	fail(m, 2)
	m.ObserveSuccess() // breaks the run
	fail(m, 2)
	if m.State() != Up {
		t.Fatalf("ejected after 2+2 failures split by a success")
	}
	fail(m, 1)
	if m.State() != Down {
		t.Fatalf("not ejected after 3 consecutive failures")
	}
	ev := rec.next(t)
	want := Event{Check: "web", Target: "a", From: Up, To: Down, At: epoch,
		Reason: "passive: 3 consecutive failures: 502 bad gateway", Passive: true}
	if ev != want {
		t.Errorf("event = %+v\nwant    %+v", ev, want)
	}
	if s := m.Snapshot(); !s.PassiveEjected || s.PassiveFailures != 0 {
		t.Errorf("Snapshot = %+v, want passive_ejected and the run reset", s)
	}
}

func TestPassiveOff(t *testing.T) {
	m := NewMonitor(Options{Target: "a", Clock: clock.NewFake(epoch)})
	fail(m, 100)
	if m.State() != Up {
		t.Errorf("ejected with passive health off")
	}
}

func TestGroupCap(t *testing.T) {
	tests := []struct {
		n, percent int
		want       int // ejections when every member fails
	}{
		{4, 50, 2},
		{3, 50, 1},  // floor(1.5)
		{10, 25, 2}, // floor(2.5)
		{4, 0, 1},   // at least one
		{4, 100, 3}, // never the last up
		{2, 100, 1},
		{1, 100, 0}, // a lone target is the last up
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d targets %d%%", tt.n, tt.percent), func(t *testing.T) {
			g := NewGroup(tt.percent)
			var ms []*Monitor
			for i := range tt.n {
				ms = append(ms, NewMonitor(Options{Target: fmt.Sprint(i), Passive: testPassive, Group: g, Clock: clock.NewFake(epoch)}))
			}
			for _, m := range ms {
				fail(m, 3)
			}
			if got := g.Ejected(); got != tt.want {
				t.Errorf("ejected %d of %d, want %d", got, tt.n, tt.want)
			}
			down := 0
			for _, m := range ms {
				if m.State() == Down {
					down++
				}
			}
			if down != tt.want {
				t.Errorf("%d down, want %d", down, tt.want)
			}
		})
	}
}

func TestGroupNeverEjectsTheLastUp(t *testing.T) {
	// Two targets are down by active checks; passive health must keep the
	// third, however badly it serves.
	g := NewGroup(100)
	var ms []*Monitor
	for i := range 3 {
		m := NewMonitor(Options{Target: fmt.Sprint(i), Spec: testSpec, Prober: &scriptProber{}, Passive: testPassive, Group: g, Clock: clock.NewFake(epoch)})
		ms = append(ms, m)
	}
	ms[0].record(Result{At: epoch, Err: fmt.Errorf("refused")})
	ms[1].record(Result{At: epoch, Err: fmt.Errorf("refused")})
	ms[2].record(Result{At: epoch})
	fail(ms[2], 30)
	if ms[2].State() != Up {
		t.Fatal("ejected the last target up")
	}
	// Once another target is back, the next multiple of the threshold
	// retries the ejection, and it succeeds.
	ms[0].record(Result{At: epoch})
	ms[0].record(Result{At: epoch})
	fail(ms[2], 3)
	if ms[2].State() != Down {
		t.Fatal("not ejected once another target was up")
	}
}

func TestGroupRemoveFreesBudget(t *testing.T) {
	g := NewGroup(50)
	a := NewMonitor(Options{Target: "a", Passive: testPassive, Group: g})
	b := NewMonitor(Options{Target: "b", Passive: testPassive, Group: g})
	NewMonitor(Options{Target: "c", Passive: testPassive, Group: g})
	fail(a, 3)
	fail(b, 3)
	if b.State() != Up {
		t.Fatal("second ejection of 3 at 50% allowed")
	}
	a.Close()
	a.Close() // idempotent
	if g.Len() != 2 || g.Ejected() != 0 {
		t.Fatalf("after Close: %d members, %d ejected", g.Len(), g.Ejected())
	}
	fail(b, 3)
	if b.State() != Down {
		t.Fatal("b not ejected after a left the group")
	}
}

func TestEjectionEndsAfterEjectForWithoutProber(t *testing.T) {
	fc := clock.NewFake(epoch)
	rec := newRecorder()
	m := NewMonitor(Options{Target: "a", Passive: testPassive, Clock: fc, OnTransition: rec.add})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	fail(m, 3)
	if ev := rec.next(t); ev.To != Down || !ev.Passive {
		t.Fatalf("event %+v, want a passive ejection", ev)
	}
	testenv.Poll(t, 5*time.Second, "the ejection timer", func() (bool, string) { return fc.Waiters() == 1, fmt.Sprint(fc.Waiters()) })
	fc.Advance(testPassive.EjectFor - time.Nanosecond)
	if m.State() != Down {
		t.Fatal("back before eject_for")
	}
	fc.Advance(time.Nanosecond)
	ev := rec.next(t)
	if ev.From != Down || ev.To != Up || !ev.Passive || ev.Reason != "passive: ejection ended after 30s" {
		t.Errorf("event %+v, want a passive return", ev)
	}
	if !ev.At.Equal(epoch.Add(testPassive.EjectFor)) {
		t.Errorf("returned at %v, want after eject_for", ev.At)
	}
	if s := m.Snapshot(); s.PassiveEjected {
		t.Error("still flagged ejected after return")
	}
	// The next run of failures ejects again.
	fail(m, 3)
	if ev := rec.next(t); ev.To != Down {
		t.Errorf("event %+v, want a second ejection", ev)
	}
}

func TestEjectedTargetReturnsThroughProbes(t *testing.T) {
	fc := clock.NewFake(epoch)
	p := &scriptProber{script: "PPP"}
	rec := newRecorder()
	m := NewMonitor(Options{Target: "a", Spec: testSpec, Prober: p, Passive: testPassive, Clock: fc, OnTransition: rec.add})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	settled(t, fc, p, 1)
	if ev := rec.next(t); ev.To != Up {
		t.Fatalf("event %+v, want up", ev)
	}
	fail(m, 3)
	if ev := rec.next(t); ev.To != Down || !ev.Passive {
		t.Fatalf("event %+v, want a passive ejection", ev)
	}
	// The ejection resets the passes: Rise (2) fresh ones are needed, the
	// second after fast_interval.
	fc.Advance(testSpec.Interval)
	settled(t, fc, p, 2)
	if m.State() != Down {
		t.Fatal("up after one pass")
	}
	fc.Advance(testSpec.FastInterval)
	ev := rec.next(t)
	if ev.To != Up || ev.Passive || ev.Reason != "2 consecutive probes passed" {
		t.Errorf("event %+v, want an active return", ev)
	}
	if m.Snapshot().PassiveEjected {
		t.Error("still flagged ejected")
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	m := NewMonitor(Options{Target: "a", Passive: PassiveSpec{ConsecutiveFailures: 1 << 30}})
	if n := testing.AllocsPerRun(1000, m.ObserveSuccess); n != 0 {
		t.Errorf("ObserveSuccess allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { m.ObserveFailure("reset") }); n != 0 {
		t.Errorf("ObserveFailure below the threshold allocates %v times", n)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = m.State() }); n != 0 {
		t.Errorf("State allocates %v times", n)
	}
}

func BenchmarkObserveSuccess(b *testing.B) {
	m := NewMonitor(Options{Target: "a", Passive: testPassive})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveSuccess()
			_ = m.State()
		}
	})
}
