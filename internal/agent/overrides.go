package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
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

// preloadTimeout bounds the read of the records before the balancers
// start: a node whose etcd does not answer that fast starts them with the
// configuration's states, and the watch applies the records once it does.
const preloadTimeout = 2 * time.Second

// preloadOverrides reads the operator's records before the balancers
// start, so that a restarted agent does not send a moment of traffic to a
// backend an operator took out (a drain, maintenance for a deploy).
func (a *Agent) preloadOverrides(c *coordination) {
	rs, err := a.listRecords(c)
	if err != nil {
		a.log.Warn("operator records not read before the balancers start: they apply once etcd answers", "err", err)
		return
	}
	a.mu.Lock()
	a.overrides, a.overridesSeen = rs, true
	a.mu.Unlock()
	a.log.Info("operator records read before the balancers start", "records", len(rs))
}

// listRecords reads the operator's records from c's etcd, within
// preloadTimeout, through a client of its own: the coordination connects
// later, in the background.
func (a *Agent) listRecords(c *coordination) ([]opstate.Record, error) {
	ctx, cancel := context.WithTimeout(context.Background(), preloadTimeout)
	defer cancel()
	cli, err := coord.NewClient(ctx, coord.ClientConfig{Endpoints: c.endpoints(), TLS: c.tls(), DialTimeout: preloadTimeout, Logger: a.log})
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	rs, _, _, err := opstate.List(ctx, cli, c.cfg.Cluster)
	return rs, err
}

// setOverrides keeps the records and applies them to the running
// balancers.
func (a *Agent) setOverrides(rs []opstate.Record) {
	a.mu.Lock()
	a.overrides = rs
	a.overridesSeen = true
	cfg := a.cfg
	a.mu.Unlock()
	a.applyOverrides(cfg)
	if cfg.GlobalCoordination() == nil {
		// The traffic names' drains are in this scope too.
		a.setDNSDrains(rs)
	}
}

// applyOverrides brings every running balancer's backends in line with
// the records: a backend without a state record is ready, one without a
// weight record has cfg's weight (the file being applied: a reload calls
// it before it keeps the new file). It changes only what differs, so that
// an unchanged record logs nothing. Calls are serialised and each reads
// the newest records, so that a reload's apply cannot put back an older
// set after the watch applied a newer one.
func (a *Agent) applyOverrides(cfg *config.Config) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	a.mu.Lock()
	if !a.overridesSeen {
		a.mu.Unlock()
		return // before the first list: the configuration's states stand
	}
	rs := a.overrides
	running := map[string]*lb.Balancer{}
	for name, rb := range a.running {
		running[name] = rb.b
	}
	a.mu.Unlock()
	type key struct{ bal, be, what string }
	want := map[key]string{}
	for _, r := range rs {
		if r.Kind == "" { // a balancer's, not a traffic name's
			want[key{r.Balancer, r.Backend, r.What}] = r.Value
		}
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
	if name == "" && value == "" {
		// A record of a backend the file no longer has can still go.
		name = backend
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
		if verr := rec.Valid(); verr != nil {
			web.WriteError(w, http.StatusBadRequest, verr)
			return
		}
		err = opstate.Put(ctx, cli, cluster, rec)
	}
	if err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	a.log.Info("operator record written", "event", "drain", "balancer", balancer, "backend", name, "what", what, "value", value, "owner", r.Header.Get("X-Haven-Operator"))
	if !a.waitApplied(ctx, b, name, what, value, configuredWeightOf(a, balancer, name)) {
		// Written, but this node's watch has not applied it (yet): say
		// so with 202 rather than a 200 showing the old state.
		a.log.Warn("operator record written but not applied here within the wait", "balancer", balancer, "backend", name)
		web.WriteJSON(w, http.StatusAccepted, map[string]string{"result": "recorded in etcd; not applied on this node yet"})
		return
	}
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
// record written (the watch applies it within milliseconds), and says
// whether it did.
func (a *Agent) waitApplied(ctx context.Context, b *lb.Balancer, backend, what, value string, def int) bool {
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
				return true
			}
		}
		if !slices.ContainsFunc(b.Status().Backends, func(bs lb.BackendStatus) bool { return bs.Name == backend }) {
			return true // a record of a backend the file no longer has
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
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
