package health

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// ObserveSuccess records that live traffic to the target succeeded, which
// ends any run of passive failures. It is called per request: one atomic load
// in the common case, no allocation.
func (m *Monitor) ObserveSuccess() {
	// Load before Store so that a healthy target's counter stays a shared,
	// read-only cache line across the cores serving requests.
	if m.passiveFails.Load() != 0 {
		m.passiveFails.Store(0)
	}
}

// ObserveFailure records that live traffic to the target failed (a
// connection error or a 5xx); reason says how, for the event. After
// Passive.ConsecutiveFailures failures in a row the target is ejected, Down
// at once, if its Group allows. Only an Up target is ejected. Below the
// threshold it costs one atomic add and no allocation.
func (m *Monitor) ObserveFailure(reason string) {
	limit := int64(m.passive.ConsecutiveFailures)
	if limit <= 0 {
		return
	}
	n := m.passiveFails.Add(1)
	// Decide at the threshold and at every further multiple of it: a denied
	// ejection is retried, but an outage does not contend on the group's
	// lock once per failed request.
	if n < limit || n%limit != 0 || m.State() != Up {
		return
	}
	if m.eject(n, reason) && m.prober == nil {
		select {
		case m.ejectedCh <- struct{}{}: // Run times the return
		default:
		}
	}
}

// eject takes the target down for passive failures if its group allows, and
// reports whether it did. The event is announced after every lock is gone.
func (m *Monitor) eject(n int64, reason string) bool {
	ejected, denied := m.ejectLocked(n, reason)
	if denied != "" {
		m.logDenied(n, denied)
	}
	m.announce()
	return ejected
}

// ejectLocked decides and transitions under the group's lock, so that the
// group's next decision already sees this target as ejected. It returns why
// the group refused, if it did.
func (m *Monitor) ejectLocked(n int64, reason string) (ejected bool, denied string) {
	if g := m.group; g != nil {
		g.mu.Lock()
		defer g.mu.Unlock()
		if why := g.denyLocked(m); why != "" {
			return false, why
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.State() != Up {
		return false, ""
	}
	m.ejected.Store(true)
	m.passiveFails.Store(0)
	// The target must earn its way back with Rise fresh passes.
	m.okRun, m.failRun = 0, 0
	m.transitionLocked(Down, fmt.Sprintf("passive: %d consecutive failures: %s", n, reason), true)
	return true, ""
}

// logDenied warns once per run of failures; repeated denials of the same run
// go to debug.
func (m *Monitor) logDenied(n int64, why string) {
	level := slog.LevelDebug
	if n == int64(m.passive.ConsecutiveFailures) {
		level = slog.LevelWarn
	}
	m.log.LogAttrs(context.Background(), level, "passive ejection denied",
		slog.Int64("failures", n), slog.String("why", why))
}

// endEjection brings a passively ejected target back after EjectFor, when
// there is no active check to do it.
func (m *Monitor) endEjection() {
	m.mu.Lock()
	if m.ejected.Load() && m.State() == Down {
		m.transitionLocked(Up, fmt.Sprintf("passive: ejection ended after %s", m.passive.EjectFor), true)
	}
	m.mu.Unlock()
	m.announce()
}

// Group is a pool of Monitors that share a passive-ejection budget, like
// Envoy's max_ejection_percent, plus a panic threshold: passive health never
// takes down the last target that is Up, since a degraded backend serves
// better than none.
type Group struct {
	maxPercent int

	mu      sync.Mutex
	members map[*Monitor]struct{}
}

// NewGroup returns a Group that lets passive health eject at most
// max(1, ⌊n×maxEjectedPercent/100⌋) of its n members at once.
func NewGroup(maxEjectedPercent int) *Group {
	return &Group{
		maxPercent: min(max(maxEjectedPercent, 0), 100),
		members:    make(map[*Monitor]struct{}),
	}
}

// Add makes m a member. NewMonitor does this for Options.Group.
func (g *Group) Add(m *Monitor) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.members[m] = struct{}{}
}

// Remove takes m out of the group. Monitor.Close does this.
func (g *Group) Remove(m *Monitor) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.members, m)
}

// Len returns the number of members.
func (g *Group) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.members)
}

// Ejected returns how many members are down by passive health.
func (g *Group) Ejected() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for o := range g.members {
		if o.ejected.Load() {
			n++
		}
	}
	return n
}

// denyLocked says why m may not be ejected now, or "" if it may. g.mu must
// be held. Ejections are serialised by g.mu, so two members cannot both
// count on the other staying up. Active transitions are not: one racing with
// this decision may leave the pool empty, which is the active checks'
// verdict. The panic threshold stops passive health from emptying a pool,
// not active checks.
func (g *Group) denyLocked(m *Monitor) string {
	n := len(g.members)
	if _, ok := g.members[m]; !ok {
		n++
	}
	budget := max(1, n*g.maxPercent/100)
	ejected, othersUp := 0, 0
	for o := range g.members {
		if o.ejected.Load() {
			ejected++
		}
		if o != m && o.State() == Up {
			othersUp++
		}
	}
	if ejected >= budget {
		return fmt.Sprintf("%d of %d targets already ejected, the most max_ejected_percent %d%% allows", ejected, n, g.maxPercent)
	}
	if othersUp == 0 {
		return "it is the last target up"
	}
	return ""
}
