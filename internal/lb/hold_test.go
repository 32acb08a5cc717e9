package lb

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haven-ha/haven/internal/clock"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

// The holder alone, on a fake clock: a wait ends at a change or, for a
// connection a backend refused, after holdRetry (look again), at the
// hold's deadline or when the balancer stops (give up); at most limit
// connections wait, and each hold counts one outcome.
func TestHolder(t *testing.T) {
	fc := clock.NewFake(time.Unix(1e9, 0))
	h := newHolder(fc)
	a, b := h.begin(5*time.Second, 2), h.begin(5*time.Second, 2)
	if a == nil || b == nil {
		t.Fatal("begin refused a connection under the limit")
	}
	if c := h.begin(5*time.Second, 2); c != nil {
		t.Fatal("begin took a third connection with a limit of 2")
	}
	if got := h.waiting.Load(); got != 2 {
		t.Errorf("waiting = %d, want 2", got)
	}

	changed := h.next()
	woke := make(chan bool)
	go func() { woke <- a.wait(changed, false) }()
	h.signal()
	if !<-woke {
		t.Error("a wait ended by a change says give up")
	}
	if h.next() == changed {
		t.Error("next after a change returns the channel already closed")
	}

	// Two timers are the holds' deadlines; a third is the retry.
	go func() { woke <- a.wait(h.next(), true) }()
	testenv.Poll(t, 10*time.Second, "a wait to retry", func() (bool, string) {
		return fc.Waiters() == 3, fmt.Sprintf("%d timers", fc.Waiters())
	})
	fc.Advance(holdRetry)
	if !<-woke {
		t.Error("a wait ended by the retry says give up")
	}
	if n := fc.Waiters(); n != 2 {
		t.Errorf("%d timers after the retry; want 2, the holds' deadlines", n)
	}

	fc.Advance(4*time.Second - holdRetry)
	go func() { woke <- b.wait(h.next(), false) }()
	fc.Advance(time.Second) // the hold's deadline: the timer has already fired, or fires now
	if <-woke {
		t.Error("a wait past the hold's deadline says look again")
	}
	b.end(holdExpired)
	b.end(holdServed) // only the first end counts

	go func() { woke <- a.wait(h.next(), false) }()
	h.stop()
	if <-woke {
		t.Error("a wait ended by the balancer stopping says look again")
	}
	if a.wait(h.next(), true) {
		t.Error("a wait after the stop says look again")
	}
	a.end(holdServed)

	if got := h.waiting.Load(); got != 0 {
		t.Errorf("waiting after every end = %d, want 0", got)
	}
	want := [numHoldOutcomes]uint64{holdServed: 1, holdExpired: 1, holdRefused: 1}
	for o := range numHoldOutcomes {
		if got := h.outcomes[o].Load(); got != want[o] {
			t.Errorf("%s = %d, want %d", holdOutcomeNames[o], got, want[o])
		}
	}
}

// holdLB starts a TCP balancer with a hold and no backend: it starts with
// one that is then removed.
func holdLB(t *testing.T, hold time.Duration, extra string, opt Options) *testLB {
	t.Helper()
	tl := startLBOpts(t, opt, "    mode: tcp\n    passive: {consecutive_failures: 0}\n"+extra, "", namedEcho(t, "first"))
	tl.setHold(t, hold)
	if err := tl.SetBackends(nil); err != nil {
		t.Fatal(err)
	}
	return tl
}

// setHold gives a running test balancer a hold, as the database router's
// configuration does (it is no key of haven.yaml's balancers).
func (tl *testLB) setHold(t *testing.T, d time.Duration) {
	t.Helper()
	c := *tl.settings.Load().cfg
	c.Hold = config.Duration(d)
	if err := tl.Reload(&c, tl.settings.Load().check); err != nil {
		t.Fatal(err)
	}
}

// waitHeld waits until n connections are held.
func (tl *testLB) waitHeld(t *testing.T, n int64) {
	t.Helper()
	testenv.Poll(t, 10*time.Second, fmt.Sprintf("%d connections held", n), func() (bool, string) {
		got := tl.Status().Held
		return got == n, fmt.Sprintf("%d held", got)
	})
}

