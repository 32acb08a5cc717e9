package keeper

import "github.com/haven-ha/haven/internal/pg"

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
	// LastPrimaryLSN, on a former primary that let go, is where its
	// latest checkpoint starts (after a clean stop, its shutdown
	// checkpoint, the last record it wrote): its successor must have
	// received that far, or lose what it wrote.
	LastPrimaryLSN pg.LSN `json:"last_primary_lsn,omitempty"`
	// LastPrimaryEnd, on a former primary that stopped cleanly, is where
	// its shutdown checkpoint ends, and so its WAL: a successor that has
	// received that far has all of its history, and the former primary
	// follows it without pg_rewind. Zero when it did not stop cleanly.
	LastPrimaryEnd pg.LSN `json:"last_primary_end,omitempty"`
	// NotPromotable says why the node may not become the primary now
	// ("" when it may, or when it is the primary).
	NotPromotable string `json:"not_promotable,omitempty"`
	// PendingRestart lists the settings of haven.yaml this node's
	// postgres applies only at its next start (pg_settings'
	// pending_restart after a reload): haven pg restart applies them.
	PendingRestart []string `json:"pending_restart,omitempty"`
	// PendingLowered are those of PendingRestart that a standby needs at
	// least the primary's value of, lowered (pg.RecoverySensitive): the
	// primary restarts with them first.
	PendingLowered []string `json:"pending_lowered,omitempty"`
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
	// Archive is the WAL archiver's application_name when every commit
	// waits for it as well (database.backup.archive: synchronous): the
	// repository holds every acknowledged commit. It is not one of the K.
	Archive string `json:"archive,omitempty"`
	// DR is the other region's standby leader when every commit waits for
	// it as well (database.dr.mode: sync): the standby region holds every
	// acknowledged commit. It is not one of the K.
	DR string `json:"dr,omitempty"`
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
