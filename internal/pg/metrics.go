package pg

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/promreg"
)

// supervisorMetrics are a Supervisor's Prometheus metrics. A node runs one
// postgres, so they have no label for it.
type supervisorMetrics struct {
	up            prometheus.Gauge
	state         *prometheus.GaugeVec
	restarts      prometheus.Counter
	startFailures prometheus.Counter
}

// newSupervisorMetrics creates the metrics and registers them on reg. A
// registerer that already holds them (a new Supervisor for the same node)
// lends its collectors. reg may be nil: the metrics then work but are not
// exported.
func newSupervisorMetrics(reg prometheus.Registerer) (*supervisorMetrics, error) {
	m := &supervisorMetrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "haven_pg_server_up",
			Help: "1 while the supervised postgres accepts connections, 0 otherwise.",
		}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haven_pg_server_state",
			Help: "1 for the supervised postgres's current state (stopped, starting, running, restarting or failed), 0 for the others.",
		}, []string{"state"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_pg_server_restarts_total",
			Help: "Exits of a running postgres that haven did not ask for, each followed by a restart in place.",
		}),
		startFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_pg_server_start_failures_total",
			Help: "Attempts to start postgres that failed.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.up, err = promreg.Once(reg, m.up); err != nil {
		return nil, err
	}
	if m.state, err = promreg.Once(reg, m.state); err != nil {
		return nil, err
	}
	if m.restarts, err = promreg.Once(reg, m.restarts); err != nil {
		return nil, err
	}
	if m.startFailures, err = promreg.Once(reg, m.startFailures); err != nil {
		return nil, err
	}
	return m, nil
}

// set records the change from before to after.
func (m *supervisorMetrics) set(before, after Status) {
	for _, s := range allStates {
		v := 0.0
		if s == after.State {
			v = 1
		}
		m.state.WithLabelValues(s.String()).Set(v)
	}
	if after.State == StateRunning {
		m.up.Set(1)
	} else {
		m.up.Set(0)
	}
	if n := after.Restarts - before.Restarts; n > 0 {
		m.restarts.Add(float64(n))
	}
	if n := after.StartFailures - before.StartFailures; n > 0 {
		m.startFailures.Add(float64(n))
	}
}
