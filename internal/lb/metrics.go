package lb

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// backendMetrics are a backend's counters. They are plain atomics on the hot
// path and become Prometheus counters at scrape time (see Metrics.Collect), so
// a request costs a few atomic adds and no label lookups.
type backendMetrics struct {
	requests        atomic.Uint64
	responses       [6]atomic.Uint64 // by status class: [1]=1xx ... [5]=5xx, [0]=other
	connectFailures atomic.Uint64
	resets          atomic.Uint64 // closed or reset before a complete response
	timeouts        atomic.Uint64
	retries         atomic.Uint64 // requests moved away from this backend
	bytesIn         atomic.Uint64 // from the backend
	bytesOut        atomic.Uint64 // to the backend
	connectTime     latencies
	responseTime    latencies
}

// latencyBuckets are the upper bounds, in seconds, of a backend's connect
// and response times.
var latencyBuckets = [...]float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// latencies is a histogram of plain atomics: an observation is two
// atomic adds and a short scan, no lock and no label lookup; it becomes a
// Prometheus histogram at scrape time.
type latencies struct {
	buckets [len(latencyBuckets)]atomic.Uint64 // not cumulative
	count   atomic.Uint64
	sumNs   atomic.Uint64
}

func (l *latencies) observe(d time.Duration) {
	s := d.Seconds()
	for i, ub := range latencyBuckets {
		if s <= ub {
			l.buckets[i].Add(1)
			break
		}
	}
	l.count.Add(1)
	l.sumNs.Add(uint64(max(d, 0)))
}

func (l *latencies) collect(ch chan<- prometheus.Metric, d *prometheus.Desc, labels ...string) {
	cum := make(map[float64]uint64, len(latencyBuckets))
	var n uint64
	for i, ub := range latencyBuckets {
		n += l.buckets[i].Load()
		cum[ub] = n
	}
	// An observation between the loads may have reached a bucket but not
	// the count yet: the count is never below the buckets.
	ch <- prometheus.MustNewConstHistogram(d, max(l.count.Load(), n), float64(l.sumNs.Load())/1e9, cum, labels...)
}

// localStatuses are the statuses haven answers itself; each has a counter.
var localStatuses = [...]int{400, 405, 408, 413, 414, 431, 501, 502, 503, 504, 505}

func localIndex(status int) int {
	for i, s := range localStatuses {
		if s == status {
			return i
		}
	}
	return -1
}

// Metrics holds the balancer metrics of one process. Create it once per
// registry and share it between balancers.
type Metrics struct {
	mu        sync.Mutex
	balancers map[*Balancer]struct{}
	duration  *prometheus.HistogramVec
	// tcpDuration is a TCP connection's life: apart from the HTTP
	// requests' durations, whose scale it would drown.
	tcpDuration *prometheus.HistogramVec
	queueTime   *prometheus.HistogramVec

	descConnectTime, descResponseTime *prometheus.Desc

	descRequests, descResponses, descErrors, descRetries, descInflight,
	descAdmin, descClients, descAccepted, descLocal, descQueued, descBytes,
	descWeight, descHeld, descHolds, descUsable, descProxyRefused *prometheus.Desc
	descLoopServed, descLoopHanded, descRelay *prometheus.Desc
}

