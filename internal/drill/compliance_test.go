package drill

import (
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pg/keeper"
)

// healthy is the warm standby of testdata as a database node sees it when
// all is well: both balancers on both nodes, a primary, two streaming
// replicas, one of them synchronous, a standby region 0.2s behind, a fresh
// backup.
func healthy(now time.Time) Observed {
	lag := 300 * time.Millisecond
	return Observed{
		Now:        now,
		BalancerUp: map[string][]string{"web": {"lb1", "lb2"}, "webwest": {"wlb1", "wlb2"}},
		Database: &DatabaseSeen{
			Primary: "db1",
			Members: map[string]keeper.MemberState{
				"db1": {Node: "db1", Role: keeper.RolePrimary},
				"db2": {Node: "db2", Role: keeper.RoleReplica, Streaming: true, LagSeconds: 0.01},
				"db3": {Node: "db3", Role: keeper.RoleReplica, Streaming: true, LagSeconds: 0.02},
			},
			Sync:          keeper.SyncState{Leader: "db1", K: 1, Standbys: []string{"db2"}},
			StandbyLeader: &keeper.RegionState{Node: "wdb1", Region: "west", Leader: true, Member: keeper.MemberState{Role: keeper.RoleStandbyLeader, Streaming: true}, LagSeconds: 0.2},
			NewestBackup:  now.Add(-time.Hour),
			ArchiveLag:    &lag,
		},
	}
}

func TestLive(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		edits  []string // of the configuration, as in assess
		change func(o *Observed)
		part   string // "": met
		want   string
	}{
		{"all well", nil, func(*Observed) {}, "", ""},
		{"one balancer node left", nil, func(o *Observed) { o.BalancerUp["web"] = []string{"lb2"} }, "web", "balancer web serves on lb2 alone of its 2 nodes"},
		{"no balancer node left", nil, func(o *Observed) { o.BalancerUp["webwest"] = nil }, "web", "balancer webwest serves on none of its 2 nodes"},
		{"no primary", nil, func(o *Observed) { o.Database.Primary = "" }, "database", "no primary now"},
		{"no replica can take over", nil, func(o *Observed) {
			for _, n := range []string{"db2", "db3"} {
				m := o.Database.Members[n]
				m.Streaming = false
				o.Database.Members[n] = m
			}
		}, "database", "no replica can take over now"},
		{"no synchronous standby", nil, func(o *Observed) { o.Database.Sync.Standbys = nil }, "database", "no synchronous standby now"},
		{"async replica behind the RPO", []string{"replication: {mode: sync,", "replication: {mode: async,"}, func(o *Observed) {
			for _, n := range []string{"db2", "db3"} {
				m := o.Database.Members[n]
				m.LagSeconds = 7
				o.Database.Members[n] = m
			}
		}, "database", "the closest replica, db2, is 7s behind: beyond the RPO 5s"},
		{"standby region behind the RPO", nil, func(o *Observed) { o.Database.StandbyLeader.LagSeconds = 6.5 }, "region", "the standby region is 6.5s behind: beyond the RPO 5s"},
		{"standby region not streaming", nil, func(o *Observed) { o.Database.StandbyLeader.Member.Streaming = false }, "region", "the standby leader wdb1 does not stream"},
		{"sync standby region degraded", []string{"mode: async, failover", "mode: sync, failover"}, func(o *Observed) { o.Database.Sync.DR = "" }, "region", "not in the synchronous quorum now"},
		{"backups only: archive behind", []string{"  dr: {nodes: [wdb1, wdb2, wdb3], mode: async, failover: automatic}\n", "", "routers: [lb1, lb2, wlb1, wlb2]", "routers: [lb1, lb2]"},
			func(o *Observed) { lag := 9 * time.Second; o.Database.ArchiveLag = &lag }, "region", "the WAL archive trails by 9s: beyond the RPO 5s"},
		{"backups only: a stale backup", []string{"  dr: {nodes: [wdb1, wdb2, wdb3], mode: async, failover: automatic}\n", "", "routers: [lb1, lb2, wlb1, wlb2]", "routers: [lb1, lb2]"},
			func(o *Observed) { o.Database.NewestBackup = now.Add(-50 * time.Hour) }, "region", "the newest backup is 50h old, more than twice base_every 24h"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := load(t, tc.edits...)
			obs := healthy(now)
			if cfg.Database.DR != nil && cfg.Database.DR.Mode == "sync" {
				obs.Database.Sync.DR = "wdb1"
			}
			tc.change(&obs)
			c := Live(cfg, obs)
			if tc.part == "" {
				if !c.Met || len(c.Failing) > 0 {
					t.Errorf("not met: %v", c.Failing)
				}
				if strings.Join(c.Checked, ",") != "web,database,region" {
					t.Errorf("checked %v, want web, database and region", c.Checked)
				}
				return
			}
			if c.Met || !has(c.Failing, tc.part, tc.want) {
				t.Errorf("met %v, failing %v; want %s: %q", c.Met, c.Failing, tc.part, tc.want)
			}
		})
	}
}

// A node that sees no database (a balancer node) judges the web alone and
// says which parts it cannot see.
func TestLiveFromABalancerNode(t *testing.T) {
	obs := healthy(time.Now())
	obs.Database = nil
	c := Live(load(t), obs)
	if !c.Met || strings.Join(c.Checked, ",") != "web" || strings.Join(c.Unseen, ",") != "database,region" {
		t.Errorf("from a balancer node: %+v", c)
	}
}
