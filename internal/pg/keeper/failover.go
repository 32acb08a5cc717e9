package keeper

import (
	"fmt"
	"slices"
	"strings"

	"github.com/haven-ha/haven/internal/pg"
)

// Mode is how the primary waits for its replicas before a commit returns.
type Mode string

// The replication modes of haven.yaml's database.replication.mode.
const (
	// ModeAsync commits without waiting; a failover may lose the last
	// transactions, bounded by MaxLagOnFailover.
	ModeAsync Mode = "async"
	// ModeSync waits for SyncStandbys replicas (quorum commit), and
	// degrades to async, loudly, only while no replica is healthy.
	ModeSync Mode = "sync"
	// ModeStrict waits for SyncStandbys replicas always: writes block
	// rather than commit without them.
	ModeStrict Mode = "strict"
)

// Roles a keeper publishes in MemberState.Role.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
	// RoleStopped: postgres does not run (starting, demoting, rewinding,
	// cloning, or no data yet).
	RoleStopped = "stopped"
	// RoleFailed: postgres has been down for longer than the restart
	// policy allows.
	RoleFailed = "failed"
)

// MemberState is what a keeper publishes about its node, under
// StatePrefix, for the other keepers (failover decisions), the balancer
// (routing) and `haven status`.
type MemberState struct {
	Node string `json:"node"`
	// Host and Port are where the node's postgres takes connections.
	Host string `json:"host"`
	Port int    `json:"port"`
	Role string `json:"role"`
	// SystemID is the cluster's system identifier (pg_control); a node
	// with another one holds some other database.
	SystemID uint64 `json:"system_id,omitempty"`
	Timeline uint32 `json:"timeline,omitempty"`
	// LSN is, on a primary, where it writes; on a replica, how far it has
	// received WAL (or replayed it, while it does not stream): the data a
	// promotion would keep.
	LSN       pg.LSN `json:"lsn,omitempty"`
	Replayed  pg.LSN `json:"replayed,omitempty"`
	Streaming bool   `json:"streaming,omitempty"`
	// Upstream is the primary a replica follows ("" while it does not
	// know one).
	Upstream string `json:"upstream,omitempty"`
	// Lag is how many bytes of WAL the node lacks behind the primary's last
	// published position (replicas only).
	Lag uint64 `json:"lag,omitempty"`
	// LagSeconds is how old the last transaction a replica replayed is,
	// while it has received WAL it has not replayed (Position.ReplayDelay).
	LagSeconds float64 `json:"lag_seconds,omitempty"`
	NoFailover bool    `json:"nofailover,omitempty"`
	Priority   int     `json:"priority"`
	// LastPrimaryLSN, on a former primary that let go, is where its WAL
	// ended: its successor must have received that far.
	LastPrimaryLSN pg.LSN `json:"last_primary_lsn,omitempty"`
	// NotPromotable says why the node may not become the primary now
	// ("" when it may, or when it is the primary).
	NotPromotable string `json:"not_promotable,omitempty"`
}

// SyncState is the leader's record of its synchronous standbys, under
// SyncKey. The leader writes it before it adds a standby to
// synchronous_standby_names and after it removes one, so that it always
// names at least every standby a commit may have waited for: only those
// may be promoted in sync and strict mode.
type SyncState struct {
	Leader string `json:"leader"`
	// K is how many of Standbys each commit waits for (0: none, async).
	K        int      `json:"k"`
	Standbys []string `json:"standbys"`
}

// dbPrefix is the key prefix of database name's keys.
func dbPrefix(cluster, name string) string { return "/haven/" + cluster + "/pg/" + name + "/" }

// StatePrefix is the key prefix under which the keepers of database name
// publish their MemberState: /haven/<cluster>/pg/<name>/members/.
func StatePrefix(cluster, name string) string { return dbPrefix(cluster, name) + "members/" }

// syncName is the name of the sync record's key under dbPrefix.
const syncName = "sync"

