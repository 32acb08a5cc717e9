package keeper

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/haven-ha/haven/internal/pg"
)

// view is what the keeper saw of its node and of the cluster at one moment.
// The machine's decisions take it, and what the machine remembers, as
// their only input: they never read a clock, postgres or etcd, so tests
// drive them with made-up views in simulated time.
type view struct {
	now time.Time
	// acting: the guard holds the lead and its deadline is ahead; epoch
	// is the lead's fencing epoch.
	acting bool
	epoch  int64
	// holder is the node the ownership record names ("" when none).
	holder string
	// letGo: the node let go of the lead (the guard's Release) since the
	// last view.
	letGo bool
	// hasData: the data directory holds a cluster.
	hasData bool
	// silence is how long the running postgres has not answered the
	// keeper (0 while it answers; see Keeper.silence).
	silence time.Duration
	// session: a supervisor session runs (postgres should run); server is
	// the supervisor's state, and inRecovery, read only while it runs,
	// says whether postgres is a replica.
	session    bool
	server     pg.State
	inRecovery bool
	// pastFork: postgres last failed to start because it had replayed its
	// timeline past the fork of the one it must follow (pg.ErrPastFork).
	// halfRewound: a pg_rewind of the data directory stopped half way
	// (pg.Server.RewindIncomplete).
	pastFork, halfRewound bool
	// members, sync and primary are the cluster as etcd last showed it:
	// every keeper's published state, the leader's sync record, and the
	// last state a primary published.
	members map[string]MemberState
	sync    SyncState
	primary MemberState
	// regional: the database spans two regions; regionActing: this node's
	// region holds the active-region record under regionEpoch, on this
	// node's clock. standbyLeader: the view is the active region's primary
	// as the standby leader follows it (Keeper.activeRegionView).
	regional      bool
	regionActing  bool
	regionEpoch   int64
	standbyLeader bool
	// paused is the operator's pause record (haven pg pause), nil when
	// the database is not paused; force its forced failover (haven pg
	// failover), nil when none.
	paused *Pause
	force  *Force
}

// primaryLead reports whether the node may act as the primary: it leads,
// and its region is the active one.
func (v view) primaryLead() bool { return v.acting && (!v.regional || v.regionActing) }

// running reports whether postgres runs under this keeper's supervisor.
func (v view) running() bool { return v.session && v.server == pg.StateRunning }

// machineConfig is what the decisions need of the Config.
type machineConfig struct {
	node         string
	nodes        []string
	lease        time.Duration
	mode         Mode
	syncStandbys int
	maxLag       uint64
	noFailover   bool
	// archive is the application_name of the WAL archiver that every
	// commit waits for as well (database.backup.archive: synchronous),
	// or "" when commits do not wait for the archive.
	archive string
	// drSync: every commit waits for the other region's standby leader
	// as well (database.dr.mode: sync).
	drSync bool
}

func (c machineConfig) policy() failoverPolicy {
	return failoverPolicy{mode: c.mode, maxLag: c.maxLag}
}

// maxFailedFollows is how many Follow attempts that did not stream a
// replica makes before it rewinds instead.
const maxFailedFollows = 3

