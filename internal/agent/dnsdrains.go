package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/haven-ha/haven/internal/gtm"
	"github.com/haven-ha/haven/internal/opstate"
)

// The traffic names' drains (haven dns drain) are operator records in etcd
// when the cluster has coordination, as the balancers' are: every name
// server applies them at once, none misses one, and a restarted name
// server finds them. They live in the global scope when there is one (the
// name servers of every region are in it), else in the coordination's.

// dnsScope is the coordination whose etcd keeps the traffic names'
// drains, nil without coordination.
func (a *Agent) dnsScope() *coordination {
	rs := a.current()
	if a.config().GlobalCoordination() != nil {
		return rs.global
	}
	return rs.coord
}

// watchDNSDrains follows the drains in the global scope until ctx ends
// (in the coordination's scope, watchOverrides sees them).
func (a *Agent) watchDNSDrains(ctx context.Context, cl *etcdClients) {
	opstate.Watch(ctx, cl.all, a.config().Cluster, a.setDNSDrains, a.log.With("component", "operator", "scope", "global"))
}

// setDNSDrains keeps the traffic names' drains among rs and applies them
// to the traffic manager, when this node runs one.
func (a *Agent) setDNSDrains(rs []opstate.Record) {
	a.storeDNSDrains(rs)
	a.applyDNSDrains()
}

// storeDNSDrains keeps the traffic names' drains among rs.
func (a *Agent) storeDNSDrains(rs []opstate.Record) {
	drains := map[string]time.Time{}
	for _, r := range rs {
		if r.Kind == opstate.KindDNS {
			drains[gtm.DrainKey(r.Balancer, r.Backend)] = r.Until
		}
	}
	a.mu.Lock()
	a.dnsDrains = drains
	a.mu.Unlock()
}

// recordDNSDrain writes or removes (drain false) the record of name's
// target, in the scope that keeps them, and waits, up to ctx, until this
// node's traffic manager applies it. It reports false when there is no
// such scope (no coordination).
func (a *Agent) recordDNSDrain(ctx context.Context, r *http.Request, tr *trafficRole, name, target string, drain bool, d time.Duration) (bool, error) {
	c := a.dnsScope()
	if c == nil {
		return false, nil
	}
	cli := c.etcd()
	if cli == nil {
		return true, errors.New("not connected to etcd, where the drains are kept: try another name server")
	}
	rec := opstate.Record{Kind: opstate.KindDNS, Balancer: name, Backend: target, What: opstate.State, Value: "drain",
		Owner: r.Header.Get("X-Haven-Operator"), Reason: r.URL.Query().Get("reason"), Set: time.Now()}
	if rec.Owner == "" {
		rec.Owner = "admin API from " + r.RemoteAddr
	}
	rec.Until = rec.Set.Add(d)
	var err error
	if drain {
		err = opstate.Put(ctx, cli, a.config().Cluster, rec)
	} else {
		_, err = opstate.DeleteRecord(ctx, cli, a.config().Cluster, rec)
	}
	if err != nil {
		return true, err
	}
	a.log.Info("operator record written", "event", "drain", "name", name, "target", target, "drain", drain, "for", d, "owner", rec.Owner)
	if !drain {
		_ = tr.svc.Enable(name, target) // a drain of this node's alone, from before, ends too
	}
	for ctx.Err() == nil {
		if tr.svc.Drained(name, target) == drain {
			return true, nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return true, fmt.Errorf("recorded in etcd; this name server has not applied it yet: %w", ctx.Err())
}

// setTraffic makes tr the running traffic role and gives it the drains
// read from etcd so far.
func (a *Agent) setTraffic(tr *trafficRole) {
	a.mu.Lock()
	a.traffic = tr
	a.mu.Unlock()
	a.applyDNSDrains()
}

// applyDNSDrains gives the running traffic role the drains last read from
// etcd. Serialised, each reading the latest of both: a watch that
// delivers while the role starts is neither lost nor overtaken by an
// older set.
func (a *Agent) applyDNSDrains() {
	a.dnsApplyMu.Lock()
	defer a.dnsApplyMu.Unlock()
	a.mu.Lock()
	tr, drains := a.traffic, a.dnsDrains
	a.mu.Unlock()
	if tr != nil && drains != nil {
		tr.svc.SetRecordedDrains(drains)
	}
}

// preloadDNSDrains reads the traffic names' drains from c's etcd before
// the traffic role starts, so that a restarted name server never answers
// with a target an operator drained.
func (a *Agent) preloadDNSDrains(c *coordination) {
	rs, err := a.listRecords(c)
	if err != nil {
		a.log.Warn("the traffic names' drains not read before the name server starts: they apply once etcd answers", "err", err)
		return
	}
	a.storeDNSDrains(rs)
}
