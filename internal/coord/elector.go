package coord

import (
	"fmt"
	"time"
)

// electorConfig holds the timing and standing of one node's elector.
type electorConfig struct {
	node string
	// priority ranks this node among the candidates; preempt makes a
	// holder hand over to an eligible candidate of higher priority.
	priority int
	preempt  bool
	// lease is how long a renewal keeps the holder in place.
	lease time.Duration
	// renew is the period between renewals (lease/4 by default: three
	// renewals may fail before the holder fences itself).
	renew time.Duration
	// drift bounds how much faster or slower two nodes' clocks may run,
	// as a fraction: the holder's deadline is lease×(1−drift) after it
	// sent its renewal, a challenger waits lease×(1+drift) after it saw
	// the record change.
	drift float64
	// rankStep delays each challenger by this much per eligible candidate
	// ranked above it, so that the best candidate usually wins the race.
	rankStep time.Duration
	// preemptDelay is how long a new holder waits before it preempts for
	// a better candidate: at least a candidacy's lease, so that it never
	// yields to a node that died still listed as the better candidate.
	preemptDelay time.Duration
	// firstID numbers this process's first write; later ones count up
	// from it. It is random in each process (see Record.Seq).
	firstID uint64
	// group: node names a group of processes that hold the record
	// together (a region), not one process (OwnerConfig.Member).
	group bool
}

// opKind says which write a request is.
type opKind int

const (
	opAcquire opKind = iota
	opRenew
	opRelease
)

func (k opKind) String() string {
	return [...]string{"acquire", "renew", "release"}[k]
}

// reasonMissedDeadline is the release of a holder whose deadline came
// before a renewal's answer.
const reasonMissedDeadline = "lease not renewed before its deadline"

// request is a compare-and-swap write the elector asks its driver to send.
type request struct {
	// id numbers the node's requests in the order they were sent; the
	// write carries it as Record.Seq.
	id   uint64
	kind opKind
	// expect is the ModRevision the key must have; with absent, the key
	// must not exist.
	expect int64
	absent bool
	rec    Record
	sentAt time.Time
	// timeout bounds the request: past it, its outcome no longer matters
	// to the holder (its deadline has passed).
	timeout time.Duration
}

// result is the outcome of a request.
type result struct {
	req request
	// known is false when the request failed or timed out without an
	// answer: it may or may not have been applied.
	known bool
	ok    bool  // the comparison held and the write was applied
	rev   int64 // the write's revision when ok
	// current is the record when the comparison failed.
	current observation
	err     error
}

// guardCall is a call the elector makes on its Guard, in order.
type guardCall struct {
	acquire  bool
	extend   bool
	epoch    int64
	deadline time.Time
	reason   string // release
}

// note is something the elector decided that an operator should read in
// the log: the driver logs it, the elector never does.
type note struct {
	warn bool
	msg  string
	args []any
}

// elector is one node's side of an ownership record, as a pure state
// machine: it is driven by observations of the record and of the
// candidates, handover requests, results of its writes, ticks of the clock
// and the eligibility its user asks for, and answers with requests to
// send, calls to make on its Guard and notes to log. It never reads a
// clock or touches the network, so tests drive it step by step.
//
// Safety: a holder acts only until lease×(1−drift) after the send time of
// its last write known to be applied; a challenger writes only after
// lease×(1+drift) on its own clock since it saw that write, and only by
// compare-and-swap on that write's revision. The write was applied after it
// was sent and seen after it was applied, so, while the clocks' rates
// differ by less than drift, the holder has stopped before a challenger can
// succeed. A renewal racing a takeover loses the compare-and-swap. A write
// is known to be applied when its answer says so, or when the record is
// seen carrying its sequence number (Record.Seq): through the watch, or in
// the failed comparison of another copy of the same request.
// docs/coordination.md gives the whole argument.
//
// Who competes, and when, is decided here too (choice.go): the rank among
// the candidates, the settling of a starting node, preemption by a better
// candidate and planned handovers.
type elector struct {
	cfg electorConfig

	choice

	eligible   bool      // may compete now: wanted, and settled
	eligibleAt time.Time // when eligible last became true

	seen     observation
	seenAt   time.Time
	haveSeen bool

	holding     bool  // the record names this node (it wrote it)
	epoch       int64 // fencing epoch while holding
	rev         int64 // revision of this node's last confirmed write
	deadline    time.Time
	acting      bool // Guard acquired and not released
	actingSince time.Time

	// inflight counts requests sent and not yet answered. Renewals go out
	// on schedule while earlier ones are still in flight (up to
	// maxInFlight): one held up behind a lost packet does not hold back
	// the next. Acquisitions and releases go out one at a time.
	inflight  int
	nextRenew time.Time
	// releasing is set by a planned handover: once no request is in
	// flight, the record is released naming next.
	releasing bool
	next      string

	sent uint64 // requests sent so far
	// sentAt holds the send time of this node's acquisition and renewals
	// that may still move the deadline, by id, so that a write seen
	// applied (by its Seq) before its answer arrives counts at once.
	sentAt map[uint64]time.Time
	reqs   []request
	calls  []guardCall
	notes  []note
}

