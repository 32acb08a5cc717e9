package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/opstate"
	"github.com/haven-ha/haven/internal/web"
)

// With coordination, an operator's drain, maintenance or weight is a
// record in etcd (internal/opstate) that every node of the balancer
// applies, and that a restarted or reloaded agent applies again: the
// admin API writes the record, and the watch started here applies it,
// here and everywhere else. Without coordination the admin API changes
// this node's balancer alone, in memory, as before.

// overridesTimeout bounds one write of a record.
const overridesTimeout = 5 * time.Second

// watchOverrides follows the cluster's records until ctx ends.
func (a *Agent) watchOverrides(ctx context.Context, cl *etcdClients) {
	a.mu.Lock()
	cluster := a.cfg.Cluster
	a.mu.Unlock()
	opstate.Watch(ctx, cl.all, cluster, a.setOverrides, a.log.With("component", "operator"))
}

// setOverrides keeps the records and applies them to the running
// balancers.
func (a *Agent) setOverrides(rs []opstate.Record) {
	a.mu.Lock()
	a.overrides = rs
	a.overridesSeen = true
	a.mu.Unlock()
	a.applyOverrides()
}

// applyOverrides brings every running balancer's backends in line with
// the records: a backend without a state record is ready, one without a
// weight record has the configuration's weight. It changes only what
// differs, so that an unchanged record logs nothing.
func (a *Agent) applyOverrides() {
	a.mu.Lock()
	if !a.overridesSeen {
		a.mu.Unlock()
		return // before the first list: the configuration's states stand
	}
	rs, cfg := a.overrides, a.cfg
	running := map[string]*lb.Balancer{}
	for name, rb := range a.running {
		running[name] = rb.b
	}
	a.mu.Unlock()
	type key struct{ bal, be, what string }
	want := map[key]string{}
	for _, r := range rs {
		want[key{r.Balancer, r.Backend, r.What}] = r.Value
	}
	for name, b := range running {
		bc := cfg.Balancers[name]
		if bc == nil {
			continue
		}
		for _, bs := range b.Status().Backends {
			st, ok := want[key{name, bs.Name, opstate.State}]
			if !ok {
				st = "ready"
			}
			if bs.Admin != st {
				s, _ := lb.ParseAdminState(st)
				if err := b.SetState(bs.Name, s); err != nil {
					a.log.Warn("operator record not applied", "balancer", name, "backend", bs.Name, "err", err)
				}
			}
			w := configuredWeight(bc, bs.Name)
			if v, ok := want[key{name, bs.Name, opstate.Weight}]; ok {
				w, _ = strconv.Atoi(v)
			}
			if bs.Weight != w {
				if err := b.SetWeight(bs.Name, w); err != nil {
					a.log.Warn("operator record not applied", "balancer", name, "backend", bs.Name, "err", err)
				}
			}
		}
	}
}

func configuredWeight(bc *config.Balancer, backend string) int {
	for _, be := range bc.Backends {
		if be.Name == backend && be.Weight != nil {
			return *be.Weight
		}
	}
	return 1
}

// Overrides returns the operator's records as this agent last saw them,
// and whether it has seen them (connected to etcd at least once).
func (a *Agent) Overrides() ([]opstate.Record, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.overrides, a.overridesSeen
}

// overridesClient is the etcd client records are written through, nil
// without coordination.
func (a *Agent) overridesClient() (*clientv3.Client, bool) {
	a.mu.Lock()
	c := a.roles.coord
	a.mu.Unlock()
	if c == nil {
		return nil, false
	}
	return c.etcd(), true
}

// writeOverride writes (or, with value "", deletes) the record of what
// for backend of balancer b, named by its name or address, and waits a
// moment for this node's watch to apply it.
func (a *Agent) writeOverride(w http.ResponseWriter, r *http.Request, cli *clientv3.Client, b *lb.Balancer, balancer, backend, what, value string) {
	name := ""
	for _, bs := range b.Status().Backends {
		if bs.Name == backend || bs.Address == backend {
			name = bs.Name
		}
	}
	if name == "" {
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("balancer %s has no backend %q", balancer, backend))
		return
	}
	if cli == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("not connected to etcd: an operator's change is kept there, for every node; try again once `haven status` shows coordination connected"))
		return
	}
	a.mu.Lock()
	cluster := a.cfg.Cluster
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), overridesTimeout)
	defer cancel()
	var err error
	if value == "" {
		_, err = opstate.Delete(ctx, cli, cluster, balancer, name, what)
	} else {
		rec := opstate.Record{Balancer: balancer, Backend: name, What: what, Value: value,
			Owner: r.Header.Get("X-Haven-Operator"), Reason: r.URL.Query().Get("reason"), Set: time.Now()}
		if rec.Owner == "" {
			rec.Owner = "admin API from " + r.RemoteAddr
		}
		if d := r.URL.Query().Get("for"); d != "" {
			dur, perr := time.ParseDuration(d)
			if perr != nil || dur <= 0 {
				web.WriteError(w, http.StatusBadRequest, fmt.Errorf("for=%q is not a positive duration such as 30m", d))
				return
			}
			rec.Until = rec.Set.Add(dur)
		}
		err = opstate.Put(ctx, cli, cluster, rec)
	}
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	a.log.Info("operator record written", "balancer", balancer, "backend", name, "what", what, "value", value, "owner", r.Header.Get("X-Haven-Operator"))
	a.waitApplied(ctx, b, name, what, value, configuredWeightOf(a, balancer, name))
	a.writeBackend(w, b, name)
}

func configuredWeightOf(a *Agent, balancer, backend string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if bc := a.cfg.Balancers[balancer]; bc != nil {
		return configuredWeight(bc, backend)
	}
	return 1
}

// waitApplied waits, up to ctx, until this node's balancer shows the
// record written: the watch applies it within milliseconds.
func (a *Agent) waitApplied(ctx context.Context, b *lb.Balancer, backend, what, value string, def int) {
	want := value
	if want == "" {
		want = map[string]string{opstate.State: "ready", opstate.Weight: strconv.Itoa(def)}[what]
	}
	for ctx.Err() == nil {
		for _, bs := range b.Status().Backends {
			if bs.Name != backend {
				continue
			}
			if (what == opstate.State && bs.Admin == want) || (what == opstate.Weight && strconv.Itoa(bs.Weight) == want) {
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// overridesHandler serves GET /api/v1/operator: the records as this agent
// last saw them.
func (a *Agent) overridesHandler(w http.ResponseWriter, _ *http.Request) {
	rs, seen := a.Overrides()
	if rs == nil {
		rs = []opstate.Record{}
	}
	web.WriteJSON(w, http.StatusOK, map[string]any{"records": rs, "seen": seen})
}
