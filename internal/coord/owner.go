package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// OwnerConfig configures one node's side of a singleton's ownership record.
type OwnerConfig struct {
	Client *clientv3.Client
	// Alternates are further clients, each of one other member. Every
	// write goes out over Client and every alternate at once, and the
	// first answer counts: a write held up on one connection (a lost
	// packet waits for TCP's retransmission timeout, 200ms, and 400ms more
	// if the retransmission is lost too) or behind one slow member is
	// answered through another. The copies carry the same compare
	// revision, so at most one of them is applied.
	Alternates []*clientv3.Client
	// Prefix is the singleton's key prefix, such as
	// /haven/shop/owners/vip/web (see OwnerPrefix). The record lives at
	// Prefix/record, candidates at Prefix/candidates/NODE and handover
	// requests at Prefix/handover.
	Prefix string
	Node   string
	// Member, when set, makes Node a group of processes that hold the
	// record together, this one named Member: the active region's record
	// is held by the region, renewed by whichever of its nodes leads its
	// database now. A member that wants the singleton while the record
	// names its group joins the holding without waiting out the lease; one
	// that stops wanting it, or stops, leaves without releasing the
	// record. Each member acts only until its own writes' deadlines, as
	// any holder. Handover releases it for the whole group.
	Member string
	// Priority ranks candidates: the highest eligible one is preferred.
	Priority int
	// Preempt makes a holder hand over to an eligible candidate of higher
	// priority (keepalived's preempt; false is its nopreempt).
	Preempt bool
	// Lease is how long a successful renewal keeps the holder in place
	// (default 500ms).
	Lease time.Duration
	// Renew is the renewal period (default Lease/4).
	Renew time.Duration
	// Drift is the bound on clock-rate difference between nodes, as a
	// fraction (default 0.02).
	Drift float64
	// RankStep delays a challenger per better-ranked eligible candidate
	// (default 25ms).
	RankStep time.Duration
	Guard    Guard
	Logger   *slog.Logger
	// Registerer, when set, exports the owner's metrics (write latency,
	// missed deadlines), labelled with its singleton; owners may share
	// one.
	Registerer prometheus.Registerer
}

// candidacyTTL is the lease of a candidacy record: a dead candidate stops
// counting this long after its last keepalive, and a new holder does not
// preempt for preemptDelay, so it never yields to one.
const (
	candidacyTTL = 2 * time.Second
	preemptDelay = candidacyTTL + time.Second
)

// OwnerPrefix is the key prefix of a singleton: kind is what it is (vip,
// pg), name which one.
func OwnerPrefix(cluster, kind, name string) string {
	return fmt.Sprintf("/haven/%s/owners/%s/%s", cluster, kind, name)
}

// Candidate is a node that may hold a singleton, as it publishes itself.
type Candidate struct {
	Node     string `json:"node"`
	Priority int    `json:"priority"`
	Eligible bool   `json:"eligible"`
}

// OwnerStatus is a snapshot of a singleton as one node sees it.
type OwnerStatus struct {
	// Holder is the node the record names ("" when released or never
	// held) and Epoch its fencing epoch.
	Holder string `json:"holder"`
	Epoch  int64  `json:"epoch"`
	// Acting says whether this node acts as the holder now.
	Acting bool `json:"acting"`
	// Deadline is when this node stops acting unless it renews.
	Deadline time.Time `json:"deadline,omitzero"`
	// Present says the record exists: it was held once (and not deleted
	// by hand). Next is the node a released record was handed to.
	Present    bool        `json:"present"`
	Next       string      `json:"next,omitempty"`
	Eligible   bool        `json:"eligible"`
	Candidates []Candidate `json:"candidates"`
}