// machine makes the keeper's decisions, as a pure state machine: from a
// view it answers what to do (lead, follow, the synchronous standbys,
// whether the node may lead, what to publish), and it is told the outcome
// of what the driver, the Keeper, did. It remembers what a view cannot
// show: the primary a replica follows, whether its data may have
// diverged, the veto after a refused promotion, how long a sync primary
// has had no standby.
type machine struct {
	cfg machineConfig

	// following is the primary this replica streams from, once Follow,
	// Clone or Rewind said so; "" while it does not know.
	following string
	// failedFollows counts Follow attempts that did not stream, to fall
	// back to a rewind.
	failedFollows int
	// demoted is set when the node stopped acting as the primary, or
	// started with the data of one: its data may have diverged, and it
	// rewinds before it follows anyone.
	demoted bool
	// vetoUntil and vetoWhy keep the node from leading for a while after a
	// promotion that its peers' answers ruled out.
	vetoUntil time.Time
	vetoWhy   string
	// noStandbySince is when the primary last saw its replicas all gone
	// (zero while one streams).
	noStandbySince time.Time
	// setUpEpoch is the lead (fencing epoch) for which the replication role
	// and the replicas' slots were last set up.
	setUpEpoch int64
	// standbySetUpEpoch is the lead for which the standby leader last made
	// the slots its region's replicas use.
	standbySetUpEpoch int64
	// timeline is the newest timeline this node's postgres has shown since
	// its data directory was last replaced (clone, rewind).
	timeline uint32
	// drMissingSince is when the other region's standby leader, which
	// commits wait for, was first seen not streaming (zero while it
	// streams).
	drMissingSince time.Time
	// strandedSince is when the replica was first seen stranded (zero
	// while it is not).
	strandedSince time.Time
	// ckptEpoch and ckptSince: under the lead of epoch ckptEpoch, since
	// ckptSince, the node has waited to receive the old primary's
	// shutdown checkpoint before it promotes (awaitCheckpoint).
	ckptEpoch int64
	ckptSince time.Time
}

// observe takes in what a view says happened since the last one.
func (m *machine) observe(v view) {
	if v.letGo {
		m.demoted = true
	}
}

// leadStep is one thing a leader does in a round, in order.
type leadStep int

const (
	// leadBootstrap: no data here. Initialise the cluster if nobody has,
	// else hand the lead over (and clone from the next leader).
	leadBootstrap leadStep = iota
	// leadStart: start postgres, to be the primary.
	leadStart
	// leadPromote: postgres is a replica. Ask the other replicas for
	// their positions (confirmed), then promote (promoted).
	leadPromote
	// leadSetUp: once per lead (epoch), the replication role and a slot
	// for every other node (setUp).
	leadSetUp
	// leadSync: keep the synchronous standbys (syncTarget).
	leadSync
)

func (s leadStep) String() string {
	return [...]string{"bootstrap", "start", "promote", "set up", "sync"}[s]
}

// lead returns what the node does this round while it leads, in order;
// the driver stops at the first step that fails or refuses. Nothing while
// postgres starts: the supervisor's change of state wakes the keeper.
func (m *machine) lead(v view) []leadStep {
	switch {
	case !v.hasData:
		return []leadStep{leadBootstrap}
	case !v.session:
		return []leadStep{leadStart}
	case v.server != pg.StateRunning:
		return nil
	}
	var steps []leadStep
	if v.inRecovery {
		steps = append(steps, leadPromote)
	}
	if m.setUpEpoch != v.epoch {
		steps = append(steps, leadSetUp)
	}
	if m.cfg.mode != ModeAsync || m.cfg.archive != "" || m.cfg.drSync {
		steps = append(steps, leadSync)
	}
	return steps
}

// refused records a promotion that the peers' answers ruled out at now:
// the node may not lead for two leases, so that the published states,
// which said yes, catch up with what the replicas said.
func (m *machine) refused(now time.Time, why string) {
	m.vetoUntil, m.vetoWhy = now.Add(2*m.cfg.lease), why
}

// promoted records a promotion: the node is the primary, on a timeline of
// its own.
func (m *machine) promoted() {
	m.following, m.failedFollows, m.demoted = "", 0, false
	m.ckptEpoch, m.ckptSince = 0, time.Time{}
}

// setUp records that the replication role and slots exist for epoch's
// lead.
func (m *machine) setUp(epoch int64) { m.setUpEpoch = epoch }

