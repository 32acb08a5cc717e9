package coord

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"
)

// The simulation below drives electors through a model of etcd in steps of
// one simulated millisecond: a single key versioned by revisions, requests
// and watch events that take a per-node time to travel, links that drop
// everything, connections held up by lost packets, and processes that
// freeze. Candidacies and handover requests travel like watch events.
// Nothing in it reads the real clock, so every run of a scenario is the
// same run.

var simStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type simEvent struct {
	at   time.Time
	seq  int
	node int // -1: the store
	path int // the connection a request and its answer travel on
	// exactly one of:
	req      *request // arriving at the store (node: sender)
	res      *result  // arriving at the node
	obs      *observation
	cand     *Candidate // a candidacy as the watch delivers it
	handover *simHandover
	expire   *request // the driver gives up on this request
}

type simHandover struct {
	to  string
	rev int64
}

type simLink struct {
	delay time.Duration // one way
	// answerDelay is added to the answers of requests, not to watch
	// events: the write was applied, its answer is slow.
	answerDelay time.Duration
	down        bool // drops requests, answers and watch events
	// paths is how many connections each of the node's requests goes out
	// on at once (as Owner does with its clients); 0 means one.
	paths int
	// heldUntil holds up everything on a connection until a time, as a
	// lost packet holds up a TCP stream until it is retransmitted.
	heldUntil map[int]time.Time
	// loss is the chance that a message is lost and its connection held
	// up until TCP retransmits it (200ms, and 400ms more when the
	// retransmission is lost too); rng draws it.
	loss float64
	rng  *rand.Rand
}

// arrival is when something sent now on path p arrives. The node's watch
// travels on path 0, the connection to its own member.
func (l *simLink) arrival(now time.Time, p int) time.Time {
	at := now.Add(l.delay)
	if l.loss > 0 && l.rng.Float64() < l.loss {
		held := 200 * time.Millisecond
		if l.rng.Float64() < l.loss {
			held += 400 * time.Millisecond
		}
		if l.heldUntil == nil {
			l.heldUntil = map[int]time.Time{}
		}
		l.heldUntil[p] = latest(l.heldUntil[p], at.Add(held))
	}
	return latest(at, l.heldUntil[p])
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

type simGuard struct {
	acting   bool
	epoch    int64
	deadline time.Time
	acquires int
	releases []string
}

// effective reports whether the node may act now: its guard holds and the
// deadline (enforced by the kernel, even for a frozen process) is ahead.
func (g *simGuard) effective(now time.Time) bool {
	return g.acting && now.Before(g.deadline)
}

type simNode struct {
	e      *elector
	link   simLink
	paused bool
	dead   bool
	// missed is set when a watch event was lost on a down link; etcd's
	// watch resumes from the last revision seen, modelled as a fresh read
	// once the link is back.
	missed bool
	inbox  []simEvent // delivered while paused
	guard  simGuard
	// pending maps a request's id to whether it was answered or
	// abandoned, so a late answer is dropped like a cancelled RPC.
	pending map[uint64]bool
}

type sim struct {
	t      *testing.T
	now    time.Time
	seq    int
	events []simEvent
	nodes  []*simNode
	// stall holds requests at the store (an etcd leader election).
	stall    bool
	stalled  []simEvent
	storeRev int64
	cur      observation
	// history of acquisitions: node and epoch, in order.
	acquired []string
	epochs   []int64
	log      []string
	// incarnations counts electors made, for distinct first ids.
	incarnations uint64
}

// newSim starts n eligible nodes of equal priority: n1 ranks first.
func newSim(t *testing.T, n int, cfg electorConfig) *sim {
	return newSimPriorities(t, cfg, make([]int, n)...)
}

// newSimPriorities starts one node per priority, all eligible.
func newSimPriorities(t *testing.T, cfg electorConfig, priorities ...int) *sim {
	s := &sim{t: t, now: simStart, storeRev: 1}
	s.cur = observation{modRev: 1}
	for i, p := range priorities {
		c := cfg
		c.node, c.priority = simName(i), p
		s.nodes = append(s.nodes, &simNode{link: simLink{delay: time.Millisecond}})
		s.startNode(i, c)
	}
	for i := range s.nodes {
		s.setWant(i, true)
	}
	return s
}

func simName(i int) string { return fmt.Sprintf("n%d", i+1) }

// startNode starts (or restarts) node i's elector as a new process would:
// it reads the key and the candidacies, and publishes its own, not yet
// eligible.
func (s *sim) startNode(i int, cfg electorConfig) {
	s.incarnations++
	cfg.firstID = s.incarnations << 32
	nd := s.nodes[i]
	nd.e, nd.pending, nd.dead, nd.paused, nd.inbox = newElector(cfg), map[uint64]bool{}, false, false, nil
	nd.e.start(s.now)
	cands := map[string]*Candidate{}
	for j, other := range s.nodes {
		if j != i && other.e != nil && !other.dead {
			cands[simName(j)] = &Candidate{Node: simName(j), Priority: other.e.cfg.priority, Eligible: other.e.want}
		}
	}
	nd.e.setCandidates(s.now, true, cands)
	s.publish(i)
	// The driver starts with a read of the key.
	cur := s.cur
	s.push(simEvent{at: s.now.Add(2 * nd.link.delay), node: i, obs: &cur})
}

// setWant sets node i's eligibility and publishes its candidacy.
func (s *sim) setWant(i int, ok bool) {
	s.nodes[i].e.setWant(s.now, ok)
	s.flush(i)
	s.publish(i)
}

// publish sends node i's candidacy to every node, itself included, as the
// watch does.
func (s *sim) publish(i int) {
	e := s.nodes[i].e
	for j, nd := range s.nodes {
		c := Candidate{Node: e.cfg.node, Priority: e.cfg.priority, Eligible: e.want}
		s.push(simEvent{at: s.now.Add(nd.link.delay), node: j, cand: &c})
	}
}

// requestHandover writes a handover request to to, as `haven vip move` does.
func (s *sim) requestHandover(to string) {
	s.storeRev++
	for j, nd := range s.nodes {
		s.push(simEvent{at: s.now.Add(nd.link.delay), node: j, handover: &simHandover{to: to, rev: s.storeRev}})
	}
}

func defaultSimConfig() electorConfig {
	return electorConfig{lease: 500 * time.Millisecond, renew: 125 * time.Millisecond, drift: 0.02, rankStep: 20 * time.Millisecond, preemptDelay: 3 * time.Second}
}

func (s *sim) push(ev simEvent) {
	s.seq++
	ev.seq = s.seq
	s.events = append(s.events, ev)
}

func (s *sim) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf("%6dms ", s.now.Sub(simStart).Milliseconds())+fmt.Sprintf(format, args...))
}

