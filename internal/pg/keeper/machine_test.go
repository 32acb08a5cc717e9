package keeper

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pg"
)

// The machine's decisions, one table per decision. Every case is a view
// (what the keeper saw) and the machine's memory; nothing here runs
// postgres or etcd, or reads a clock.

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testMachine(mode Mode) *machine {
	return &machine{cfg: machineConfig{
		node: "db2", nodes: []string{"db1", "db2", "db3"}, lease: time.Second,
		mode: mode, syncStandbys: 1, maxLag: 1 << 20,
	}}
}

// replicaState is a running replica's published state at lsn, timeline 1.
func replicaState(node string, lsn pg.LSN) MemberState {
	return MemberState{Node: node, Host: "127.0.0.1", Port: 5432, Role: RoleReplica, SystemID: 7, Timeline: 1, LSN: lsn}
}

func primaryState(node string, lsn pg.LSN) MemberState {
	return MemberState{Node: node, Host: "127.0.0.2", Port: 5433, Role: RolePrimary, SystemID: 7, Timeline: 1, LSN: lsn}
}

func members(ms ...MemberState) map[string]MemberState {
	out := map[string]MemberState{}
	for _, m := range ms {
		out[m.Node] = m
	}
	return out
}

func TestLeadSteps(t *testing.T) {
	running := view{now: t0, acting: true, epoch: 5, hasData: true, session: true, server: pg.StateRunning}
	with := func(edit func(*view)) view {
		v := running
		edit(&v)
		return v
	}
	for _, tc := range []struct {
		name       string
		mode       Mode
		setUpEpoch int64
		v          view
		want       []leadStep
	}{
		{"no data: bootstrap", ModeSync, 0, with(func(v *view) { v.hasData, v.session, v.server = false, false, pg.StateStopped }), []leadStep{leadBootstrap}},
		{"postgres not started: start it", ModeSync, 0, with(func(v *view) { v.session, v.server = false, pg.StateStopped }), []leadStep{leadStart}},
		{"postgres starting: wait for its change of state", ModeSync, 0, with(func(v *view) { v.server = pg.StateStarting }), nil},
		{"postgres restarting in place: wait", ModeSync, 5, with(func(v *view) { v.server = pg.StateRestarting }), nil},
		{"a replica: promote, set up, sync", ModeSync, 3, with(func(v *view) { v.inRecovery = true }), []leadStep{leadPromote, leadSetUp, leadSync}},
		{"a replica in async mode: no sync", ModeAsync, 3, with(func(v *view) { v.inRecovery = true }), []leadStep{leadPromote, leadSetUp}},
		{"the primary of a new lead: set up again", ModeStrict, 3, running, []leadStep{leadSetUp, leadSync}},
		{"the primary, set up for this lead: sync only", ModeSync, 5, running, []leadStep{leadSync}},
		{"the primary in async mode, set up: nothing", ModeAsync, 5, running, nil},
		{"the primary in async mode with a synchronous archive: sync", ModeAsync, 5, running, []leadStep{leadSync}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMachine(tc.mode)
			if strings.Contains(tc.name, "synchronous archive") {
				m.cfg.archive = "haven_archive"
			}
			m.setUpEpoch = tc.setUpEpoch
			if got := m.lead(tc.v); !slices.Equal(got, tc.want) {
				t.Errorf("lead = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFollowActions(t *testing.T) {
	leader := primaryState("db1", 900)
	cluster := members(leader, replicaState("db2", 800))
	replica := view{now: t0, holder: "db1", hasData: true, session: true, server: pg.StateRunning, inRecovery: true, members: cluster}
	with := func(edit func(*view)) view {
		v := replica
		edit(&v)
		return v
	}
	stopped := func(v *view) { v.session, v.server, v.inRecovery = false, pg.StateStopped, false }
	for _, tc := range []struct {
		name     string
		memory   func(m *machine)
		v        view
		want     followAction
		noLeader string // a word of why there is no leader, "" when there is
	}{
		{"postgres is a primary without the lead: demote", nil, with(func(v *view) { v.inRecovery = false }), followDemote, ""},
		{"nobody holds the record, postgres stopped: read-only", nil, with(func(v *view) { stopped(v); v.holder = "" }), followReadOnly, "nobody holds the record"},
		{"nobody holds the record, postgres runs: wait", nil, with(func(v *view) { v.holder = "" }), followWait, "nobody holds the record"},
		{"nobody holds the record, no data: wait", nil, with(func(v *view) { stopped(v); v.holder, v.hasData = "", false }), followWait, "nobody holds the record"},
		{"nobody holds the record, postgres starting: wait", nil, with(func(v *view) { v.holder, v.server = "", pg.StateStarting }), followWait, "nobody holds the record"},
		{"the holder publishes nothing", nil, with(func(v *view) { v.holder = "db3" }), followWait, "db3 holds the record but publishes no state"},
		{"the holder has not promoted yet", nil, with(func(v *view) { v.members = members(replicaState("db1", 900)) }), followWait, "db1 holds the record but its postgres is replica"},
		{"this node holds the record but does not act", nil, with(func(v *view) { v.holder = "db2" }), followWait, "db2 holds the record"},
		{"no data: clone", nil, with(func(v *view) { stopped(v); v.hasData = false }), followClone, ""},
		{"half rewound, stopped: rewind (which sets it aside and clones)", nil, with(func(v *view) { stopped(v); v.halfRewound = true }), followRewind, ""},
		{"failed to start past the fork: rewind", nil, with(func(v *view) { stopped(v); v.pastFork = true }), followRewind, ""},
		{"failed to start past the fork, retrying: rewind", nil, with(func(v *view) { v.server, v.inRecovery, v.pastFork = pg.StateStarting, false, true }), followRewind, ""},
		{"an old start's failure, running now: switch", nil, with(func(v *view) { v.pastFork = true }), followSwitch, ""},
		{"half rewound, no data: clone", nil, with(func(v *view) { stopped(v); v.hasData, v.halfRewound = false, true }), followClone, ""},
		{"a former primary: rewind", func(m *machine) { m.demoted = true }, replica, followRewind, ""},
		{"three failed follows: rewind", func(m *machine) { m.failedFollows = 3 }, replica, followRewind, ""},
		{"two failed follows: switch again", func(m *machine) { m.failedFollows = 2 }, replica, followSwitch, ""},
		{"a replica of no one: switch to the leader", nil, replica, followSwitch, ""},
		{"a replica of an old primary: switch", func(m *machine) { m.following = "db3" }, replica, followSwitch, ""},
		{"following the leader: wait", func(m *machine) { m.following = "db1" }, replica, followWait, ""},
		{"postgres stopped: restart it as a replica", nil, with(stopped), followStart, ""},
		{"postgres starting: wait", nil, with(func(v *view) { v.server = pg.StateStarting }), followWait, ""},
		{"postgres failed: start is the supervisor's", nil, with(func(v *view) { v.server = pg.StateFailed }), followWait, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMachine(ModeSync)
			if tc.memory != nil {
				tc.memory(m)
			}
			d := m.follow(tc.v)
			if d.act != tc.want {
				t.Errorf("follow = %v, want %v", d.act, tc.want)
			}
			switch {
			case tc.noLeader == "" && d.noLeader != "":
				t.Errorf("no leader: %q, want the leader db1", d.noLeader)
			case !strings.Contains(d.noLeader, tc.noLeader):
				t.Errorf("no leader: %q, want it to say %q", d.noLeader, tc.noLeader)
			case tc.noLeader == "" && tc.want != followDemote && d.leader.Node != "db1":
				t.Errorf("leader = %+v, want db1", d.leader)
			}
		})
	}
}

// TestFollowOutcomes walks a replica through what the driver reports:
// failed follows lead to a rewind, a rewind or a clone makes it a replica
// of the leader that no longer needs one.
func TestFollowOutcomes(t *testing.T) {
	m := testMachine(ModeSync)
	v := view{now: t0, holder: "db1", hasData: true, session: true, server: pg.StateRunning, inRecovery: true,
		members: members(primaryState("db1", 900))}
	for i := 1; i <= maxFailedFollows; i++ {
		if d := m.follow(v); d.act != followSwitch {
			t.Fatalf("after %d failed follows: %v, want switch", i-1, d.act)
		}
		if n := m.followFailed(); n != i {
			t.Fatalf("followFailed = %d, want %d", n, i)
		}
	}
	if d := m.follow(v); d.act != followRewind {
		t.Fatalf("after %d failed follows: %v, want rewind", maxFailedFollows, d.act)
	}
	m.replaced("db1")
	if d := m.follow(v); d.act != followWait {
		t.Fatalf("rewound from db1: %v, want wait (it follows db1)", d.act)
	}
	// It lets go of a lead it took meanwhile: its data may have diverged.
	v.letGo = true
	m.observe(v)
	if d := m.follow(v); d.act != followRewind {
		t.Fatalf("after letting go of the lead: %v, want rewind", d.act)
	}
	m.promoted()
	if m.demoted || m.following != "" {
		t.Fatalf("promoted: demoted %v, following %q; want neither", m.demoted, m.following)
	}
}

// TestSyncTarget drives the synchronous standbys tick by tick, as the
// primary sees its replicas come and go.
func TestSyncTarget(t *testing.T) {
	streaming := func(names ...string) []pg.Standby {
		var out []pg.Standby
		for _, n := range names {
			out = append(out, pg.Standby{Name: n, State: "streaming"})
		}
		return out
	}
	type tick struct {
		at       time.Duration
		standbys []pg.Standby
		hold     bool
		k        int
		names    string
	}
	s := time.Second
	for _, tc := range []struct {
		name  string
		mode  Mode
		cur   SyncState // the sync record before the first tick
		ticks []tick
	}{
		{"sync: degrades to async only after 10s without a standby", ModeSync, SyncState{}, []tick{
			{0, streaming("db1", "db3"), false, 1, "db1,db3"},
			{s, nil, true, 0, ""},
			{10*s + s - time.Millisecond, nil, true, 0, ""},
			{11 * s, nil, false, 0, ""},
			{12 * s, streaming("db3"), false, 1, "db3"},
			// A standby back resets the wait.
			{13 * s, nil, true, 0, ""},
			{22 * s, nil, true, 0, ""},
			{23 * s, nil, false, 0, ""},
		}},
		{"sync: a stream that is not streaming, or of another node, does not count", ModeSync, SyncState{}, []tick{
			{0, []pg.Standby{{Name: "db1", State: "catchup"}, {Name: "pg_basebackup", State: "streaming"}}, true, 0, ""},
			{10 * s, []pg.Standby{{Name: "db1", State: "catchup"}}, false, 0, ""},
		}},
		{"strict: never degrades, keeps the last standbys named", ModeStrict, SyncState{Leader: "db2", K: 1, Standbys: []string{"db1", "db3"}}, []tick{
			{0, nil, false, 1, "db1,db3"},
			{s, streaming("db3"), false, 1, "db3"},
			{2 * s, nil, false, 1, "db3"},
			{time.Minute, nil, false, 1, "db3"},
		}},
		{"strict: a new leader with no standby names every other node", ModeStrict, SyncState{Leader: "db1", K: 1, Standbys: []string{"db2", "db3"}}, []tick{
			{0, nil, false, 1, "db1,db3"},
		}},
		{"strict: enough healthy standbys name exactly those", ModeStrict, SyncState{Leader: "db2", K: 1, Standbys: []string{"db1", "db3"}}, []tick{
			{0, streaming("db1"), false, 1, "db1"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMachine(tc.mode)
			cur := tc.cur
			for _, tk := range tc.ticks {
				want, hold := m.syncTarget(t0.Add(tk.at), tk.standbys, cur)
				if hold != tk.hold {
					t.Fatalf("at %v: hold = %v, want %v", tk.at, hold, tk.hold)
				}
				if hold {
					continue
				}
				if got := strings.Join(want.Standbys, ","); want.K != tk.k || got != tk.names || want.Leader != "db2" {
					t.Fatalf("at %v: %+v, want leader db2, k=%d of %q", tk.at, want, tk.k, tk.names)
				}
				cur = want
			}
		})
	}
}

// With a synchronous archive every commit waits for the archiver and for
// exactly k replicas (postgres has no "the archiver and k of n"): the
// record names k replicas, keeps a choice while it streams, replaces one
// that stops, and with none (async mode, sync degraded) commits wait for
// the archiver alone.
func TestSyncTargetArchive(t *testing.T) {
	streaming := func(names ...string) []pg.Standby {
		var out []pg.Standby
		for _, n := range names {
			out = append(out, pg.Standby{Name: n, State: "streaming"})
		}
		// The archiver's own stream is not a replica.
		return append(out, pg.Standby{Name: "haven_archive", State: "streaming"})
	}
	type tick struct {
		at       time.Duration
		standbys []pg.Standby
		hold     bool
		names    string // the record's standbys; K is their number
		postgres string // synchronous_standby_names's k and names
	}
	s := time.Second
	for _, tc := range []struct {
		name  string
		mode  Mode
		k     int
		cur   SyncState
		ticks []tick
	}{
		{"async: the archiver alone", ModeAsync, 0, SyncState{}, []tick{
			{0, streaming("db1", "db3"), false, "", "1 haven_archive"},
			{s, nil, false, "", "1 haven_archive"},
		}},
		{"sync: k replicas and the archiver, a choice kept while it streams", ModeSync, 1, SyncState{}, []tick{
			{0, streaming("db1", "db3"), false, "db1", "2 db1,haven_archive"},
			{s, streaming("db3"), false, "db3", "2 db3,haven_archive"},
			{2 * s, streaming("db1", "db3"), false, "db3", "2 db3,haven_archive"},
			{3 * s, nil, true, "", ""},
			{13 * s, nil, false, "", "1 haven_archive"}, // degraded: the archive still
		}},
		{"sync: two of three", ModeSync, 2, SyncState{Leader: "db2", K: 2, Standbys: []string{"db3", "db4"}}, []tick{
			{0, streaming("db1", "db3", "db4"), false, "db3,db4", "3 db3,db4,haven_archive"},
			{s, streaming("db1", "db4"), false, "db1,db4", "3 db1,db4,haven_archive"},
			{2 * s, streaming("db1"), false, "db1", "2 db1,haven_archive"},
		}},
		{"strict: too few healthy keeps k named", ModeStrict, 1, SyncState{Leader: "db2", K: 1, Standbys: []string{"db3"}}, []tick{
			{0, nil, false, "db3", "2 db3,haven_archive"},
			{s, streaming("db1"), false, "db1", "2 db1,haven_archive"},
		}},
		{"strict: a new leader with none names k others", ModeStrict, 1, SyncState{Leader: "db1", K: 1, Standbys: []string{"db2", "db3"}}, []tick{
			{0, nil, false, "db1", "2 db1,haven_archive"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMachine(tc.mode)
			m.cfg.nodes = []string{"db1", "db2", "db3", "db4"}
			m.cfg.syncStandbys, m.cfg.archive = tc.k, "haven_archive"
			cur := tc.cur
			for _, tk := range tc.ticks {
				want, hold := m.syncTarget(t0.Add(tk.at), tk.standbys, cur)
				if hold != tk.hold {
					t.Fatalf("at %v: hold = %v, want %v", tk.at, hold, tk.hold)
				}
				if hold {
					continue
				}
				n, names := syncNames(want)
				if got := strings.Join(want.Standbys, ","); got != tk.names || want.K != len(want.Standbys) || want.Archive != "haven_archive" {
					t.Fatalf("at %v: record %+v, want k=all of %q and the archive", tk.at, want, tk.names)
				}
				if got := fmt.Sprintf("%d %s", n, strings.Join(names, ",")); got != tk.postgres {
					t.Fatalf("at %v: postgres waits for %s, want %s", tk.at, got, tk.postgres)
				}
				cur = want
			}
		})
	}
	// Without an archive syncNames is the record.
	if n, names := syncNames(SyncState{K: 1, Standbys: []string{"db1", "db3"}}); n != 1 || len(names) != 2 {
		t.Errorf("syncNames without an archive: %d %v", n, names)
	}
	// Adding the archive changes the record.
	if _, change := syncChange(SyncState{Leader: "db2"}, SyncState{Leader: "db2", Archive: "haven_archive"}); !change {
		t.Error("no change when the archive is added")
	}
}

func TestSyncChange(t *testing.T) {
	cur := SyncState{Leader: "db2", K: 1, Standbys: []string{"db1"}}
	if _, change := syncChange(cur, cur); change {
		t.Error("no change asked for an unchanged record")
	}
	widened, change := syncChange(cur, SyncState{Leader: "db2", K: 1, Standbys: []string{"db3"}})
	if !change || !slices.Equal(widened.Standbys, []string{"db1", "db3"}) || widened.K != 1 {
		t.Errorf("db1 replaced by db3: widened %+v (change %v), want k=1 of db1 and db3 while postgres changes", widened, change)
	}
	widened, change = syncChange(SyncState{Leader: "db1", K: 1, Standbys: []string{"db2", "db3"}}, SyncState{Leader: "db2", K: 0})
	if !change || widened.Leader != "db2" || !slices.Equal(widened.Standbys, []string{"db2", "db3"}) {
		t.Errorf("a new leader degraded: widened %+v, want the old standbys kept under db2", widened)
	}
}

func TestEligible(t *testing.T) {
	sync2 := SyncState{Leader: "db1", K: 1, Standbys: []string{"db2", "db3"}}
	self := replicaState("db2", 500)
	cluster := members(self, replicaState("db3", 400))
	base := view{now: t0, server: pg.StateRunning, members: cluster, sync: sync2, primary: primaryState("db1", 500)}
	with := func(edit func(*view)) view {
		v := base
		edit(&v)
		return v
	}
	for _, tc := range []struct {
		name        string
		memory      func(m *machine)
		v           view
		initialized bool
		self        MemberState
		want        string // "" for eligible, else a word of why not
	}{
		{"the most advanced synchronous standby", nil, base, true, self, ""},
		{"behind the other standby", nil, base, true, replicaState("db2", 300), "received more"},
		{"vetoed after a refused promotion", func(m *machine) { m.refused(t0.Add(-time.Second), "db3 has received more WAL") }, base, true, self, "db3 has received more"},
		{"the veto ends after two leases", func(m *machine) { m.refused(t0.Add(-2*time.Second), "db3 has received more WAL") }, base, true, self, ""},
		{"the leader stays eligible while postgres restarts in place", nil, with(func(v *view) { v.acting, v.server = true, pg.StateRestarting }), true, MemberState{Node: "db2", Role: RoleStopped}, ""},
		{"the leader whose postgres failed", nil, with(func(v *view) { v.acting, v.server = true, pg.StateFailed }), true, MemberState{Node: "db2", Role: RoleFailed}, "postgres failed"},
		{"the leader tagged nofailover", func(m *machine) { m.cfg.noFailover = true }, with(func(v *view) { v.acting = true }), true, self, "nofailover"},
		{"the leader whose postgres is slow to answer", nil, with(func(v *view) { v.acting, v.silence = true, 4*time.Second }), true, self, ""},
		{"the leader whose postgres has not answered for five leases", nil, with(func(v *view) { v.acting, v.silence = true, 6*time.Second }), true, self, "hung"},
		{"a vetoed leader", func(m *machine) { m.refused(t0, "no") }, with(func(v *view) { v.acting = true }), true, self, "no"},
		{"before the cluster exists, any node", nil, with(func(v *view) { v.members = nil }), false, MemberState{Node: "db2", Role: RoleStopped}, ""},
		{"before the cluster exists, not a nofailover node", func(m *machine) { m.cfg.noFailover = true }, base, false, self, "nofailover"},
		{"postgres stopped", nil, base, true, MemberState{Node: "db2", Role: RoleStopped}, "not a running replica"},
		{"the best standby while the database is paused", nil, with(func(v *view) { v.paused = &Pause{Owner: "ops@m1", Set: t0, Reason: "kernel upgrade"} }), true, self, "paused by ops@m1"},
		{"behind, but named by a forced failover", nil, with(func(v *view) { v.force = &Force{To: "db2", Owner: "ops@m1", Set: t0} }), true, replicaState("db2", 300), ""},
		{"the best standby, while a failover is forced to another", nil, with(func(v *view) { v.force = &Force{To: "db3", Owner: "ops@m1", Set: t0} }), true, self, "forced failover to db3"},
		{"named by a forced failover, but postgres is stopped", nil, with(func(v *view) { v.force = &Force{To: "db2", Owner: "ops@m1", Set: t0} }), true, MemberState{Node: "db2", Role: RoleStopped}, "not a running replica"},
		{"the leader keeps the lead while paused, its postgres failed", nil, with(func(v *view) { v.acting, v.server, v.paused = true, pg.StateFailed, &Pause{Owner: "ops@m1", Set: t0} }), true, self, ""},
		{"a pause whose end has passed", nil, with(func(v *view) {
			v.paused = &Pause{Owner: "ops@m1", Set: t0.Add(-time.Hour), Until: t0.Add(-time.Second)}
		}), true, self, ""},
		{"a force record older than its lease", nil, with(func(v *view) { v.force = &Force{To: "db3", Owner: "ops@m1", Set: t0.Add(-2 * ForceTTL)} }), true, self, ""},
		{"the leader keeps the lead while the database is paused", nil, with(func(v *view) { v.acting, v.paused = true, &Pause{Owner: "ops@m1", Set: t0} }), true, self, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMachine(ModeSync)
			if tc.memory != nil {
				tc.memory(m)
			}
			ok, why := m.eligible(tc.v, tc.initialized, tc.self)
			switch {
			case tc.want == "" && !ok:
				t.Errorf("not eligible: %s", why)
			case tc.want == "" && why != "":
				t.Errorf("eligible, with a reason %q", why)
			case tc.want != "" && ok:
				t.Errorf("eligible, want not (%s)", tc.want)
			case !strings.Contains(why, tc.want):
				t.Errorf("reason %q, want one that says %q", why, tc.want)
			}
		})
	}
}

// TestVetoWindow: a promotion the replicas refused keeps the node from
// leading for exactly two leases of simulated time, then it may again.
func TestVetoWindow(t *testing.T) {
	m := testMachine(ModeAsync)
	self := replicaState("db2", 500)
	v := view{members: members(self), primary: primaryState("db1", 500)}
	refusedAt := t0.Add(300 * time.Millisecond)
	m.refused(refusedAt, "db3 has received more WAL")
	for at := t0; at.Before(t0.Add(5 * time.Second)); at = at.Add(keeperTick / 5) {
		v.now = at
		ok, why := m.eligible(v, true, self)
		vetoed := at.Before(refusedAt.Add(2 * time.Second))
		if vetoed && (ok || why != "db3 has received more WAL") || !vetoed && !ok {
			t.Fatalf("%v after the refusal: eligible %v (%q); vetoed until %v", at.Sub(refusedAt), ok, why, 2*time.Second)
		}
	}
}

func TestMember(t *testing.T) {
	base := MemberState{Node: "db2", Host: "127.0.0.1", Port: 5432, Priority: 100}
	replicaPos := pg.Position{InRecovery: true, Timeline: 2, Received: 900, Replayed: 800, ReplayDelay: 1500 * time.Millisecond}
	running := func(pos pg.Position) reading {
		return reading{server: pg.StateRunning, ok: true, pos: pos, systemID: 7}
	}
	for _, tc := range []struct {
		name      string
		following string
		timeline  uint32
		r         reading
		acting    bool
		final     finalWAL
		want      MemberState
	}{
		{"a streaming replica", "db1", 2, running(replicaPos), false, finalWAL{}, MemberState{Role: RoleReplica, SystemID: 7, Timeline: 2, LSN: 900, Replayed: 800,
			Streaming: true, Upstream: "db1", Lag: 100, LagSeconds: 1.5}},
		{"a replica keeps the newest timeline it showed", "db1", 3, running(replicaPos), false, finalWAL{}, MemberState{Role: RoleReplica, SystemID: 7, Timeline: 3, LSN: 900, Replayed: 800,
			Streaming: true, Upstream: "db1", Lag: 100, LagSeconds: 1.5}},
		{"a replica of no one does not stream", "", 0, running(replicaPos), false, finalWAL{}, MemberState{Role: RoleReplica, SystemID: 7, Timeline: 2, LSN: 900, Replayed: 800, Lag: 100, LagSeconds: 1.5}},
		{"a replica that let go publishes where its WAL ended", "", 0, running(pg.Position{InRecovery: true, Timeline: 1, Replayed: 1200}), false, finalWAL{1100, 1220},
			MemberState{Role: RoleReplica, SystemID: 7, Timeline: 1, LSN: 1200, Replayed: 1200, LastPrimaryLSN: 1100, LastPrimaryEnd: 1220}},
		{"the acting primary", "", 1, running(pg.Position{Timeline: 2, Current: 2000}), true, finalWAL{1100, 1220}, MemberState{Role: RolePrimary, SystemID: 7, Timeline: 2, LSN: 2000}},
		{"a primary being demoted is stopped", "", 1, running(pg.Position{Timeline: 2, Current: 2000}), false, finalWAL{}, MemberState{Role: RoleStopped, SystemID: 7, Timeline: 2, LSN: 2000}},
		{"postgres did not answer", "db1", 2, reading{server: pg.StateRunning}, false, finalWAL{}, MemberState{Role: RoleStopped}},
		{"postgres restarting", "db1", 2, reading{server: pg.StateRestarting}, false, finalWAL{}, MemberState{Role: RoleStopped}},
		{"postgres failed", "db1", 2, reading{server: pg.StateFailed}, false, finalWAL{}, MemberState{Role: RoleFailed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMachine(ModeSync)
			m.following, m.timeline = tc.following, tc.timeline
			got := m.member(base, tc.r, tc.acting, primaryState("db1", 1000), tc.final)
			want := tc.want
			want.Node, want.Host, want.Port, want.Priority = base.Node, base.Host, base.Port, base.Priority
			if !reflect.DeepEqual(got, want) {
				t.Errorf("member =\n%+v, want\n%+v", got, want)
			}
		})
	}
}

func TestConfirm(t *testing.T) {
	sync2 := SyncState{Leader: "db1", K: 1, Standbys: []string{"db2", "db3"}}
	stopped := func(node string, tl uint32, final pg.LSN) MemberState {
		return MemberState{Node: node, Role: RoleStopped, Timeline: tl, LastPrimaryLSN: final}
	}
	for _, tc := range []struct {
		name      string
		mode      Mode
		self      pg.LSN
		answers   map[string]pg.LSN
		states    []MemberState
		statesErr error
		sync      SyncState
		want      string // "" for nil, else a word of the error
	}{
		{"level with the other standby", ModeSync, 500, map[string]pg.LSN{"db3": 500}, nil, nil, sync2, ""},
		{"another replica is ahead", ModeAsync, 500, map[string]pg.LSN{"db1": 400, "db3": 600}, nil, nil, SyncState{}, "db3 has received more WAL"},
		{"the other synchronous standby did not answer", ModeSync, 500, map[string]pg.LSN{}, nil, nil, sync2, "only 1 of the synchronous standbys"},
		{"strict, the lost standby back", ModeStrict, 500, map[string]pg.LSN{"db3": 500}, nil, nil, sync2, ""},
		{"k=2 of 2: itself suffices", ModeSync, 500, map[string]pg.LSN{}, nil, nil, SyncState{Leader: "db1", K: 2, Standbys: []string{"db2", "db3"}}, ""},
		{"degraded sync (k=0): no count", ModeSync, 500, map[string]pg.LSN{}, nil, nil, SyncState{Leader: "db1"}, ""},
		{"the old primary wrote more before it let go", ModeSync, 500, nil, []MemberState{stopped("db1", 1, 600)}, nil, SyncState{}, "db1 wrote to"},
		{"the old primary's end, within max lag in async", ModeAsync, 500, nil, []MemberState{stopped("db1", 1, 600)}, nil, SyncState{}, ""},
		{"its own final position does not count", ModeSync, 500, nil, []MemberState{stopped("db2", 1, 900)}, nil, SyncState{}, ""},
		{"the newest timeline's end counts", ModeSync, 500, nil, []MemberState{stopped("db1", 2, 500), stopped("db3", 1, 900)}, nil, SyncState{}, ""},
		{"the members' states unreadable", ModeSync, 500, nil, nil, errors.New("etcd unreachable"), SyncState{}, "read the members' states: etcd unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMachine(tc.mode)
			if tc.mode == ModeAsync {
				m.cfg.maxLag = 1000
			} else {
				m.cfg.maxLag = 0
			}
			err := m.confirm(tc.self, tc.answers, tc.states, tc.statesErr, tc.sync)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("confirm = %v, want an error that says %q", err, tc.want)
			}
		})
	}
}

func TestPromotionPeers(t *testing.T) {
	nofailover := replicaState("db4", 100)
	nofailover.NoFailover = true
	cluster := members(primaryState("db1", 100), replicaState("db2", 100), replicaState("db3", 100), nofailover)
	names := func(ms []MemberState) string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Node)
		}
		return fmt.Sprint(out)
	}
	m := testMachine(ModeSync)
	if got := names(m.promotionPeers(view{members: cluster})); got != "[db1 db3]" {
		t.Errorf("without a sync record: %s, want every other node but the nofailover one", got)
	}
	if got := names(m.promotionPeers(view{members: cluster, sync: SyncState{K: 1, Standbys: []string{"db2", "db3"}}})); got != "[db3]" {
		t.Errorf("with a sync record: %s, want the other synchronous standby", got)
	}
}

