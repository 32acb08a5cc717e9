package coord

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/testenv"
)

// recGuard records what an Owner asked of its guard, with the times, so a
// test can check that two nodes never acted at once.
type recGuard struct {
	node    string
	mu      sync.Mutex
	log     *[]guardSpan
	cur     *guardSpan
	extends int // renewals that moved the deadline
}

// guardSpan is one period of acting: from Acquire to the earlier of Release
// and the last deadline.
type guardSpan struct {
	node     string
	epoch    int64
	from     time.Time
	deadline time.Time
	released time.Time
}

func (s guardSpan) end() time.Time {
	if !s.released.IsZero() && s.released.Before(s.deadline) {
		return s.released
	}
	return s.deadline
}

func (g *recGuard) Acquire(epoch int64, deadline time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cur = &guardSpan{node: g.node, epoch: epoch, from: time.Now(), deadline: deadline}
}

func (g *recGuard) Extend(deadline time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur != nil {
		g.cur.deadline = deadline
		g.extends++
	}
}

func (g *recGuard) Release(string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cur != nil {
		g.cur.released = time.Now()
		*g.log = append(*g.log, *g.cur)
		g.cur = nil
	}
}

// acting reports whether the guard acts now.
func (g *recGuard) acting() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cur != nil && time.Now().Before(g.cur.deadline)
}

type ownerNode struct {
	o      *Owner
	g      *recGuard
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

type ownerHarness struct {
	t      *testing.T
	mu     sync.Mutex
	spans  []guardSpan
	nodes  map[string]*ownerNode
	eps    []string
	prefix string
	reg    prometheus.Registerer // the owners' metrics, when set
}

func newOwnerHarness(t *testing.T) *ownerHarness {
	t.Helper()
	r := oneMember(t, testLog(t))
	return &ownerHarness{t: t, nodes: map[string]*ownerNode{}, eps: r.m.Endpoints(), prefix: OwnerPrefix("shop", "vip", "web")}
}

// ownerTestLease is the harness's lease: long enough that a renewal held
// up by a busy machine (the race detector, other tests) does not end a
// holding that no fault ended, which the tests count as a failure.
const ownerTestLease = time.Second

func (h *ownerHarness) start(node string, priority int, preempt bool, alternates ...*clientv3.Client) *ownerNode {
	h.t.Helper()
	return h.startOwner(OwnerConfig{Node: node, Priority: priority, Preempt: preempt, Alternates: alternates}, node)
}

// startMember starts member of group; the group's members share one
// guard name, so that checkNoOverlap counts the group as one holder.
func (h *ownerHarness) startMember(group, member string, priority int) *ownerNode {
	h.t.Helper()
	return h.startOwner(OwnerConfig{Node: group, Member: member, Priority: priority}, member)
}

func (h *ownerHarness) startOwner(cfg OwnerConfig, name string) *ownerNode {
	h.t.Helper()
	cli := newTestClient(h.t, testLog(h.t), h.eps, nil)
	g := &recGuard{node: cfg.Node}
	h.mu.Lock()
	g.log = &h.spans
	h.mu.Unlock()
	cfg.Client, cfg.Prefix, cfg.Lease, cfg.Guard, cfg.Logger = cli, h.prefix, ownerTestLease, &lockedGuard{g: g, mu: &h.mu}, testLog(h.t)
	cfg.Registerer = h.reg
	o, err := NewOwner(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &ownerNode{o: o, g: g, cli: cli, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- o.Run(ctx) }()
	h.t.Cleanup(func() { n.stop(h.t) })
	h.nodes[name] = n
	return n
}

// lockedGuard serialises the guards' shared span log.
type lockedGuard struct {
	g  *recGuard
	mu *sync.Mutex
}

func (l *lockedGuard) Acquire(e int64, d time.Time) { l.g.Acquire(e, d) }
func (l *lockedGuard) Extend(d time.Time)           { l.g.Extend(d) }
func (l *lockedGuard) Release(r string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.g.Release(r)
}

func (n *ownerNode) stop(t *testing.T) {
	n.once.Do(func() {
		n.cancel()
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			t.Errorf("owner did not stop within 10s")
		}
	})
}

// holder waits until exactly one node acts and returns it.
func (h *ownerHarness) holder(timeout time.Duration) string {
	h.t.Helper()
	return h.waitHolder("", timeout)
}

// waitHolder waits until exactly one node, want if given, acts.
func (h *ownerHarness) waitHolder(want string, timeout time.Duration) string {
	h.t.Helper()
	var acting []string
	testenv.Poll(h.t, timeout, "a single holder "+want, func() (bool, string) {
		acting = acting[:0]
		for name, n := range h.nodes {
			if n.g.acting() {
				acting = append(acting, name)
			}
		}
		return len(acting) == 1 && (want == "" || acting[0] == want), fmt.Sprint("acting: ", acting)
	})
	return acting[0]
}

// checkNoOverlap fails if two nodes' acting spans overlap, counting a span
// still open as acting until its deadline.
func (h *ownerHarness) checkNoOverlap() {
	h.t.Helper()
	h.mu.Lock()
	all := slices.Clone(h.spans)
	h.mu.Unlock()
	for _, n := range h.nodes {
		n.g.mu.Lock()
		if n.g.cur != nil {
			all = append(all, *n.g.cur)
		}
		n.g.mu.Unlock()
	}
	slices.SortFunc(all, func(a, b guardSpan) int { return a.from.Compare(b.from) })
	for i := 1; i < len(all); i++ {
		prev, cur := all[i-1], all[i]
		if prev.node != cur.node && cur.from.Before(prev.end()) {
			h.t.Errorf("%s acted from %s (epoch %d) while %s acted until %s (epoch %d)",
				cur.node, cur.from.Format("15:04:05.000"), cur.epoch, prev.node, prev.end().Format("15:04:05.000"), prev.epoch)
		}
		if cur.epoch < prev.epoch {
			h.t.Errorf("epoch went backwards: %d after %d", cur.epoch, prev.epoch)
		}
	}
}

// waitRenewals waits until node's guard has been extended n times.
func (h *ownerHarness) waitRenewals(node string, n int) {
	h.t.Helper()
	g := h.nodes[node].g
	testenv.Poll(h.t, 10*time.Second, fmt.Sprintf("%s renews %d times", node, n), func() (bool, string) {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.extends >= n, fmt.Sprintf("%d renewals", g.extends)
	})
}

// ended counts the holdings that have ended.
func (h *ownerHarness) ended() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.spans)
}