// Owner takes part in a singleton's ownership: it competes for the record
// while its node is eligible, renews it while it holds it, and drives its
// Guard. It is the driver of an elector (elector.go), which makes every
// decision: Owner carries the elector's requests to etcd, feeds it what the
// watch and the answers say, and keeps its timer. Run it with Run; the other
// methods may be called from any goroutine.
type Owner struct {
	cfg     OwnerConfig
	log     *slog.Logger
	clients []*clientv3.Client // Client, then Alternates

	inputs  chan func(now time.Time)
	results chan result

	mu     sync.Mutex
	status OwnerStatus
	// changed is closed and replaced whenever status changes.
	changed chan struct{}

	e *elector
	// cands are the candidacies as published, by their name under
	// Prefix/candidates/ (mergeCandidates); only Run's goroutine uses it.
	cands map[string]Candidate
	// done is closed when Run returns, so callers never block on a loop
	// that is gone.
	done chan struct{}

	metrics   *ownerMetrics
	singleton string // the metrics' label

	// troubleMu guards heldSince and lastTrouble: when this owner last
	// acquired (zero while it does not hold), and, by the endpoint of the
	// client it went through, when a copy of a write last failed or took
	// longer than a renewal period.
	troubleMu   sync.Mutex
	heldSince   time.Time
	lastTrouble map[string]time.Time

	// candMu guards the candidacy the publisher writes next.
	candMu    sync.Mutex
	candWant  Candidate
	candLease clientv3.LeaseID
	candKick  chan struct{}
}

// NewOwner checks cfg and fills its defaults; it starts nothing.
func NewOwner(cfg OwnerConfig) (*Owner, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("coord: owner: no etcd client")
	case cfg.Prefix == "" || cfg.Node == "":
		return nil, errors.New("coord: owner: prefix and node are required")
	case cfg.Guard == nil:
		return nil, errors.New("coord: owner: no guard")
	}
	if cfg.Lease <= 0 {
		cfg.Lease = 500 * time.Millisecond
	}
	if cfg.Renew <= 0 {
		cfg.Renew = cfg.Lease / 4
	}
	if cfg.Renew >= cfg.Lease {
		return nil, fmt.Errorf("coord: owner %s: renew period %v must be shorter than the lease %v", cfg.Prefix, cfg.Renew, cfg.Lease)
	}
	if cfg.Drift <= 0 {
		cfg.Drift = 0.02
	}
	if cfg.RankStep <= 0 {
		cfg.RankStep = 25 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	metrics, err := newOwnerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	e := newElector(electorConfig{
		node: cfg.Node, priority: cfg.Priority, preempt: cfg.Preempt,
		lease: cfg.Lease, renew: cfg.Renew, drift: cfg.Drift, rankStep: cfg.RankStep,
		preemptDelay: preemptDelay,
		// Random, so that a restarted process never takes its previous
		// process's writes for its own (see Record.Seq); below 2^53 so
		// that any JSON reader keeps it exact.
		firstID: 1 + rand.Uint64N(1<<52),
		group:   cfg.Member != "",
	})
	return &Owner{
		cfg:       cfg,
		log:       ownerLogger(cfg),
		metrics:   metrics,
		singleton: singletonLabel(cfg.Prefix),
		clients:   append([]*clientv3.Client{cfg.Client}, cfg.Alternates...),
		inputs:    make(chan func(time.Time), 16),
		results:   make(chan result, 4),
		changed:   make(chan struct{}),
		e:         e,
		done:      make(chan struct{}),
		candKick:  make(chan struct{}, 1),

		lastTrouble: map[string]time.Time{},
	}, nil
}

func (o *Owner) recordKey() string { return o.cfg.Prefix + "/record" }
func (o *Owner) candidateKey() string {
	if o.cfg.Member != "" {
		return o.cfg.Prefix + "/candidates/" + o.cfg.Node + "/" + o.cfg.Member
	}
	return o.cfg.Prefix + "/candidates/" + o.cfg.Node
}

func ownerLogger(cfg OwnerConfig) *slog.Logger {
	if cfg.Member != "" {
		return cfg.Logger.With("singleton", cfg.Prefix, "group", cfg.Node)
	}
	return cfg.Logger.With("singleton", cfg.Prefix)
}
func (o *Owner) handoverKey() string { return o.cfg.Prefix + "/handover" }

// SetEligible says whether this node may hold the singleton. A holder that
// becomes ineligible hands over to the best eligible candidate.
func (o *Owner) SetEligible(ok bool) {
	o.do(func(now time.Time) {
		if o.e.want == ok {
			return
		}
		o.e.setWant(now, ok)
		o.setCandidate()
	})
}

