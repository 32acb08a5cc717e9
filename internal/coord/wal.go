package coord

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// SlowWALFsync is how long a write-ahead-log fsync may take before it
// counts as slow: a bucket bound of etcd's histogram, several times what a
// disk fit for etcd takes (etcd's documentation asks for under 10 ms at the
// 99th percentile).
const SlowWALFsync = 0.032 // seconds

// WALFsyncs reads, from etcd's own metrics, how many fsyncs of its
// write-ahead log the embedded members of this process have done so far
// and how many of those took longer than SlowWALFsync. The counts only
// grow: a caller compares two readings.
func WALFsyncs(g prometheus.Gatherer) (total, slow uint64, err error) {
	mfs, err := g.Gather()
	if err != nil {
		return 0, 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != "etcd_disk_wal_fsync_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			h := m.GetHistogram()
			total += h.GetSampleCount()
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() == SlowWALFsync {
					slow += h.GetSampleCount() - b.GetCumulativeCount()
				}
			}
		}
		return total, slow, nil
	}
	return 0, 0, errors.New("coord: no etcd_disk_wal_fsync_duration_seconds: no embedded etcd member runs in this process")
}