// startPair starts n1 and n2 with the given priorities, both eligible, and
// waits until n1 holds the singleton.
func (h *ownerHarness) startPair(p1, p2 int, preempt bool) (a, b *ownerNode) {
	h.t.Helper()
	a = h.start("n1", p1, preempt)
	b = h.start("n2", p2, preempt)
	a.o.SetEligible(true)
	b.o.SetEligible(true)
	if got := h.holder(5 * time.Second); got != "n1" {
		h.t.Fatalf("holder %s, want n1 (priority %d against %d; the smaller name ranks first on a tie)", got, p1, p2)
	}
	return a, b
}

func TestOwnerOneHolderAndGracefulHandover(t *testing.T) {
	h := newOwnerHarness(t)
	h.startPair(100, 100, false)
	first := "n1"
	h.waitRenewals(first, 8)
	if ended := h.ended(); ended != 0 {
		t.Fatalf("%d holdings ended during 8 renewals without a fault", ended)
	}
	// A graceful stop releases the record naming the successor, which
	// takes it without waiting out the lease.
	start := time.Now()
	h.nodes[first].stop(t)
	delete(h.nodes, first)
	next := h.holder(5 * time.Second)
	t.Logf("graceful stop of %s: %s acts %v later", first, next, time.Since(start))
	// The record in etcd names the holder first; its own status follows
	// once its loop has taken the write's answer (seen in CI, under load,
	// a millisecond behind).
	testenv.Poll(t, 2*time.Second, next+"'s status names it the holder", func() (bool, string) {
		st := h.nodes[next].o.Status()
		return st.Holder == next && st.Epoch != 0, fmt.Sprintf("%+v", st)
	})
	h.checkNoOverlap()
}

