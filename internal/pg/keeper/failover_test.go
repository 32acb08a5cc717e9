package keeper

import (
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/pg"
)

func TestPromotable(t *testing.T) {
	const sys = 7
	replica := func(node string, lsn pg.LSN) MemberState {
		return MemberState{Node: node, Role: RoleReplica, SystemID: sys, LSN: lsn, Timeline: 1}
	}
	with := func(ms ...MemberState) map[string]MemberState {
		m := map[string]MemberState{}
		for _, s := range ms {
			m[s.Node] = s
		}
		return m
	}
	async := failoverPolicy{mode: ModeAsync, maxLag: 1000}
	syncp := failoverPolicy{mode: ModeSync, maxLag: 1000}
	sync2 := SyncState{Leader: "a", K: 1, Standbys: []string{"b", "c"}}
	for _, tc := range []struct {
		name    string
		self    MemberState
		members map[string]MemberState
		sync    SyncState
		primary pg.LSN
		policy  failoverPolicy
		want    string // "" for promotable, else a word of the reason
	}{
		{"the most advanced replica", replica("b", 500), with(replica("b", 500), replica("c", 400)), SyncState{}, 600, async, ""},
		{"level replicas are both promotable", replica("b", 500), with(replica("b", 500), replica("c", 500)), SyncState{}, 500, async, ""},
		{"a replica behind another", replica("c", 400), with(replica("b", 500), replica("c", 400)), SyncState{}, 600, async, "received more"},
		{"async: too far behind the primary", replica("b", 500), with(replica("b", 500)), SyncState{}, 2000, async, "max_lag_on_failover"},
		{"async: exactly max lag behind", replica("b", 1000), with(replica("b", 1000)), SyncState{}, 2000, async, ""},
		{"tagged nofailover", MemberState{Node: "b", Role: RoleReplica, SystemID: sys, LSN: 500, NoFailover: true}, nil, SyncState{}, 0, async, "nofailover"},
		{"on an older timeline than the primary, however far its WAL goes", MemberState{Node: "b", Role: RoleReplica, SystemID: sys, LSN: 900, Timeline: 0},
			nil, SyncState{}, 500, async, "has not followed the primary"},
		{"a replica ahead on an older timeline does not block", replica("b", 500),
			with(replica("b", 500), MemberState{Node: "c", Role: RoleReplica, SystemID: sys, LSN: 900}), SyncState{}, 500, async, ""},
		{"postgres not running", MemberState{Node: "b", Role: RoleStopped}, nil, SyncState{}, 0, async, "not a running replica"},
		{"position unknown", MemberState{Node: "b", Role: RoleReplica}, nil, SyncState{}, 0, async, "no position"},
		{"a nofailover node ahead does not block", replica("b", 500),
			with(replica("b", 500), MemberState{Node: "c", Role: RoleReplica, SystemID: sys, LSN: 900, NoFailover: true, Timeline: 1}), SyncState{}, 900, async, ""},
		{"another database ahead does not block", replica("b", 500),
			with(replica("b", 500), MemberState{Node: "c", Role: RoleReplica, SystemID: 8, LSN: 900, Timeline: 1}), SyncState{}, 600, async, ""},
		{"sync: a synchronous standby, the other visible", replica("b", 500), with(replica("b", 500), replica("c", 500)), sync2, 500, syncp, ""},
		{"sync: not a synchronous standby", replica("d", 500), with(replica("b", 400), replica("c", 400), replica("d", 500)), sync2, 500, syncp, "not a synchronous standby"},
		{"sync: the other standby is gone, k=1 of 2", replica("b", 500), with(replica("b", 500)), sync2, 500, syncp, "only 1 of the synchronous standbys"},
		{"sync: k=2 of 2 needs only itself", replica("b", 500), with(replica("b", 500)), SyncState{Leader: "a", K: 2, Standbys: []string{"b", "c"}}, 500, syncp, ""},
		{"sync: behind the other standby", replica("b", 400), with(replica("b", 400), replica("c", 500)), sync2, 500, syncp, "received more"},
		{"sync: lag does not matter", replica("b", 10), with(replica("b", 10), replica("c", 10)), sync2, 5000, syncp, ""},
		{"sync degraded to async (k=0): the lag rule", replica("b", 10), with(replica("b", 10)), SyncState{Leader: "a"}, 5000, syncp, "max_lag_on_failover"},
		{"strict: the primary and its sync standby lost together", replica("c", 400), with(replica("c", 400)),
			SyncState{Leader: "a", K: 1, Standbys: []string{"b"}}, 500, failoverPolicy{mode: ModeStrict}, "not a synchronous standby"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, why := promotable(tc.self, tc.members, tc.sync, MemberState{Role: RolePrimary, Timeline: 1, LSN: tc.primary}, tc.policy)
			switch {
			case tc.want == "" && !ok:
				t.Errorf("not promotable: %s", why)
			case tc.want != "" && ok:
				t.Errorf("promotable, want not (%s)", tc.want)
			case tc.want != "" && !strings.Contains(why, tc.want):
				t.Errorf("reason %q, want one that says %q", why, tc.want)
			}
		})
	}
}
