package agent

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/web"
)

// FailoverPlan is what a forced failover to To would do: the answer to
// POST /api/v1/database/failover, before and after it is confirmed.
type FailoverPlan struct {
	To string `json:"to"`
	// ToLSN is how far To has received WAL; LastPrimaryLSN the last
	// position a primary published. LoseUpTo is the difference: what may
	// have been committed (and, in sync mode, acknowledged) that To lacks.
	ToLSN          pg.LSN `json:"to_lsn"`
	LastPrimaryLSN pg.LSN `json:"last_primary_lsn"`
	LoseUpTo       uint64 `json:"lose_up_to_bytes"`
	// MostAdvanced is the replica that has received the most WAL, when it
	// is not To, and MostAdvancedLSN how far.
	MostAdvanced    string `json:"most_advanced,omitempty"`
	MostAdvancedLSN pg.LSN `json:"most_advanced_lsn,omitempty"`
	// Done: the failover was confirmed and To holds the primary's record.
	Done bool `json:"done"`
}

// failover serves POST /api/v1/database/failover?to=NODE[&confirm=yes]:
// without confirm it says what forcing the primary onto NODE would lose;
// with it, it writes the force record and waits until NODE holds the
// record. Refused while a primary holds it (that is a switchover's job).
func (a *Agent) failover(w http.ResponseWriter, r *http.Request) {
	rs, ok := a.databaseEtcd(w)
	if !ok {
		return
	}
	var k *keeper.Keeper
	if rs.db != nil {
		k = rs.db.keeper.Load()
	}
	if k == nil {
		web.WriteError(w, http.StatusServiceUnavailable, fmt.Errorf("node %s has no keeper running: ask a database node", a.opt.Node))
		return
	}
	db := rs.coord.cfg.Database
	to := r.URL.Query().Get("to")
	if !slices.Contains(db.Nodes, to) {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("to=%q is not a database node (database.nodes: %v)", to, db.Nodes))
		return
	}
	plan, err := failoverPlan(k, to)
	if err != nil {
		web.WriteError(w, http.StatusConflict, err)
		return
	}
	if r.URL.Query().Get("confirm") != "yes" {
		web.WriteJSON(w, http.StatusOK, plan)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*db.Lease.D()+15*time.Second)
	defer cancel()
	f := keeper.Force{To: to, Owner: r.Header.Get("X-Haven-Operator"), Set: time.Now()}
	if f.Owner == "" {
		f.Owner = "admin API from " + r.RemoteAddr
	}
	if err := keeper.SetForce(ctx, rs.coord.etcd(), rs.coord.cfg.Cluster, dbName, f); err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	a.log.Warn("forced failover requested", "event", "database", "to", to, "owner", f.Owner, "lose_up_to_bytes", plan.LoseUpTo)
	err = k.Owner().WaitFor(ctx, func(s coord.OwnerStatus) bool { return s.Holder == to })
	if err != nil {
		web.WriteError(w, http.StatusGatewayTimeout, fmt.Errorf("forced failover to %s requested (the record lasts %s); %s does not hold the primary's record yet: %w", to, keeper.ForceTTL, to, err))
		return
	}
	plan.Done = true
	web.WriteJSON(w, http.StatusOK, plan)
}

// failoverPlan says what forcing the primary onto to would lose, as k
// last saw the members, or why it may not be forced now.
func failoverPlan(k *keeper.Keeper, to string) (FailoverPlan, error) {
	if h := k.Owner().Status().Holder; h != "" {
		return FailoverPlan{}, fmt.Errorf("%s holds the primary's record: a forced failover is for when no node leads and none qualifies; use haven pg switchover --to %s", h, to)
	}
	members := k.Members()
	m, ok := members[to]
	switch {
	case !ok:
		return FailoverPlan{}, fmt.Errorf("%s has published no state: its keeper is not running, or cannot reach etcd", to)
	case m.Role != keeper.RoleReplica:
		return FailoverPlan{}, fmt.Errorf("%s's postgres is %s, not a running replica: only a replica can be promoted", to, m.Role)
	}
	plan := FailoverPlan{To: to, ToLSN: m.LSN}
	if lsn, ok := k.PrimaryLSN(); ok {
		plan.LastPrimaryLSN = lsn
		if lsn > m.LSN {
			plan.LoseUpTo = uint64(lsn - m.LSN)
		}
	}
	for _, o := range members {
		if o.Node != to && o.Role == keeper.RoleReplica && o.Timeline >= m.Timeline && o.LSN > max(m.LSN, plan.MostAdvancedLSN) {
			plan.MostAdvanced, plan.MostAdvancedLSN = o.Node, o.LSN
		}
	}
	return plan, nil
}