// NewMetrics registers the balancer metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	bl := []string{"balancer", "backend"}
	m := &Metrics{
		balancers: make(map[*Balancer]struct{}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "haven_lb_request_duration_seconds",
			Help:    "Time from a request's first byte to its response being fully sent (HTTP mode).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"balancer"}),
		tcpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "haven_lb_tcp_connection_duration_seconds",
			Help:    "A TCP mode client connection's life, from its acceptance to its close.",
			Buckets: []float64{.001, .01, .1, 1, 10, 60, 300, 1800, 3600, 4 * 3600},
		}, []string{"balancer"}),
		queueTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "haven_lb_queue_duration_seconds",
			Help:    "Time a request or connection waited in the queue for a backend slot (only those that waited: every usable backend was at max_conn).",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30},
		}, []string{"balancer"}),
		descConnectTime:  prometheus.NewDesc("haven_lb_backend_connect_duration_seconds", "Time to open a connection to a backend (new connections only; a reused keep-alive connection opens none).", bl, nil),
		descResponseTime: prometheus.NewDesc("haven_lb_backend_response_duration_seconds", "Time from a request sent to a backend to its response head received (HTTP mode; HAProxy's Tr).", bl, nil),
		descRequests:     prometheus.NewDesc("haven_lb_backend_requests_total", "Requests (HTTP) or connections (TCP) sent to a backend, retries included.", bl, nil),
		descResponses:    prometheus.NewDesc("haven_lb_backend_responses_total", "Responses received from a backend by status class.", append(bl, "class"), nil),
		descErrors:       prometheus.NewDesc("haven_lb_backend_errors_total", "Failed exchanges with a backend by kind: connect, reset, timeout.", append(bl, "kind"), nil),
		descRetries:      prometheus.NewDesc("haven_lb_backend_retries_total", "Requests redispatched away from a backend after it failed them.", bl, nil),
		descInflight:     prometheus.NewDesc("haven_lb_backend_inflight", "Requests (HTTP) or connections (TCP) in progress on a backend.", bl, nil),
		descAdmin:        prometheus.NewDesc("haven_lb_backend_admin_state", "The operator's state for a backend (1 for the current one).", append(bl, "state"), nil),
		descWeight:       prometheus.NewDesc("haven_lb_backend_weight", "A backend's effective weight (lowered during slow start).", bl, nil),
		descBytes:        prometheus.NewDesc("haven_lb_backend_bytes_total", "Bytes exchanged with a backend (HTTP mode bodies and heads), by direction.", append(bl, "direction"), nil),
		// The gauges of what is open now are not named after their
		// counters (..._total): OpenMetrics would read both as one family.
		descClients:      prometheus.NewDesc("haven_lb_client_connections_open", "Open client connections.", []string{"balancer"}, nil),
		descAccepted:     prometheus.NewDesc("haven_lb_client_connections_total", "Client connections accepted.", []string{"balancer"}, nil),
		descLocal:        prometheus.NewDesc("haven_lb_local_responses_total", "Responses generated by haven itself (bad requests, no backend, timeouts), by status.", []string{"balancer", "status"}, nil),
		descQueued:       prometheus.NewDesc("haven_lb_queued_requests", "Requests waiting for a backend slot.", []string{"balancer"}, nil),
		descHeld:         prometheus.NewDesc("haven_lb_held_connections_waiting", "TCP client connections held now for want of a usable backend (balancers that hold only).", []string{"balancer"}, nil),
		descUsable:       prometheus.NewDesc("haven_lb_usable_backends", "Backends that may take a request now: up (or all unknown yet), ready (not drained or in maintenance), weight above 0 (0: the balancer answers 503).", []string{"balancer"}, nil),
		descProxyRefused: prometheus.NewDesc("haven_lb_proxy_refused_total", "Client connections refused on a listener with accept_proxy_from, by reason: untrusted (not from a listed source), invalid (no valid PROXY header), timeout (no whole header within timeouts.client_header).", []string{"balancer", "reason"}, nil),
		descLoopServed:   prometheus.NewDesc("haven_lb_loop_requests_total", "Requests served on the HTTP event loops (plain HTTP; the rest go to a goroutine per connection).", []string{"balancer"}, nil),
		descRelay:        prometheus.NewDesc("haven_lb_tcp_relay_info", "What TCP mode relays bytes with, once a balancer in TCP mode has relayed a connection: io_uring (the default), epoll (where io_uring is refused, or HAVEN_TCP_RELAY=epoll) or goroutines; always 1.", []string{"relay"}, nil),
		descLoopHanded:   prometheus.NewDesc("haven_lb_loop_handoffs_total", "Client connections the HTTP event loops handed to a goroutine of their own, which serves them from then on, by reason: proxy (a PROXY header), request (an upgrade, Expect, a chunked or large body, a malformed head), head (too large, cut short), body (too large, cut short, slow), backend (none at hand: queued, a host name, none available), retry (one the loop cannot make), response (chunked or close-delimited), answer (haven's own).", []string{"balancer", "reason"}, nil),
		descHolds:        prometheus.NewDesc("haven_lb_held_connections_total", "TCP client connections that found no usable backend, by how their hold ended: served, expired, gone (the client had left), refused (too many held).", []string{"balancer", "outcome"}, nil),
	}
	if reg != nil {
		reg.MustRegister(m, m.duration, m.tcpDuration, m.queueTime)
	}
	return m
}