// run advances the simulation by d, checking after every step that at most
// one node may act.
func (s *sim) run(d time.Duration) {
	s.t.Helper()
	end := s.now.Add(d)
	for s.now.Before(end) {
		s.now = s.now.Add(time.Millisecond)
		s.deliver()
		for i, nd := range s.nodes {
			if nd.missed && !nd.link.down {
				nd.missed = false
				o := s.cur
				s.push(simEvent{at: s.now.Add(nd.link.delay), node: i, obs: &o})
			}
		}
		for i, nd := range s.nodes {
			if nd.paused || nd.dead {
				continue
			}
			nd.e.tick(s.now)
			s.flush(i)
		}
		s.checkSafety()
	}
}

func (s *sim) checkSafety() {
	s.t.Helper()
	var acting []string
	for i, nd := range s.nodes {
		if nd.guard.effective(s.now) {
			acting = append(acting, fmt.Sprintf("n%d (epoch %d)", i+1, nd.guard.epoch))
		}
	}
	if len(acting) > 1 {
		s.t.Fatalf("at %v two holders act at once: %s\n%s", s.now.Sub(simStart), strings.Join(acting, ", "), s.tail())
	}
}

func (s *sim) tail() string {
	from := max(0, len(s.log)-40)
	return strings.Join(s.log[from:], "\n")
}

func (s *sim) deliver() {
	sort.SliceStable(s.events, func(i, j int) bool {
		if !s.events[i].at.Equal(s.events[j].at) {
			return s.events[i].at.Before(s.events[j].at)
		}
		return s.events[i].seq < s.events[j].seq
	})
	for len(s.events) > 0 && !s.events[0].at.After(s.now) {
		ev := s.events[0]
		s.events = s.events[1:]
		if ev.req != nil {
			s.store(ev)
			continue
		}
		nd := s.nodes[ev.node]
		if nd.dead {
			continue
		}
		if nd.paused {
			nd.inbox = append(nd.inbox, ev)
			continue
		}
		s.input(ev)
	}
}

