package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/gtm"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/web"
)

// trafficRole is this node's traffic manager, when haven.yaml names it
// among traffic.nameservers. A reload changes it in place (gtm's Reload),
// or starts or stops it when the node joins or leaves the name servers.
type trafficRole struct {
	svc    *gtm.Service
	cancel context.CancelFunc
	done   chan error
}

// startTraffic binds the traffic manager's listeners (a busy port fails
// the start) and runs it in the background.
func (a *Agent) startTraffic(cfg *config.Config) (*trafficRole, error) {
	if cfg.Traffic == nil || !slices.Contains(cfg.Traffic.Nameservers, a.opt.Node) {
		return nil, nil
	}
	opt := gtm.ServiceOptions{Logger: a.log, HealthMetrics: a.hm, OnTransition: a.recordEvent, Cluster: cfg.Cluster}
	if cfg.Coordination != nil {
		// The coordination starts before the traffic role and connects in
		// the background: the views wait for its client.
		opt.Etcd = func(ctx context.Context) (*clientv3.Client, error) {
			co := a.current().coord
			if co == nil {
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return co.waitEtcd(ctx)
		}
	}
	if db := cfg.Database; db != nil && db.DR != nil {
		opt.ActiveRegion = a.watchActiveRegion
	}
	svc, err := gtm.NewService(cfg, a.opt.Node, opt)
	if err != nil {
		return nil, err
	}
	udp, tcp, err := svc.Listen()
	if err != nil {
		svc.Close()
		return nil, err
	}
	// Registered while the role runs; stop unregisters it.
	if err := a.reg.Register(svc.Server()); err != nil {
		a.log.Warn("traffic manager metrics not registered", "err", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &trafficRole{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx, udp, tcp) }()
	a.admin.SetStatus("traffic", func() any { return svc.Status() })
	return r, nil
}

// watchActiveRegion calls fn with the region that holds the database's
// active-region record, through the global scope, now and at every change
// until ctx ends (gtm.ServiceOptions.ActiveRegion).
func (a *Agent) watchActiveRegion(ctx context.Context, fn func(region string)) {
	g := a.current().global
	if g == nil {
		a.log.Error("the traffic manager cannot follow the active region: this node has no part in the global scope")
		return
	}
	cli, err := g.waitEtcd(ctx)
	if err != nil {
		return
	}
	prefix := keeper.RegionOwnerPrefix(a.config().Cluster, dbName) + "/"
	for ctx.Err() == nil {
		err := coord.WatchPrefix(ctx, cli, prefix, func(m map[string]coord.Record) { fn(m["record"].Holder) })
		if err != nil && ctx.Err() == nil {
			a.log.Warn("watching the active region", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// reloadTraffic applies a reloaded traffic section: in place, or by
// starting or stopping the role. It returns the changes that need a
// restart of the agent.
func (a *Agent) reloadTraffic(cfg *config.Config) ([]string, error) {
	a.mu.Lock()
	tr := a.traffic
	a.mu.Unlock()
	serves := cfg.Traffic != nil && slices.Contains(cfg.Traffic.Nameservers, a.opt.Node)
	switch {
	case tr != nil && serves:
		return tr.svc.Reload(cfg)
	case tr != nil:
		a.mu.Lock()
		a.traffic = nil
		a.mu.Unlock()
		tr.stop(a)
		a.log.Info("traffic manager stopped: this node is no longer in traffic.nameservers")
		return nil, nil
	case serves:
		tr, err := a.startTraffic(cfg)
		if err != nil {
			return nil, err
		}
		a.setTraffic(tr)
	}
	return nil, nil
}

// stop stops answering and the checks.
func (r *trafficRole) stop(a *Agent) {
	if r == nil {
		return
	}
	a.admin.SetStatus("traffic", nil)
	r.cancel()
	if err := <-r.done; err != nil {
		a.log.Error("traffic manager stopped with an error", "err", err)
	}
	r.svc.Close()
	a.reg.Unregister(r.svc.Server())
}

// trafficAction serves POST /api/v1/traffic/{name}/{target}/drain?for=D
// and .../enable: an operator's drain of a target, with an expiry
// (default 1h), and its end: a record in etcd that every name server
// applies, with coordination; this name server's alone, in memory,
// without.
func (a *Agent) trafficAction(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	tr := a.traffic
	a.mu.Unlock()
	if tr == nil {
		web.WriteError(w, http.StatusNotFound, errors.New("this node runs no traffic manager (it is not in traffic.nameservers)"))
		return
	}
	name, target := r.PathValue("name"), r.PathValue("target")
	action := r.PathValue("action")
	if action != "drain" && action != "enable" {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("action %q is not one of drain, enable", action))
		return
	}
	d := time.Hour
	if v := r.URL.Query().Get("for"); v != "" && action == "drain" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 {
			web.WriteError(w, http.StatusBadRequest, fmt.Errorf("for=%q is not a positive duration such as 30m", v))
			return
		}
	}
	// Unknown names and targets are refused before anything is written.
	if err := tr.svc.Known(name, target); err != nil {
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), overridesTimeout)
	defer cancel()
	recorded, err := a.recordDNSDrain(ctx, r, tr, name, target, action == "drain", d)
	switch {
	case recorded && err != nil:
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	case recorded:
	case action == "drain":
		err = tr.svc.Drain(name, target, d)
	default:
		err = tr.svc.Enable(name, target)
	}
	if err != nil {
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	web.WriteJSON(w, http.StatusOK, tr.svc.Status())
}
