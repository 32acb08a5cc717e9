package galera

import (
	"strings"
	"testing"
	"time"
)

func TestDecide(t *testing.T) {
	const h = "5e668134-f0fe-11f1-bc9e-0e5cffb70965"
	nodes := []string{"db1", "db2", "db3"}
	stopped := func(uuid string, seqno int64, safe bool) MemberState {
		return MemberState{Server: ServerStopped, Position: Position{UUID: uuid, Seqno: seqno, SafeToBootstrap: safe}, PositionKnown: true}
	}
	primary := MemberState{Server: ServerRunning, Status: Status{ClusterStatus: "Primary", LocalState: StateSynced, StateUUID: h}, PositionKnown: true}
	addr := map[string]string{"db1": "198.18.1.11", "db2": "198.18.1.12", "db3": "198.18.1.13"}
	withView := func(m MemberState, nodes ...string) MemberState {
		for _, n := range nodes {
			m.Status.IncomingAddresses = append(m.Status.IncomingAddresses, addr[n]+":3306")
		}
		return m
	}
	// A partitioned node: outside a primary component, still connected
	// to the group (it rejoins when the network heals).
	nonPrimary := func(seqno int64, since time.Duration) MemberState {
		return MemberState{Server: ServerRunning, Status: Status{Connected: true, ClusterStatus: "non-Primary"}, Position: Position{UUID: h, Seqno: seqno}, PositionKnown: true, NonPrimaryFor: since}
	}
	// A node whose replication stopped (wsrep_connected OFF): mariadbd
	// runs on, outside the group for ever.
	leftGroup := func(since time.Duration) MemberState {
		return MemberState{Server: ServerRunning, Status: Status{ClusterStatus: "Disconnected"}, PositionKnown: true, NonPrimaryFor: since}
	}
	// What TestDemoGalera's db2 published after "IST didn't contain all
	// write sets ... node restart required": still "connected", joining,
	// and the primary component, which lists its members, without it.
	stuckJoining := func(since time.Duration) MemberState {
		return MemberState{Server: ServerRunning, Status: Status{Connected: true, ClusterStatus: "non-Primary", ClusterSize: 2, LocalState: 1, LocalStateComment: "Joining: receiving State Transfer"}, PositionKnown: true, NonPrimaryFor: since}
	}
	tests := []struct {
		name    string
		self    string
		members map[string]MemberState
		claim   string
		want    Action
		reason  string
	}{
		{"a stopped node joins a primary component", "db1",
			map[string]MemberState{"db1": stopped(h, 5, false), "db2": primary}, "", Join, "db2 is in a primary component"},
		{"a running non-primary node waits for Galera to rejoin it", "db1",
			map[string]MemberState{"db1": nonPrimary(5, time.Hour), "db2": primary, "db3": primary}, "", Wait, "Galera rejoins"},
		{"a node that left the group is restarted to join again", "db2",
			map[string]MemberState{"db1": primary, "db2": leftGroup(time.Minute), "db3": primary}, "", Restart, "left the group 1m0s ago (wsrep_connected OFF)"},
		{"a joiner the primary component does not list is stuck: restarted", "db2",
			map[string]MemberState{"db1": withView(primary, "db1", "db3"), "db2": stuckJoining(2 * time.Minute), "db3": withView(primary, "db1", "db3")}, "", Restart, "db1's does not list it"},
		{"a joiner the primary component lists is in its state transfer: wait", "db2",
			map[string]MemberState{"db1": withView(primary, "db1", "db2", "db3"), "db2": stuckJoining(2 * time.Minute), "db3": withView(primary, "db1", "db2", "db3")}, "", Wait, "Galera rejoins"},
		{"left out for less than three graces: a partition may be healing", "db2",
			map[string]MemberState{"db1": withView(primary, "db1", "db3"), "db2": stuckJoining(20 * time.Second), "db3": withView(primary, "db1", "db3")}, "", Wait, "Galera rejoins"},
		{"not before the grace: the view may be changing", "db2",
			map[string]MemberState{"db1": primary, "db2": leftGroup(time.Second), "db3": primary}, "", Wait, "Galera rejoins"},
		{"nor with no primary component to join", "db2",
			map[string]MemberState{"db1": nonPrimary(5, time.Minute), "db2": leftGroup(time.Minute), "db3": stopped(h, 5, false)}, "", Wait, ""},
		{"the most advanced bootstraps after a whole-cluster crash", "db2",
			map[string]MemberState{"db1": stopped(h, 10, false), "db2": stopped(h, 12, false), "db3": stopped(h, 11, false)}, "", Bootstrap, "db2 is the most advanced (seqno 12)"},
		{"the others wait for it", "db1",
			map[string]MemberState{"db1": stopped(h, 10, false), "db2": stopped(h, 12, false), "db3": stopped(h, 11, false)}, "", Wait, "db2 bootstraps it"},
		{"a missing node may be the most advanced: wait", "db2",
			map[string]MemberState{"db1": stopped(h, 10, false), "db2": stopped(h, 12, false)}, "", Wait, "waiting for db3"},
		{"an unknown position: wait", "db2",
			map[string]MemberState{"db1": stopped(h, 10, false), "db2": stopped(h, 12, false), "db3": {Server: ServerStopped}}, "", Wait, "position of db3 is not known"},
		{"a tie goes to safe_to_bootstrap", "db3",
			map[string]MemberState{"db1": stopped(h, 12, false), "db2": stopped(h, 12, false), "db3": stopped(h, 12, true)}, "", Bootstrap, "db3 is the most advanced"},
		{"a tie without the flag goes to the first node", "db1",
			map[string]MemberState{"db1": stopped(h, 12, false), "db2": stopped(h, 12, false), "db3": stopped(h, 12, false)}, "", Bootstrap, "db1 is the most advanced"},
		{"a new cluster starts on the first node", "db1",
			map[string]MemberState{"db1": stopped("", -1, false), "db2": stopped("", -1, false), "db3": stopped("", -1, false)}, "", Bootstrap, "a new cluster"},
		{"a node with no history is not a candidate", "db2",
			map[string]MemberState{"db1": stopped("", -1, false), "db2": stopped(h, 3, false), "db3": stopped(h, 2, false)}, "", Bootstrap, "db2 is the most advanced"},
		{"two histories: a person chooses", "db1",
			map[string]MemberState{"db1": stopped(h, 12, false), "db2": stopped("11111111-f0fe-11f1-bc9e-0e5cffb70965", 99, false), "db3": stopped(h, 1, false)}, "", Wait, "different histories"},
		{"another's claim: wait", "db1",
			map[string]MemberState{"db1": stopped(h, 99, false), "db2": stopped(h, 12, false), "db3": stopped(h, 11, false)}, "db2", Wait, "db2 is bootstrapping"},
		{"a forced claim bootstraps without the others", "db3",
			map[string]MemberState{"db3": stopped(h, 1, false)}, "db3", Bootstrap, "holds the bootstrap claim"},
		{"a survivor that lost quorum is promoted when most advanced", "db3",
			map[string]MemberState{"db1": stopped(h, 10, false), "db2": stopped(h, 10, false), "db3": nonPrimary(11, time.Minute)}, "", Promote, "db3 is the most advanced"},
		{"a recent non-primary may be a healing partition", "db3",
			map[string]MemberState{"db1": nonPrimary(10, time.Minute), "db2": nonPrimary(10, time.Minute), "db3": nonPrimary(11, time.Second)}, "", Wait, "partition may be healing"},
		{"three singletons after a partition: no promotion beside the others", "db3",
			map[string]MemberState{"db1": nonPrimary(10, time.Minute), "db2": nonPrimary(10, time.Minute), "db3": nonPrimary(11, time.Minute)}, "", Wait, "may form one with the others"},
		{"a stopped node does not bootstrap beside a running one", "db1",
			map[string]MemberState{"db1": stopped(h, 12, false), "db2": nonPrimary(10, time.Minute), "db3": stopped(h, 11, false)}, "", Wait, "db2's server runs"},
		{"two running nodes in one component: the most advanced promotes it", "db2",
			map[string]MemberState{"db1": withView(nonPrimary(10, time.Minute), "db1", "db2"), "db2": withView(nonPrimary(11, time.Minute), "db1", "db2"), "db3": stopped(h, 9, false)}, "", Promote, "db2 is the most advanced"},
		{"a tie goes to a running node", "db2",
			map[string]MemberState{"db1": stopped(h, 11, true), "db2": nonPrimary(11, time.Minute), "db3": stopped(h, 11, false)}, "", Promote, "db2 is the most advanced"},
		{"no join to a primary of another history", "db1",
			map[string]MemberState{"db1": stopped("11111111-f0fe-11f1-bc9e-0e5cffb70965", 5, false), "db2": primary}, "", Wait, "another history"},
		{"a starting node: wait", "db1",
			map[string]MemberState{"db1": stopped(h, 10, false), "db2": {Server: ServerStarting}, "db3": stopped(h, 11, false)}, "", Wait, "db2 starting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for n, m := range tt.members {
				m.Host, m.Port = addr[n], 3306
				tt.members[n] = m
			}
			d := decide(tt.self, nodes, tt.members, BootstrapRecord{Node: tt.claim}, 10*time.Second)
			if d.Action != tt.want || !strings.Contains(d.Reason, tt.reason) {
				t.Errorf("decide = %v (%s), want %v (%s)", d.Action, d.Reason, tt.want, tt.reason)
			}
		})
	}
}