func (s *sim) input(ev simEvent) {
	nd := s.nodes[ev.node]
	switch {
	case ev.obs != nil:
		nd.e.observe(s.now, *ev.obs)
	case ev.cand != nil:
		nd.e.setCandidates(s.now, false, map[string]*Candidate{ev.cand.Node: ev.cand})
	case ev.handover != nil:
		nd.e.handoverRequested(s.now, ev.handover.to, ev.handover.rev)
	case ev.res != nil:
		if done, sent := nd.pending[ev.res.req.id]; done || !sent {
			return // abandoned after its timeout, or sent by a process since killed
		}
		nd.pending[ev.res.req.id] = true
		nd.e.result(s.now, *ev.res)
	case ev.expire != nil:
		if done, sent := nd.pending[ev.expire.id]; done || !sent {
			return
		}
		nd.pending[ev.expire.id] = true
		nd.e.result(s.now, result{req: *ev.expire, err: fmt.Errorf("timeout")})
	}
	nd.e.tick(s.now)
	s.flush(ev.node)
}

// flush sends a node's requests and applies its guard calls.
func (s *sim) flush(i int) {
	nd := s.nodes[i]
	reqs, calls, notes := nd.e.take()
	for _, n := range notes {
		s.logf("n%d %s %v", i+1, n.msg, n.args)
	}
	for _, c := range calls {
		switch {
		case c.acquire:
			nd.guard.acting, nd.guard.epoch, nd.guard.deadline = true, c.epoch, c.deadline
			nd.guard.acquires++
			s.acquired = append(s.acquired, fmt.Sprintf("n%d", i+1))
			s.epochs = append(s.epochs, c.epoch)
			s.logf("n%d acquire epoch %d until +%dms", i+1, c.epoch, c.deadline.Sub(s.now).Milliseconds())
		case c.extend:
			nd.guard.deadline = c.deadline
		default:
			nd.guard.acting = false
			nd.guard.releases = append(nd.guard.releases, c.reason)
			s.logf("n%d release: %s", i+1, c.reason)
		}
	}
	for _, r := range reqs {
		r := r
		s.logf("n%d sends %s expect %d", i+1, r.kind, r.expect)
		nd.pending[r.id] = false
		s.push(simEvent{at: s.now.Add(r.timeout), node: i, expire: &r})
		if nd.link.down {
			continue
		}
		for p := range max(1, nd.link.paths) {
			s.push(simEvent{at: nd.link.arrival(s.now, p), node: i, path: p, req: &r})
		}
	}
}

// store applies a request that reached etcd.
func (s *sim) store(ev simEvent) {
	if s.stall {
		s.stalled = append(s.stalled, ev)
		return
	}
	r := *ev.req
	nd := s.nodes[ev.node]
	var res result
	match := (r.absent && !s.cur.present) || (!r.absent && s.cur.present && s.cur.modRev == r.expect)
	if match {
		s.storeRev++
		s.cur = observation{rec: r.rec, present: true, modRev: s.storeRev}
		res = result{req: r, known: true, ok: true, rev: s.storeRev}
		s.logf("store: n%d %s applied at rev %d", ev.node+1, r.kind, s.storeRev)
		for i, other := range s.nodes {
			if other.link.down {
				other.missed = true
				continue
			}
			o := s.cur
			s.push(simEvent{at: other.link.arrival(s.now, 0), node: i, obs: &o})
		}
	} else {
		res = result{req: r, known: true, current: s.cur}
	}
	if !nd.link.down {
		s.push(simEvent{at: nd.link.arrival(s.now.Add(nd.link.answerDelay), ev.path), node: ev.node, path: ev.path, res: &res})
	}
}

func (s *sim) unstall() {
	s.stall = false
	for _, ev := range s.stalled {
		ev.at = s.now
		s.push(ev)
	}
	s.stalled = nil
}

func (s *sim) pause(i int) { s.nodes[i].paused = true }

func (s *sim) resume(i int) {
	nd := s.nodes[i]
	nd.paused = false
	inbox := nd.inbox
	nd.inbox = nil
	for _, ev := range inbox {
		s.input(ev)
	}
	nd.e.tick(s.now)
	s.flush(i)
}

// holder returns the index of the node that may act now, or -1.
func (s *sim) holder() int {
	for i, nd := range s.nodes {
		if nd.guard.effective(s.now) {
			return i
		}
	}
	return -1
}