// syncTarget decides which standbys every commit waits for, from the
// replicas pg_stat_replication shows at now and the sync record cur: the
// healthy (streaming) ones among the database nodes, k of them at most
// sync_standbys. In sync mode, with none healthy, it holds (hold true:
// change nothing) for degradeAfter, then degrades to k = 0. In strict
// mode k never goes down, and with too few healthy standbys it keeps
// naming the last ones: writes block.
//
// With a synchronous archive (cfg.archive), every commit waits for the
// archiver and for the replicas: postgres cannot say "the archiver and k
// of these n" (synchronous_standby_names takes one FIRST or ANY list), so
// the record names exactly k replicas (K = len(Standbys)) and postgres
// waits for all of them and the archiver (syncNames). The k are the
// healthy ones the record named before, then the others in name order;
// one that stops streaming is replaced by a healthy one on the next
// round. In async mode, and in sync mode degraded, commits wait for the
// archiver alone; the archiver never counts as one of the k.
func (m *machine) syncTarget(now time.Time, standbys []pg.Standby, cur SyncState) (want SyncState, hold bool) {
	healthy := m.healthy(standbys)
	if m.cfg.mode == ModeAsync {
		return SyncState{Leader: m.cfg.node, Archive: m.cfg.archive}, false
	}
	if len(healthy) > 0 {
		m.noStandbySince = time.Time{}
	} else if m.cfg.mode == ModeSync {
		// Replicas reconnect a few seconds after a restart of the
		// primary: commits wait for them that long before sync mode
		// degrades to async.
		if m.noStandbySince.IsZero() {
			m.noStandbySince = now
		}
		if now.Sub(m.noStandbySince) < degradeAfter {
			return SyncState{}, true
		}
	}
	want = SyncState{Leader: m.cfg.node, K: min(m.cfg.syncStandbys, len(healthy)), Standbys: healthy, Archive: m.cfg.archive}
	if m.cfg.mode == ModeStrict {
		// Never fewer than k: with no healthy standby, keep waiting for
		// the last ones named, and writes block.
		want.K = m.cfg.syncStandbys
		if len(healthy) < m.cfg.syncStandbys && cur.Leader == m.cfg.node {
			want.Standbys = union(cur.Standbys, healthy)
		}
		if len(want.Standbys) == 0 {
			want.Standbys = others(m.cfg.nodes, m.cfg.node)
		}
	}
	if m.cfg.archive != "" {
		want.Standbys = pickStandbys(want.K, healthy, want.Standbys, cur, m.cfg.node)
		want.K = len(want.Standbys)
	}
	return want, false
}

// healthy returns, sorted, the database nodes of this region that stream
// from the primary, among the standbys pg_stat_replication shows.
func (m *machine) healthy(standbys []pg.Standby) []string {
	var out []string
	for _, s := range standbys {
		if s.State == "streaming" && slices.Contains(m.cfg.nodes, s.Name) {
			out = append(out, s.Name)
		}
	}
	slices.Sort(out)
	return out
}

