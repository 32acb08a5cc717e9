package keeper

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/pg"
)

// The simulation below plays one node's Keeper around its machine, a round
// every keeperTick of simulated time, against a world the test scripts:
// what etcd shows (the record's holder, the members' states, each with the
// 5 s lease of its entry, the sync record), what the node's postgres does
// when the driver acts on it, and what the other replicas' postgres
// answers before a promotion. The ownership record is modelled as the
// Owner behaves for one candidate: a free record goes to the node once it
// is eligible; a holder that turns ineligible hands over (the guard's
// Release stops postgres). Nothing reads the real clock: each run of a
// scenario is the same run.

// stateTTL is the lease of a member's entry in etcd: a crashed node's
// state stays visible this long.
const stateTTL = 5 * time.Second

type simNode struct {
	t    *testing.T
	m    *machine
	now  time.Time
	self MemberState // address and tags

	// the record
	holder string
	freeAt time.Time // a held record frees up then (its holder crashed)
	acting bool
	epoch  int64
	letGo  bool

	// postgres
	session    bool
	server     pg.State
	inRecovery bool
	lsn        pg.LSN

	// etcd and the peers
	others  map[string]MemberState
	expires map[string]time.Time // when a crashed node's entry goes
	sync    SyncState
	primary MemberState
	answers map[string]pg.LSN

	// what happened
	eligible   bool
	why        string
	refusals   int
	promotions int
	// waitedFor is how long the node waited for the old primary's
	// shutdown checkpoint before it gave up and promoted (0: it did not
	// give up).
	waitedFor time.Duration
	log       []string
}

func (s *simNode) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf("%7.3fs ", s.now.Sub(t0).Seconds())+fmt.Sprintf(format, args...))
}

// tail is the simulation's last events, for a failure message.
func (s *simNode) tail() string {
	return strings.Join(s.log[max(0, len(s.log)-15):], "\n")
}

func (s *simNode) view() view {
	return view{now: s.now, acting: s.acting, epoch: s.epoch, holder: s.holder, hasData: true,
		session: s.session, server: s.server, members: s.members(), sync: s.sync, primary: s.primary}
}

// members is what the watch shows: every entry not yet expired, this
// node's as it last published it.
func (s *simNode) members() map[string]MemberState {
	out := map[string]MemberState{}
	for n, st := range s.others {
		if at, ok := s.expires[n]; !ok || s.now.Before(at) {
			out[n] = st
		}
	}
	out[s.self.Node] = s.self
	return out
}

// crash loses nodes at once: their postgres stops answering, their entries
// expire after stateTTL, and a record one of them holds frees up after its
// lease.
func (s *simNode) crash(nodes ...string) {
	for _, n := range nodes {
		s.expires[n] = s.now.Add(stateTTL)
		delete(s.answers, n)
		if s.holder == n {
			s.freeAt = s.now.Add(time.Duration(float64(s.m.cfg.lease) * 1.02))
		}
	}
	s.logf("crash of %v", nodes)
}

// back brings node back as a replica at lsn, answering.
func (s *simNode) back(node string, lsn pg.LSN) {
	delete(s.expires, node)
	s.others[node] = replicaState(node, lsn)
	s.answers[node] = lsn
	s.logf("%s is back", node)
}

func (s *simNode) release(why string) {
	s.acting, s.holder, s.letGo = false, "", true
	s.session, s.server, s.inRecovery = false, pg.StateStopped, false
	s.logf("hands the lead back (%s); postgres stopped", why)
}

// round is one keeper round at s.now.
func (s *simNode) round() {
	if !s.freeAt.IsZero() && !s.now.Before(s.freeAt) {
		s.holder, s.freeAt = "", time.Time{}
		s.logf("the record is free")
	}
	v := s.view()
	v.letGo, s.letGo = s.letGo, false
	s.m.observe(v)
	v.inRecovery = v.running() && s.inRecovery
	if v.acting {
		s.lead(v)
	} else {
		s.follow(v)
	}
	s.publish()
}