// Handover hands a held singleton to node to ("" for the best eligible
// candidate) and waits until to holds it, or the record is released when
// to is "". It fails at once when this node is not the holder.
func (o *Owner) Handover(ctx context.Context, to string) error {
	errc := make(chan error, 1)
	o.do(func(now time.Time) {
		if !o.e.holding {
			errc <- fmt.Errorf("coord: handover %s: this node (%s) does not hold it; the holder is %s", o.cfg.Prefix, o.cfg.Node, orNone(o.e.seen.rec.Holder))
			return
		}
		if to == "" {
			to = o.e.best()
		}
		o.e.handover(now, to)
		errc <- nil
	})
	select {
	case err := <-errc:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	return o.WaitFor(ctx, func(s OwnerStatus) bool {
		return !s.Acting && (to == "" && s.Holder != o.cfg.Node || to != "" && s.Holder == to)
	})
}

// RequestHandover asks whichever node holds the singleton at prefix to hand
// it to node to ("" for the best eligible candidate), through etcd: any
// agent can serve `haven vip move` and `haven pg switchover`.
func RequestHandover(ctx context.Context, cli *clientv3.Client, prefix, to string) error {
	b, err := json.Marshal(struct {
		To string `json:"to"`
	}{to})
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, prefix+"/handover", string(b)); err != nil {
		return fmt.Errorf("coord: request handover of %s to %s: %w", prefix, to, err)
	}
	return nil
}

// Status returns what this node knows of the singleton now.
func (o *Owner) Status() OwnerStatus {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.status
	s.Candidates = slices.Clone(s.Candidates)
	return s
}

// WaitFor blocks until cond holds for the status or ctx ends.
func (o *Owner) WaitFor(ctx context.Context, cond func(OwnerStatus) bool) error {
	for {
		o.mu.Lock()
		s, ch := o.status, o.changed
		o.mu.Unlock()
		if cond(s) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("coord: %s: waiting: %w (holder %s, epoch %d)", o.cfg.Prefix, ctx.Err(), orNone(s.Holder), s.Epoch)
		}
	}
}

func (o *Owner) do(f func(now time.Time)) {
	select {
	case o.inputs <- f:
	case <-o.done:
	}
}

// Run takes part in the singleton until ctx ends; then, if it holds it, it
// hands it over to the best candidate (bounded by the lease) before
// returning.
func (o *Owner) Run(ctx context.Context) error {
	defer close(o.done)
	wctx, stopWatch := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWatch()
	updates := make(chan watchUpdate, 16)
	wg.Go(func() { o.watch(wctx, updates) })
	wg.Go(func() { o.keepCandidate(wctx) })
	wg.Go(func() { o.publishCandidates(wctx) })
	o.setCandidate()
	o.e.start(time.Now())
	defer o.setHeld(time.Time{})

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		o.step(time.Now())
		select {
		case <-ctx.Done():
			return o.shutdown(updates)
		case u := <-updates:
			o.apply(time.Now(), u)
		case r := <-o.results:
			o.e.result(time.Now(), r)
		case f := <-o.inputs:
			f(time.Now())
		case <-timer.C:
		}
		o.e.tick(time.Now())
		o.step(time.Now())
		resetTimer(timer, o.e.wake())
	}
}

func resetTimer(t *time.Timer, at time.Time) {
	d := time.Hour
	if !at.IsZero() {
		d = max(time.Until(at), 0)
	}
	t.Reset(d)
}

// shutdown releases a held singleton so a successor need not wait out the
// lease.
func (o *Owner) shutdown(updates <-chan watchUpdate) error {
	if !o.e.holding {
		o.e.release("shutting down")
		o.step(time.Now())
		return nil
	}
	o.e.setWant(time.Now(), false)
	o.step(time.Now())
	deadline := time.NewTimer(o.cfg.Lease)
	defer deadline.Stop()
	for o.e.holding {
		select {
		case r := <-o.results:
			o.e.result(time.Now(), r)
		case u := <-updates:
			o.apply(time.Now(), u)
		case <-deadline.C:
			o.log.Warn("shutdown: the record was not released in time; successors wait out the lease")
			return nil
		}
		o.e.tick(time.Now())
		o.step(time.Now())
	}
	o.log.Info("released on shutdown", "event", "owner")
	return nil
}

// step carries out what the elector asked for and publishes the status.
func (o *Owner) step(now time.Time) {
	reqs, calls, notes := o.e.take()
	for _, n := range notes {
		if n.warn {
			o.log.Warn(n.msg, n.args...)
		} else {
			o.log.Info(n.msg, n.args...)
		}
	}
	for _, c := range calls {
		switch {
		case c.acquire:
			o.log.Info("acquired", "event", "owner", "epoch", c.epoch, "deadline_in", c.deadline.Sub(now))
			o.setHeld(now)
			o.cfg.Guard.Acquire(c.epoch, c.deadline)
		case c.extend:
			o.cfg.Guard.Extend(c.deadline)
		default:
			o.log.Info("released", "event", "owner", "reason", c.reason)
			if c.reason == reasonMissedDeadline {
				o.metrics.missed.WithLabelValues(o.singleton).Inc()
			}
			o.setHeld(time.Time{})
			o.cfg.Guard.Release(c.reason)
		}
	}
	for _, r := range reqs {
		go o.send(r)
	}
	o.publish()
}