func (tl *testLB) holdOutcomes() string {
	var b strings.Builder
	for o, name := range holdOutcomeNames {
		if n := tl.holds.outcomes[o].Load(); n > 0 {
			fmt.Fprintf(&b, "%s=%d ", name, n)
		}
	}
	return strings.TrimSpace(b.String())
}

// A connection that arrives while the pool is empty is held, and handed to
// the backend that appears; what the client sent meanwhile reaches it.
func TestHoldHandsConnectionToNewBackend(t *testing.T) {
	tl := holdLB(t, time.Minute, "", Options{})
	c := dialSend(t, tl.addr, "hello")
	tl.waitHeld(t, 1)
	if err := tl.SetBackends([]*config.Backend{{Name: "b", Address: namedEcho(t, "b"), Weight: new(1)}}); err != nil {
		t.Fatal(err)
	}
	if got, err := readLine(c); got != "b hello" {
		t.Fatalf("the held connection got %q, %v; want b's answer to what it sent while held", got, err)
	}
	if got := tl.holdOutcomes(); got != "served=1" {
		t.Errorf("hold outcomes: %s; want served=1", got)
	}
	tl.waitHeld(t, 0)
}

// Past the hold, a connection is closed as it would have been at once
// without one; the hold runs on the balancer's clock.
func TestHoldExpires(t *testing.T) {
	fc := clock.NewFake(time.Unix(1e9, 0))
	tl := holdLB(t, 5*time.Second, "", Options{Clock: fc})
	c := dialSend(t, tl.addr, "hello")
	tl.waitHeld(t, 1)
	fc.Advance(5 * time.Second)
	if err := closed(c); err != nil {
		t.Fatalf("past the hold: %v", err)
	}
	if got := tl.holdOutcomes(); got != "expired=1" {
		t.Errorf("hold outcomes: %s; want expired=1", got)
	}
}

// At most limits.queue_size connections are held; the next is closed at
// once. A held client that leaves is not handed to the backend that
// appears. The metrics count each outcome.
func TestHoldIsBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	tl := holdLB(t, time.Minute, "    limits: {queue_size: 2}\n", Options{Metrics: NewMetrics(reg)})
	a := dialSend(t, tl.addr, "a")
	gone := dialSend(t, tl.addr, "gone")
	tl.waitHeld(t, 2)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP haven_lb_held_connections_waiting TCP client connections held now for want of a usable backend (balancers that hold only).
# TYPE haven_lb_held_connections_waiting gauge
haven_lb_held_connections_waiting{balancer="web"} 2
`), "haven_lb_held_connections_waiting"); err != nil {
		t.Error(err)
	}
	over := dialSend(t, tl.addr, "over")
	if err := closed(over); err != nil {
		t.Fatalf("the connection over the limit: %v", err)
	}
	gone.Close()
	testenv.Poll(t, 10*time.Second, "the balancer sees a held client leave", func() (bool, string) {
		tl.mu.Lock()
		defer tl.mu.Unlock()
		for cc := range tl.conns {
			if peerClosed(cc.c) {
				return true, ""
			}
		}
		return false, "no client connection closed"
	})
	echo := namedEcho(t, "b")
	if err := tl.SetBackends([]*config.Backend{{Name: "b", Address: echo, Weight: new(1)}}); err != nil {
		t.Fatal(err)
	}
	if got, err := readLine(a); got != "b a" {
		t.Fatalf("the held connection got %q, %v; want b's answer", got, err)
	}
	tl.waitHeld(t, 0)
	lintMetrics(t, reg)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP haven_lb_held_connections_total TCP client connections that found no usable backend, by how their hold ended: served, expired, gone (the client had left), refused (too many held).
# TYPE haven_lb_held_connections_total counter
haven_lb_held_connections_total{balancer="web",outcome="expired"} 0
haven_lb_held_connections_total{balancer="web",outcome="gone"} 1
haven_lb_held_connections_total{balancer="web",outcome="refused"} 1
haven_lb_held_connections_total{balancer="web",outcome="served"} 1
`), "haven_lb_held_connections_total"); err != nil {
		t.Error(err)
	}
	if st := tl.Status(); st.Backends[0].Requests != 1 {
		t.Errorf("the backend was sent %d connections; want 1 (not the one whose client left)", st.Backends[0].Requests)
	}
}