// maxInFlight is how many renewals may be outstanding at once: as many as
// fit in a lease, since a renewal is worth nothing after the deadline it
// could have moved.
func (e *elector) maxInFlight() int {
	return max(1, int(e.cfg.lease/e.cfg.renew))
}

func newElector(cfg electorConfig) *elector {
	return &elector{cfg: cfg, choice: newChoice(), sentAt: map[uint64]time.Time{}}
}

// take returns and clears the pending requests, guard calls and notes.
func (e *elector) take() ([]request, []guardCall, []note) {
	r, c, n := e.reqs, e.calls, e.notes
	e.reqs, e.calls, e.notes = nil, nil, nil
	return r, c, n
}

func (e *elector) info(msg string, args ...any) {
	e.notes = append(e.notes, note{msg: msg, args: args})
}

func (e *elector) warn(msg string, args ...any) {
	e.notes = append(e.notes, note{warn: true, msg: msg, args: args})
}

func (e *elector) holderDeadline(sentAt time.Time) time.Time {
	return sentAt.Add(time.Duration(float64(e.cfg.lease) * (1 - e.cfg.drift)))
}

func (e *elector) challengerWait(o observation) time.Duration {
	lease := e.cfg.lease
	if o.rec.LeaseMS > 0 {
		lease = time.Duration(o.rec.LeaseMS) * time.Millisecond
	}
	return time.Duration(float64(lease) * (1 + e.cfg.drift))
}

// observe takes a version of the record, from the watch, an initial read
// or a failed comparison.
func (e *elector) observe(now time.Time, o observation) {
	if e.haveSeen && o.modRev <= e.seen.modRev {
		return // stale or already seen: the challenger's wait must not restart
	}
	e.seen, e.seenAt, e.haveSeen = o, now, true
	if !e.holding {
		if sentAt, ok := e.ownAcquisition(o); ok {
			// The acquisition was applied; its answer is still on its way
			// or lost.
			e.acquired(now, o, sentAt)
		}
		return
	}
	if o.held() && o.rec.Holder == e.cfg.node && o.epoch() == e.epoch {
		// One of this node's own writes: a renewal whose answer is still
		// on its way, or one that timed out but was applied. Later writes
		// compare on it; when its Seq tells which request it was, its send
		// time moves the deadline. In a group it may be another member's
		// renewal: it moves only the revision to compare on.
		e.rev = max(e.rev, o.modRev)
		if sentAt, ok := e.sentAt[o.rec.Seq]; ok {
			e.extend(now, sentAt)
		}
		return
	}
	e.lose(fmt.Sprintf("the record now names %s", describe(o)))
}

// ownAcquisition reports whether o is the write of this node's acquisition
// in flight, and when that was sent.
func (e *elector) ownAcquisition(o observation) (time.Time, bool) {
	if !o.held() || o.rec.Holder != e.cfg.node || o.rec.Epoch != 0 {
		return time.Time{}, false
	}
	sentAt, ok := e.sentAt[o.rec.Seq]
	return sentAt, ok
}

// lose ends this node's holding.
func (e *elector) lose(reason string) {
	e.holding, e.releasing = false, false
	clear(e.sentAt)
	e.release(reason)
}