func (o *Owner) publish() {
	s := OwnerStatus{
		Holder:   o.e.seen.rec.Holder,
		Epoch:    o.e.seen.epoch(),
		Acting:   o.e.acting,
		Eligible: o.e.want,
		Present:  o.e.seen.exists(),
		Next:     o.e.seen.rec.Next,
	}
	if !o.e.seen.exists() || s.Holder == "" {
		s.Epoch = 0
	}
	if o.e.acting {
		s.Deadline = o.e.deadline
	}
	for _, c := range o.e.cands {
		s.Candidates = append(s.Candidates, c)
	}
	slices.SortFunc(s.Candidates, func(a, b Candidate) int { return strings.Compare(a.Node, b.Node) })
	o.mu.Lock()
	defer o.mu.Unlock()
	if s.Holder == o.status.Holder && s.Epoch == o.status.Epoch && s.Acting == o.status.Acting && s.Present == o.status.Present && s.Next == o.status.Next &&
		s.Deadline.Equal(o.status.Deadline) && s.Eligible == o.status.Eligible && slices.Equal(s.Candidates, o.status.Candidates) {
		return
	}
	o.status = s
	close(o.changed)
	o.changed = make(chan struct{})
}

// send performs one compare-and-swap write over every client at once and
// reports the first answer: a write applied, or a comparison that failed
// (the record it saw says what happened, this request's other copy
// included, by its Seq). When no copy is answered, the request's outcome is
// unknown. The other copies run to their end, within the request's
// timeout, so that each one's delay is known (CleanSince).
func (o *Owner) send(r request) {
	ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(context.Background()), r.timeout)
	defer cancel()
	began := time.Now()
	answers := make(chan result, len(o.clients))
	for _, cli := range o.clients {
		go func() { answers <- o.write(ctx, cli, r) }()
	}
	res, reported := result{req: r}, false
	for range o.clients {
		a := <-answers
		switch {
		case reported:
		case a.known:
			o.metrics.writes.WithLabelValues(o.singleton, r.kind.String()).Observe(time.Since(began).Seconds())
			o.report(a)
			reported = true
		default:
			res.err = a.err
		}
	}
	if !reported {
		o.report(res)
	}
}

func (o *Owner) report(res result) {
	select {
	case o.results <- res:
	case <-o.done:
	}
}

// CleanSince is since when this owner has held the record with every copy
// of its writes that went through a client of endpoint answered within a
// renewal period: its acquisition, or the last copy that failed or was
// slow (a lost packet on the way, a member that is down, lagging or
// applying a backlog). Zero while it does not hold, and for an endpoint
// that is none of the owner's clients'. A holder that wants to do
// something that stalls etcd's writes for a moment and depends on one
// member (moving etcd's leadership to it) waits for a long clean spell
// through that member: on lossy links, or to a member still catching up,
// the stall could outlast the lease. The spell starts at the acquisition
// because a candidate writes too rarely to vouch for a route.
func (o *Owner) CleanSince(endpoint string) time.Time {
	o.troubleMu.Lock()
	defer o.troubleMu.Unlock()
	if o.heldSince.IsZero() || !slices.ContainsFunc(o.clients, func(c *clientv3.Client) bool { return clientEndpoint(c) == endpoint }) {
		return time.Time{}
	}
	if t := o.lastTrouble[endpoint]; t.After(o.heldSince) {
		return t
	}
	return o.heldSince
}

// setHeld records that this owner holds since t (zero: it does not).
func (o *Owner) setHeld(t time.Time) {
	o.troubleMu.Lock()
	o.heldSince = t
	o.troubleMu.Unlock()
}

// clientEndpoint names a client by its first endpoint: the owner's clients
// each talk to one member, but for a client of every member.
func clientEndpoint(c *clientv3.Client) string {
	if eps := c.Endpoints(); len(eps) > 0 {
		return eps[0]
	}
	return ""
}