func (s *simNode) lead(v view) {
	for _, step := range s.m.lead(v) {
		switch step {
		case leadStart:
			s.session, s.server = true, pg.StateRunning
			return
		case leadPromote:
			states := slices.Collect(maps.Values(v.members))
			err := s.m.confirm(s.lsn, s.answers, states, nil, v.sync)
			if err != nil {
				s.refusals++
				s.m.refused(s.now, err.Error())
				s.release("refused: " + err.Error())
				return
			}
			g := s.m.awaitCheckpoint(s.now, v.epoch, s.lsn, states)
			if g.wait {
				if g.waited == 0 {
					s.logf("waits for %s's shutdown checkpoint (%s to %s), received to %s", g.from, g.start, g.end, g.self)
				}
				return
			}
			if g.waited > 0 {
				s.waitedFor = g.waited
				s.logf("promotes without %s's shutdown checkpoint after %s", g.from, g.waited)
			}
			s.inRecovery = false
			s.m.promoted()
			s.promotions++
			s.logf("promoted")
		case leadSetUp:
			s.m.setUp(v.epoch)
		case leadSync:
			if want, hold := s.m.syncTarget(s.now, nil, v.sync); !hold {
				s.sync = want
			}
		default:
			s.t.Fatalf("lead step %v in a cluster with data\n%s", step, s.tail())
		}
	}
}

func (s *simNode) follow(v view) {
	switch d := s.m.follow(v); d.act {
	case followWait:
	case followDemote:
		s.m.demote()
		s.session, s.server = false, pg.StateStopped
		s.logf("demoted")
	case followReadOnly:
		s.m.startedReadOnly()
		s.session, s.server, s.inRecovery = true, pg.StateRunning, true
		s.logf("postgres read-only: %s", d.noLeader)
	default:
		s.t.Fatalf("follow action %v with nobody to follow\n%s", d.act, s.tail())
	}
}

// publish computes the node's state and eligibility, and lets the record
// follow it.
func (s *simNode) publish() {
	v := s.view()
	pos := pg.Position{InRecovery: s.inRecovery, Timeline: 1}
	if s.inRecovery {
		pos.Received = s.lsn
	} else {
		pos.Current = s.lsn
	}
	r := reading{server: s.server, ok: s.session && s.server == pg.StateRunning, pos: pos, systemID: 7}
	st := s.m.member(s.self, r, s.acting, s.primary, finalWAL{})
	ok, why := s.m.eligible(v, true, st)
	st.NotPromotable = why
	s.self.Role, s.self.SystemID, s.self.LSN, s.self.Timeline, s.self.NotPromotable = st.Role, st.SystemID, st.LSN, st.Timeline, why
	if ok != s.eligible || why != s.why {
		s.logf("eligible %v %s", ok, why)
	}
	s.eligible, s.why = ok, why
	switch {
	case s.acting && !ok:
		s.release("ineligible")
	case !s.acting && ok && s.holder == "":
		s.acting, s.holder = true, s.self.Node
		s.epoch++
		s.logf("takes the record, epoch %d", s.epoch)
	}
}

// run plays rounds until d has passed.
func (s *simNode) run(d time.Duration, check func()) {
	for end := s.now.Add(d); s.now.Before(end); s.now = s.now.Add(keeperTick) {
		s.round()
		if check != nil {
			check()
		}
	}
}

// newStrictSim is db3, a synchronous standby in strict mode (k=1 of db2
// and db3), streaming from db1 with db2, all level at 100.
func newStrictSim(t *testing.T) *simNode {
	m := &machine{cfg: machineConfig{node: "db3", nodes: []string{"db1", "db2", "db3"}, lease: time.Second, mode: ModeStrict, syncStandbys: 1}}
	m.following = "db1"
	primary := primaryState("db1", 100)
	s := &simNode{
		t: t, m: m, now: t0,
		self:    MemberState{Node: "db3", Host: "127.0.0.1", Port: 5434, Priority: 100},
		holder:  "db1",
		epoch:   4,
		session: true, server: pg.StateRunning, inRecovery: true, lsn: 100,
		others:  members(primary, replicaState("db2", 100)),
		expires: map[string]time.Time{},
		sync:    SyncState{Leader: "db1", K: 1, Standbys: []string{"db2", "db3"}},
		primary: primary,
		answers: map[string]pg.LSN{"db2": 100},
	}
	s.run(time.Second, nil)
	if s.acting || !s.eligible {
		t.Fatalf("before the crash: acting %v, eligible %v (%s); want a promotable replica of db1\n%s", s.acting, s.eligible, s.why, s.tail())
	}
	return s
}