// runUntil advances until cond holds, failing after limit.
func (s *sim) runUntil(limit time.Duration, what string, cond func() bool) time.Duration {
	s.t.Helper()
	start := s.now
	for !cond() {
		if s.now.Sub(start) > limit {
			s.t.Fatalf("after %v: %s did not happen\n%s", limit, what, s.tail())
		}
		s.run(time.Millisecond)
	}
	return s.now.Sub(start)
}

func (s *sim) requireEpochsIncrease() {
	s.t.Helper()
	for i := 1; i < len(s.epochs); i++ {
		if s.epochs[i] < s.epochs[i-1] {
			s.t.Fatalf("fencing epochs went backwards: %v", s.epochs)
		}
		if s.epochs[i] == s.epochs[i-1] && s.acquired[i] != s.acquired[i-1] {
			s.t.Fatalf("two holders share epoch %d: %v %v", s.epochs[i], s.acquired, s.epochs)
		}
	}
}

func TestElectorRenewalSuccessKeepsOneHolder(t *testing.T) {
	s := newSim(t, 3, defaultSimConfig())
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() >= 0 })
	if h := s.holder(); h != 0 {
		t.Fatalf("holder is n%d, want n1, the best ranked candidate", h+1)
	}
	s.run(20 * time.Second)
	g := s.nodes[0].guard
	if !g.effective(s.now) || g.acquires != 1 || len(g.releases) != 0 {
		t.Fatalf("n1 acquired %d times and released %v; want one continuous holding", g.acquires, g.releases)
	}
	if len(s.acquired) != 1 {
		t.Fatalf("acquisitions %v, want only n1's", s.acquired)
	}
}

// TestElectorRenewalsRouteAroundAHeldConnection holds up one of the
// holder's connections for 600ms every second: a lost packet on a TCP
// stream waits for the 200ms retransmission timeout, and 400ms more when
// the retransmission is lost too. Renewals sent over two connections in
// turn keep the holder in place; over one, the same stalls cost it the
// guard (which is what makes this test able to fail).
func TestElectorRenewalsRouteAroundAHeldConnection(t *testing.T) {
	for _, paths := range []int{1, 2} {
		s := newSim(t, 3, defaultSimConfig())
		s.nodes[0].link.paths = paths
		s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
		for range 10 {
			s.run(400 * time.Millisecond)
			s.nodes[0].link.heldUntil = map[int]time.Time{0: s.now.Add(600 * time.Millisecond)}
			s.run(600 * time.Millisecond)
		}
		g := s.nodes[0].guard
		switch {
		case paths == 1 && len(g.releases) == 0:
			t.Fatalf("one connection held up for 600ms every second, and the holder never lost its guard: the stalls are too short to test anything")
		case paths == 2 && (len(g.releases) != 0 || len(s.acquired) != 1):
			t.Fatalf("two connections, one held up 600ms every second: the holder released %d times (%v), acquisitions %v; want one continuous holding\n%s",
				len(g.releases), g.releases, s.acquired, s.tail())
		}
		s.requireEpochsIncrease()
	}
}

func TestElectorTakeoverAfterHolderLinkLoss(t *testing.T) {
	cfg := defaultSimConfig()
	s := newSim(t, 3, cfg)
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
	s.run(time.Second)
	s.nodes[0].link.down = true
	cut := s.now
	took := s.runUntil(3*time.Second, "takeover by n2", func() bool { return s.holder() == 1 })
	// The challenger waits the lease and drift after the last renewal it
	// saw; plus its rank step and the write's round trip.
	limit := time.Duration(float64(cfg.lease)*(1+cfg.drift)) + cfg.rankStep + 10*time.Millisecond
	if took > limit {
		t.Fatalf("n2 acted %v after the cut; want at most %v", took, limit)
	}
	if rel := s.nodes[0].guard.releases; len(rel) == 0 || !strings.Contains(rel[0], "deadline") {
		t.Fatalf("n1 released with %q, want its deadline passing", rel)
	}
	t.Logf("cut at %v, takeover %v later", cut.Sub(simStart), took)
	// The old holder comes back, learns it lost, and stays a challenger.
	s.nodes[0].link.down = false
	s.run(5 * time.Second)
	if h := s.holder(); h != 1 {
		t.Fatalf("after healing the holder is n%d, want n2 to keep it", h+1)
	}
	if s.nodes[0].e.holding {
		t.Fatal("n1 still believes it holds the record")
	}
	s.requireEpochsIncrease()
}