// noteCopy records how one copy of a write through cli went.
func (o *Owner) noteCopy(cli *clientv3.Client, took time.Duration, err error) {
	if err == nil && took <= o.cfg.Renew {
		return
	}
	o.troubleMu.Lock()
	o.lastTrouble[clientEndpoint(cli)] = time.Now()
	o.troubleMu.Unlock()
}

// write sends one copy of r through cli.
func (o *Owner) write(ctx context.Context, cli *clientv3.Client, r request) result {
	key := o.recordKey()
	cond := clientv3.Compare(clientv3.ModRevision(key), "=", r.expect)
	if r.absent {
		cond = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	val, err := json.Marshal(r.rec)
	if err != nil {
		panic(err) // a Record always marshals
	}
	start := time.Now()
	resp, err := cli.Txn(ctx).If(cond).Then(clientv3.OpPut(key, string(val))).Else(clientv3.OpGet(key)).Commit()
	o.noteCopy(cli, time.Since(start), err)
	res := result{req: r, err: err}
	switch {
	case err != nil:
		if ctx.Err() == nil {
			o.log.Debug("write failed", "op", r.kind, "via", cli.Endpoints(), "err", err)
		}
	case resp.Succeeded:
		res.known, res.ok, res.rev = true, true, resp.Header.Revision
	default:
		res.known = true
		res.current = observation{modRev: resp.Header.Revision}
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
			obs, derr := decodeObservation(kvs[0].Value, kvs[0].ModRevision)
			if derr != nil {
				o.log.Warn("unreadable ownership record", "err", derr)
			}
			obs.present = true
			res.current = obs
		}
	}
	return res
}

// watchUpdate is what the watch learnt: a new record version, candidate
// changes, or a handover request.
type watchUpdate struct {
	obs      *observation
	cands    map[string]*Candidate // nil value: candidate gone
	handover *handoverRequest
	reset    bool // cands is the complete set
}

type handoverRequest struct {
	to  string
	rev int64
}

// watch reads the singleton's keys and follows them, starting over after a
// broken watch (a compaction, a member that lost its leader).
func (o *Owner) watch(ctx context.Context, updates chan<- watchUpdate) {
	for ctx.Err() == nil {
		rev, err := o.load(ctx, updates)
		if err == nil {
			err = o.follow(ctx, rev, updates)
		}
		if ctx.Err() != nil {
			return
		}
		o.log.Debug("watch restarts", "err", err)
		select {
		case <-time.After(o.cfg.Renew):
		case <-ctx.Done():
		}
	}
}

func (o *Owner) load(ctx context.Context, updates chan<- watchUpdate) (int64, error) {
	rctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 2*o.cfg.Lease)
	defer cancel()
	resp, err := o.cfg.Client.Get(rctx, o.cfg.Prefix+"/", clientv3.WithPrefix())
	if err != nil {
		return 0, err
	}
	u := watchUpdate{obs: &observation{modRev: resp.Header.Revision}, cands: map[string]*Candidate{}, reset: true}
	for _, kv := range resp.Kvs {
		o.decode(kv, u.obs, &u)
	}
	select {
	case updates <- u:
	case <-ctx.Done():
	}
	return resp.Header.Revision, nil
}

func (o *Owner) follow(ctx context.Context, rev int64, updates chan<- watchUpdate) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range o.cfg.Client.Watch(wctx, o.cfg.Prefix+"/", clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			u := watchUpdate{cands: map[string]*Candidate{}}
			if ev.Type == mvccpb.DELETE {
				if string(ev.Kv.Key) == o.recordKey() {
					u.obs = &observation{modRev: ev.Kv.ModRevision}
				} else if name, ok := strings.CutPrefix(string(ev.Kv.Key), o.cfg.Prefix+"/candidates/"); ok {
					u.cands[name] = nil
				}
			} else {
				o.decode(ev.Kv, nil, &u)
			}
			select {
			case updates <- u:
			case <-ctx.Done():
				return nil
			}
		}
	}
	return errors.New("watch closed")
}

