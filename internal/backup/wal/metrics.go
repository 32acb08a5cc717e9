package wal

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are an Archiver's Prometheus metrics. A node runs at most one
// archiver per cluster, so they have no label for it.
type metrics struct {
	archived  prometheus.Gauge
	timeline  prometheus.Gauge
	pieces    prometheus.Counter
	segments  prometheus.Counter
	histories prometheus.Counter
	bytes     prometheus.Counter
	errors    *prometheus.CounterVec
	gaps      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, lagBytes, lagSeconds func() float64) (*metrics, error) {
	gauge := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		archived:  gauge("haven_backup_wal_archived_position_bytes", "The WAL position (LSN, as a byte offset) up to which the archive is durable in the repository."),
		timeline:  gauge("haven_backup_wal_timeline", "The timeline the archiver streams."),
		pieces:    counter("haven_backup_wal_pieces_uploaded_total", "Pieces of a segment not yet filled that were stored in the repository."),
		segments:  counter("haven_backup_wal_segments_uploaded_total", "Whole WAL segments stored in the repository."),
		histories: counter("haven_backup_wal_history_files_uploaded_total", "Timeline history files stored in the repository."),
		bytes:     counter("haven_backup_wal_uploaded_bytes_total", "Bytes of WAL stored in the repository, in pieces and whole segments."),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_backup_wal_errors_total",
			Help: "Failures of the archiver, by what failed: stream (connecting to or streaming from the server) or upload (storing in the repository).",
		}, []string{"op"}),
	}
	m.gaps = counter("haven_backup_wal_gaps_total", "Times the archive could not be continued where it ended (the server had removed that WAL) and went on from where the slot keeps WAL: backups taken before a gap restore only up to it.")
	for _, op := range []string{"stream", "upload"} {
		m.errors.WithLabelValues(op)
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{m.archived, m.timeline, m.pieces, m.segments, m.histories, m.bytes, m.errors, m.gaps,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "haven_backup_wal_lag_bytes",
			Help: "WAL the server has written and the repository does not hold yet, as far as the archiver has heard from the server.",
		}, lagBytes),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "haven_backup_wal_lag_seconds",
			Help: "How long ago the repository last held all the WAL the server had written: 0 when it holds it now. The archive's live RPO.",
		}, lagSeconds),
	}
	var errs []error
	for _, c := range cs {
		errs = append(errs, reg.Register(c))
	}
	return m, errors.Join(errs...)
}
