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
// its lag; the answer says what the promotion may lose.
func (a *Agent) drPromote(w http.ResponseWriter, r *http.Request) {
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
	out := map[string]any{"region": region, "active": rec.Holder}
	st, _ := k.RegionStatus()
	for _, s := range st.States {
		if s.Region == region && s.Leader {
			out["standby_leader"] = s.Node
			out["lag_bytes"] = s.LagBytes
			out["lag_seconds"] = s.LagSeconds
		}
	}
	web.WriteJSON(w, http.StatusAccepted, out)
}
