package health

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the Prometheus metrics of every Monitor that shares them. A nil
// *Metrics is valid and records nothing.
type Metrics struct {
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	probes      *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	ejections   *prometheus.CounterVec
}

var allStates = [...]State{Unknown, Up, Down}

// NewMetrics creates the health metrics and registers them on reg. Calling it
// again with the same registerer (a reload) returns metrics backed by the
// collectors already registered. reg may be nil: the metrics then work but
// are not exported.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haven_health_target_state",
			Help: "Health state of a target: 1 for the current state (unknown, up or down), 0 for the others.",
		}, []string{"check", "target", "state"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_health_transitions_total",
			Help: "State transitions of a target, by the state entered.",
		}, []string{"check", "target", "to"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_health_probes_total",
			Help: "Active probes completed, by result (pass or fail).",
		}, []string{"check", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "haven_health_probe_duration_seconds",
			Help:    "Duration of active probes, passing or failing.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"check"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_health_passive_ejections_total",
			Help: "Targets taken down by passive health (failures of live traffic).",
		}, []string{"check", "target"}),
	}
	if reg != nil {
		m.state = register(reg, m.state)
		m.transitions = register(reg, m.transitions)
		m.probes = register(reg, m.probes)
		m.duration = register(reg, m.duration)
		m.ejections = register(reg, m.ejections)
	}
	return m
}

// register registers c, or returns the identical collector registered
// before. A conflicting registration is a programming error, as in
// MustRegister.
func register[T prometheus.Collector](reg prometheus.Registerer, c T) T {
	err := reg.Register(c)
	if err == nil {
		return c
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(T); ok {
			return old
		}
	}
	panic("health: register metrics: " + err.Error())
}

// initTarget creates a target's series so that rate() and absent() work
// from its first scrape.
func (m *Metrics) initTarget(check, target string, s State, active bool) {
	if m == nil {
		return
	}
	for _, to := range allStates {
		m.transitions.WithLabelValues(check, target, to.String())
	}
	m.ejections.WithLabelValues(check, target)
	if active {
		for _, r := range [...]string{"pass", "fail"} {
			m.probes.WithLabelValues(check, r)
		}
	}
	m.setState(check, target, s)
}

func (m *Metrics) setState(check, target string, s State) {
	if m == nil {
		return
	}
	for _, x := range allStates {
		v := 0.0
		if x == s {
			v = 1
		}
		m.state.WithLabelValues(check, target, x.String()).Set(v)
	}
}

func (m *Metrics) transition(ev Event) {
	if m == nil {
		return
	}
	m.setState(ev.Check, ev.Target, ev.To)
	m.transitions.WithLabelValues(ev.Check, ev.Target, ev.To.String()).Inc()
	if ev.Passive && ev.To == Down {
		m.ejections.WithLabelValues(ev.Check, ev.Target).Inc()
	}
}

func (m *Metrics) probe(check string, r Result) {
	if m == nil {
		return
	}
	result := "pass"
	if r.Err != nil {
		result = "fail"
	}
	m.probes.WithLabelValues(check, result).Inc()
	m.duration.WithLabelValues(check).Observe(r.Duration.Seconds())
}

// deleteTarget removes every series of one target. Series keyed by check
// only are shared with the check's other targets and stay.
func (m *Metrics) deleteTarget(check, target string) {
	if m == nil {
		return
	}
	l := prometheus.Labels{"check": check, "target": target}
	m.state.DeletePartialMatch(l)
	m.transitions.DeletePartialMatch(l)
	m.ejections.DeletePartialMatch(l)
}
