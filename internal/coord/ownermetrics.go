package coord

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/promreg"
)

// ownerMetrics are an Owner's Prometheus metrics, labelled with its
// singleton (its prefix after /owners/: pg/main, vip/web, ...): how long
// its writes to the record take, and how often a holder lost the record
// because no renewal came back before its deadline.
type ownerMetrics struct {
	writes *prometheus.HistogramVec
	missed *prometheus.CounterVec
}

// ownerWriteBuckets reach from a healthy write on a LAN to a lease's
// worth (leases are seconds).
var ownerWriteBuckets = []float64{.001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// newOwnerMetrics registers the owners' metrics on reg, or finds those an
// earlier owner registered there; nil reg: not exported.
func newOwnerMetrics(reg prometheus.Registerer) (*ownerMetrics, error) {
	m := &ownerMetrics{
		writes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "haven_owner_write_duration_seconds",
			Help:    "How long a write to an ownership record took to be answered (the first answer of its copies), by singleton and operation (acquire, renew, release): renewals close to the lease mean the holder is about to lose it.",
			Buckets: ownerWriteBuckets,
		}, []string{"singleton", "op"}),
		missed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_owner_missed_deadlines_total",
			Help: "Times this node stopped acting as a singleton's holder because no renewal came back before its deadline (etcd slow or unreachable from here).",
		}, []string{"singleton"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.writes, err = promreg.Once(reg, m.writes); err != nil {
		return nil, err
	}
	if m.missed, err = promreg.Once(reg, m.missed); err != nil {
		return nil, err
	}
	return m, nil
}

// singletonLabel is the part of an owner's prefix after /owners/.
func singletonLabel(prefix string) string {
	if _, after, ok := strings.Cut(prefix, "/owners/"); ok {
		return after
	}
	return prefix
}
