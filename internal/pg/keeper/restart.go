package keeper

import (
	"context"
	"fmt"
	"slices"
)

// pendingRestart is what postgres said it applies only at its next start
// (pg_settings.pending_restart), when it ran with pid.
type pendingRestart struct {
	pid            int
	names, lowered []string
}

// SetPendingRestart records the settings this node's postgres applies only
// at its next start, as a reload of the configuration found them, and
// those of them lowered that a standby needs at least the primary's value
// of (pg.RecoverySensitive). They are published (MemberState's
// PendingRestart and PendingLowered) until postgres has started again.
func (k *Keeper) SetPendingRestart(names, lowered []string) {
	k.pending.Store(&pendingRestart{pid: k.srv.PID(), names: slices.Clone(names), lowered: slices.Clone(lowered)})
}

// pendingNames returns the settings pending a restart, and the lowered
// ones. Once postgres has started again since they were read (another
// pid), it asks postgres again: a restart, asked or not, applied them.
func (k *Keeper) pendingNames(ctx context.Context) (names, lowered []string) {
	p := k.pending.Load()
	if p == nil || len(p.names) == 0 {
		return nil, nil
	}
	if pid := k.srv.PID(); pid != 0 && pid != p.pid {
		qctx, cancel := context.WithTimeout(ctx, queryTimeout)
		names, err := k.srv.PendingRestart(qctx)
		cancel()
		if err == nil {
			lowered := slices.DeleteFunc(slices.Clone(p.lowered), func(n string) bool { return !slices.Contains(names, n) })
			k.pending.Store(&pendingRestart{pid: pid, names: names, lowered: lowered})
			return names, lowered
		}
	}
	return p.names, p.lowered
}

// RestartPostgres restarts this node's postgres in place, as Patroni's
// restart does: a fast shutdown and a start, with the node's role kept
// (a primary keeps its lead through it, as through a crash; writes wait
// the second it takes). It returns once postgres runs again. haven pg
// restart switches a primary over first, so that only a replica restarts.
func (k *Keeper) RestartPostgres(ctx context.Context) error {
	if !k.supRunning() {
		return fmt.Errorf("postgres does not run under this node's keeper (it is %s)", k.sup.Status().State)
	}
	k.log.Warn("restarting postgres, as asked", "event", "database", "primary", k.Leader())
	if err := k.sup.Restart(ctx); err != nil {
		return err
	}
	k.poke()
	return nil
}