// decode files one key-value into u; into, if given, receives the record.
func (o *Owner) decode(kv *mvccpb.KeyValue, into *observation, u *watchUpdate) {
	key := string(kv.Key)
	switch {
	case key == o.recordKey():
		obs, err := decodeObservation(kv.Value, kv.ModRevision)
		if err != nil {
			o.log.Warn("unreadable ownership record; treating it as held", "err", err)
			obs.rec.Holder = "?"
		}
		obs.present = true
		if into != nil {
			*into = obs
		} else {
			u.obs = &obs
		}
	case key == o.handoverKey():
		var h struct {
			To string `json:"to"`
		}
		if json.Unmarshal(kv.Value, &h) == nil {
			u.handover = &handoverRequest{to: h.To, rev: kv.ModRevision}
		}
	default:
		name, ok := strings.CutPrefix(key, o.cfg.Prefix+"/candidates/")
		var c Candidate
		if ok && json.Unmarshal(kv.Value, &c) == nil {
			c.Node, _, _ = strings.Cut(name, "/")
			u.cands[name] = &c
		}
	}
}

// apply feeds a watch update to the elector.
func (o *Owner) apply(now time.Time, u watchUpdate) {
	if u.reset || len(u.cands) > 0 {
		o.e.setCandidates(now, true, o.mergeCandidates(u.reset, u.cands))
	}
	if u.obs != nil {
		o.e.observe(now, *u.obs)
	}
	if h := u.handover; h != nil {
		o.e.handoverRequested(now, h.to, h.rev)
	}
}

// mergeCandidates files the candidacies of an update (keyed by their
// name under Prefix/candidates/: a node, or GROUP/MEMBER) and returns the
// complete set by node: a group is one candidate, eligible when any of its
// members is, with the best priority among them.
func (o *Owner) mergeCandidates(reset bool, changes map[string]*Candidate) map[string]*Candidate {
	if reset || o.cands == nil {
		o.cands = map[string]Candidate{}
	}
	for name, c := range changes {
		if c == nil {
			delete(o.cands, name)
		} else {
			o.cands[name] = *c
		}
	}
	out := map[string]*Candidate{}
	for _, c := range o.cands {
		m, ok := out[c.Node]
		switch {
		case !ok:
			out[c.Node] = &c
		case c.Eligible && !m.Eligible:
			*m = c
		case c.Eligible == m.Eligible && c.Priority > m.Priority:
			m.Priority = c.Priority
		}
	}
	return out
}

// keepCandidate keeps an etcd lease for this node's candidacy, so a node
// that dies stops counting, and takes a new one after a lost lease.
func (o *Owner) keepCandidate(ctx context.Context) {
	for ctx.Err() == nil {
		s, err := concurrency.NewSession(o.cfg.Client, concurrency.WithTTL(int(candidacyTTL/time.Second)), concurrency.WithContext(ctx))
		if err != nil {
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
			continue
		}
		o.candMu.Lock()
		o.candLease = s.Lease()
		o.candMu.Unlock()
		o.kickCandidate()
		select {
		case <-s.Done():
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), time.Second)
			s.Orphan()
			_, _ = o.cfg.Client.Revoke(rctx, s.Lease())
			cancel()
		}
	}
}

// setCandidate records the candidacy to publish; it runs on the loop.
func (o *Owner) setCandidate() {
	o.candMu.Lock()
	o.candWant = Candidate{Node: o.cfg.Node, Priority: o.cfg.Priority, Eligible: o.e.want}
	o.candMu.Unlock()
	o.kickCandidate()
}

func (o *Owner) kickCandidate() {
	select {
	case o.candKick <- struct{}{}:
	default:
	}
}

// publishCandidates writes the latest candidacy whenever it or the lease
// changes, one write at a time and fenced (FencedPut), so that a write that
// timed out and lands late cannot undo a newer one.
func (o *Owner) publishCandidates(ctx context.Context) {
	var rev int64 // the candidacy's revision as last written or seen
	for {
		select {
		case <-o.candKick:
		case <-ctx.Done():
			return
		}
		o.candMu.Lock()
		c, lease := o.candWant, o.candLease
		o.candMu.Unlock()
		if lease == 0 {
			continue
		}
		b, _ := json.Marshal(c)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := FencedPut(pctx, o.cfg.Client, o.candidateKey(), string(b), &rev, clientv3.WithLease(lease))
		cancel()
		if errors.Is(err, ErrKeyMoved) {
			// Again with the revision it found (soon: two owners of one
			// node's name would otherwise write in turn at full speed).
			time.AfterFunc(retryMin, o.kickCandidate)
			continue
		}
		if err != nil && ctx.Err() == nil {
			o.log.Warn("publish candidacy", "err", err)
			time.AfterFunc(time.Second, o.kickCandidate)
		}
	}
}