func TestAwaitCheckpoint(t *testing.T) {
	stopped := func(node string, start, end pg.LSN) MemberState {
		return MemberState{Node: node, Role: RoleStopped, LastPrimaryLSN: start, LastPrimaryEnd: end}
	}
	old := stopped("db1", 100, 220)
	for _, tc := range []struct {
		name   string
		self   pg.LSN
		states []MemberState
		wait   bool
	}{
		{"has the checkpoint", 220, []MemberState{old}, false},
		{"lacks only the checkpoint", 100, []MemberState{old}, true},
		{"halfway through it", 150, []MemberState{old}, true},
		{"lacks more than the checkpoint: confirm decides", 99, []MemberState{old}, false},
		{"the old primary did not stop cleanly: nothing to wait for", 100, []MemberState{stopped("db1", 100, 0)}, false},
		{"its own final position does not count", 100, []MemberState{stopped("db2", 100, 220)}, false},
		{"the last to let go counts", 220, []MemberState{old, stopped("db3", 50, 170)}, false},
		{"nobody let go (a failover)", 100, []MemberState{replicaState("db3", 100)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := testMachine(ModeSync)
			if g := m.awaitCheckpoint(t0, 5, tc.self, tc.states); g.wait != tc.wait || g.waited != 0 {
				t.Errorf("awaitCheckpoint = %+v, want wait %v", g, tc.wait)
			}
		})
	}

	m := testMachine(ModeSync)
	at := func(d time.Duration, epoch int64) checkpointGate {
		return m.awaitCheckpoint(t0.Add(d), epoch, 100, []MemberState{old})
	}
	if g := at(0, 5); !g.wait || g.waited != 0 {
		t.Errorf("at first: %+v, want to wait", g)
	}
	if g := at(checkpointWait-time.Millisecond, 5); !g.wait {
		t.Errorf("just before the bound: %+v, want to wait", g)
	}
	if g := at(checkpointWait, 5); g.wait || g.waited != checkpointWait {
		t.Errorf("at the bound: %+v, want to go on, having waited %s", g, checkpointWait)
	}
	if g := at(checkpointWait+time.Second, 6); !g.wait || g.waited != 0 {
		t.Errorf("under a new lead: %+v, want to wait afresh", g)
	}
}

