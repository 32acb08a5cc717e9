package agent

import (
	"context"
	"errors"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/haven-ha/haven/internal/web"
)

// routes mounts the admin API.
func (a *Agent) routes() {
	a.admin.SetStatus("balancers", func() any { return a.Balancers() })
	a.admin.SetStatus("events", func() any { return a.Events() })
	a.admin.HandleRead("GET /api/v1/balancers", func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, a.Balancers())
	})
	a.admin.HandleMutating("POST /api/v1/balancers/{balancer}/backends/{backend}/{action}", a.backendAction)
	a.admin.HandleRead("GET /api/v1/operator", a.overridesHandler)
	a.coordRoutes()
	a.admin.HandleMutating("POST /api/v1/balancers/{balancer}/backends/{backend}/weight/{weight}", a.backendWeight)
	a.admin.SetStatus("coordination", func() any {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if st := a.current().coordinationStatus(ctx); st != nil {
			return st
		}
		return nil
	})
	a.admin.SetStatus("drills", func() any {
		a.mu.Lock()
		s := a.drillSched
		a.mu.Unlock()
		if s == nil {
			return nil
		}
		return s.status()
	})
	a.admin.SetStatus("objectives", func() any {
		if st := a.objectives(); st != nil {
			return st
		}
		return nil
	})
	a.admin.HandleRead("GET /api/v1/vips", func(w http.ResponseWriter, r *http.Request) {
		web.WriteJSON(w, http.StatusOK, a.current().vips.statuses())
	})
	a.admin.HandleMutating("POST /api/v1/vips/{balancer}/move", a.moveVIP)
	a.admin.HandleRead("GET /api/v1/database", a.database)
	a.admin.HandleMutating("POST /api/v1/database/switchover", a.switchover)
	a.admin.HandleMutating("POST /api/v1/database/bootstrap", a.galeraBootstrap)
	a.admin.HandleMutating("POST /api/v1/database/reinit", a.reinit)
	a.admin.HandleMutating("POST /api/v1/agent/restart", a.restart)
	a.admin.HandleMutating("POST /api/v1/database/restart", a.restartDatabase)
	a.admin.HandleMutating("POST /api/v1/database/failover", a.failover)
	a.admin.HandleMutating("POST /api/v1/database/pause", a.pause)
	a.admin.HandleMutating("DELETE /api/v1/database/pause", a.resume)
	a.admin.HandleMutating("POST /api/v1/traffic/{name}/{target}/{action}", a.trafficAction)
	a.databaseRoutes()
	a.drRoutes()
	a.drillRoutes()
	a.drillLockRoutes()
	a.backupRoutes()
	a.pprofRoutes()
	a.timelineRoutes()
	a.consoleRoutes()
	a.volumeRoutes()
	a.admin.HandleMutating("POST /api/v1/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := a.Reload(); err != nil {
			web.WriteError(w, http.StatusUnprocessableEntity, err)
			return
		}
		web.WriteJSON(w, http.StatusOK, map[string]string{"result": "reloaded"})
	})
}

// pprofRoutes serves Go's profiler on the admin port while admin.pprof
// is set (a reload turns it on or off): CPU and heap profiles, goroutines
// and traces of a running agent, to find where time goes under load. Off
// loopback it needs the admin token, as a mutating call does: a profile
// costs CPU and shows the process's internals.
func (a *Agent) pprofRoutes() {
	on := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			enabled := a.cfg.Admin.Pprof
			a.mu.Unlock()
			if !enabled {
				web.WriteError(w, http.StatusNotFound, errors.New("the profiler is off: set admin.pprof: true in haven.yaml and reload"))
				return
			}
			h(w, r)
		}
	}
	a.admin.HandleMutating("GET /debug/pprof/", on(pprof.Index))
	a.admin.HandleMutating("GET /debug/pprof/cmdline", on(pprof.Cmdline))
	a.admin.HandleMutating("GET /debug/pprof/profile", on(pprof.Profile))
	a.admin.HandleMutating("GET /debug/pprof/symbol", on(pprof.Symbol))
	a.admin.HandleMutating("GET /debug/pprof/trace", on(pprof.Trace))
}