func TestOwnerRequestedHandover(t *testing.T) {
	h := newOwnerHarness(t)
	_, b := h.startPair(100, 50, false)
	// Any node may ask, through etcd, for a move; without preempt the
	// lower-priority node keeps it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := RequestHandover(ctx, b.cli, h.prefix, "n2"); err != nil {
		t.Fatal(err)
	}
	if err := b.o.WaitFor(ctx, func(s OwnerStatus) bool { return s.Acting }); err != nil {
		t.Fatalf("n2 did not take over on request: %v", err)
	}
	t.Logf("requested handover took %v", time.Since(start))
	h.checkNoOverlap()
}

func TestOwnerPreempt(t *testing.T) {
	h := newOwnerHarness(t)
	a := h.start("n1", 100, true)
	b := h.start("n2", 50, true)
	b.o.SetEligible(true)
	if got := h.holder(5 * time.Second); got != "n2" {
		t.Fatalf("holder %s, want n2, the only eligible node", got)
	}
	// n1 has the higher priority: once eligible, the holder yields to it.
	a.o.SetEligible(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.o.WaitFor(ctx, func(s OwnerStatus) bool { return s.Acting }); err != nil {
		t.Fatalf("n1 did not preempt: %v", err)
	}
	h.checkNoOverlap()
}

func TestOwnerIneligibleHolderHandsOver(t *testing.T) {
	h := newOwnerHarness(t)
	a, b := h.startPair(100, 100, false)
	a.o.SetEligible(false)
	h.waitHolder("n2", 5*time.Second)
	// The last eligible node hands over to nobody: it releases the record,
	// which both nodes then see unheld.
	b.o.SetEligible(false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, n := range []*ownerNode{a, b} {
		if err := n.o.WaitFor(ctx, func(s OwnerStatus) bool { return s.Holder == "" && !s.Acting }); err != nil {
			t.Fatalf("the record was not released once no node was eligible: %v", err)
		}
	}
	h.checkNoOverlap()
}

func TestOwnerCrashedHolderIsReplacedAfterItsDeadline(t *testing.T) {
	h := newOwnerHarness(t)
	reg := prometheus.NewRegistry()
	h.reg = reg
	a, b := h.startPair(100, 100, false)
	// The holder's connection to etcd dies: it can no longer renew (as if
	// its process had frozen or its link were cut). Its guard stops at its
	// deadline; n2 may act only after that.
	a.cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.o.WaitFor(ctx, func(s OwnerStatus) bool { return s.Acting }); err != nil {
		t.Fatalf("n2 did not take over: %v", err)
	}
	h.checkNoOverlap()
	if st := b.o.Status(); st.Holder != "n2" {
		t.Errorf("n2's status: %+v", st)
	}
	// The lost holding is counted, and the writes' latency is observed,
	// on the one set of series both owners share.
	if got := testutil.ToFloat64(a.o.metrics.missed.WithLabelValues("vip/web")); got != 1 {
		t.Errorf("haven_owner_missed_deadlines_total{singleton=vip/web} = %v; want 1 (n1's)", got)
	}
	renewed := func() uint64 {
		var m dto.Metric
		if err := a.o.metrics.writes.WithLabelValues("vip/web", "renew").(prometheus.Metric).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetHistogram().GetSampleCount()
	}
	for start := time.Now(); renewed() == 0 && time.Since(start) < 10*time.Second; {
		time.Sleep(50 * time.Millisecond)
	}
	if renewed() == 0 {
		t.Error("no renewal's latency observed in haven_owner_write_duration_seconds{op=renew} while n2 holds")
	}
	testenv.LintMetrics(t, reg)
}

func TestOwnerHandoverFailsWhenNotHolder(t *testing.T) {
	h := newOwnerHarness(t)
	a := h.start("n1", 100, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := a.o.Handover(ctx, "n2")
	if err == nil {
		t.Fatal("handover by a node that holds nothing succeeded")
	}
	if want := "does not hold it"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

// A request for no node in particular hands over to the best eligible
// candidate.
func TestOwnerHandoverRequestToTheBestCandidate(t *testing.T) {
	h := newOwnerHarness(t)
	_, b := h.startPair(100, 100, false)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.o.WaitFor(ctx, func(s OwnerStatus) bool { return len(s.Candidates) == 2 }); err != nil {
		t.Fatal(err)
	}
	if err := RequestHandover(ctx, b.cli, h.prefix, ""); err != nil {
		t.Fatal(err)
	}
	h.waitHolder("n2", 5*time.Second)
	h.checkNoOverlap()
}

// TestOwnerCleanSince: a holder whose every write is answered at once
// through every member has been clean since it acquired (not since it
// started: a candidate writes too rarely to vouch for a route); one with a
// route that fails every write is never clean for long; an owner that does
// not hold is not clean. The agent moves etcd's leadership only after a
// long clean spell.
func TestOwnerCleanSince(t *testing.T) {
	h := newOwnerHarness(t)
	started := time.Now()
	clean := h.start("n1", 100, false, newTestClient(t, testLog(t), h.eps, nil))
	if since := clean.o.CleanSince(h.eps[0]); !since.IsZero() {
		t.Errorf("clean since %v before it ever held; want zero", since)
	}
	time.Sleep(500 * time.Millisecond) // a candidate for a while first
	clean.o.SetEligible(true)
	h.waitHolder("n1", 5*time.Second)
	h.waitRenewals("n1", 8)
	clean.g.mu.Lock()
	acquired := clean.g.cur.from
	clean.g.mu.Unlock()
	if since := clean.o.CleanSince(h.eps[0]); since.Before(started.Add(500*time.Millisecond)) || since.After(acquired) {
		t.Errorf("with two working routes, clean since %v; want since it acquired at %v (it started at %v)", since, acquired, started)
	}
	if since := clean.o.CleanSince("http://198.18.1.99:2379"); !since.IsZero() {
		t.Errorf("clean since %v through a member the owner has no client of; want zero", since)
	}
	clean.stop(t)
	delete(h.nodes, "n1")

	broken := newTestClient(t, testLog(t), h.eps, nil)
	broken.Close()
	troubled := h.start("n2", 100, false, broken)
	troubled.o.SetEligible(true)
	h.waitHolder("n2", 5*time.Second)
	h.waitRenewals("n2", 8)
	troubled.g.mu.Lock()
	acquired = troubled.g.cur.from
	troubled.g.mu.Unlock()
	if since := troubled.o.CleanSince(h.eps[0]); !since.After(acquired) {
		t.Errorf("with a route that fails every write, clean since %v; want after it acquired at %v (its renewals' copies failed since)", since, acquired)
	}
}

// A group (a region) holds the record while any of its members renews it:
// a member that starts wanting it joins at once, under the group's epoch;
// the member that acquired can stop without the record leaving the group;
// a challenger takes it only once no member renews.
func TestOwnerGroupHoldsWhileAnyMemberRenews(t *testing.T) {
	h := newOwnerHarness(t)
	a := h.startMember("east", "db1", 100)
	b := h.startMember("east", "db2", 100)
	c := h.startMember("west", "wdb1", 50)
	a.o.SetEligible(true)
	c.o.SetEligible(true)
	h.waitHolder("db1", 5*time.Second)
	epoch := a.o.Status().Epoch

	// db2 joins: both act under the same epoch, and the challenger waits.
	b.o.SetEligible(true)
	testenv.Poll(t, 5*time.Second, "db2 joins the holding", func() (bool, string) {
		st := b.o.Status()
		return st.Acting && st.Epoch == epoch, fmt.Sprintf("%+v", st)
	})
	if !a.g.acting() {
		t.Fatal("db1 stopped acting when db2 joined")
	}

	// db1 stops: the record stays with east, renewed by db2, for several
	// leases; west never acts.
	a.stop(t)
	h.waitRenewals("db2", 12)
	if st := b.o.Status(); st.Holder != "east" || st.Epoch != epoch || !st.Acting {
		t.Fatalf("after db1 stopped, db2's status is %+v; want east acting under epoch %d", st, epoch)
	}
	if c.g.acting() {
		t.Fatal("west acts while a member of east renews")
	}

	// db2 leaves: nobody renews, and west takes over after the lease.
	b.o.SetEligible(false)
	testenv.Poll(t, 10*time.Second, "west holds", func() (bool, string) {
		st := c.o.Status()
		return st.Acting && st.Holder == "west", fmt.Sprintf("%+v", st)
	})
	if b.g.acting() {
		t.Fatal("db2 still acts after leaving")
	}
	if st := c.o.Status(); st.Epoch <= epoch {
		t.Errorf("west's epoch %d is not above east's %d", st.Epoch, epoch)
	}
	h.checkNoOverlap()
}