// A node in the primary component must say so: its status once said
// "running; db2 is in a primary component: Galera rejoins this node when
// it reaches it" for a node that was in it, which sent the reader of a
// failed demo after the wrong node.
func TestDecideInPrimarySaysSo(t *testing.T) {
	in := MemberState{Server: ServerRunning, Status: Status{ClusterStatus: "Primary", LocalState: StateSynced}, PositionKnown: true}
	d := decide("db1", []string{"db1", "db2", "db3"}, map[string]MemberState{"db1": in, "db2": in, "db3": in}, BootstrapRecord{}, 10*time.Second)
	if d != (Decision{Wait, "in a primary component"}) {
		t.Errorf("decide = %v (%s), want to wait, in a primary component", d.Action, d.Reason)
	}
}

// TestDecideOneBootstrapper checks the safety rule over every assignment
// of positions: whatever the nodes see, at most one of them decides to
// bootstrap, and it has the highest seqno.
func TestDecideOneBootstrapper(t *testing.T) {
	const h = "5e668134-f0fe-11f1-bc9e-0e5cffb70965"
	nodes := []string{"db1", "db2", "db3"}
	for a := int64(0); a < 3; a++ {
		for b := int64(0); b < 3; b++ {
			for c := int64(0); c < 3; c++ {
				for safe := 0; safe < 8; safe++ {
					members := map[string]MemberState{}
					max := int64(0)
					for i, s := range []int64{a, b, c} {
						members[nodes[i]] = MemberState{Server: ServerStopped, PositionKnown: true,
							Position: Position{UUID: h, Seqno: s, SafeToBootstrap: safe&(1<<i) != 0}}
						if s > max {
							max = s
						}
					}
					var boot []string
					for _, n := range nodes {
						if decide(n, nodes, members, BootstrapRecord{}, time.Second).Action == Bootstrap {
							boot = append(boot, n)
						}
					}
					if len(boot) != 1 || members[boot[0]].Position.Seqno != max {
						t.Fatalf("positions %d %d %d safe %03b: bootstrappers %v", a, b, c, safe, boot)
					}
				}
			}
		}
	}
}
