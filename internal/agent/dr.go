package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/web"
)

// The admin API of a database that spans two regions (database.dr): any
// database node answers, through the global scope.

// drRoutes mounts GET /api/v1/dr and POST /api/v1/dr/{switchover,promote}.
func (a *Agent) drRoutes() {
	a.admin.HandleRead("GET /api/v1/dr", a.drStatus)
	a.admin.HandleMutating("POST /api/v1/dr/switchover", a.drSwitchover)
	a.admin.HandleMutating("POST /api/v1/dr/promote", a.drPromote)
}

// drKeeper returns this node's keeper when it takes part in a database
// that spans two regions, or writes why not.
func (a *Agent) drKeeper(w http.ResponseWriter) (*keeper.Keeper, bool) {
	rs := a.current()
	cfg := a.config()
	switch {
	case cfg.Database == nil || cfg.Database.DR == nil:
		web.WriteError(w, http.StatusNotFound, errors.New("haven.yaml has no database.dr: the database has one region"))
		return nil, false
	case rs.db == nil:
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("node %s is not a database node; ask one of database.nodes or database.dr.nodes", a.opt.Node))
		return nil, false
	}
	k := rs.db.keeper.Load()
	if k == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("the database keeper is not running yet (waiting for etcd and the global scope)"))
		return nil, false
	}
	return k, true
}

// drStatus serves GET /api/v1/dr: this node's view of the regions, from
// memory.
func (a *Agent) drStatus(w http.ResponseWriter, r *http.Request) {
	k, ok := a.drKeeper(w)
	if !ok {
		return
	}
	st, _ := k.RegionStatus()
	web.WriteJSON(w, http.StatusOK, st)
}

// drRegion checks the region a request names: one of the database's.
func (a *Agent) drRegion(w http.ResponseWriter, r *http.Request, key string) (string, bool) {
	region := r.URL.Query().Get(key)
	if regions := a.config().DatabaseRegions(); !slices.Contains(regions, region) {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("%s=%q: give one of the database's regions %v", key, region, regions))
		return "", false
	}
	return region, true
}

// drSwitchover serves POST /api/v1/dr/switchover?to=REGION: a planned
// switchover, answered once the record names REGION.
func (a *Agent) drSwitchover(w http.ResponseWriter, r *http.Request) {
	k, ok := a.drKeeper(w)
	if !ok {
		return
	}
	to, ok := a.drRegion(w, r, "to")
	if !ok {
		return
	}
	cfg := a.config()
	ctx, cancel := context.WithTimeout(r.Context(), 2*cfg.Database.DR.Lease.D()+30*time.Second)
	defer cancel()
	start := time.Now()
	if err := keeper.SwitchoverRegion(ctx, k.RegionClient(), cfg.Cluster, dbName, to); err != nil {
		web.WriteError(w, http.StatusConflict, err)
		return
	}
	web.WriteJSON(w, http.StatusOK, map[string]any{"active": to, "took": time.Since(start).String()})
}

// drPromote serves POST /api/v1/dr/promote?region=REGION: REGION takes the
// active-region record once the active region stops renewing it, whatever
// its lag; the answer says what the promotion may lose. With force=true it
// is drForce.
func (a *Agent) drPromote(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("force") == "true" {
		a.drForce(w, r)
		return
	}
	k, ok := a.drKeeper(w)
	if !ok {
		return
	}
	region, ok := a.drRegion(w, r, "region")
	if !ok {
		return
	}
	cfg := a.config()
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	rec, err := keeper.PromoteRegion(ctx, k.RegionClient(), cfg.Cluster, dbName, region)
	if err != nil {
		web.WriteError(w, http.StatusConflict, err)
		return
	}
	web.WriteJSON(w, http.StatusAccepted, promoteAnswer(k, region, rec.Holder))
}

// forceTimeout bounds a forced promotion: the quorum check, the member's
// restart, the release of the record.
const forceTimeout = time.Minute

// drForce serves POST /api/v1/dr/promote?region=REGION&force=true, on a
// member of the global scope in REGION, when the global scope has lost its
// quorum for good (the active region and the witness gone): this node's
// member becomes the global scope alone, the record is released to REGION
// and REGION promotes at once, whatever its lag. Refused while the global
// scope has a quorum. docs/dr.md gives the risk: a region and witness that
// were only cut off, not lost, must not come back on their old data.
func (a *Agent) drForce(w http.ResponseWriter, r *http.Request) {
	region, ok := a.drRegion(w, r, "region")
	if !ok {
		return
	}
	cfg := a.config()
	g := a.current().global
	self, _ := cfg.Node(a.opt.Node)
	if g == nil || g.ownMember() == nil || self.Region != region {
		web.WriteError(w, http.StatusConflict, fmt.Errorf("a forced promotion of region %s runs on a member of the global scope in %s: ask one of %v",
			region, region, cfg.GlobalMembersIn(region)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), forceTimeout)
	defer cancel()
	removed, err := g.forceAlone(ctx)
	switch {
	case errors.Is(err, errHasQuorum):
		web.WriteError(w, http.StatusConflict, fmt.Errorf("not forced: %w (%v); the global scope works, so promote without --force: haven dr promote %s", err, cfg.GlobalCoordination().Members, region))
		return
	case err != nil:
		web.WriteError(w, http.StatusInternalServerError, fmt.Errorf("force the global scope: %w", err))
		return
	}
	cl, err := g.waitClients(ctx)
	if err != nil {
		web.WriteError(w, http.StatusInternalServerError, fmt.Errorf("the global scope was forced to %s alone, but the agent does not reach it: %w", a.opt.Node, err))
		return
	}
	rec, err := keeper.ForceRegion(ctx, cl.own, cfg.Cluster, dbName, region)
	if err != nil {
		web.WriteError(w, http.StatusConflict, fmt.Errorf("the global scope was forced to %s alone: %w", a.opt.Node, err))
		return
	}
	a.log.Warn("forced promotion: the global scope is this member alone, the active-region record released", "region", region, "was_active", rec.Holder, "removed", removed)
	var k *keeper.Keeper
	if rs := a.current(); rs.db != nil {
		k = rs.db.keeper.Load()
	}
	out := promoteAnswer(k, region, rec.Holder)
	out["forced"] = true
	out["removed"] = removed
	web.WriteJSON(w, http.StatusAccepted, out)
}

// promoteAnswer says what a promotion of region may lose: its standby
// leader's lag when last heard of, as k sees it (k may be nil).
func promoteAnswer(k *keeper.Keeper, region, active string) map[string]any {
	out := map[string]any{"region": region, "active": active}
	if k == nil {
		return out
	}
	st, _ := k.RegionStatus()
	for _, s := range st.States {
		if s.Region == region && s.Leader {
			out["standby_leader"] = s.Node
			out["lag_bytes"] = s.LagBytes
			out["lag_seconds"] = s.LagSeconds
		}
	}
	return out
}