func (m *Metrics) add(b *Balancer) {
	m.mu.Lock()
	m.balancers[b] = struct{}{}
	m.mu.Unlock()
}

func (m *Metrics) remove(b *Balancer) {
	m.mu.Lock()
	delete(m.balancers, b)
	m.mu.Unlock()
	m.duration.DeleteLabelValues(b.name)
	m.tcpDuration.DeleteLabelValues(b.name)
	m.queueTime.DeleteLabelValues(b.name)
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.descRequests, m.descResponses, m.descErrors, m.descRetries,
		m.descInflight, m.descAdmin, m.descClients, m.descAccepted, m.descLocal, m.descQueued, m.descBytes, m.descWeight,
		m.descHeld, m.descHolds, m.descUsable, m.descConnectTime, m.descResponseTime, m.descProxyRefused,
		m.descLoopServed, m.descLoopHanded, m.descRelay} {
		ch <- d
	}
}

var classes = [6]string{"other", "1xx", "2xx", "3xx", "4xx", "5xx"}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	bals := make([]*Balancer, 0, len(m.balancers))
	for b := range m.balancers {
		bals = append(bals, b)
	}
	m.mu.Unlock()
	c := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	g := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	if kind, ok := relayKind.Load().(string); ok {
		g(m.descRelay, 1, kind)
	}
	for _, lb := range bals {
		g(m.descClients, float64(lb.clients.Load()), lb.name)
		c(m.descAccepted, lb.accepted.Load(), lb.name)
		g(m.descQueued, float64(lb.queued.Load()), lb.name)
		pk := picker{p: lb.pool.Load()}
		pk.scan()
		usable := 0
		for _, b := range pk.p.backends {
			if pk.usable(b) {
				usable++
			}
		}
		g(m.descUsable, float64(usable), lb.name)
		if lb.settings.Load().acceptProxy != nil {
			for r, name := range proxyReasonNames {
				c(m.descProxyRefused, lb.proxyRefused[r].Load(), lb.name, name)
			}
		}
		if ls := lb.httpLoops(); ls != nil {
			c(m.descLoopServed, ls.served.Load(), lb.name)
			for r, name := range handoffReasonNames {
				c(m.descLoopHanded, ls.handed[r].Load(), lb.name, name)
			}
		}
		if lb.settings.Load().hold > 0 { // only the balancers that hold: the database router's pools
			g(m.descHeld, float64(lb.holds.waiting.Load()), lb.name)
			for o, name := range holdOutcomeNames {
				c(m.descHolds, lb.holds.outcomes[o].Load(), lb.name, name)
			}
		}
		for i, s := range localStatuses {
			c(m.descLocal, lb.local[i].Load(), lb.name, strconv.Itoa(s))
		}
		for _, b := range lb.pool.Load().backends {
			bm := &b.m
			c(m.descRequests, bm.requests.Load(), lb.name, b.name)
			for i, cl := range classes {
				c(m.descResponses, bm.responses[i].Load(), lb.name, b.name, cl)
			}
			c(m.descErrors, bm.connectFailures.Load(), lb.name, b.name, "connect")
			c(m.descErrors, bm.resets.Load(), lb.name, b.name, "reset")
			c(m.descErrors, bm.timeouts.Load(), lb.name, b.name, "timeout")
			c(m.descRetries, bm.retries.Load(), lb.name, b.name)
			c(m.descBytes, bm.bytesIn.Load(), lb.name, b.name, "in")
			c(m.descBytes, bm.bytesOut.Load(), lb.name, b.name, "out")
			g(m.descInflight, float64(b.inflight.Load()), lb.name, b.name)
			g(m.descWeight, float64(b.Weight()), lb.name, b.name)
			bm.connectTime.collect(ch, m.descConnectTime, lb.name, b.name)
			if lb.mode == "http" {
				bm.responseTime.collect(ch, m.descResponseTime, lb.name, b.name)
			}
			cur := AdminState(b.admin.Load())
			for _, s := range []AdminState{Ready, Drain, Maint} {
				v := 0.0
				if s == cur {
					v = 1
				}
				g(m.descAdmin, v, lb.name, b.name, s.String())
			}
		}
	}
}
