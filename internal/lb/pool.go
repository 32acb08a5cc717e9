package lb

import (
	"context"
	"errors"
	"hash/fnv"
	"strconv"
	"time"

	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/lb/balance"
)

// pool is an immutable snapshot of a balancer's backends. A reload builds a
// new pool and swaps it in atomically; requests in flight keep the snapshot
// they started with.
type pool struct {
	backends []*backend
	items    []balance.Backend // the same backends, as the algorithm sees them
	byCookie map[string]*backend
	byName   map[string]*backend
}

func newPool(bs []*backend) *pool {
	p := &pool{
		backends: bs,
		items:    make([]balance.Backend, len(bs)),
		byCookie: make(map[string]*backend, len(bs)),
		byName:   make(map[string]*backend, len(bs)),
	}
	for i, b := range bs {
		p.items[i] = b
		p.byCookie[b.cookie] = b
		p.byName[b.name] = b
	}
	return p
}

// find returns the backend with the given name or address.
func (p *pool) find(nameOrAddr string) *backend {
	if b := p.byName[nameOrAddr]; b != nil {
		return b
	}
	for _, b := range p.backends {
		if b.addr == nameOrAddr {
			return b
		}
	}
	return nil
}

// cookieValue is the sticky-session cookie value for a backend: a hash of its
// name, so that cookies do not reveal backend addresses.
func cookieValue(name string) string {
	h := fnv.New64a()
	h.Write([]byte(name))
	return strconv.FormatUint(h.Sum64()&0xffffffffff, 36)
}

var (
	errNoBackend = errors.New("no backend available")
	errQueueFull = errors.New("backend queue full")
	errQueueWait = errors.New("timed out waiting in the backend queue")
	// errRetriesSpent: a TCP connection's backends refused it retries.count+1 times.
	errRetriesSpent = errors.New("every try to connect to a backend failed")
)

// picker selects a backend for one request or connection. It is embedded in
// each client connection so that the skip callback is bound once per
// connection rather than allocated per request.
type picker struct {
	p          *pool
	tried      []*backend
	allUnknown bool
	anyFull    bool
	skipFn     func(int) bool
}

func (pk *picker) init() { pk.skipFn = pk.skip }

// usable reports whether b may take a new request, ignoring its connection cap.
func (pk *picker) usable(b *backend) bool {
	if AdminState(b.admin.Load()) != Ready || b.removed.Load() || b.weight.Load() == 0 {
		return false
	}
	switch b.state() {
	case health.Up:
	case health.Unknown:
		if !pk.allUnknown {
			return false
		}
	default:
		return false
	}
	for _, t := range pk.tried {
		if t == b {
			return false
		}
	}
	return true
}

func (pk *picker) skip(i int) bool {
	b := pk.p.backends[i]
	if !pk.usable(b) {
		return true
	}
	if b.full() {
		pk.anyFull = true
		return true
	}
	return false
}

// scan records whether every backend is still without a first verdict: only
// then are unknown backends served (so that a fresh balancer serves at once,
// but never sends traffic to a backend that has not yet been checked while
// another one is known good).
func (pk *picker) scan() {
	pk.allUnknown = true
	for _, b := range pk.p.backends {
		if b.state() != health.Unknown {
			pk.allUnknown = false
			return
		}
	}
}

// pickOnce chooses a backend and reserves a slot on it.
func (lb *Balancer) pickOnce(pk *picker, hash uint64, sticky string) *backend {
	pk.scan()
	pk.anyFull = false
	if sticky != "" {
		if b := pk.p.byCookie[sticky]; b != nil && pk.usable(b) && b.tryAcquire() {
			return b
		}
	}
	for range 4 { // a slot taken by another request between pick and acquire: pick again
		i := lb.algo.Pick(pk.p.items, pk.skipFn, hash)
		if i < 0 {
			return nil
		}
		if b := pk.p.backends[i]; b.tryAcquire() {
			return b
		}
		pk.anyFull = true
	}
	return nil
}

// acquire picks a backend, waiting in the queue when every usable backend is
// at its connection cap; it says how long it waited there (0: not queued).
func (lb *Balancer) acquire(ctx context.Context, pk *picker, hash uint64, sticky string) (*backend, time.Duration, error) {
	if b := lb.pickOnce(pk, hash, sticky); b != nil {
		return b, 0, nil
	}
	if !pk.anyFull {
		return nil, 0, errNoBackend
	}
	s := lb.settings.Load()
	if int(lb.queued.Add(1)) > s.queueSize {
		lb.queued.Add(-1)
		return nil, 0, errQueueFull
	}
	defer lb.queued.Add(-1)
	queued := time.Now()
	b, err := lb.waitSlot(ctx, pk, hash, sticky, s)
	waited := time.Since(queued)
	lb.queueTime.Observe(waited.Seconds())
	return b, waited, err
}

// waitSlot waits in the queue until a slot frees.
func (lb *Balancer) waitSlot(ctx context.Context, pk *picker, hash uint64, sticky string, s *settings) (*backend, error) {
	deadline := time.NewTimer(s.queueTimeout)
	defer deadline.Stop()
	// A released slot wakes one waiter; the ticker bounds the cost of a lost
	// wake-up to a short delay rather than a stuck request.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-lb.slotFreed:
		case <-tick.C:
		case <-deadline.C:
			return nil, errQueueWait
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if b := lb.pickOnce(pk, hash, sticky); b != nil {
			return b, nil
		}
		if !pk.anyFull {
			return nil, errNoBackend
		}
	}
}

// release gives back the slot taken by acquire.
func (lb *Balancer) release(b *backend) {
	b.inflight.Add(-1)
	if lb.queued.Load() > 0 {
		select {
		case lb.slotFreed <- struct{}{}:
		default:
		}
	}
}

// tryAcquire reserves a slot within the backend's connection cap.
func (b *backend) tryAcquire() bool {
	m := int64(b.maxConn.Load())
	if m <= 0 {
		b.inflight.Add(1)
		return true
	}
	for {
		n := b.inflight.Load()
		if n >= m {
			return false
		}
		if b.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}