func TestElectorRenewalTimeoutFencesBeforeDeadline(t *testing.T) {
	s := newSim(t, 2, defaultSimConfig())
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
	// Renewals reach etcd but no answer comes back: the holder cannot know
	// they succeeded and must stop acting at its deadline anyway.
	s.nodes[0].link.delay = 10 * time.Second
	s.runUntil(time.Second, "n1 releases", func() bool { return !s.nodes[0].guard.acting })
	if s.nodes[0].guard.releases[0] != "lease not renewed before its deadline" {
		t.Fatalf("release reason %q", s.nodes[0].guard.releases[0])
	}
	s.run(5 * time.Second)
	s.requireEpochsIncrease()
}

func TestElectorSlowEtcd(t *testing.T) {
	cfg := defaultSimConfig()
	s := newSim(t, 3, cfg)
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
	// Every request now takes 200ms each way: slower than a renewal
	// period, so renewals overlap their timeouts, and every answer comes
	// back close to the deadline.
	for _, nd := range s.nodes {
		nd.link.delay = 200 * time.Millisecond
	}
	s.run(10 * time.Second)
	for _, nd := range s.nodes {
		nd.link.delay = time.Millisecond
	}
	s.runUntil(2*time.Second, "a holder after etcd is fast again", func() bool { return s.holder() >= 0 })
	s.run(2 * time.Second)
	s.requireEpochsIncrease()
}

func TestElectorEtcdLeaderChange(t *testing.T) {
	s := newSim(t, 3, defaultSimConfig())
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
	s.run(300 * time.Millisecond)
	// An election: etcd takes no writes for 1.2s, then applies what was
	// queued in the order it arrived.
	s.stall = true
	s.run(1200 * time.Millisecond)
	if h := s.holder(); h != -1 {
		t.Fatalf("n%d still acts after 1.2s without a renewal", h+1)
	}
	s.unstall()
	s.runUntil(2*time.Second, "a holder after the election", func() bool { return s.holder() >= 0 })
	s.run(3 * time.Second)
	s.requireEpochsIncrease()
}

func TestElectorHolderPause(t *testing.T) {
	cfg := defaultSimConfig()
	s := newSim(t, 3, cfg)
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
	s.run(400 * time.Millisecond)
	s.pause(0) // SIGSTOP: the kernel-side deadline still expires
	s.runUntil(2*time.Second, "takeover by n2", func() bool { return s.holder() == 1 })
	s.run(3 * time.Second)
	s.resume(0)
	s.run(2 * time.Second)
	if s.nodes[0].e.holding || s.nodes[0].guard.acting {
		t.Fatal("n1 believes it holds after resuming")
	}
	if h := s.holder(); h != 1 {
		t.Fatalf("holder n%d after n1 resumed, want n2", h+1)
	}
	s.requireEpochsIncrease()
}

func TestElectorChallengerRace(t *testing.T) {
	cfg := defaultSimConfig()
	cfg.rankStep = 0 // both challengers fire in the same millisecond
	s := newSim(t, 3, cfg)
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() >= 0 })
	first := s.holder()
	s.nodes[first].dead = true // its kernel-side deadline still runs out
	s.runUntil(2*time.Second, "takeover", func() bool { return s.holder() >= 0 })
	s.run(5 * time.Second)
	winners := map[string]bool{}
	for _, a := range s.acquired[1:] {
		winners[a] = true
	}
	if len(winners) != 1 {
		t.Fatalf("after the holder died, acquisitions by %v; want exactly one winner", s.acquired[1:])
	}
	s.requireEpochsIncrease()
}

func TestElectorPlannedHandover(t *testing.T) {
	s := newSim(t, 3, defaultSimConfig())
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
	s.run(time.Second)
	s.nodes[0].e.handover(s.now, "n3")
	s.flush(0)
	took := s.runUntil(time.Second, "n3 acquires", func() bool { return s.holder() == 2 })
	// Release, watch, acquire: a few round trips of 1ms links.
	if took > 10*time.Millisecond {
		t.Fatalf("planned handover took %v of simulated time; want a few round trips", took)
	}
	if s.nodes[0].e.holding {
		t.Fatal("n1 still holds after handing over")
	}
	s.requireEpochsIncrease()
}

