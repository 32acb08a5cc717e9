package coord

import (
	"encoding/json"
	"fmt"
	"time"
)

// Record is the value stored at a singleton's ownership key. The key's
// etcd ModRevision versions it: every write is a compare-and-swap on the
// revision the writer last saw.
type Record struct {
	// Holder is the node that holds the singleton; "" once released.
	Holder string `json:"holder,omitempty"`
	// Epoch is the fencing epoch: the etcd revision of the write that
	// acquired the singleton. The acquiring write itself carries 0 (it
	// cannot know its own revision); renewals carry it.
	Epoch int64 `json:"epoch,omitempty"`
	// LeaseMS is the holder's lease in milliseconds: a challenger waits at
	// least this long, on its own clock, after it last saw the record
	// change before it may take the singleton over.
	LeaseMS int64 `json:"lease_ms"`
	// Next, on a released record, names the node that may take the
	// singleton at once (a planned handover); any other node waits out the
	// lease in case Next is gone.
	Next string `json:"next,omitempty"`
}

// Guard is what an ownership record protects: the thing only the holder may
// do (answer for a floating address, accept database writes). The owner
// calls it from one goroutine, in order.
type Guard interface {
	// Acquire is called when this node may act as the holder under epoch
	// until deadline, a time on the local monotonic clock.
	Acquire(epoch int64, deadline time.Time)
	// Extend moves the deadline after a successful renewal.
	Extend(deadline time.Time)
	// Release must stop the node acting now. It is called before the
	// deadline passes when a renewal has not succeeded in time, on a
	// planned handover, and when the record names another holder.
	Release(reason string)
}

// observation is one version of the ownership record as etcd returned it.
type observation struct {
	rec Record
	// present is false when the key does not exist (never written, or
	// deleted by hand).
	present bool
	// modRev is the revision of this version: the key's ModRevision, the
	// deletion's revision, or the read's revision when the key is absent.
	// Observations are ordered by it.
	modRev int64
}

func (o observation) exists() bool { return o.present }

// epoch is the fencing epoch of the holder the observation names.
func (o observation) epoch() int64 {
	if o.rec.Epoch != 0 {
		return o.rec.Epoch
	}
	return o.modRev
}

func (o observation) held() bool { return o.exists() && o.rec.Holder != "" }

func decodeObservation(value []byte, modRev int64) (observation, error) {
	var rec Record
	if err := json.Unmarshal(value, &rec); err != nil {
		return observation{}, fmt.Errorf("ownership record at revision %d: %w", modRev, err)
	}
	return observation{rec: rec, present: true, modRev: modRev}, nil
}

// electorConfig holds the timing of one node's elector.
type electorConfig struct {
	node string
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

// request is a compare-and-swap write the elector asks its driver to send.
type request struct {
	// id numbers the node's requests in the order they were sent.
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

// elector is one node's side of an ownership record, as a pure state
// machine: it is driven by observations of the record, results of its
// writes, ticks of the clock and eligibility changes, and answers with
// requests to send and calls to make on its Guard. It never reads a clock
// or touches the network, so tests drive it step by step.
//
// Safety: a holder acts only until lease×(1−drift) after the send time of
// its last successful write; a challenger writes only after lease×(1+drift)
// on its own clock since it saw that write, and only by compare-and-swap on
// that write's revision. The write was applied after it was sent and seen
// after it was applied, so, while the clocks' rates differ by less than
// drift, the holder has stopped before a challenger can succeed. A renewal
// racing a takeover loses the compare-and-swap. docs/coordination.md gives
// the whole argument.
type elector struct {
	cfg electorConfig

	eligible   bool
	eligibleAt time.Time // when eligible last became true
	rank       int       // eligible candidates ranked above this node

	seen     observation
	seenAt   time.Time
	haveSeen bool

	holding  bool  // the record names this node (it wrote it)
	epoch    int64 // fencing epoch while holding
	rev      int64 // revision of this node's last confirmed write
	deadline time.Time
	acting   bool // Guard acquired and not released

	// inflight counts requests sent and not yet answered. Renewals go out
	// on schedule while earlier ones are still in flight (up to
	// maxInFlight): the driver sends consecutive requests over different
	// connections, so one held up behind a lost packet does not hold back
	// the next. Acquisitions and releases go out one at a time.
	inflight  int
	nextRenew time.Time
	// releasing is set by a planned handover: once no request is in
	// flight, the record is released naming next.
	releasing bool
	next      string

	sent  uint64 // requests sent so far
	reqs  []request
	calls []guardCall
}

// maxInFlight is how many renewals may be outstanding at once: as many as
// fit in a lease, since a renewal is worth nothing after the deadline it
// could have moved.
func (e *elector) maxInFlight() int {
	return max(1, int(e.cfg.lease/e.cfg.renew))
}

func newElector(cfg electorConfig) *elector {
	return &elector{cfg: cfg}
}

// take returns and clears the pending requests and guard calls.
func (e *elector) take() ([]request, []guardCall) {
	r, c := e.reqs, e.calls
	e.reqs, e.calls = nil, nil
	return r, c
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
		return
	}
	if o.held() && o.rec.Holder == e.cfg.node && o.epoch() == e.epoch {
		// One of this node's own writes: a renewal whose answer is still
		// on its way, or one that timed out but was applied. Its send time
		// is unknown, so the deadline stays; later writes compare on it.
		e.rev = max(e.rev, o.modRev)
		return
	}
	e.lose(fmt.Sprintf("the record now names %s", describe(o)))
}

func describe(o observation) string {
	switch {
	case !o.exists():
		return "no holder (deleted)"
	case o.rec.Holder == "":
		return "no holder (released)"
	}
	return fmt.Sprintf("%s (epoch %d)", o.rec.Holder, o.epoch())
}

// lose ends this node's holding.
func (e *elector) lose(reason string) {
	e.holding, e.releasing = false, false
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
		e.holding, e.epoch, e.rev = true, r.rev, r.rev
		e.deadline = time.Time{}
		e.nextRenew = r.req.sentAt.Add(e.cfg.renew)
		e.seen, e.seenAt, e.haveSeen = mine, now, true
		e.extend(now, r.req.sentAt)
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
		if r.rev > e.seen.modRev {
			e.seen, e.seenAt = mine, now
		}
	}
}