// SyncKey is the key of the leader's SyncState.
func SyncKey(cluster, name string) string { return dbPrefix(cluster, name) + syncName }

// InitKey is the key that records the cluster's system identifier once a
// node has initialised it: from then on no node runs initdb again.
func InitKey(cluster, name string) string { return dbPrefix(cluster, name) + "initialized" }

// failoverPolicy is what decides which replica may be promoted.
type failoverPolicy struct {
	mode Mode
	// maxLag is the most WAL, in bytes, that a replica may lack behind the
	// last primary position it saw and still be promoted in async mode.
	maxLag uint64
}

// promotable says whether self may be promoted now, and if not, why. It
// sees the states the other keepers published (members, self excluded or
// not), the leader's sync record and the last state the primary published
// (its timeline and position; zero if never seen). The rules, in order:
//   - postgres runs as a replica of the cluster's database (same system
//     identifier), and the node is not tagged nofailover;
//   - it is on the last primary's timeline or a later one (replicas on an
//     older timeline are left out of every comparison too);
//   - async: it lacks at most maxLag bytes behind primaryLSN;
//   - sync and strict: it is one of the sync record's standbys, and enough
//     of them are visible that at least one has every acknowledged commit
//     (len(Standbys)-K+1);
//   - no visible replica that could be promoted under these rules has
//     received more WAL. Replicas level with each other are all promotable;
//     the ownership record's priority picks among them.
func promotable(self MemberState, members map[string]MemberState, sync SyncState, primary MemberState, p failoverPolicy) (bool, string) {
	if why := unfit(self); why != "" {
		return false, why
	}
	// Positions on different timelines do not compare: a node still on
	// an older timeline than the last primary's has not followed it, and
	// lacks whatever it wrote, whatever its LSN says.
	if self.Timeline < primary.Timeline {
		return false, fmt.Sprintf("on timeline %d, behind the last primary's %d: it has not followed the primary", self.Timeline, primary.Timeline)
	}
	primaryLSN := primary.LSN
	syncSet := p.mode != ModeAsync && sync.K > 0
	if !syncSet && primaryLSN > self.LSN && uint64(primaryLSN-self.LSN) > p.maxLag {
		return false, fmt.Sprintf("%d bytes behind the primary's last position %s, more than max_lag_on_failover (%d)",
			primaryLSN-self.LSN, primaryLSN, p.maxLag)
	}
	if syncSet {
		if !slices.Contains(sync.Standbys, self.Node) {
			return false, fmt.Sprintf("not a synchronous standby (those are %s)", strings.Join(sync.Standbys, ", "))
		}
		visible := 0
		for _, n := range sync.Standbys {
			if m, ok := members[n]; ok && (n == self.Node || unfit(m) == "" && m.SystemID == self.SystemID && m.Timeline >= primary.Timeline) {
				visible++
			}
		}
		if n := len(sync.Standbys) - sync.K + 1; visible < n {
			return false, fmt.Sprintf("only %d of the synchronous standbys (%s) are visible; %d are needed to be sure of every acknowledged commit",
				visible, strings.Join(sync.Standbys, ", "), n)
		}
	}
	for _, m := range members {
		if m.Node == self.Node || unfit(m) != "" || m.SystemID != self.SystemID || m.Timeline < primary.Timeline {
			continue
		}
		if syncSet && !slices.Contains(sync.Standbys, m.Node) {
			continue
		}
		if m.LSN > self.LSN {
			return false, fmt.Sprintf("%s has received more WAL (%s, this node %s)", m.Node, m.LSN, self.LSN)
		}
	}
	return true, ""
}

// unfit says why m cannot be promoted whatever the others' positions, or "".
func unfit(m MemberState) string {
	switch {
	case m.NoFailover:
		return "tagged nofailover"
	case m.Role != RoleReplica:
		return "postgres is " + m.Role + ", not a running replica"
	case m.SystemID == 0 || m.LSN == 0:
		return "no position known yet"
	}
	return ""
}
