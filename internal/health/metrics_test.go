package health

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/clock"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// series flattens a registry into "name{label=value,...} value" lines.
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			key := mf.GetName() + "{" + strings.Join(ls, ",") + "}"
			out[key] = value(m)
		}
	}
	return out
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	return 0
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	metrics := NewMetrics(reg)
	if again := NewMetrics(reg); again.state != metrics.state {
		t.Error("NewMetrics on the same registry should reuse its collectors")
	}
	fc := clock.NewFake(epoch)
	p := &scriptProber{script: "PFFF"}
	m := NewMonitor(Options{Check: "web", Target: "10.0.0.1:80", Spec: testSpec, Prober: p, Clock: fc, Metrics: metrics, Passive: testPassive})
	other := NewMonitor(Options{Check: "web", Target: "10.0.0.2:80", Spec: testSpec, Clock: fc, Metrics: metrics, Passive: testPassive})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 2)
	go func() { done <- m.Run(ctx) }()
	go func() { done <- other.Run(ctx) }()
	for i, wait := range []time.Duration{testSpec.Interval, testSpec.FastInterval, testSpec.FastInterval} {
		settled(t, fc, p, i+1)
		fc.Advance(wait)
	}
	settled(t, fc, p, 4)
	fail(other, 3)
	cancel()
	<-done
	<-done

	got := series(t, reg)
	for key, want := range map[string]float64{
		`haven_health_target_state{check=web,state=down,target=10.0.0.1:80}`:    1,
		`haven_health_target_state{check=web,state=up,target=10.0.0.1:80}`:      0,
		`haven_health_target_state{check=web,state=unknown,target=10.0.0.1:80}`: 0,
		`haven_health_transitions_total{check=web,target=10.0.0.1:80,to=up}`:    1,
		`haven_health_transitions_total{check=web,target=10.0.0.1:80,to=down}`:  1,
		`haven_health_probes_total{check=web,result=pass}`:                      1,
		`haven_health_probes_total{check=web,result=fail}`:                      3,
		`haven_health_probe_duration_seconds{check=web}`:                        4,
		`haven_health_passive_ejections_total{check=web,target=10.0.0.1:80}`:    0,
		`haven_health_passive_ejections_total{check=web,target=10.0.0.2:80}`:    1,
		`haven_health_target_state{check=web,state=down,target=10.0.0.2:80}`:    1,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", key, v, ok, want)
		}
	}

	testenv.LintMetrics(t, reg)

	// A target removed by a reload leaves no series behind.
	m.Close()
	for key := range series(t, reg) {
		if strings.Contains(key, "target=10.0.0.1:80") {
			t.Errorf("series %s survived Close", key)
		}
	}
	if _, ok := series(t, reg)[`haven_health_target_state{check=web,state=down,target=10.0.0.2:80}`]; !ok {
		t.Error("Close removed another target's series")
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.initTarget("c", "t", Up, true)
	m.transition(Event{To: Down, Passive: true})
	m.probe("c", Result{Err: errors.New("x")})
	m.deleteTarget("c", "t")
	// Unregistered metrics work too.
	NewMetrics(nil).probe("c", Result{})
}

func TestMetricsConflictPanics(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "haven_health_probes_total", Help: "x"}))
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "health: register metrics") {
			t.Errorf("recover() = %v, want a registration panic", r)
		}
	}()
	NewMetrics(reg)
}

func TestClosedMonitorRecreatesNoSeries(t *testing.T) {
	// A balancer may Close a removed backend's Monitor while its Run is
	// still starting or finishing.
	reg := prometheus.NewRegistry()
	fc := clock.NewFake(epoch)
	m := NewMonitor(Options{Check: "web", Target: "gone:80", Spec: testSpec, Prober: &scriptProber{script: "P"},
		Clock: fc, Metrics: NewMetrics(reg)})
	m.Close()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	testenv.Poll(t, 5*time.Second, "first probe", func() (bool, string) { return fc.Waiters() == 1, fmt.Sprint(fc.Waiters()) })
	cancel()
	<-done
	if m.State() != Up {
		t.Fatalf("State = %v, want up", m.State())
	}
	for key := range series(t, reg) {
		if strings.Contains(key, "target=gone:80") {
			t.Errorf("series %s recreated after Close", key)
		}
	}
}
