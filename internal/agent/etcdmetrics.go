package agent

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// etcdFamilies are the embedded etcd member's metrics that say whether
// coordination is healthy, re-exported under their own names on the
// agent's /metrics: etcd registers them in the process's default
// registry, which the agent does not serve (its go_ and process_ families
// would clash with the agent's own). A node without an embedded member
// exports none of them.
var etcdFamilies = []string{
	"etcd_server_has_leader",                    // 1 while the member sees a leader
	"etcd_server_is_leader",                     // 1 on the leader
	"etcd_server_leader_changes_seen_total",     // elections, as this member saw them
	"etcd_server_proposals_failed_total",        // writes that did not commit (lost quorum)
	"etcd_server_heartbeat_send_failures_total", // a leader that cannot reach a follower
	"etcd_server_slow_apply_total",              // applies slower than 100 ms
	"etcd_disk_wal_fsync_duration_seconds",      // the disk under the raft log
	"etcd_disk_backend_commit_duration_seconds", // the disk under the key space
	"etcd_mvcc_db_total_size_in_bytes",          // the database file, against its quota
	"etcd_mvcc_db_total_size_in_use_in_bytes",   // what defragmenting would leave
	"etcd_server_quota_backend_bytes",           // the quota (an alarm stops writes past it)
}

// etcdGatherer gathers etcdFamilies from g (prometheus.DefaultGatherer)
// while member says this agent runs an embedded member: etcd registers
// them in every process that links it, and a balancer node's zero
// etcd_server_has_leader would read as a cluster without a leader.
type etcdGatherer struct {
	g      prometheus.Gatherer
	member func() bool
}

func (e etcdGatherer) Gather() ([]*dto.MetricFamily, error) {
	if !e.member() {
		return nil, nil
	}
	mfs, err := e.g.Gather()
	var out []*dto.MetricFamily
	for _, mf := range mfs {
		if slices.Contains(etcdFamilies, mf.GetName()) {
			out = append(out, mf)
		}
	}
	return out, err
}
