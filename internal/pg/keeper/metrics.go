package keeper

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/promreg"
)

// keeperMetrics are a Keeper's Prometheus metrics: what this node is in the
// cluster, as it publishes it.
type keeperMetrics struct {
	primary      prometheus.Gauge
	lsn          prometheus.Gauge
	lag          prometheus.Gauge
	lagSeconds   prometheus.Gauge
	timeline     prometheus.Gauge
	promotable   prometheus.Gauge
	syncK        prometheus.Gauge
	syncDegraded prometheus.Gauge
	syncArchive  prometheus.Gauge
	paused       prometheus.Gauge
	promotions   prometheus.Counter
	// rewinds counts rewinds by what the discarded WAL held: transactions
	// "lost", "none", or "unknown" (it could not be read).
	rewinds *prometheus.CounterVec
}

func newKeeperMetrics(reg prometheus.Registerer) (*keeperMetrics, error) {
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &keeperMetrics{
		primary:      gauge("haven_pg_primary", "1 while this node acts as the database primary (it holds the ownership record and its write fence is open), 0 otherwise."),
		lsn:          gauge("haven_pg_wal_position_bytes", "The WAL position this node published: written on a primary, received on a replica."),
		lag:          gauge("haven_pg_replication_lag_bytes", "How many bytes of WAL this replica lacks behind the primary's last published position; 0 on the primary."),
		lagSeconds:   gauge("haven_pg_replication_lag_seconds", "How old the last transaction this replica replayed is, while it has WAL it has not replayed; 0 when caught up, and on the primary."),
		timeline:     gauge("haven_pg_timeline", "The timeline of this node's WAL."),
		promotable:   gauge("haven_pg_promotable", "1 when this replica may be promoted now (see not_promotable in the status for why not), 0 otherwise."),
		syncK:        gauge("haven_pg_sync_standbys", "On the primary, how many standbys every commit waits for (synchronous_standby_names' k); 0 in async mode or when sync mode degraded."),
		syncDegraded: gauge("haven_pg_sync_degraded", "1 on a primary in sync mode while no standby is healthy and commits do not wait for any (degraded to async)."),
		syncArchive:  gauge("haven_pg_sync_archive", "1 on a primary while every commit waits for the WAL archiver as well (database.backup.archive: synchronous): commits stall while the archiver does not store."),
		paused:       gauge("haven_pg_paused", "1 while the database is paused (haven pg pause): no replica takes the lead, whatever happens to the primary."),
		promotions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "haven_pg_promotions_total",
			Help: "Promotions of this node's postgres to primary.",
		}),
		rewinds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_pg_rewinds_total",
			Help: "pg_rewind runs that discarded WAL of this node's that the new primary never had, by whether that WAL ended transactions (lost), none (only checkpoints and the like), or could not be read (unknown).",
		}, []string{"transactions"}),
	}
	for _, v := range []string{"lost", "none", "unknown"} {
		m.rewinds.WithLabelValues(v)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []*prometheus.Gauge{&m.primary, &m.lsn, &m.lag, &m.lagSeconds, &m.timeline, &m.promotable, &m.syncK, &m.syncDegraded, &m.syncArchive, &m.paused} {
		g, err := promreg.Once(reg, *c)
		if err != nil {
			return nil, err
		}
		*c = g
	}
	var err error
	if m.promotions, err = promreg.Once(reg, m.promotions); err != nil {
		return nil, err
	}
	if m.rewinds, err = promreg.Once(reg, m.rewinds); err != nil {
		return nil, err
	}
	return m, nil
}

// regionMetrics are the metrics of a node's side of a database that spans
// two regions.
type regionMetrics struct {
	active, epoch, lagBytes, lagSeconds, promotable prometheus.Gauge
}

func newRegionMetrics(reg prometheus.Registerer) (*regionMetrics, error) {
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &regionMetrics{
		active:     gauge("haven_dr_active", "1 while this node acts as the primary of the active region (its region holds the active-region record and it leads the region's database), 0 otherwise."),
		epoch:      gauge("haven_dr_region_epoch", "The fencing epoch of the active-region record as this node last saw it (0 while nobody holds it)."),
		lagBytes:   gauge("haven_dr_lag_bytes", "On the standby leader, how many bytes of WAL it lacked behind the active region's primary when it last heard from it: the data a region failover would lose."),
		lagSeconds: gauge("haven_dr_lag_seconds", "On the standby leader, how long before it last heard from the active region's primary the oldest WAL it lacked was written: the live RPO across regions."),
		promotable: gauge("haven_dr_promotable", "1 on the standby leader while its region may take the active-region record by itself (failover automatic and its lag within dr.max_lag), 0 otherwise."),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []*prometheus.Gauge{&m.active, &m.epoch, &m.lagBytes, &m.lagSeconds, &m.promotable} {
		g, err := promreg.Once(reg, *c)
		if err != nil {
			return nil, err
		}
		*c = g
	}
	return m, nil
}