func (e *elector) release(reason string) {
	if e.acting {
		e.acting = false
		e.calls = append(e.calls, guardCall{reason: reason})
	}
}

// result takes the outcome of a request.
func (e *elector) result(now time.Time, r result) {
	e.inflight--
	switch {
	case !r.known:
		if r.req.kind == opRelease {
			// The guard is already released; the record expires if the
			// write was lost.
			e.holding, e.releasing = false, false
		}
		return
	case !r.ok:
		e.observe(now, r.current)
		if e.holding && r.req.kind != opAcquire {
			// The comparison failed on one of this node's own writes
			// (adopted in observe): try again at once.
			e.nextRenew = now
		}
		return
	}
	mine := observation{rec: r.req.rec, present: true, modRev: r.rev}
	switch r.req.kind {
	case opAcquire:
		if !e.holding {
			e.acquired(now, mine, r.req.sentAt)
		}
	case opRenew:
		if !e.holding {
			return
		}
		e.rev = max(e.rev, r.rev)
		if r.rev > e.seen.modRev {
			e.seen, e.seenAt = mine, now
		}
		e.extend(now, r.req.sentAt)
	case opRelease:
		e.holding, e.releasing = false, false
		clear(e.sentAt)
		if r.rev > e.seen.modRev {
			e.seen, e.seenAt = mine, now
		}
	}
}

// acquired starts a holding under the epoch of mine, this node's
// acquisition, sent at sentAt.
func (e *elector) acquired(now time.Time, mine observation, sentAt time.Time) {
	e.holding, e.epoch, e.rev = true, mine.modRev, mine.modRev
	e.deadline = time.Time{}
	e.nextRenew = sentAt.Add(e.cfg.renew)
	if !e.haveSeen || mine.modRev > e.seen.modRev {
		e.seen, e.seenAt, e.haveSeen = mine, now, true
	}
	e.extend(now, sentAt)
}

// extend moves the deadline to the one a write sent at sentAt earns, and
// (re)acquires the guard if that deadline is still ahead.
func (e *elector) extend(now, sentAt time.Time) {
	for id, t := range e.sentAt {
		if !t.After(sentAt) {
			delete(e.sentAt, id) // can no longer move the deadline
		}
	}
	d := e.holderDeadline(sentAt)
	if !d.After(e.deadline) {
		return
	}
	e.deadline = d
	if e.releasing || !d.After(now) {
		return
	}
	if e.acting {
		e.calls = append(e.calls, guardCall{extend: true, epoch: e.epoch, deadline: d})
		return
	}
	e.acting, e.actingSince = true, now
	e.calls = append(e.calls, guardCall{acquire: true, epoch: e.epoch, deadline: d})
}

// setEligible says whether this node may compete for the singleton now. A
// holder that becomes ineligible hands over to next; a member of a group
// leaves it instead (leaveGroup): the group keeps the record.
func (e *elector) setEligible(now time.Time, ok bool, next string) {
	if ok && !e.eligible {
		e.eligibleAt = now
	}
	e.eligible = ok
	switch {
	case ok || !e.holding:
	case e.cfg.group:
		e.leaveGroup("no longer eligible; the group keeps the record")
	default:
		e.handover(now, next)
	}
}

// joinGroup makes a process that wants the singleton one of its holders
// when the record names its group: it renews the record at once, under
// the group's epoch, and acts once a write of its own has been applied.
// Its deadline comes from its own writes only, as any holder's: a write by
// another member of the group restarts the challengers' wait but proves
// nothing about this process's clock. Joining does not wait for the
// eligibility to settle: the group holds already, so there is no race to
// rank.
func (e *elector) joinGroup(now time.Time) {
	o := e.seen
	if !e.cfg.group || e.holding || !e.want || !o.held() || o.rec.Holder != e.cfg.node {
		return
	}
	e.holding, e.epoch, e.rev = true, o.epoch(), o.modRev
	e.deadline = time.Time{}
	e.nextRenew = now
	e.info("joining the group's holding", "epoch", e.epoch)
}

// leaveGroup stops this member's holding without writing: the record
// stays with the group, renewed by its other members or left to expire.
func (e *elector) leaveGroup(reason string) {
	e.holding, e.releasing = false, false
	clear(e.sentAt)
	e.release(reason)
}