// pickStandbys chooses k standbys among candidates (sorted), for a
// synchronous archive: first the healthy ones cur (this leader's record)
// names, so that a choice is not changed while it holds, then the other
// healthy ones, then (strict mode, too few healthy) the other candidates.
func pickStandbys(k int, healthy, candidates []string, cur SyncState, self string) []string {
	var out []string
	add := func(names []string, ok func(string) bool) {
		for _, n := range names {
			if len(out) < k && ok(n) && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	isHealthy := func(n string) bool { return slices.Contains(healthy, n) }
	if cur.Leader == self {
		add(cur.Standbys, isHealthy)
	}
	add(healthy, isHealthy)
	add(candidates, func(string) bool { return true })
	slices.Sort(out)
	return out
}

// syncNames is what postgres's synchronous_standby_names says for the
// record s: k of its standbys, and with a synchronous archive all of them
// and the archiver.
func syncNames(s SyncState) (int, []string) {
	if s.Archive == "" && s.DR == "" {
		return s.K, s.Standbys
	}
	n, names := s.K, slices.Clone(s.Standbys)
	for _, extra := range []string{s.Archive, s.DR} {
		if extra != "" {
			n, names = n+1, append(names, extra)
		}
	}
	return n, names
}

// withDR adds the other region's standby leader dr to the standbys every
// commit waits for (database.dr.mode: sync), from the record want that
// syncTarget decided, the standbys pg_stat_replication shows at now and
// the record cur: dr while it streams. When it stops streaming, commits
// keep waiting for the one they waited for, for degradeAfter (it may be
// reconnecting), then no longer: the standby region then has no promise
// of every commit, and takes over only within max_lag. As with a
// synchronous archive, the record names exactly K replicas, which postgres
// waits for all of, with dr.
func (m *machine) withDR(now time.Time, want SyncState, standbys []pg.Standby, cur SyncState, dr string) SyncState {
	if !m.cfg.drSync {
		return want
	}
	streaming := dr != "" && slices.ContainsFunc(standbys, func(s pg.Standby) bool { return s.Name == dr && s.State == "streaming" })
	switch {
	case streaming:
		m.drMissingSince = time.Time{}
		want.DR = dr
	case cur.DR != "" && cur.Leader == m.cfg.node:
		if m.drMissingSince.IsZero() {
			m.drMissingSince = now
		}
		if now.Sub(m.drMissingSince) < degradeAfter {
			want.DR = cur.DR
		}
	}
	if want.DR != "" && want.Archive == "" {
		want.Standbys = pickStandbys(want.K, m.healthy(standbys), want.Standbys, cur, m.cfg.node)
		want.K = len(want.Standbys)
	}
	return want
}

// syncChange says how to go from the sync record cur to want: widened is
// the record to write before postgres's synchronous_standby_names changes
// (both sets of standbys), so that the record always names every standby a
// commit may have waited for; want is written after. change is false when
// there is nothing to do.
func syncChange(cur, want SyncState) (widened SyncState, change bool) {
	if cur.Leader == want.Leader && cur.K == want.K && slices.Equal(cur.Standbys, want.Standbys) && cur.Archive == want.Archive && cur.DR == want.DR {
		return SyncState{}, false
	}
	return SyncState{Leader: want.Leader, K: want.K, Standbys: union(cur.Standbys, want.Standbys), Archive: want.Archive, DR: cmp.Or(want.DR, cur.DR)}, true
}

// followAction is what a node that does not lead does in a round.
type followAction int

const (
	// followWait: nothing this round (it follows the leader already, or
	// postgres is starting, or there is no leader and postgres runs).
	followWait followAction = iota
	// followDemote: postgres runs as a primary without the lead: stop it
	// now (demoted).
	followDemote
	// followReadOnly: no primary to follow, postgres stopped: start it
	// read-only, replaying its own WAL, so that the node knows and
	// publishes its position (startedReadOnly).
	followReadOnly
	// followClone: no data here: clone the leader (replaced).
	followClone
	// followRewind: the data may have diverged from the leader's (a former
	// primary), or following failed too often: rewind against the leader
	// (replaced).
	followRewind
	// followStart: postgres stopped: restart it as a replica of the
	// leader.
	followStart
	// followSwitch: postgres runs as a replica of another primary, or of
	// none: point it at the leader (followed, followFailed).
	followSwitch
)

func (a followAction) String() string {
	return [...]string{"wait", "demote", "read-only", "clone", "rewind", "start", "switch"}[a]
}

// followDecision is what follow decided, and about whom.
type followDecision struct {
	act followAction
	// leader is the primary to follow (clone, rewind, start, switch).
	leader MemberState
	// noLeader says why there is no primary to follow ("" when there is);
	// not set with followDemote.
	noLeader string
}

// follow decides what a node that does not lead does: stop a primary that
// lost the lead; without a leader, start read-only; else clone when it has
// no data, rewind when its data may have diverged, restart or switch its
// replica over to the leader otherwise.
func (m *machine) follow(v view) followDecision {
	running := v.running()
	if running && !v.inRecovery {
		return followDecision{act: followDemote}
	}
	leader, why := m.leader(v)
	if why != "" {
		if !running && v.hasData && !v.session {
			return followDecision{act: followReadOnly, noLeader: why}
		}
		return followDecision{act: followWait, noLeader: why}
	}
	d := followDecision{leader: leader}
	switch {
	case !v.hasData:
		d.act = followClone
	case !running && v.halfRewound:
		// It may hold pages of two histories: the rewind path sets it
		// aside and clones (pg.ErrRewindImpossible).
		d.act = followRewind
	case !running && v.pastFork:
		// It never starts so (a soak saw such a replica fail to start for
		// minutes); a rewind against the leader brings it back.
		d.act = followRewind
	case m.demoted || m.failedFollows >= maxFailedFollows:
		d.act = followRewind
	case m.failedFollows > 0 && m.forked(v, leader):
		// The leader is on a later timeline and the replica could not
		// follow it once: it has WAL past the fork (a region that lost
		// the active-region record). Retrying only waits.
		d.act = followRewind
	case m.following == leader.Node && m.stranded(v, leader):
		d.act = followRewind
	case m.following == leader.Node && !m.strandedSince.IsZero():
		d.act = followWait // stranded for a moment: the leader may be promoting
	case m.following == leader.Node:
		d.act = followWait
	case !running && v.session:
		d.act = followWait // starting
	case !running:
		d.act = followStart
	default:
		d.act = followSwitch
	}
	return d
}

// stranded reports whether the replica, which follows leader already, has
// stayed on an earlier timeline than leader's for strandedAfter: leader
// moved to a timeline that the replica cannot follow (its region's
// standby leader went over to the new active region's history, and the
// replica has WAL past the fork). A rewind puts it on that timeline.
func (m *machine) stranded(v view, leader MemberState) bool {
	if !v.running() || !m.forked(v, leader) {
		m.strandedSince = time.Time{}
		return false
	}
	if m.strandedSince.IsZero() {
		m.strandedSince = v.now
	}
	return v.now.Sub(m.strandedSince) >= strandedAfter
}

// strandedAfter is how long a replica waits, not streaming from a leader
// on a later timeline, before it rewinds: a standby of a leader that was
// just promoted follows the new timeline by itself within a moment.
const strandedAfter = 3 * time.Second

// forked reports whether leader is on a later timeline than the replica
// has shown.
func (m *machine) forked(v view, leader MemberState) bool {
	self, ok := v.members[m.cfg.node]
	return ok && (self.Role == RoleReplica || self.Role == RoleStandbyLeader) && leader.Timeline > self.Timeline
}

// leader returns the published state of the record's holder when it runs
// as the primary, or why there is no primary to follow.
func (m *machine) leader(v view) (MemberState, string) {
	st, seen := v.members[v.holder]
	switch {
	case v.holder == "":
		return MemberState{}, "nobody holds the record"
	case !seen:
		return MemberState{}, v.holder + " holds the record but publishes no state"
	case v.holder == m.cfg.node || st.Role != RolePrimary && st.Role != RoleStandbyLeader:
		return MemberState{}, v.holder + " holds the record but its postgres is " + st.Role
	}
	return st, ""
}

// demote records that postgres ran as a primary without the lead and is
// being stopped.
func (m *machine) demote() { m.demoted = true }

// startedReadOnly records that postgres starts following no one.
func (m *machine) startedReadOnly() { m.following = "" }

// replaced records a data directory cloned or rewound from leader: a
// replica of it, on the leader's history.
func (m *machine) replaced(leader string) {
	m.following, m.failedFollows, m.timeline, m.demoted = leader, 0, 0, false
	m.strandedSince = time.Time{}
	// A new data directory has none of the slots set up in the old one.
	m.setUpEpoch, m.standbySetUpEpoch = 0, 0
}

// followed records that the replica streams from leader.
func (m *machine) followed(leader string) {
	m.following, m.failedFollows, m.strandedSince = leader, 0, time.Time{}
}

// followFailed records a Follow that did not stream; it returns how many
// did so far.
func (m *machine) followFailed() int {
	m.failedFollows++
	return m.failedFollows
}

// reading is what postgres said when the keeper went to publish.
type reading struct {
	// server is the supervisor's state; ok is true when postgres ran and
	// answered, with pos and systemID.
	server   pg.State
	ok       bool
	pos      pg.Position
	systemID uint64
}

// finalWAL is where a node's WAL ended when it last let go of the lead:
// where its latest checkpoint starts, and, after a clean stop, where that
// shutdown checkpoint ends (zero otherwise).
type finalWAL struct{ checkpoint, end pg.LSN }

// member computes the state to publish: base (the node's address and tags)
// with its role and position as r shows them, its lag behind the
// primary's last published position, and final (where its WAL ended when
// it last let go of the lead) until it is the primary again. A primary
// that does not act (being demoted) is published as stopped, so that
// nobody routes writes to it.
func (m *machine) member(base MemberState, r reading, acting bool, primary MemberState, final finalWAL) MemberState {
	st := base
	st.Role = RoleStopped
	switch {
	case r.server == pg.StateFailed:
		st.Role = RoleFailed
	case r.server == pg.StateRunning && r.ok:
		pos := r.pos
		st.SystemID = r.systemID
		st.Timeline, st.Replayed = pos.Timeline, pos.Replayed
		if pos.InRecovery {
			// A replica that stops streaming reports its last
			// restartpoint's timeline, which may be older than the WAL
			// it received: publish the newest it has shown.
			m.timeline = max(m.timeline, pos.Timeline)
			st.Timeline = m.timeline
			st.Role, st.LSN = RoleReplica, max(pos.Received, pos.Replayed)
			st.LagSeconds = pos.ReplayDelay.Seconds()
			st.Upstream = m.following
			st.Streaming = pos.Received != 0 && m.following != ""
		} else {
			st.Role, st.LSN = RolePrimary, pos.Current
			m.timeline = pos.Timeline
		}
	}
	if st.Role == RoleReplica && primary.LSN > st.LSN {
		st.Lag = uint64(primary.LSN - st.LSN)
	}
	if st.Role == RolePrimary && !acting {
		st.Role = RoleStopped // being demoted: nobody may route writes here
	}
	if st.Role != RolePrimary {
		st.LastPrimaryLSN, st.LastPrimaryEnd = final.checkpoint, final.end
	}
	return st
}

// eligible says whether the node may lead now, with st its state about to
// be published, and if not, why: not during a veto, nor while the
// database is paused unless it leads already (then it keeps the lead
// whatever its postgres does); while it leads, unless
// postgres has not answered for hangAfter, failed, or it is tagged
// nofailover; before the cluster was
// initialised, unless tagged nofailover (any node may initialise it);
// otherwise when promotable says so.
func (m *machine) eligible(v view, initialized bool, st MemberState) (bool, string) {
	var ok bool
	var why string
	switch {
	case m.forcedHere(v) && !v.acting:
		// The operator named this replica: the rules that would keep
		// it out (lag, the sync record, a pause, a veto) are theirs to waive.
		ok, why = unfit(st) == "", unfit(st)
	case v.now.Before(m.vetoUntil):
		why = m.vetoWhy
	case m.forceActive(v) && !v.acting:
		why = fmt.Sprintf("a forced failover to %s is under way (by %s)", v.force.To, v.force.Owner)
	case pausedNow(v) && v.acting:
		// The holder keeps the lead it has, even while its postgres
		// hangs or has failed: nothing moves until the operator resumes.
		ok = true
	case pausedNow(v):
		why = "the database is " + v.paused.String() + "; haven pg resume ends it"
	case v.acting && v.silence > hangAfter(m.cfg.lease):
		why = fmt.Sprintf("postgres has not answered the keeper for more than %s: hung", hangAfter(m.cfg.lease))
	case v.acting:
		ok = !m.cfg.noFailover && v.server != pg.StateFailed
		why = "postgres failed, or the node is tagged nofailover"
	case !initialized:
		ok = !m.cfg.noFailover
		why = "tagged nofailover"
	default:
		ok, why = promotable(st, v.members, v.sync, v.primary, m.cfg.policy())
	}
	if ok {
		why = ""
	}
	return ok, why
}

func union(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

func others(nodes []string, self string) []string {
	var out []string
	for _, n := range nodes {
		if n != self {
			out = append(out, n)
		}
	}
	return out
}