// TestStrictStandbyAloneIsNeverPromoted: in strict mode the primary and a
// synchronous standby are lost together. The remaining standby cannot know
// it has every acknowledged commit, so in a minute of simulated rounds it
// is never promoted: first the lost standby's answer is missing right
// before the promotion (it stands down for two leases, each time the
// published states still say yes), then, once the lost nodes' entries
// expired, its published rule says no, and why. The lost standby back,
// it is promoted.
func TestStrictStandbyAloneIsNeverPromoted(t *testing.T) {
	s := newStrictSim(t)
	s.crash("db1", "db2")
	s.run(time.Minute, func() {
		if s.promotions > 0 {
			t.Fatalf("promoted without the other synchronous standby\n%s", s.tail())
		}
		if s.now.Sub(t0) > time.Second+stateTTL+2*s.m.cfg.lease && (s.eligible || !strings.Contains(s.why, "synchronous standbys")) {
			t.Fatalf("once the lost nodes' entries expired: eligible %v (%q), want not, saying the synchronous standbys are missing\n%s", s.eligible, s.why, s.tail())
		}
	})
	if s.refusals == 0 {
		t.Errorf("never took the lead while the lost standby's entry was visible: the confirmation before promoting went untested\n%s", s.tail())
	}
	if s.self.NotPromotable == "" {
		t.Errorf("publishes no reason why it is not promoted")
	}

	s.back("db2", 100)
	s.run(5*time.Second, nil)
	if s.promotions != 1 || !s.acting || s.self.Role != RolePrimary {
		t.Fatalf("db2 back: %d promotions, acting %v, role %s; want db3 the primary\n%s", s.promotions, s.acting, s.self.Role, s.tail())
	}
}

// TestStrictStandbyPromotedWhenTheOtherAnswers: the same loss, but the
// other standby's postgres still answers (only its agent is gone): the
// remaining standby is promoted within a couple of leases.
func TestStrictStandbyPromotedWhenTheOtherAnswers(t *testing.T) {
	s := newStrictSim(t)
	s.crash("db1")
	s.run(3*time.Second, nil)
	if s.promotions != 1 || s.refusals != 0 {
		t.Fatalf("db2 answers: %d promotions, %d refusals; want promoted at once\n%s", s.promotions, s.refusals, s.tail())
	}
}

// TestPrimaryKeepsTheLeadThroughARestartInPlace: the primary's postgres
// crashes and the supervisor restarts it in place: the node stays eligible
// and keeps the lead (no failover), waits while postgres restarts, and
// goes on as the primary.
func TestPrimaryKeepsTheLeadThroughARestartInPlace(t *testing.T) {
	m := &machine{cfg: machineConfig{node: "db1", nodes: []string{"db1", "db2", "db3"}, lease: time.Second, mode: ModeSync, syncStandbys: 1}}
	s := &simNode{
		t: t, m: m, now: t0,
		self:   MemberState{Node: "db1", Host: "127.0.0.1", Port: 5432, Priority: 100},
		holder: "db1", acting: true, epoch: 9,
		session: true, server: pg.StateRunning, lsn: 100,
		others:  members(replicaState("db2", 100), replicaState("db3", 100)),
		expires: map[string]time.Time{},
		answers: map[string]pg.LSN{},
	}
	s.primary = primaryState("db1", 100)
	s.run(time.Second, nil)
	if !s.acting || s.self.Role != RolePrimary || m.setUpEpoch != 9 {
		t.Fatalf("before the crash: acting %v, role %s, set up for epoch %d\n%s", s.acting, s.self.Role, m.setUpEpoch, s.tail())
	}
	s.server = pg.StateRestarting
	s.logf("postgres restarting in place")
	s.run(2*time.Second, func() {
		if !s.acting || s.epoch != 9 {
			t.Fatalf("while postgres restarts in place: acting %v, epoch %d; want the lead kept (epoch 9)\n%s", s.acting, s.epoch, s.tail())
		}
	})
	s.server = pg.StateRunning
	s.run(time.Second, nil)
	if !s.acting || s.epoch != 9 || s.self.Role != RolePrimary || s.promotions != 0 {
		t.Fatalf("after the restart: acting %v, epoch %d, role %s, %d promotions; want the same primary\n%s", s.acting, s.epoch, s.self.Role, s.promotions, s.tail())
	}
}

