package keeper

import (
	"context"
	"sync"
	"time"
)

// keeperGuard is the Guard of the database's ownership record. The owner
// calls it from its own goroutine: Acquire and Extend only record and wake
// the keeper, which promotes; Release fences.
type keeperGuard struct {
	k *Keeper

	mu       sync.Mutex
	acting   bool
	epoch    int64
	deadline time.Time
	open     bool // the write fence is open until deadline (or there is none)
}

// Acquire opens the write fence until the deadline, then lets the keeper
// promote.
func (g *keeperGuard) Acquire(epoch int64, deadline time.Time) {
	open := g.openFence(g.fenceDeadline(deadline), true)
	g.mu.Lock()
	g.acting, g.epoch, g.deadline, g.open = true, epoch, deadline, open
	g.mu.Unlock()
	g.k.poke()
}

// Extend moves the write fence's deadline with the lease's.
func (g *keeperGuard) Extend(deadline time.Time) {
	open := g.openFence(g.fenceDeadline(deadline), false)
	g.mu.Lock()
	g.deadline, g.open = deadline, open
	g.mu.Unlock()
}

// fenceDeadline is until when the write fence may be open under a lead
// that lasts until deadline: in a database that spans two regions, no
// later than the active-region record's deadline either (and not at all
// while the region does not hold it).
func (g *keeperGuard) fenceDeadline(deadline time.Time) time.Time {
	r := g.k.region
	if r == nil {
		return deadline
	}
	acting, _, rd := r.guard.lead()
	if !acting {
		return time.Time{}
	}
	if rd.Before(deadline) {
		return rd
	}
	return deadline
}

// refreshFence opens the write fence again after the active-region
// record's deadline moved, while the node leads.
func (g *keeperGuard) refreshFence() {
	g.mu.Lock()
	acting, deadline := g.acting, g.deadline
	g.mu.Unlock()
	if !acting {
		return
	}
	open := g.openFence(g.fenceDeadline(deadline), true)
	g.mu.Lock()
	if g.acting && g.deadline.Equal(deadline) {
		g.open = open
	}
	g.mu.Unlock()
}

// regionLost stops a primary whose region no longer holds the
// active-region record, as Release does for the database's own record:
// the node keeps its region's lead and comes back as the standby leader.
// It reports whether it stopped a primary.
func (g *keeperGuard) regionLost(reason string) bool {
	g.mu.Lock()
	acting := g.acting
	g.mu.Unlock()
	if !acting {
		return false
	}
	if g.k.srv.PID() != 0 {
		if in, err := g.k.srv.IsInRecovery(context.Background()); err == nil && in {
			g.k.poke()
			return false // a standby leader: nothing to stop
		}
	}
	g.mu.Lock()
	g.k.letGo.Store(true)
	g.mu.Unlock()
	g.k.log.Warn("the region lost the active-region record: stopping postgres", "event", "demotion", "reason", reason)
	g.stopPrimary("the region lost the active-region record")
	return true
}

// openFence fences postgres's port (when acquiring) and opens it until
// deadline; it reports whether the fence is open (true without a fence).
// A zero deadline (a region that does not hold the active-region record:
// the node is its standby leader, a replica that serves its region) leaves
// the fence as it is, and it is not open for writes.
func (g *keeperGuard) openFence(deadline time.Time, acquire bool) bool {
	f := g.k.cfg.Fence
	switch {
	case f == nil:
		return true
	case deadline.IsZero():
		return false
	}
	if acquire {
		if err := f.Fence(); err != nil {
			g.k.log.Error("write fence", "err", err)
			return false
		}
	}
	if err := f.OpenUntil(deadline); err != nil {
		g.k.log.Error("write fence", "err", err)
		return false
	}
	return true
}

// Release stops postgres before it returns (a fast shutdown: sessions end
// at once, and the WAL written so far goes to the connected replicas), so
// that on a planned handover the successor, which may take over as soon as
// the record is released, has every commit; then it closes the write
// fence. It blocks the owner for as long as the stop takes; the supervisor
// bounds it, and the fence closes by itself at the deadline meanwhile.
func (g *keeperGuard) Release(reason string) {
	g.mu.Lock()
	was := g.acting
	g.acting, g.open = false, false
	if was {
		// Under the lock: a view that shows the lead gone shows this too.
		g.k.letGo.Store(true)
	}
	g.mu.Unlock()
	if !was {
		return
	}
	g.k.log.Warn("lost the lead: stopping postgres", "event", "demotion", "reason", reason)
	g.stopPrimary("losing the lead")
}

// stopPrimary stops a primary that may no longer take writes: postgres
// first, whose fast shutdown sends the replicas (and the other region's
// standby leader) the WAL written so far, through the fence, which is open
// until the deadline and closes by itself then if the stop takes longer;
// then it publishes where the WAL ends (publishFinal) and closes the fence.
func (g *keeperGuard) stopPrimary(after string) {
	if err := g.k.stopPostgres(); err != nil {
		g.k.log.Error("stopping postgres after "+after, "err", err)
	}
	g.k.publishFinal()
	if f := g.k.cfg.Fence; f != nil {
		if err := f.Close(); err != nil {
			g.k.log.Error("closing the write fence", "err", err)
		}
	}
	g.k.poke()
}

// fenceOpen reports whether the write fence is open for the current lead.
func (g *keeperGuard) fenceOpen() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.acting && g.open
}

// isActing reports whether the node holds the record and its deadline has
// not passed on the local clock, and, in a database that spans two
// regions, whether its region holds the active-region record too: whether
// it may be the primary.
func (g *keeperGuard) isActing() bool {
	g.mu.Lock()
	acting := g.acting && g.k.clk.Now().Before(g.deadline)
	g.mu.Unlock()
	if r := g.k.region; r != nil && acting {
		acting, _, _ = r.guard.lead()
	}
	return acting
}

// lead reports whether the node acts (isActing), and the lead's fencing
// epoch.
func (g *keeperGuard) lead() (acting bool, epoch int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.acting && g.k.clk.Now().Before(g.deadline), g.epoch
}
