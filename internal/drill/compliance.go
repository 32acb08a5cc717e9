package drill

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

// Observed is what one node sees of the deployment now, for Live.
type Observed struct {
	Now time.Time
	// BalancerUp lists, per balancer, the nodes whose agents report it
	// serving (their membership records); nil when this node sees no
	// membership.
	BalancerUp map[string][]string
	// Database is what a database node sees (nil elsewhere).
	Database *DatabaseSeen
}

// DatabaseSeen is the database as a database node's keeper sees it.
type DatabaseSeen struct {
	Primary string
	Members map[string]keeper.MemberState
	Sync    keeper.SyncState
	// StandbyLeader is the standby region's leader as the global scope
	// shows it; nil without database.dr or when none is published.
	StandbyLeader *keeper.RegionState
	// NewestBackup is when the newest backup ended (zero: none known);
	// ArchiveLag how far the WAL archive trails, when known.
	NewestBackup time.Time
	ArchiveLag   *time.Duration
}

// Compliance says whether the deployment meets its objectives now, and
// why not.
type Compliance struct {
	Met bool `json:"met"`
	// Checked lists the parts whose objectives this node could judge;
	// Unseen those it could not (a part seen only from elsewhere).
	Checked []string  `json:"checked"`
	Unseen  []string  `json:"unseen,omitempty"`
	Failing []Finding `json:"failing,omitempty"`
}

// Live judges the deployment as obs shows it against cfg's objectives:
// the lags against the RPOs, the spare capacity (a second balancer node, a
// replica that can take over, a streaming standby region) against the RTOs,
// the backups' age against their schedule. Only the parts with an
// objective are judged.
func Live(cfg *config.Config, obs Observed) Compliance {
	c := Compliance{Met: true}
	fail := func(part, why, fix string) {
		c.Met = false
		c.Failing = append(c.Failing, Finding{Part: part, Why: why, Fix: fix})
	}
	judge := func(part string, seen bool, f func(rto, rpo *time.Duration)) {
		rto, rpo := cfg.Objectives.For(part)
		if rto == nil && rpo == nil {
			return
		}
		if !seen {
			c.Unseen = append(c.Unseen, part)
			return
		}
		c.Checked = append(c.Checked, part)
		f(rto, rpo)
	}
	if len(cfg.Balancers) > 0 {
		judge(config.PartWeb, obs.BalancerUp != nil, func(rto, _ *time.Duration) {
			if rto != nil {
				webNow(cfg, obs, fail)
			}
		})
	}
	db := cfg.Database
	if db == nil {
		return c
	}
	d := obs.Database
	judge(config.PartDatabase, d != nil, func(rto, rpo *time.Duration) { databaseNow(db, d, rto, rpo, fail) })
	judge(config.PartRegion, d != nil, func(rto, rpo *time.Duration) { regionNow(db, d, obs.Now, rto, rpo, fail) })
	return c
}

func webNow(cfg *config.Config, obs Observed, fail func(part, why, fix string)) {
	for _, name := range balancerNames(cfg) {
		b := cfg.Balancers[name]
		if b == nil {
			continue
		}
		up := obs.BalancerUp[name]
		switch {
		case len(up) == 0:
			fail(config.PartWeb, fmt.Sprintf("balancer %s serves on none of its %d nodes: the web is down", name, len(b.Nodes)), "see haven status")
		case len(up) == 1:
			fail(config.PartWeb, fmt.Sprintf("balancer %s serves on %s alone of its %d nodes: its loss is an outage until a person acts",
				name, up[0], len(b.Nodes)), "bring its other nodes back, or run it on more")
		}
	}
}

