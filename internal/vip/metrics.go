package vip

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the floating addresses' Prometheus metrics. A nil *Metrics
// records nothing.
type Metrics struct {
	state       *prometheus.GaugeVec
	epoch       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	errors      *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haven_vip_state",
			Help: "1 for this node's current state of each floating address (holder, backup or fault), 0 for the others.",
		}, []string{"vip", "state"}),
		epoch: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haven_vip_epoch",
			Help: "Fencing epoch under which this node holds the floating address; 0 when it does not.",
		}, []string{"vip"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_vip_transitions_total",
			Help: "State changes of each floating address on this node, by the state entered.",
		}, []string{"vip", "state"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_vip_errors_total",
			Help: "Failures to configure a floating address (fence, interface address).",
		}, []string{"vip"}),
	}
	reg.MustRegister(m.state, m.epoch, m.transitions, m.errors)
	return m
}

func (m *Metrics) set(name string, st State, epoch int64) {
	if m == nil {
		return
	}
	for _, s := range []State{StateHolder, StateBackup, StateFault} {
		v := 0.0
		if s == st {
			v = 1
		}
		m.state.WithLabelValues(name, string(s)).Set(v)
	}
	m.epoch.WithLabelValues(name).Set(float64(epoch))
	m.transitions.WithLabelValues(name, string(st)).Inc()
}

func (m *Metrics) failed(name string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(name).Inc()
}