func TestElectorIneligibleHolderHandsOver(t *testing.T) {
	s := newSim(t, 2, defaultSimConfig())
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
	s.setWant(0, false)
	s.runUntil(time.Second, "n2 acquires", func() bool { return s.holder() == 1 })
	s.run(2 * time.Second)
	if s.holder() != 1 {
		t.Fatal("the ineligible node took the singleton back")
	}
	// Nobody eligible: nobody holds.
	s.setWant(1, false)
	s.run(2 * time.Second)
	if h := s.holder(); h != -1 {
		t.Fatalf("n%d holds while no node is eligible", h+1)
	}
	s.setWant(0, true)
	s.runUntil(time.Second, "n1 acquires once eligible again", func() bool { return s.holder() == 0 })
}

func TestElectorRestartedHolderWaitsOutItsOldRecord(t *testing.T) {
	s := newSim(t, 1, defaultSimConfig())
	s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
	s.run(time.Second)
	// kill -9 and restart: a new elector that knows nothing of the old
	// process's deadline reads its own old record.
	s.startNode(0, s.nodes[0].e.cfg)
	s.setWant(0, true)
	restart := s.now
	s.runUntil(2*time.Second, "reacquire", func() bool { return s.nodes[0].e.acting })
	if waited := s.now.Sub(restart); waited < s.nodes[0].e.cfg.lease {
		t.Fatalf("restarted holder acted after %v, before its old lease could have run out", waited)
	}
}

// TestElectorRandomFaults runs many seeded schedules of delays, link
// losses, lossy connections, pauses, stalls, eligibility changes, planned
// and requested handovers, over random priorities with and without
// preempt, and checks the safety property at every simulated millisecond,
// and that a holder exists again once the faults stop.
func TestElectorRandomFaults(t *testing.T) {
	seeds := 60
	if testing.Short() {
		seeds = 10
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			cfg := defaultSimConfig()
			cfg.preempt = rng.IntN(2) == 0
			s := newSimPriorities(t, cfg, rng.IntN(3), rng.IntN(3), rng.IntN(3))
			for _, nd := range s.nodes {
				nd.link.paths = 1 + rng.IntN(3)
				nd.link.rng = rand.New(rand.NewPCG(rng.Uint64(), 1))
			}
			for range 40 {
				i := rng.IntN(3)
				nd := s.nodes[i]
				switch rng.IntN(8) {
				case 0:
					nd.link.delay = time.Duration(1+rng.IntN(300)) * time.Millisecond
				case 1:
					nd.link.down = !nd.link.down
				case 2:
					if nd.paused {
						s.resume(i)
					} else {
						s.pause(i)
					}
				case 3:
					if s.stall {
						s.unstall()
					} else {
						s.stall = true
					}
				case 4:
					to := simName(rng.IntN(3))
					switch {
					case rng.IntN(2) == 0:
						s.requestHandover(to)
					case !nd.paused:
						nd.e.handover(s.now, to)
						s.flush(i)
					}
				case 5:
					if !nd.paused {
						s.setWant(i, !nd.e.want)
					}
				case 6:
					held := time.Duration(rng.IntN(800)) * time.Millisecond
					nd.link.heldUntil = map[int]time.Time{rng.IntN(3): s.now.Add(held)}
					nd.link.loss = float64(rng.IntN(20)) / 100
				default:
					nd.link = simLink{delay: time.Millisecond, paths: nd.link.paths, rng: nd.link.rng}
				}
				s.run(time.Duration(rng.IntN(800)) * time.Millisecond)
			}
			// Heal everything; a holder must emerge.
			s.unstall()
			for i, nd := range s.nodes {
				nd.link = simLink{delay: time.Millisecond}
				if nd.paused {
					s.resume(i)
				}
				s.setWant(i, true)
			}
			s.runUntil(5*time.Second, "a holder after healing", func() bool { return s.holder() >= 0 })
			s.requireEpochsIncrease()
		})
	}
}

