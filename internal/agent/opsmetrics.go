package agent

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/config"
)

// reloadMetrics say how the last reload of haven.yaml went, as
// Prometheus's own prometheus_config_last_reload_successful does.
type reloadMetrics struct {
	successful  prometheus.Gauge
	successTime prometheus.Gauge
	reloads     *prometheus.CounterVec
}

func newReloadMetrics(reg prometheus.Registerer, started time.Time) *reloadMetrics {
	m := &reloadMetrics{
		successful: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "haven_config_last_reload_successful",
			Help: "1 when the last reload of haven.yaml (or the start) applied it, 0 when it was refused or failed: the agent runs an older file.",
		}),
		successTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "haven_config_last_reload_success_timestamp_seconds",
			Help: "When haven.yaml was last applied (the start, or a reload that succeeded).",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_config_reloads_total",
			Help: "Reloads of haven.yaml (SIGHUP or POST /api/v1/reload), by result: success or failure.",
		}, []string{"result"}),
	}
	// The file the agent started with was applied.
	m.successful.Set(1)
	m.successTime.Set(float64(started.UnixNano()) / 1e9)
	for _, r := range []string{"success", "failure"} {
		m.reloads.WithLabelValues(r)
	}
	reg.MustRegister(m.successful, m.successTime, m.reloads)
	return m
}

func (m *reloadMetrics) record(err error, at time.Time) {
	if err != nil {
		m.successful.Set(0)
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.successful.Set(1)
	m.successTime.Set(float64(at.UnixNano()) / 1e9)
	m.reloads.WithLabelValues("success").Inc()
}

// certCollector exports when each certificate haven.yaml gives this node
// expires: the admin API's, etcd's, each balancer's; read at scrape time
// (again only when a file changes), so that a renewed file shows at once.
type certCollector struct {
	a      *Agent
	expiry *prometheus.Desc

	mu    sync.Mutex
	cache map[string]certExpiry // by file
}

type certExpiry struct {
	mtime    time.Time
	notAfter time.Time
	ok       bool
}

func newCertCollector(a *Agent) *certCollector {
	return &certCollector{
		a: a,
		expiry: prometheus.NewDesc("haven_certificate_expiry_timestamp_seconds",
			"When a certificate haven.yaml gives this node expires (its first, the leaf's, notAfter), by use (admin, etcd, etcd global, balancer NAME) and file; absent for a file that cannot be read.",
			[]string{"use", "file"}, nil),
		cache: map[string]certExpiry{},
	}
}

func (c *certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.expiry }

func (c *certCollector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range certFiles(c.a.config(), c.a.opt.Node) {
		if t, ok := c.notAfter(f.file); ok {
			ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, float64(t.Unix()), f.use, f.file)
		}
	}
}

// notAfter reads the file's first certificate, when the file changed
// since it last did.
func (c *certCollector) notAfter(file string) (time.Time, bool) {
	st, err := os.Stat(file)
	if err != nil {
		return time.Time{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.cache[file]; ok && e.mtime.Equal(st.ModTime()) {
		return e.notAfter, e.ok
	}
	e := certExpiry{mtime: st.ModTime()}
	if b, err := os.ReadFile(file); err == nil {
		if blk, _ := pem.Decode(b); blk != nil && blk.Type == "CERTIFICATE" {
			if cert, err := x509.ParseCertificate(blk.Bytes); err == nil {
				e.notAfter, e.ok = cert.NotAfter, true
			}
		}
	}
	c.cache[file] = e
	return e.notAfter, e.ok
}

type certFile struct{ use, file string }

// certFiles lists the certificates haven.yaml gives node, with {node}
// replaced.
func certFiles(cfg *config.Config, node string) []certFile {
	var out []certFile
	add := func(use, file string) {
		if file == "" {
			return
		}
		f := certFile{use, config.NodePath(file, node)}
		if !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	if t := cfg.Admin.TLS; t != nil {
		add("admin", t.Cert)
	}
	if c := cfg.CoordinationOf(node); c != nil && c.TLS != nil {
		add("etcd", c.TLS.Cert)
	}
	if g := cfg.GlobalCoordination(); g != nil && g.TLS != nil {
		add("etcd global", g.TLS.Cert)
	}
	for _, b := range cfg.BalancersOn(node) {
		if b.TLS != nil {
			add("balancer "+b.Name, b.TLS.Cert)
		}
	}
	return out
}
