package agent

import (
	"cmp"
	"slices"
	"time"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

// The backup schedule is decided by the pure functions of this file, from
// what the repository holds and what etcd says: the driver (backup.go)
// reads the repository, the members' states and the request key, and does
// what these answer. Nothing here reads a clock or the network.

// Backup kinds, as a manifest and the metrics name them.
const (
	kindFull        = "full"
	kindIncremental = "incremental"
)

// backupSchedule is database.backup's schedule: a full backup every
// base, an incremental one every incr since the newest backup of either
// kind (0: none). With base 0 nothing is scheduled; a request still runs.
type backupSchedule struct {
	base, incr time.Duration
}

// newestBackups is what the schedule needs of the repository: when the
// newest complete full backup started, and when the newest complete one
// of either kind did (zero: none).
type newestBackups struct {
	full, any time.Time
}

// newest reads newestBackups from a repository's complete backups.
func newest(ms []*base.Manifest) newestBackups {
	var n newestBackups
	for _, m := range ms {
		if m.Kind == kindFull && m.StartTime.After(n.full) {
			n.full = m.StartTime
		}
		if m.StartTime.After(n.any) {
			n.any = m.StartTime
		}
	}
	return n
}

// due answers which backup is due at now ("" for none) and, when none is,
// when the next one will be (zero: never, until a request). A full backup
// is due when there is none or the newest started base ago; an
// incremental one when the newest backup of either kind started incr
// ago. When both are, the full one is. A request is due at once, of the
// kind it asks; an incremental request with no full backup yet takes a
// full one (base.Take does so too).
func (s backupSchedule) due(n newestBackups, request string, now time.Time) (kind string, next time.Time) {
	switch {
	case request == kindFull || (request != "" && n.full.IsZero()):
		return kindFull, time.Time{}
	case request == kindIncremental:
		return kindIncremental, time.Time{}
	case s.base <= 0:
		return "", time.Time{}
	}
	nextFull := n.full.Add(s.base)
	if n.full.IsZero() || !now.Before(nextFull) {
		return kindFull, time.Time{}
	}
	next = nextFull
	if s.incr > 0 {
		nextIncr := n.any.Add(s.incr)
		if !now.Before(nextIncr) {
			return kindIncremental, time.Time{}
		}
		next = minTime(next, nextIncr)
	}
	return "", next
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// backupNode chooses the node that takes the cluster's next backup, from
// the members' published states and the holder of the primary's record:
// with from "replica", the healthy replica least behind the primary (a
// running replica streaming from the holder; the lowest lag, then the
// name, so that every agent chooses the same one from the same states);
// the primary when no replica is healthy, or with from "primary". It
// answers "" when there is no serving primary: a backup needs its WAL
// archived, which the primary's agent does.
func backupNode(from, holder string, members map[string]keeper.MemberState) string {
	p, ok := members[holder]
	if holder == "" || !ok || p.Role != keeper.RolePrimary {
		return ""
	}
	if from == "primary" {
		return holder
	}
	var replicas []keeper.MemberState
	for name, m := range members {
		if name != holder && m.Role == keeper.RoleReplica && m.Streaming && m.Upstream == holder {
			m.Node = name
			replicas = append(replicas, m)
		}
	}
	if len(replicas) == 0 {
		return holder
	}
	best := slices.MinFunc(replicas, func(a, b keeper.MemberState) int {
		return cmp.Or(cmp.Compare(a.Lag, b.Lag), cmp.Compare(a.Node, b.Node))
	})
	return best.Node
}