// TestSilence: a hung postgres's silence counts from the first query it
// left unanswered, not from when the keeper noticed (a query timeout
// later, round after round), so that the primary gives up the lead
// hangAfter into the hang; an answer, or a postgres that does not run,
// ends it.
func TestSilence(t *testing.T) {
	var k Keeper
	t0 := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	hung := reading{server: pg.StateRunning}
	k.noAnswer(t0)                   // the round's first query times out...
	k.noAnswer(t0.Add(queryTimeout)) // ...and the next
	s := k.silence(t0.Add(6*time.Second), hung)
	if s != 6*time.Second {
		t.Errorf("silence 6s after the first unanswered query = %v", s)
	}
	if s <= hangAfter(time.Second) {
		t.Errorf("silence %v is not past hangAfter (%v) for a lease of 1s", s, hangAfter(time.Second))
	}
	if s := k.silence(t0.Add(7*time.Second), reading{server: pg.StateRunning, ok: true}); s != 0 {
		t.Errorf("silence once postgres answers = %v, want 0", s)
	}
	if s := k.silence(t0.Add(8*time.Second), hung); s != 0 {
		t.Errorf("silence of a new hang noticed at once = %v, want 0 (it starts now)", s)
	}
	if s := k.silence(t0.Add(9*time.Second), reading{server: pg.StateRestarting}); s != 0 {
		t.Errorf("silence of a postgres being restarted = %v, want 0", s)
	}
}

// TestSameReason: a reason not to lead is logged again when it changes,
// not when the measurement it quotes does.
func TestSameReason(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{"27.032s (25664 bytes) behind the active region's primary", "27.062s (25700 bytes) behind the active region's primary", true},
		{"db3 has received more WAL (0/10169E78, this node 0/10169DD0)", "db3 has received more WAL (0/1016E2E8, this node 0/1016E240)", true},
		{"db3 has received more WAL (0/10169E78, this node 0/10169DD0)", "db1 has received more WAL (0/10169E78, this node 0/10169DD0)", false},
		{"postgres is stopped, not a running replica", "db3 has received more WAL (0/1, this node 0/0)", false},
		{"", "postgres is stopped, not a running replica", false},
	} {
		if got := sameReason(tc.a, tc.b); got != tc.same {
			t.Errorf("sameReason(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}
