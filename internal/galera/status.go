package galera

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
)

// Galera's local states (wsrep_local_state).
const (
	StateJoining = 1
	StateDonor   = 2 // donor or desynced
	StateJoined  = 3
	StateSynced  = 4
)

// Status is the server's wsrep state, as SHOW GLOBAL STATUS gives it.
type Status struct {
	// Ready is wsrep_ready: the node accepts queries.
	Ready bool `json:"ready"`
	// Connected is wsrep_connected: the node is in a group.
	Connected bool `json:"connected"`
	// ClusterStatus is Primary, non-Primary or Disconnected: only a
	// primary component (a majority of the last one) commits.
	ClusterStatus string `json:"cluster_status"`
	// LocalState is 1 joining, 2 donor/desynced, 3 joined, 4 synced;
	// LocalStateComment its name.
	LocalState        int    `json:"local_state"`
	LocalStateComment string `json:"local_state_comment"`
	ClusterSize       int    `json:"cluster_size"`
	// StateUUID is the cluster's state UUID (the history), LastCommitted
	// the last write set this node committed.
	StateUUID     string `json:"state_uuid"`
	LastCommitted int64  `json:"last_committed"`
	// FlowControlPausedNs is the time replication was paused by flow
	// control since the server started.
	FlowControlPausedNs int64 `json:"flow_control_paused_ns"`
	// CertFailures are the write sets that failed certification (a
	// conflict with another node's).
	CertFailures int64 `json:"cert_failures"`
	// RecvQueue and SendQueue are the write sets waiting to be applied
	// and to be sent.
	RecvQueue int64 `json:"recv_queue"`
	SendQueue int64 `json:"send_queue"`
	// GcommUUID is this server's identity in the group (new at every
	// start); IncomingAddresses are the client addresses (HOST:PORT) of
	// every node in its component, this one's included.
	GcommUUID         string   `json:"gcomm_uuid,omitempty"`
	IncomingAddresses []string `json:"incoming_addresses,omitempty"`
	// EvictList is the gcomm UUIDs this server keeps out of its group
	// (wsrep_evs_evict_list): those its agent evicted and those it
	// learned of from its peers.
	EvictList []string `json:"evict_list,omitempty"`
}

// Primary reports whether the node is in a primary component.
func (s Status) Primary() bool { return s.ClusterStatus == "Primary" }

// Serving says whether the node may take clients, and why not: ready, in
// a primary component, synced (or a donor, when donorServes).
func (s Status) Serving(donorServes bool) (bool, string) {
	switch {
	case !s.Primary() && !s.Connected:
		return false, "not connected to the group (wsrep_connected OFF): replication stopped; the agent restarts the server when another node is in a primary component"
	case !s.Primary():
		return false, "not in a primary component (" + orUnknown(s.ClusterStatus) + "): partitioned from the majority, or the cluster lost its quorum"
	case !s.Ready:
		return false, "wsrep_ready is OFF"
	case s.LocalState == StateSynced:
		return true, ""
	case s.LocalState == StateDonor && donorServes:
		return true, ""
	default:
		return false, "not synced (" + orUnknown(s.LocalStateComment) + ")"
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// statusVars are the variables Status reads.
const statusQuery = `SHOW GLOBAL STATUS WHERE Variable_name IN (
'wsrep_ready', 'wsrep_connected', 'wsrep_cluster_status', 'wsrep_local_state',
'wsrep_local_state_comment', 'wsrep_cluster_size', 'wsrep_cluster_state_uuid',
'wsrep_last_committed', 'wsrep_flow_control_paused_ns', 'wsrep_local_cert_failures',
'wsrep_local_recv_queue', 'wsrep_local_send_queue', 'wsrep_gcomm_uuid',
'wsrep_incoming_addresses', 'wsrep_evs_evict_list')`

// readStatus asks the server over db.
func readStatus(ctx context.Context, db *sql.DB) (Status, error) {
	rows, err := db.QueryContext(ctx, statusQuery)
	if err != nil {
		return Status{}, err
	}
	defer rows.Close()
	vars := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return Status{}, err
		}
		vars[strings.ToLower(k)] = v
	}
	if err := rows.Err(); err != nil {
		return Status{}, err
	}
	if len(vars) == 0 {
		return Status{}, fmt.Errorf("no wsrep status: the server runs without Galera (wsrep_on)")
	}
	return statusFrom(vars), nil
}

func statusFrom(v map[string]string) Status {
	num := func(k string) int64 {
		n, _ := strconv.ParseInt(v[k], 10, 64)
		return n
	}
	s := Status{
		Ready:               v["wsrep_ready"] == "ON",
		Connected:           v["wsrep_connected"] == "ON",
		ClusterStatus:       v["wsrep_cluster_status"],
		LocalState:          int(num("wsrep_local_state")),
		LocalStateComment:   v["wsrep_local_state_comment"],
		ClusterSize:         int(num("wsrep_cluster_size")),
		StateUUID:           v["wsrep_cluster_state_uuid"],
		LastCommitted:       num("wsrep_last_committed"),
		FlowControlPausedNs: num("wsrep_flow_control_paused_ns"),
		CertFailures:        num("wsrep_local_cert_failures"),
		RecvQueue:           num("wsrep_local_recv_queue"),
		SendQueue:           num("wsrep_local_send_queue"),
	}
	if s.StateUUID == zeroUUID {
		s.StateUUID = ""
	}
	s.GcommUUID = v["wsrep_gcomm_uuid"]
	for _, a := range strings.Split(v["wsrep_incoming_addresses"], ",") {
		if a = strings.TrimSpace(a); a != "" && a != "AUTO" {
			s.IncomingAddresses = append(s.IncomingAddresses, a)
		}
	}
	for _, u := range strings.Split(v["wsrep_evs_evict_list"], ",") {
		if u = strings.TrimSpace(u); u != "" {
			s.EvictList = append(s.EvictList, u)
		}
	}
	return s
}