// handover releases a held singleton: the guard first, then the record,
// naming next ("" for anyone).
func (e *elector) handover(now time.Time, next string) {
	if !e.holding {
		return
	}
	e.release("handover to " + orAnyone(next))
	e.releasing, e.next = true, next
	e.send(now)
}

// challengeAt is when this node may try to take the singleton, and whether
// it may at all.
func (e *elector) challengeAt() (time.Time, bool) {
	if !e.eligible || !e.haveSeen || e.holding {
		return time.Time{}, false
	}
	rank := e.rank()
	rankDelay := time.Duration(rank) * e.cfg.rankStep
	o := e.seen
	switch {
	case o.held():
		return e.seenAt.Add(e.challengerWait(o) + rankDelay), true
	case o.rec.Next == e.cfg.node:
		return e.seenAt, true
	case o.rec.Next != "":
		return e.seenAt.Add(e.challengerWait(o) + rankDelay), true
	}
	// Free for anyone (never held, or released to nobody in particular):
	// nobody races a deadline here, and candidates come to it at different
	// moments (a cold start), so the better-ranked get half a lease each.
	from := e.seenAt
	if e.eligibleAt.After(from) {
		from = e.eligibleAt
	}
	return from.Add(time.Duration(rank) * e.cfg.lease / 2), true
}

// wake is when tick must next be called (zero: only on other input).
func (e *elector) wake() time.Time {
	var at time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	if e.acting {
		earliest(e.deadline)
	}
	switch {
	case e.holding && e.releasing:
		// The release goes out on the last answer.
	case e.holding:
		if e.inflight < e.maxInFlight() {
			earliest(e.nextRenew)
		}
	case e.inflight == 0:
		if t, ok := e.challengeAt(); ok {
			earliest(t)
		}
	}
	earliest(e.choiceWake())
	return at
}

// tick lets time pass: it settles the eligibility asked for, fences a
// holder whose deadline has come, preempts for a better candidate and sends
// whatever write is due.
func (e *elector) tick(now time.Time) {
	e.settle(now)
	e.joinGroup(now)
	if e.acting && !now.Before(e.deadline) {
		e.release(reasonMissedDeadline)
	}
	for id, t := range e.sentAt {
		if !e.holderDeadline(t).After(now) {
			delete(e.sentAt, id) // its deadline has passed: worth nothing now
		}
	}
	e.preemptIfDue(now)
	e.send(now)
}

// send sends whatever write is due now.
func (e *elector) send(now time.Time) {
	lease := e.cfg.lease.Milliseconds()
	switch {
	case e.holding && e.releasing:
		if e.inflight > 0 {
			return // a renewal applied after the release would fail it
		}
		e.push(now, request{kind: opRelease, expect: e.rev, rec: Record{LeaseMS: lease, Next: e.next}, timeout: e.cfg.lease})
	case e.holding && !now.Before(e.nextRenew) && e.inflight < e.maxInFlight():
		e.nextRenew = now.Add(e.cfg.renew)
		// Past the deadline an answer no longer keeps the guard; a
		// request that takes longer is abandoned and the next one sent.
		timeout := e.cfg.lease
		if e.acting {
			timeout = max(e.deadline.Sub(now), e.cfg.renew)
		}
		e.push(now, request{kind: opRenew, expect: e.rev, rec: Record{Holder: e.cfg.node, Epoch: e.epoch, LeaseMS: lease}, timeout: timeout})
	case !e.holding && e.inflight == 0:
		at, ok := e.challengeAt()
		if !ok || now.Before(at) {
			return
		}
		e.push(now, request{kind: opAcquire, expect: e.seen.modRev, absent: !e.seen.exists(), rec: Record{Holder: e.cfg.node, LeaseMS: lease}, timeout: e.cfg.lease})
	}
}

func (e *elector) push(now time.Time, r request) {
	r.id = e.cfg.firstID + e.sent
	e.sent++
	r.sentAt, r.rec.Seq = now, r.id
	if r.kind != opRelease {
		e.sentAt[r.id] = now
	}
	e.inflight++
	e.reqs = append(e.reqs, r)
}