// Without a hold, a connection to an empty pool is closed at once, and
// the balancer exports no hold metrics.
func TestNoHoldClosesAtOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	tl := holdLB(t, 0, "", Options{Metrics: NewMetrics(reg)})
	c := dialSend(t, tl.addr, "hello")
	if err := closed(c); err != nil {
		t.Fatal(err)
	}
	if got := tl.holdOutcomes(); got != "" {
		t.Errorf("hold outcomes without a hold: %s", got)
	}
	if n, err := testutil.GatherAndCount(reg, "haven_lb_held_connections_waiting", "haven_lb_held_connections_total"); err != nil || n != 0 {
		t.Errorf("a balancer without a hold exports %d hold series (%v); want none", n, err)
	}
}

// A balancer that stops closes the connections it holds at once: they do
// not wait out the hold, nor hold up the stop until its grace period (the
// client timeout, a minute here) is over.
func TestHoldReleasedAtShutdown(t *testing.T) {
	tl := holdLB(t, time.Minute, "    timeouts: {client: 1m}\n", Options{})
	c := dialSend(t, tl.addr, "hello")
	tl.waitHeld(t, 1)
	stopped := make(chan struct{})
	go func() { tl.stop(); close(stopped) }()
	if err := closed(c); err != nil {
		t.Fatalf("a held connection as the balancer stops: %v", err)
	}
	select {
	case <-stopped:
	case <-time.After(10 * time.Second): // a guard against a hang, not a measure
		t.Fatal("the balancer has not stopped: it waits on the connection it held")
	}
	if got := tl.holdOutcomes(); got != "expired=1" {
		t.Errorf("hold outcomes: %s; want expired=1", got)
	}
	if got := tl.Status().Held; got != 0 {
		t.Errorf("%d connections held after the stop; want 0", got)
	}
}

// A connection that the only backend refuses is held, not closed once
// retries.count is spent, and tries that backend again every holdRetry: a
// backend that comes back in place (PostgreSQL restarted by its keeper)
// changes nothing in the pool, so no change would wake the hold.
func TestHoldRetriesRefusingBackend(t *testing.T) {
	fc := clock.NewFake(time.Unix(1e9, 0))
	addr := freeAddr(t)
	tl := startLBOpts(t, Options{Clock: fc}, "    mode: tcp\n    passive: {consecutive_failures: 0}\n    retries: {count: 0}\n", "", addr)
	tl.setHold(t, time.Minute)
	c := dialSend(t, tl.addr, "hello")
	tl.waitHeld(t, 1)
	retrying := func() (bool, string) {
		n := fc.Waiters() // the hold's deadline, and its retry
		return n == 2, fmt.Sprintf("%d timers", n)
	}
	testenv.Poll(t, 10*time.Second, "the held connection waiting to retry", retrying)
	fc.Advance(holdRetry) // refused again: the backend still listens nowhere
	testenv.Poll(t, 10*time.Second, "the held connection waiting to retry again", func() (bool, string) {
		ok, last := retrying()
		st := tl.Status()
		return ok && st.Backends[0].ConnectFailures == 2, fmt.Sprintf("%s, %d connect failures", last, st.Backends[0].ConnectFailures)
	})
	namedEchoAt(t, "b", addr)
	fc.Advance(holdRetry)
	if got, err := readLine(c); got != "b hello" {
		t.Fatalf("the held connection got %q, %v; want the backend's answer once it listens", got, err)
	}
	if got := tl.holdOutcomes(); got != "served=1" {
		t.Errorf("hold outcomes: %s; want served=1", got)
	}
}

// Without a hold, a connection that every backend refused is closed once
// retries.count is spent.
func TestNoHoldRefusedIsClosed(t *testing.T) {
	tl := startLB(t, "    mode: tcp\n    passive: {consecutive_failures: 0}\n    retries: {count: 1}\n", "", freeAddr(t), freeAddr(t))
	c := dialSend(t, tl.addr, "hello")
	if err := closed(c); err != nil {
		t.Fatal(err)
	}
	st := tl.Status()
	if n := st.Backends[0].ConnectFailures + st.Backends[1].ConnectFailures; n != 2 {
		t.Errorf("%d connect failures; want 2 (one try and one retry)", n)
	}
}
