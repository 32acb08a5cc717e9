package gtm

import (
	"sync/atomic"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// counters are the server's hot-path counts: plain atomics, read by the
// Prometheus collector only when scraped.
type counters struct {
	rcodes    [16]atomic.Uint64 // answers by response code
	udp, tcp  atomic.Uint64     // queries by transport
	truncated atomic.Uint64     // UDP answers cut with TC
	ecs       atomic.Uint64     // queries with EDNS Client Subnet
	rebuilds  atomic.Uint64     // answer tables built after a health change
}

func (c *counters) count(m *dns.Msg, tcp, ecs bool) {
	if tcp {
		c.tcp.Add(1)
	} else {
		c.udp.Add(1)
	}
	if m.Rcode >= 0 && m.Rcode < len(c.rcodes) {
		c.rcodes[m.Rcode].Add(1)
	}
	if m.Truncated {
		c.truncated.Add(1)
	}
	if ecs {
		c.ecs.Add(1)
	}
}

var (
	queriesDesc   = prometheus.NewDesc("haven_dns_queries_total", "DNS queries answered, by transport (udp, tcp).", []string{"zone", "transport"}, nil)
	responsesDesc = prometheus.NewDesc("haven_dns_responses_total", "DNS responses, by response code (NOERROR, NXDOMAIN, REFUSED, FORMERR, ...).", []string{"zone", "rcode"}, nil)
	truncDesc     = prometheus.NewDesc("haven_dns_truncated_total", "UDP responses cut with the TC flag (the client asks again over TCP).", []string{"zone"}, nil)
	ecsDesc       = prometheus.NewDesc("haven_dns_client_subnet_queries_total", "Queries that carried EDNS Client Subnet.", []string{"zone"}, nil)
	changesDesc   = prometheus.NewDesc("haven_dns_answer_changes_total", "Times a target's health change rebuilt the zone's answers.", []string{"zone"}, nil)
	targetDesc    = prometheus.NewDesc("haven_dns_target_up", "1 when a managed name's target is answered as healthy, 0 when not.", []string{"zone", "name", "target"}, nil)
	viewsDesc     = prometheus.NewDesc("haven_dns_views", "1 for whose verdicts the answers follow: shared (the instances' majority), isolated (etcd out of reach: this instance's own) or standalone (no coordination).", []string{"zone", "mode"}, nil)
)

// Describe implements prometheus.Collector.
func (s *Server) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{queriesDesc, responsesDesc, truncDesc, ecsDesc, changesDesc, targetDesc, viewsDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *Server) Collect(ch chan<- prometheus.Metric) {
	c := &s.counters
	z := s.Zone().Origin // a reload may change it
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{z}, labels...)...)
	}
	counter(queriesDesc, c.udp.Load(), "udp")
	counter(queriesDesc, c.tcp.Load(), "tcp")
	for code := range c.rcodes {
		if v := c.rcodes[code].Load(); v > 0 {
			counter(responsesDesc, v, dns.RcodeToString[code])
		}
	}
	counter(truncDesc, c.truncated.Load())
	counter(ecsDesc, c.ecs.Load())
	counter(changesDesc, c.rebuilds.Load())
	mode, _ := s.viewMode.Load().(string)
	for _, m := range []ViewMode{Shared, Isolated, Standalone} {
		v := 0.0
		if string(m) == mode {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(viewsDesc, prometheus.GaugeValue, v, z, string(m))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for rel, n := range s.zone.Names {
		name := fqdn(rel, z)
		for _, tg := range n.Targets {
			v := 0.0
			if s.up(rel, tg.Name) {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(targetDesc, prometheus.GaugeValue, v, z, name, tg.Name)
		}
	}
}
