package volume

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the state of a node's volumes: the storage side from
// the last status each Storage gathered, the client side from each
// Mount's last probe. Every storage node exports the volume's numbers as
// it sees them; aggregate with max.
type Collector struct {
	storages []*Storage
	mounts   []*Mount
	copiers  []*Copier
}

// NewCollector returns the collector of storages, mounts and copiers.
func NewCollector(storages []*Storage, mounts []*Mount, copiers []*Copier) *Collector {
	return &Collector{storages: storages, mounts: mounts, copiers: copiers}
}

var (
	descBricks       = prometheus.NewDesc("haven_volume_bricks", "Bricks of the volume.", []string{"volume"}, nil)
	descBricksOnline = prometheus.NewDesc("haven_volume_bricks_online", "Bricks of the volume that glusterd reports online.", []string{"volume"}, nil)
	descHealPending  = prometheus.NewDesc("haven_volume_heal_pending_entries", "Entries a brick lists as waiting for a heal (a copy behind its replicas).", []string{"volume", "brick"}, nil)
	descSplitBrain   = prometheus.NewDesc("haven_volume_split_brain_entries", "Entries in split-brain on a brick: copies that disagree and that GlusterFS will not heal alone.", []string{"volume", "brick"}, nil)
	descQuorum       = prometheus.NewDesc("haven_volume_quorum_met", "1 while the volume has its quorum: client (a majority of bricks online: clients write) or server (this glusterd reaches a majority of the pool).", []string{"volume", "kind"}, nil)
	descPeers        = prometheus.NewDesc("haven_volume_peers_connected", "Other servers of the pool this node's glusterd reaches.", []string{"volume"}, nil)
	descConfigured   = prometheus.NewDesc("haven_volume_configured", "1 while the volume is as haven.yaml describes it (created, started, haven's options set, this node's brick running).", []string{"volume"}, nil)
	descRestarts     = prometheus.NewDesc("haven_volume_brick_restarts_total", "Times this node's agent started its brick again after it died.", []string{"volume"}, nil)
	descMountUp      = prometheus.NewDesc("haven_volume_mount_up", "1 while this node's mount of the volume is present, writable and answering (its last probe).", []string{"volume"}, nil)
	descMountStarts  = prometheus.NewDesc("haven_volume_mount_restarts_total", "Times this node's agent mounted the volume again after its client exited.", []string{"volume"}, nil)
	descCopying      = prometheus.NewDesc("haven_volume_copy_copying", "1 while this node holds the volume copy's lock and makes its passes.", []string{"volume"}, nil)
	descCopyLag      = prometheus.NewDesc("haven_volume_copy_lag_seconds", "Time since the last complete copy pass started: files written before it are in the copy (the files' recovery point). Only on the node that copies.", []string{"volume"}, nil)
	descCopyFiles    = prometheus.NewDesc("haven_volume_copy_files", "Files in the copy as of the last complete pass.", []string{"volume"}, nil)
	descCopyPasses   = prometheus.NewDesc("haven_volume_copy_passes_total", "Copy passes this node made, by result (ok or failed).", []string{"volume", "result"}, nil)
)

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBricks, descBricksOnline, descHealPending, descSplitBrain, descQuorum, descPeers, descConfigured, descRestarts, descMountUp, descMountStarts, descCopying, descCopyLag, descCopyFiles, descCopyPasses} {
		ch <- d
	}
}

// Collect sends the metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, s := range c.storages {
		st := s.Status()
		online, peers := 0, 0
		for _, b := range st.Bricks {
			if b.Online {
				online++
			}
			if b.HealKnown {
				gauge(descHealPending, float64(b.Pending), st.Volume, b.Spec())
				gauge(descSplitBrain, float64(b.SplitBrain), st.Volume, b.Spec())
			}
		}
		for _, p := range st.Peers {
			if p.Connected {
				peers++
			}
		}
		gauge(descBricks, float64(len(st.Bricks)), st.Volume)
		gauge(descBricksOnline, float64(online), st.Volume)
		gauge(descQuorum, b2f(st.ClientQuorum), st.Volume, "client")
		gauge(descQuorum, b2f(st.ServerQuorum), st.Volume, "server")
		gauge(descPeers, float64(peers), st.Volume)
		gauge(descConfigured, b2f(st.Problem == "" && st.State == "Started"), st.Volume)
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(st.BrickRestarts), st.Volume)
	}
	for _, m := range c.mounts {
		st := m.Status()
		gauge(descMountUp, b2f(st.Healthy), m.cfg.Volume)
		ch <- prometheus.MustNewConstMetric(descMountStarts, prometheus.CounterValue, float64(st.Restarts), m.cfg.Volume)
	}
	for _, c := range c.copiers {
		st := c.Status()
		v := c.cfg.Volume
		gauge(descCopying, b2f(st.Copying), v)
		if st.Copying && !st.LastPass.IsZero() {
			gauge(descCopyLag, st.Lag.Seconds(), v)
			gauge(descCopyFiles, float64(st.Files), v)
		}
		ch <- prometheus.MustNewConstMetric(descCopyPasses, prometheus.CounterValue, float64(st.Passes), v, "ok")
		ch <- prometheus.MustNewConstMetric(descCopyPasses, prometheus.CounterValue, float64(st.Failures), v, "failed")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