func databaseNow(db *config.Database, d *DatabaseSeen, rto, rpo *time.Duration, fail func(part, why, fix string)) {
	const part = config.PartDatabase
	if d.Primary == "" || d.Members[d.Primary].Role != keeper.RolePrimary {
		fail(part, "no primary now: the database takes no writes", "see haven pg status")
		return
	}
	candidates := takeovers(d)
	if rto != nil && len(candidates) == 0 {
		fail(part, "no replica can take over now: the primary's loss waits for a person (or a restore)", "bring a replica back: haven pg status says why each cannot")
	}
	if rpo == nil {
		return
	}
	switch mode := replicationMode(db); {
	case mode != "async":
		if len(d.Sync.Standbys) == 0 {
			fail(part, "no synchronous standby now: commits are acknowledged without a copy, and a failover may lose them", "bring a replica back")
		}
	case len(candidates) > 0:
		best := candidates[0]
		if lag := time.Duration(best.LagSeconds * float64(time.Second)); lag > *rpo {
			fail(part, fmt.Sprintf("the closest replica, %s, is %s behind: beyond the RPO %s", best.Node, config.Duration(lag.Round(time.Millisecond)), config.Duration(*rpo)),
				"find what slows it (haven pg status), or set replication.mode: sync")
		}
	}
}

// takeovers lists the replicas that could take over now, the closest
// first.
func takeovers(d *DatabaseSeen) []keeper.MemberState {
	var out []keeper.MemberState
	for _, m := range d.Members {
		if m.Role == keeper.RoleReplica && m.Streaming && !m.NoFailover && m.NotPromotable == "" {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b keeper.MemberState) int {
		if a.LagSeconds != b.LagSeconds {
			if a.LagSeconds < b.LagSeconds {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Node, b.Node)
	})
	return out
}

func regionNow(db *config.Database, d *DatabaseSeen, now time.Time, rto, rpo *time.Duration, fail func(part, why, fix string)) {
	const part = config.PartRegion
	if db.DR == nil {
		backupsNow(db, d, now, rpo, fail)
		return
	}
	sl := d.StandbyLeader
	if sl == nil || !sl.Member.Streaming {
		what := "no standby leader is published"
		if sl != nil {
			what = "the standby leader " + sl.Node + " does not stream"
		}
		if rto != nil || rpo != nil {
			fail(part, what+": a region's loss now has no region ready to take over", "see haven dr status")
		}
		return
	}
	if rpo == nil {
		return
	}
	if db.DR.Mode == "sync" {
		if d.Sync.DR == "" {
			fail(part, "the standby region is not in the synchronous quorum now (degraded): a region's loss may lose acknowledged commits", "see haven dr status")
		}
		return
	}
	if lag := time.Duration(sl.LagSeconds * float64(time.Second)); lag > *rpo {
		fail(part, fmt.Sprintf("the standby region is %s behind: beyond the RPO %s", config.Duration(lag.Round(time.Millisecond)), config.Duration(*rpo)),
			"find what slows the stream (haven dr status), or set dr.mode: sync")
	}
}

// backupsNow judges a region's loss recovered from the backups: the
// archive's lag against the RPO, the newest backup against its schedule.
func backupsNow(db *config.Database, d *DatabaseSeen, now time.Time, rpo *time.Duration, fail func(part, why, fix string)) {
	const part = config.PartRegion
	b := db.Backup
	if b == nil {
		fail(part, "no backups and no second region: a region's loss loses the data", "add database.backup or database.dr")
		return
	}
	if rpo != nil && d.ArchiveLag != nil && *d.ArchiveLag > *rpo {
		fail(part, fmt.Sprintf("the WAL archive trails by %s: beyond the RPO %s", config.Duration(d.ArchiveLag.Round(time.Millisecond)), config.Duration(*rpo)),
			"see haven backup status: is the repository reachable?")
	}
	if every := b.BaseEvery.D(); every > 0 {
		switch age := now.Sub(d.NewestBackup); {
		case d.NewestBackup.IsZero():
			fail(part, "no backup has been taken yet: a restore has nothing to start from", "haven backup run")
		case age > 2*every:
			fail(part, fmt.Sprintf("the newest backup is %s old, more than twice base_every %s: a restore replays that much WAL", config.Duration(age.Round(time.Second)), b.BaseEvery),
				"see haven backup status: why did the scheduled backups fail?")
		}
	}
}