// TestElectorCountsItsWritesSeenOnTheWatch slows the answers to the
// holder's writes down to 10s while the writes themselves, and the watch
// that shows them, stay fast: the holder knows each write by its Seq when
// the watch shows it applied, and holds on without a gap. Without the Seq
// it would fence itself at its first deadline, as
// TestElectorRenewalTimeoutFencesBeforeDeadline does when the watch is slow
// too.
func TestElectorCountsItsWritesSeenOnTheWatch(t *testing.T) {
	s := newSim(t, 3, defaultSimConfig())
	s.nodes[0].link.answerDelay = 10 * time.Second
	s.runUntil(2*time.Second, "n1 acquires with its answers 10s late", func() bool { return s.holder() == 0 })
	s.run(10 * time.Second)
	if g := s.nodes[0].guard; !g.effective(s.now) || g.acquires != 1 || len(g.releases) != 0 {
		t.Fatalf("n1 acquired %d times and released %v with its answers 10s late; want one continuous holding\n%s", g.acquires, g.releases, s.tail())
	}
	s.requireEpochsIncrease()
}

// TestElectorRidesOutLossyConnections gives the holder's connections 5%
// packet loss: each lost packet holds its connection up for 200ms, 600ms
// when the retransmission is lost too. Every write goes out on three
// connections at once and the first answer counts, so the holder keeps the
// singleton for two simulated minutes; on one connection it loses it (which
// shows the loss is enough to matter).
func TestElectorRidesOutLossyConnections(t *testing.T) {
	for _, paths := range []int{1, 3} {
		s := newSim(t, 3, defaultSimConfig())
		s.runUntil(time.Second, "first acquisition", func() bool { return s.holder() == 0 })
		l := &s.nodes[0].link
		l.paths, l.loss, l.rng = paths, 0.05, rand.New(rand.NewPCG(1, 2))
		s.run(2 * time.Minute)
		g := s.nodes[0].guard
		switch {
		case paths == 1 && len(g.releases) == 0:
			t.Fatalf("one connection with 5%% loss for 2 minutes and the holder never lost its guard: the model is too kind to test anything")
		case paths == 3 && len(g.releases) != 0:
			t.Fatalf("three connections with 5%% loss: the holder released %d times (%v); want one continuous holding\n%s", len(g.releases), g.releases, s.tail())
		}
		t.Logf("%d connection(s) with 5%% loss for 2 minutes: %d releases", paths, len(g.releases))
		s.requireEpochsIncrease()
	}
}

// TestElectorSettlesBeforeCompeting starts the best-ranked node last, 200ms
// after the others: they wait a lease after their start and a renewal
// period after they see their own candidacy, so that they see its
// candidacy too and let it win the first race.
func TestElectorSettlesBeforeCompeting(t *testing.T) {
	cfg := defaultSimConfig()
	s := &sim{t: t, now: simStart, storeRev: 1, cur: observation{modRev: 1}}
	for i := range 3 {
		c := cfg
		c.node = simName(i)
		s.nodes = append(s.nodes, &simNode{link: simLink{delay: time.Millisecond}, dead: true})
		if i == 0 {
			continue // not started yet
		}
		s.startNode(i, c)
		s.setWant(i, true)
	}
	s.run(200 * time.Millisecond)
	c := cfg
	c.node = "n1"
	s.startNode(0, c)
	s.setWant(0, true)
	s.runUntil(2*time.Second, "first acquisition", func() bool { return s.holder() >= 0 })
	if h := s.holder(); h != 0 {
		t.Fatalf("n%d won the first race; want n1, the best-ranked candidate, though it started 200ms later\n%s", h+1, s.tail())
	}
}

// TestElectorPreemptWaitsOutACandidacy: with preempt, a holder hands over
// to an eligible candidate of higher priority, but only preemptDelay after
// it started acting, and the better candidate takes it at once.
func TestElectorPreemptWaitsOutACandidacy(t *testing.T) {
	cfg := defaultSimConfig()
	cfg.preempt = true
	s := newSimPriorities(t, cfg, 100, 50)
	s.setWant(0, false)
	s.runUntil(2*time.Second, "n2 acquires alone", func() bool { return s.holder() == 1 })
	since := s.nodes[1].e.actingSince
	s.setWant(0, true)
	s.run(since.Add(cfg.preemptDelay).Sub(s.now) - time.Millisecond)
	if h := s.holder(); h != 1 {
		t.Fatalf("holder n%d just before the preempt delay ran out; want n2 still\n%s", h+1, s.tail())
	}
	took := s.runUntil(time.Second, "n1 preempts", func() bool { return s.holder() == 0 })
	if took > 20*time.Millisecond {
		t.Fatalf("n1 acted %v after the preempt delay; want a planned handover's few round trips", took)
	}
	s.requireEpochsIncrease()
}