// newHandoverSim is db2, a synchronous standby (k=1 of db2 and db3) level
// with db3 at 100, when db1 hands the lead over: it stopped cleanly, its
// shutdown checkpoint runs from 100 to 220, and the record is free.
func newHandoverSim(t *testing.T) *simNode {
	m := &machine{cfg: machineConfig{node: "db2", nodes: []string{"db1", "db2", "db3"}, lease: time.Second, mode: ModeSync, syncStandbys: 1}}
	m.following = "db1"
	primary := primaryState("db1", 100)
	s := &simNode{
		t: t, m: m, now: t0,
		self:    MemberState{Node: "db2", Host: "127.0.0.1", Port: 5433, Priority: 100},
		holder:  "db1",
		epoch:   4,
		session: true, server: pg.StateRunning, inRecovery: true, lsn: 100,
		others:  members(primary, replicaState("db3", 100)),
		expires: map[string]time.Time{},
		sync:    SyncState{Leader: "db1", K: 1, Standbys: []string{"db2", "db3"}},
		primary: primary,
		answers: map[string]pg.LSN{"db3": 100},
	}
	s.run(time.Second, nil)
	s.others["db1"] = MemberState{Node: "db1", Role: RoleStopped, LastPrimaryLSN: 100, LastPrimaryEnd: 220}
	s.holder = ""
	s.logf("db1 stopped cleanly, checkpoint 100 to 220, and released the record")
	return s
}

// TestSuccessorWaitsForTheShutdownCheckpoint: a successor that has all of
// the old primary's WAL but its shutdown checkpoint takes the lead and
// does not promote until the checkpoint has arrived; then at once.
func TestSuccessorWaitsForTheShutdownCheckpoint(t *testing.T) {
	s := newHandoverSim(t)
	s.run(time.Second, func() {
		if s.promotions > 0 {
			t.Fatalf("promoted at %s without the old primary's shutdown checkpoint (to 220)\n%s", s.lsn, s.tail())
		}
	})
	if !s.acting {
		t.Fatalf("does not lead after the handover\n%s", s.tail())
	}
	s.lsn, s.answers["db3"] = 220, 220
	s.logf("the checkpoint arrives")
	s.run(keeperTick, nil)
	if s.promotions != 1 || s.waitedFor != 0 || s.refusals != 0 {
		t.Fatalf("once it has the checkpoint: %d promotions (gave up after %s, %d refusals); want promoted at the next round\n%s", s.promotions, s.waitedFor, s.refusals, s.tail())
	}
}

// TestSuccessorPromotesWithoutTheCheckpointAfterTheBound: the shutdown
// checkpoint never arrives (no replica streamed when the old primary
// stopped): the successor waits checkpointWait, no less, then promotes and
// says how long it waited; the old primary will need pg_rewind.
func TestSuccessorPromotesWithoutTheCheckpointAfterTheBound(t *testing.T) {
	s := newHandoverSim(t)
	var since time.Time
	s.run(checkpointWait+time.Second, func() {
		if s.acting && since.IsZero() {
			since = s.now
		}
		if s.promotions > 0 && s.now.Sub(since) < checkpointWait {
			t.Fatalf("promoted %s after taking the lead; want it to wait %s for the checkpoint\n%s", s.now.Sub(since), checkpointWait, s.tail())
		}
	})
	if s.promotions != 1 || s.waitedFor < checkpointWait || s.waitedFor > checkpointWait+keeperTick {
		t.Fatalf("%d promotions, gave up after %s; want promoted once, after waiting %s\n%s", s.promotions, s.waitedFor, checkpointWait, s.tail())
	}
}

// TestSuccessorLeavesTheLeadToTheReplicaWithTheCheckpoint: the other
// synchronous standby received the old primary's shutdown checkpoint and
// this one did not: it does not wait, it hands the lead back at once
// (confirm: the other has more WAL).
func TestSuccessorLeavesTheLeadToTheReplicaWithTheCheckpoint(t *testing.T) {
	s := newHandoverSim(t)
	s.answers["db3"] = 220
	s.run(time.Second, nil)
	if s.promotions != 0 || s.refusals == 0 {
		t.Fatalf("%d promotions, %d refusals; want it to hand the lead back\n%s", s.promotions, s.refusals, s.tail())
	}
}
