package coord

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// choice is the part of the elector that decides who competes and when:
// the candidates and their rank, the settling of a starting node, planned
// handovers and preemption. Like the rest of the elector it reads no clock.
type choice struct {
	// want is the eligibility the owner's user asks for; the lease rules
	// get it (elector.eligible) once the node has settled.
	want bool
	// settleAt is a lease after the start: candidates starting together
	// see each other's candidacy by then, and the best ranked wins the
	// first race.
	settleAt time.Time
	// cands are the candidacies published in etcd, this node's included;
	// candSeenAt is when this node's eligible candidacy was first seen.
	cands      map[string]Candidate
	candSeenAt time.Time
	// movedTo is the node the latest handover request named: a node the
	// operator moved the singleton to keeps it against preemption until
	// the next move. handoverRev is the revision of the last request acted
	// on.
	movedTo     string
	handoverRev int64
}

func newChoice() choice { return choice{cands: map[string]Candidate{}} }

// start marks the owner's start: an eligible node competes only a lease
// later.
func (e *elector) start(now time.Time) { e.settleAt = now.Add(e.cfg.lease) }

// setWant says whether this node may hold the singleton (its tracked checks
// pass). Losing eligibility counts at once; gaining it once settled.
func (e *elector) setWant(now time.Time, ok bool) {
	if e.want == ok {
		return
	}
	e.want = ok
	e.info("eligibility changed", "eligible", ok)
	e.settle(now)
}

// setCandidates takes candidacies from etcd: the complete set when reset,
// otherwise changes (a nil value: the candidacy is gone).
func (e *elector) setCandidates(now time.Time, reset bool, changes map[string]*Candidate) {
	if reset {
		clear(e.cands)
	}
	for node, c := range changes {
		if c == nil {
			delete(e.cands, node)
		} else {
			e.cands[node] = *c
		}
	}
	if c, ok := e.cands[e.cfg.node]; !ok || !c.Eligible {
		e.candSeenAt = time.Time{}
	} else if e.candSeenAt.IsZero() {
		e.candSeenAt = now
	}
}

// settledAt is when an eligible node may start competing: a lease after it
// started, and a renewal period after it saw its own candidacy, so that
// candidacies written at the same time as its own have arrived and the rank
// is right. Before it sees its own candidacy it cannot tell (ok is false).
func (e *elector) settledAt() (time.Time, bool) {
	if seen := e.seen; seen.exists() && !seen.held() && seen.rec.Next == e.cfg.node {
		// Handed to this node by name: there is no race to rank.
		return time.Time{}, true
	}
	if e.candSeenAt.IsZero() {
		return time.Time{}, false
	}
	at := e.candSeenAt.Add(e.cfg.renew)
	if at.Before(e.settleAt) {
		at = e.settleAt
	}
	return at, true
}

// settle hands the wanted eligibility to the lease rules once the node has
// settled (at once for a loss of eligibility).
func (e *elector) settle(now time.Time) {
	if e.want == e.eligible {
		return
	}
	if e.want {
		at, ok := e.settledAt()
		if !ok || now.Before(at) {
			return
		}
	}
	e.setEligible(now, e.want, e.best())
}

// handoverRequested takes a handover request from etcd, to node to ("" for
// the best eligible candidate), written at revision rev. Only the holder
// acts on it, and only on a request newer than its holding.
func (e *elector) handoverRequested(now time.Time, to string, rev int64) {
	e.movedTo = to
	if rev <= e.handoverRev || !e.holding || rev <= e.epoch {
		return
	}
	e.handoverRev = rev
	target := to
	if target == "" {
		target = e.best()
	}
	switch c, ok := e.cands[target]; {
	case target == "":
		e.warn("handover requested to the best candidate, but no other node is eligible; ignored")
	case target == e.cfg.node:
	case !ok || !c.Eligible:
		// Handing over to a node that would not take it leaves the
		// singleton unheld until a lease runs out: refuse.
		e.warn("handover requested to a node that is not an eligible candidate; ignored", "to", target)
	default:
		e.info("handover requested", "to", target, "asked_for", orNone(to))
		e.handover(now, target)
	}
}

// preemptTarget is the candidate this holder would hand over to under
// preempt, if any: an eligible one of higher priority, unless the operator
// moved the singleton here.
func (e *elector) preemptTarget() (Candidate, bool) {
	if !e.cfg.preempt || !e.acting || e.releasing || e.movedTo == e.cfg.node {
		return Candidate{}, false
	}
	c, ok := e.cands[e.best()]
	return c, ok && c.Priority > e.cfg.priority
}

// preemptIfDue hands the singleton to an eligible candidate of higher
// priority when the configuration asks for it. A new holder waits out a
// candidacy's lease first: the node it took over from may have died still
// listed as the better candidate.
func (e *elector) preemptIfDue(now time.Time) {
	c, ok := e.preemptTarget()
	if !ok || now.Sub(e.actingSince) < e.cfg.preemptDelay {
		return
	}
	e.info("preempted by a candidate of higher priority", "to", c.Node, "priority", c.Priority)
	e.handover(now, c.Node)
}

// choiceWake is when a decision here falls due without other input: the
// node settles, or may preempt (zero: none).
func (e *elector) choiceWake() time.Time {
	if e.want && !e.eligible {
		if at, ok := e.settledAt(); ok {
			return at
		}
	}
	if _, ok := e.preemptTarget(); ok {
		return e.actingSince.Add(e.cfg.preemptDelay)
	}
	return time.Time{}
}

// rank counts the eligible candidates that rank above this node: higher
// priority, or equal priority and a smaller name. The record's holder does
// not count: by the time a challenger may write, it has failed to renew,
// and it does not race to take over its own record.
func (e *elector) rank() int {
	holder := ""
	if e.seen.held() {
		holder = e.seen.rec.Holder
	}
	n := 0
	for _, c := range e.cands {
		if c.Node != e.cfg.node && c.Node != holder && c.Eligible && e.above(c) {
			n++
		}
	}
	return n
}

func (e *elector) above(c Candidate) bool {
	return c.Priority > e.cfg.priority || c.Priority == e.cfg.priority && c.Node < e.cfg.node
}

// best is the best-ranked eligible candidate other than this node ("" if
// none).
func (e *elector) best() string {
	var cs []Candidate
	for _, c := range e.cands {
		if c.Node != e.cfg.node && c.Eligible {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return ""
	}
	slices.SortFunc(cs, func(a, b Candidate) int {
		return cmp.Or(cmp.Compare(b.Priority, a.Priority), strings.Compare(a.Node, b.Node))
	})
	return cs[0].Node
}
