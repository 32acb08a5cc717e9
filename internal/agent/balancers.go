package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/opstate"
	"github.com/haven-ha/haven/internal/web"
)

// apply brings the running balancers in line with cfg.
func (a *Agent) apply(cfg *config.Config) error {
	want := map[string]*config.Balancer{}
	for _, bc := range cfg.BalancersOn(a.opt.Node) {
		want[bc.Name] = bc
	}
	a.mu.Lock()
	var stop []string
	for name, rb := range a.running {
		if bc, ok := want[name]; !ok || !rb.b.SameListener(bc) {
			stop = append(stop, name)
		}
	}
	for name := range a.failed {
		if want[name] == nil {
			delete(a.failed, name)
			a.admin.RemoveReadiness("balancer " + name)
		}
	}
	a.mu.Unlock()
	for _, name := range stop {
		a.stopBalancer(name)
	}
	var errs []error
	for name, bc := range want {
		check, _ := cfg.Check(bc.Check)
		a.mu.Lock()
		rb := a.running[name]
		a.mu.Unlock()
		if rb != nil {
			errs = append(errs, rb.b.Reload(bc, check))
			continue
		}
		errs = append(errs, a.startBalancer(bc, check))
	}
	// A reload resets weights to the file's, and a new balancer starts
	// ready: the operator's records apply again on top.
	a.applyOverrides(cfg)
	return errors.Join(errs...)
}

func (a *Agent) startBalancer(bc *config.Balancer, check *config.Check) error {
	b, err := lb.New(bc, check, lb.Options{
		Logger:        a.log,
		Metrics:       a.lbm,
		HealthMetrics: a.hm,
		OnTransition:  a.recordEvent,
	})
	if err != nil {
		return err
	}
	// Bind here rather than in b.Run, so that a busy or invalid address
	// fails the start or the reload instead of leaving a balancer that
	// looks configured and never listens.
	ln, err := lb.Listen(bc.Listen)
	if err != nil {
		err = fmt.Errorf("lb: balancer %s: listen %s: %w", bc.Name, bc.Listen, err)
		a.mu.Lock()
		a.failed[bc.Name] = true
		a.mu.Unlock()
		a.admin.AddReadiness("balancer "+bc.Name, func() error { return err })
		return err
	}
	a.mu.Lock()
	delete(a.failed, bc.Name)
	ctx, cancel := context.WithCancel(a.ctx)
	rb := &runningBalancer{b: b, cancel: cancel, done: make(chan error, 1)}
	a.running[bc.Name] = rb
	a.mu.Unlock()
	go func() {
		err := b.Serve(ctx, ln)
		if err != nil {
			a.log.Error("balancer stopped with an error", "balancer", bc.Name, "err", err)
		}
		rb.done <- err
	}()
	a.admin.AddReadiness("balancer "+bc.Name, b.Ready)
	return nil
}

func (a *Agent) stopBalancer(name string) {
	a.mu.Lock()
	rb := a.running[name]
	delete(a.running, name)
	a.mu.Unlock()
	if rb == nil {
		return
	}
	a.admin.RemoveReadiness("balancer " + name)
	rb.cancel()
	<-rb.done
}

// stopBalancers stops every balancer at once, so their lameduck periods
// overlap, and makes later reloads only record the configuration.
func (a *Agent) stopBalancers() {
	a.mu.Lock()
	a.ctx = nil
	names := make([]string, 0, len(a.running))
	for n := range a.running {
		names = append(names, n)
	}
	a.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range names {
		wg.Go(func() { a.stopBalancer(n) })
	}
	wg.Wait()
}

func (a *Agent) recordEvent(ev health.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.events) >= maxEvents {
		a.events = slices.Delete(a.events, 0, len(a.events)-maxEvents+1)
	}
	a.events = append(a.events, ev)
}

// Events returns the recent health transitions of this node's targets.
func (a *Agent) Events() []health.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.events)
}

func (a *Agent) balancer(name string) (*lb.Balancer, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rb := a.running[name]
	if rb == nil {
		names := make([]string, 0, len(a.running))
		for n := range a.running {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fmt.Errorf("no balancer %q runs on node %s (running: %v)", name, a.opt.Node, names)
	}
	return rb.b, nil
}

// Balancers returns the status of every balancer on this node.
func (a *Agent) Balancers() []lb.Status {
	a.mu.Lock()
	bs := make([]*lb.Balancer, 0, len(a.running))
	for _, rb := range a.running {
		bs = append(bs, rb.b)
	}
	a.mu.Unlock()
	out := make([]lb.Status, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.Status())
	}
	slices.SortFunc(out, func(x, y lb.Status) int { return strings.Compare(x.Name, y.Name) })
	return out
}

func (a *Agent) backendAction(w http.ResponseWriter, r *http.Request) {
	b, err := a.balancer(r.PathValue("balancer"))
	if err != nil {
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	st, ok := lb.ParseAdminState(r.PathValue("action"))
	if !ok {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("action %q is not one of drain, maint, enable", r.PathValue("action")))
		return
	}
	if cli, coordinated := a.overridesClient(); coordinated {
		value := st.String()
		if st == lb.Ready {
			value = "" // enable: the record goes
		}
		a.writeOverride(w, r, cli, b, r.PathValue("balancer"), r.PathValue("backend"), opstate.State, value)
		return
	}
	if err := b.SetState(r.PathValue("backend"), st); err != nil {
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	a.writeBackend(w, b, r.PathValue("backend"))
}

func (a *Agent) backendWeight(w http.ResponseWriter, r *http.Request) {
	b, err := a.balancer(r.PathValue("balancer"))
	if err != nil {
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	cli, coordinated := a.overridesClient()
	if coordinated && r.PathValue("weight") == "default" {
		a.writeOverride(w, r, cli, b, r.PathValue("balancer"), r.PathValue("backend"), opstate.Weight, "")
		return
	}
	n, err := strconv.Atoi(r.PathValue("weight"))
	if err != nil || n < 0 || n > 256 {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("weight %q is not a number 0-256", r.PathValue("weight")))
		return
	}
	if coordinated {
		a.writeOverride(w, r, cli, b, r.PathValue("balancer"), r.PathValue("backend"), opstate.Weight, strconv.Itoa(n))
		return
	}
	if err := b.SetWeight(r.PathValue("backend"), n); err != nil {
		// The weight is in range: what is wrong is the backend's name.
		web.WriteError(w, http.StatusNotFound, err)
		return
	}
	a.writeBackend(w, b, r.PathValue("backend"))
}

func (a *Agent) writeBackend(w http.ResponseWriter, b *lb.Balancer, name string) {
	for _, bs := range b.Status().Backends {
		if bs.Name == name || bs.Address == name {
			web.WriteJSON(w, http.StatusOK, bs)
			return
		}
	}
	web.WriteJSON(w, http.StatusOK, map[string]string{"result": "ok"})
}
