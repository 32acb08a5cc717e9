package galera

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/promreg"
)

type metrics struct {
	up, serving, primary, writer                 prometheus.Gauge
	size, state, recvQueue, sendQueue, committed prometheus.Gauge
	flowPaused, certFailures                     prometheus.Gauge
	bootstraps, evictions, restarts              prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	g := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: "haven_galera_" + name, Help: help})
	}
	m := &metrics{
		up:           g("server_up", "1 while this node's mariadbd runs and answers."),
		serving:      g("serving", "1 while this node takes clients: ready, in a primary component, synced (or a donor with donor_serves)."),
		primary:      g("primary_component", "1 while this node is in a primary component."),
		writer:       g("writer", "1 while this node holds the writer record (writers: one)."),
		size:         g("cluster_size", "Nodes in this node's component (wsrep_cluster_size)."),
		state:        g("local_state", "Galera's local state: 1 joining, 2 donor/desynced, 3 joined, 4 synced (wsrep_local_state)."),
		recvQueue:    g("recv_queue", "Write sets received and not yet applied (wsrep_local_recv_queue)."),
		sendQueue:    g("send_queue", "Write sets waiting to be sent (wsrep_local_send_queue)."),
		committed:    g("last_committed", "The last write set this node committed (wsrep_last_committed)."),
		flowPaused:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "haven_galera_flow_control_paused_seconds", Help: "Time replication was paused by flow control since the server started (wsrep_flow_control_paused_ns)."}),
		certFailures: g("cert_failures", "Write sets that failed certification since the server started (wsrep_local_cert_failures)."),
		bootstraps:   prometheus.NewCounter(prometheus.CounterOpts{Name: "haven_galera_bootstraps_total", Help: "Times this node's agent started the cluster from this node (--wsrep-new-cluster)."}),
		evictions:    prometheus.NewCounter(prometheus.CounterOpts{Name: "haven_galera_evictions_total", Help: "Nodes this node's agent evicted from its component because their server was gone."}),
		restarts:     prometheus.NewCounter(prometheus.CounterOpts{Name: "haven_galera_rejoin_restarts_total", Help: "Times this node's agent restarted its mariadbd because it had left the group for good (a failed state transfer) while another node was in a primary component."}),
	}
	if reg == nil {
		return m, nil
	}
	// A node's second Node (after etcd came back) reports on the first's
	// series.
	var err error
	for _, g := range []*prometheus.Gauge{&m.up, &m.serving, &m.primary, &m.writer, &m.size, &m.state, &m.recvQueue, &m.sendQueue, &m.committed, &m.flowPaused, &m.certFailures} {
		if *g, err = promreg.Once(reg, *g); err != nil {
			return nil, err
		}
	}
	for _, c := range []*prometheus.Counter{&m.bootstraps, &m.evictions, &m.restarts} {
		if *c, err = promreg.Once(reg, *c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (m *metrics) set(st MemberState, writer bool) {
	s := st.Status
	m.up.Set(b2f(st.Server == ServerRunning))
	m.serving.Set(b2f(st.Serving))
	m.primary.Set(b2f(st.inPrimary()))
	m.writer.Set(b2f(writer))
	m.size.Set(float64(s.ClusterSize))
	m.state.Set(float64(s.LocalState))
	m.recvQueue.Set(float64(s.RecvQueue))
	m.sendQueue.Set(float64(s.SendQueue))
	m.committed.Set(float64(s.LastCommitted))
	m.flowPaused.Set(float64(s.FlowControlPausedNs) / 1e9)
	m.certFailures.Set(float64(s.CertFailures))
}