// extend moves the deadline to the one a write sent at sentAt earns, and
// (re)acquires the guard if that deadline is still ahead.
func (e *elector) extend(now, sentAt time.Time) {
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
	e.acting = true
	e.calls = append(e.calls, guardCall{acquire: true, epoch: e.epoch, deadline: d})
}

// setEligible says whether this node may hold the singleton (its tracked
// checks pass). A holder that becomes ineligible hands over to next.
func (e *elector) setEligible(now time.Time, ok bool, next string) {
	if ok && !e.eligible {
		e.eligibleAt = now
	}
	e.eligible = ok
	if !ok && e.holding {
		e.handover(now, next)
	}
}

// setRank sets how many eligible candidates rank above this node.
func (e *elector) setRank(rank int) { e.rank = rank }

// handover releases a held singleton: the guard first, then the record,
// naming next ("" for anyone).
func (e *elector) handover(now time.Time, next string) {
	if !e.holding {
		return
	}
	e.release("handover to " + orAnyone(next))
	e.releasing, e.next = true, next
	e.tick(now)
}

func orAnyone(node string) string {
	if node == "" {
		return "any eligible node"
	}
	return node
}

// challengeAt is when this node may try to take the singleton, and whether
// it may at all.
func (e *elector) challengeAt() (time.Time, bool) {
	if !e.eligible || !e.haveSeen || e.holding {
		return time.Time{}, false
	}
	rankDelay := time.Duration(e.rank) * e.cfg.rankStep
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
	return from.Add(time.Duration(e.rank) * e.cfg.lease / 2), true
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
	return at
}

// tick lets time pass: it fences a holder whose deadline has come and sends
// whatever write is due.
func (e *elector) tick(now time.Time) {
	if e.acting && !now.Before(e.deadline) {
		e.release("lease not renewed before its deadline")
	}
	lease := e.cfg.lease.Milliseconds()
	switch {
	case e.holding && e.releasing:
		if e.inflight > 0 {
			return // a renewal applied after the release would fail it
		}
		e.send(now, request{kind: opRelease, expect: e.rev, rec: Record{LeaseMS: lease, Next: e.next}, timeout: e.cfg.lease})
	case e.holding && !now.Before(e.nextRenew) && e.inflight < e.maxInFlight():
		e.nextRenew = now.Add(e.cfg.renew)
		// Past the deadline an answer no longer keeps the guard; a
		// request that takes longer is abandoned and the next one sent.
		timeout := e.cfg.lease
		if e.acting {
			timeout = max(e.deadline.Sub(now), e.cfg.renew)
		}
		e.send(now, request{kind: opRenew, expect: e.rev, rec: Record{Holder: e.cfg.node, Epoch: e.epoch, LeaseMS: lease}, timeout: timeout})
	case !e.holding && e.inflight == 0:
		at, ok := e.challengeAt()
		if !ok || now.Before(at) {
			return
		}
		e.send(now, request{kind: opAcquire, expect: e.seen.modRev, absent: !e.seen.exists(), rec: Record{Holder: e.cfg.node, LeaseMS: lease}, timeout: e.cfg.lease})
	}
}

func (e *elector) send(now time.Time, r request) {
	e.sent++
	r.id, r.sentAt = e.sent, now
	e.inflight++
	e.reqs = append(e.reqs, r)
}