// TestElectorMoveSticksAgainstPreempt: a node the operator moved the
// singleton to keeps it although a candidate of higher priority is
// eligible and preempt is on, until the next move. Without the move the
// same candidate preempts (the first half), so the second half can fail.
func TestElectorMoveSticksAgainstPreempt(t *testing.T) {
	cfg := defaultSimConfig()
	cfg.preempt = true
	s := newSimPriorities(t, cfg, 100, 50)
	s.runUntil(2*time.Second, "n1 acquires", func() bool { return s.holder() == 0 })
	// Unasked, n2 would hand back to n1 after the preempt delay.
	s.nodes[0].e.handover(s.now, "n2")
	s.flush(0)
	s.runUntil(time.Second, "n2 takes the handover", func() bool { return s.holder() == 1 })
	s.runUntil(cfg.preemptDelay+time.Second, "n1 preempts an unrequested holder", func() bool { return s.holder() == 0 })

	s.requestHandover("n2")
	s.runUntil(time.Second, "n2 takes the requested move", func() bool { return s.holder() == 1 })
	s.run(3 * cfg.preemptDelay)
	if h := s.holder(); h != 1 || s.nodes[1].guard.acquires != 2 {
		t.Fatalf("after a move to n2 and 3 preempt delays: holder n%d, n2 acquired %d times; want n2 holding since the move\n%s", h+1, s.nodes[1].guard.acquires, s.tail())
	}
	s.requestHandover("n1")
	s.runUntil(time.Second, "the next move to n1", func() bool { return s.holder() == 0 })
	s.requireEpochsIncrease()
}

// TestElectorHandoverRequests: a request names a node, the best candidate
// (""), an ineligible node (refused: the singleton would go unheld for a
// lease), or predates the holding (ignored).
func TestElectorHandoverRequests(t *testing.T) {
	s := newSim(t, 3, defaultSimConfig())
	s.runUntil(2*time.Second, "n1 acquires", func() bool { return s.holder() == 0 })

	s.setWant(2, false)
	s.run(10 * time.Millisecond)
	s.requestHandover("n3")
	s.run(10 * time.Millisecond)
	if h := s.holder(); h != 0 || len(s.nodes[0].guard.releases) != 0 {
		t.Fatalf("a request to hand over to ineligible n3: holder n%d, n1 released %v; want n1 to refuse", h+1, s.nodes[0].guard.releases)
	}
	if !strings.Contains(s.tail(), "not an eligible candidate") {
		t.Errorf("no warning about the refused request in:\n%s", s.tail())
	}

	s.requestHandover("") // the best eligible candidate: n2
	s.runUntil(time.Second, "n2 takes the singleton", func() bool { return s.holder() == 1 })

	// A request written before n2's holding began is not for it.
	stale := s.nodes[1].e.epoch - 1
	s.nodes[1].e.handoverRequested(s.now, "n1", stale)
	s.flush(1)
	s.run(10 * time.Millisecond)
	if h := s.holder(); h != 1 {
		t.Fatalf("a request older than n2's holding moved it to n%d", h+1)
	}
	s.requireEpochsIncrease()
}

// TestElectorPreemptToARestartedNodeIsImmediate: the better candidate
// stops gracefully (handing over), comes back, and takes the record the
// holder releases naming it without settling first: there is no race to
// rank.
func TestElectorPreemptToARestartedNodeIsImmediate(t *testing.T) {
	cfg := defaultSimConfig()
	cfg.preempt = true
	s := newSimPriorities(t, cfg, 150, 100)
	s.runUntil(2*time.Second, "n1 acquires", func() bool { return s.holder() == 0 })
	s.setWant(0, false) // a graceful stop hands over
	s.runUntil(time.Second, "n2 takes over", func() bool { return s.holder() == 1 })
	s.nodes[0].dead = true
	s.run(cfg.preemptDelay)

	s.startNode(0, s.nodes[0].e.cfg)
	s.setWant(0, true)
	took := s.runUntil(time.Second, "the restarted n1 holds", func() bool { return s.nodes[0].e.acting })
	if took >= cfg.lease {
		t.Fatalf("n1 acted %v after its restart: it settled for a lease instead of taking the record that names it\n%s", took, s.tail())
	}
	s.requireEpochsIncrease()
}
