package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/vip"
	"github.com/haven-ha/haven/internal/web"
)

// floating is this node's floating addresses: the fence they share and one
// vipRole per balancer with an address.
type floating struct {
	a     *Agent
	cfg   *config.Config // as the agent started: a change needs a restart
	fence *vip.Fence
	roles []*vipRole
	stopM context.CancelFunc
	runM  sync.WaitGroup // the managers' Run
}

// vipRole is one floating address of one balancer on this node: its
// manager (the guard) and, once etcd answers, its owner.
type vipRole struct {
	balancer string
	cfg      *config.VIP
	mgr      *vip.Manager

	mu    sync.Mutex
	owner *coord.Owner // nil until connected
}

// How often a floating address's eligibility (its balancer is ready) is
// re-read.
const eligibilityPeriod = 50 * time.Millisecond

// newFloating makes a role per floating address haven.yaml gives this
// node's balancers; it touches nothing. It returns nil when there is none.
func newFloating(a *Agent, cfg *config.Config) (*floating, error) {
	f := &floating{a: a, cfg: cfg}
	for _, b := range cfg.BalancersOn(a.opt.Node) {
		if b.VIP == nil {
			continue
		}
		p, err := netip.ParsePrefix(b.VIP.Address)
		if err != nil {
			return nil, fmt.Errorf("vip %s: %w", b.Name, err)
		}
		f.roles = append(f.roles, &vipRole{balancer: b.Name, cfg: b.VIP})
		if f.fence == nil {
			f.fence = vip.NewFence(vip.FenceConfig{})
		}
		m, err := vip.NewManager(vip.ManagerConfig{
			Name: b.Name, Node: a.opt.Node, Prefix: p, Interface: b.VIP.Interface,
			Notify: b.VIP.Notify, Fence: f.fence, Logger: a.log, Metrics: a.vipm,
		})
		if err != nil {
			return nil, err
		}
		f.roles[len(f.roles)-1].mgr = m
	}
	if len(f.roles) == 0 {
		return nil, nil
	}
	return f, nil
}

// start installs the fence and makes every address silent (removing a
// copy a crashed agent left on its interface), then runs the managers.
// Errors that an operator must fix (no interface for an address, no
// nftables) fail it, and it undoes what it did.
func (f *floating) start() error {
	var managed []netip.Addr
	for _, r := range f.roles {
		p, _ := netip.ParsePrefix(r.cfg.Address)
		managed = append(managed, p.Addr())
	}
	if err := f.fence.Install(managed); err != nil {
		return fmt.Errorf("vip: install the fence (needs root or CAP_NET_ADMIN and nftables in the kernel): %w", err)
	}
	for _, r := range f.roles {
		if err := r.mgr.Prepare(); err != nil {
			f.removeFence()
			return err
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.stopM = cancel
	for _, r := range f.roles {
		f.runM.Go(func() {
			if err := r.mgr.Run(ctx); err != nil {
				f.a.log.Warn("floating address", "balancer", r.balancer, "err", err)
			}
		})
	}
	return nil
}

// stop removes the addresses and the fence. The owners must have handed
// over first (the coordination stops before).
func (f *floating) stop() {
	f.stopM()
	f.runM.Wait()
	f.removeFence()
}

func (f *floating) removeFence() {
	if err := f.fence.Remove(); err != nil {
		f.a.log.Warn("remove the fence", "err", err)
	}
}

// compete runs an owner per address until ctx ends: each competes for its
// record while its balancer is ready, and hands over before the balancer
// stops.
func (f *floating) compete(ctx context.Context, cl *etcdClients) {
	var wg sync.WaitGroup
	for _, r := range f.roles {
		wg.Go(func() { r.compete(ctx, f.a, f.cfg.Cluster, cl) })
	}
	wg.Wait()
}

func (r *vipRole) compete(ctx context.Context, a *Agent, cluster string, cl *etcdClients) {
	o, err := coord.NewOwner(coord.OwnerConfig{
		Client:     cl.own,
		Alternates: cl.others,
		Prefix:     coord.OwnerPrefix(cluster, "vip", r.balancer),
		Node:       a.opt.Node,
		Priority:   r.cfg.Priority[a.opt.Node],
		Preempt:    *r.cfg.Preempt,
		Lease:      r.cfg.Lease.D(),
		Guard:      r.mgr,
		Logger:     a.log.With("component", "vip", "balancer", r.balancer),
		Registerer: a.reg,
	})
	if err != nil {
		a.log.Error("vip", "balancer", r.balancer, "err", err)
		return
	}
	r.mu.Lock()
	r.owner = o
	r.mu.Unlock()
	// The owner's context ends when this one does: Run then hands the
	// record over, before the balancer stops.
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { _ = o.Run(ctx) })
	t := time.NewTicker(eligibilityPeriod)
	defer t.Stop()
	for {
		b, err := a.balancer(r.balancer)
		ok := err == nil && b.Ready() == nil && r.mgr.Healthy() == nil
		r.mgr.SetEligible(ok)
		o.SetEligible(ok)
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

func (r *vipRole) currentOwner() *coord.Owner {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owner
}

func (f *floating) what() string { return "a floating address" }

// holding reports whether this node holds any of its floating addresses.
func (f *floating) holding() bool {
	return slices.ContainsFunc(f.roles, func(r *vipRole) bool { return r.mgr.Status().State == vip.StateHolder })
}

// cleanSince is since when every owner's writes through the member at
// endpoint have gone cleanly (see coord.Owner.CleanSince; zero while an
// owner is not running or has no client of that member).
func (f *floating) cleanSince(endpoint string) time.Time {
	var clean time.Time
	for _, r := range f.roles {
		o := r.currentOwner()
		if o == nil {
			return time.Time{}
		}
		c := o.CleanSince(endpoint)
		if c.IsZero() {
			return time.Time{}
		}
		if c.After(clean) {
			clean = c
		}
	}
	return clean
}

// VIPStatus is one floating address: this node's state and the record's
// holder and epoch.
type VIPStatus struct {
	vip.Status
	Holder     string            `json:"holder"`
	HeldEpoch  int64             `json:"held_epoch"`
	Candidates []coord.Candidate `json:"candidates"`
}

// statuses reports this node's floating addresses, without asking etcd.
func (f *floating) statuses() []VIPStatus {
	out := []VIPStatus{}
	if f == nil {
		return out
	}
	for _, r := range f.roles {
		vs := VIPStatus{Status: r.mgr.Status()}
		if o := r.currentOwner(); o != nil {
			os := o.Status()
			vs.Holder, vs.HeldEpoch, vs.Candidates = os.Holder, os.Epoch, os.Candidates
		}
		out = append(out, vs)
	}
	return out
}

// moveVIP serves POST /api/v1/vips/{balancer}/move?to=NODE: it asks the
// holder, through etcd, to hand over, and waits until to holds it.
func (a *Agent) moveVIP(w http.ResponseWriter, r *http.Request) {
	name, to := r.PathValue("balancer"), r.URL.Query().Get("to")
	rs := a.current()
	var role *vipRole
	if rs.vips != nil {
		for _, v := range rs.vips.roles {
			if v.balancer == name {
				role = v
			}
		}
	}
	nodes := a.balancerNodes(name)
	switch {
	case role == nil:
		web.WriteError(w, http.StatusNotFound, fmt.Errorf("balancer %q has no floating address on node %s", name, a.opt.Node))
		return
	case to == "":
		web.WriteError(w, http.StatusBadRequest, errors.New("say which node: ?to=NODE"))
		return
	case !slices.Contains(nodes, to):
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("%s is not one of balancer %s's nodes (%s)", to, name, strings.Join(nodes, ", ")))
		return
	}
	cli := rs.coord.etcd()
	o := role.currentOwner()
	if cli == nil || o == nil {
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("not connected to etcd yet"))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if st := o.Status(); st.Holder == to {
		web.WriteJSON(w, http.StatusOK, map[string]any{"holder": to, "epoch": st.Epoch, "result": "already there"})
		return
	}
	if !slices.ContainsFunc(o.Status().Candidates, func(c coord.Candidate) bool { return c.Node == to && c.Eligible }) {
		web.WriteError(w, http.StatusConflict, fmt.Errorf("%s is not an eligible candidate for %s's address: its agent must run and its balancer be ready", to, name))
		return
	}
	if err := coord.RequestHandover(ctx, cli, coord.OwnerPrefix(rs.coord.cfg.Cluster, "vip", name), to); err != nil {
		web.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	if err := o.WaitFor(ctx, func(s coord.OwnerStatus) bool { return s.Holder == to }); err != nil {
		web.WriteError(w, http.StatusGatewayTimeout, fmt.Errorf("%s did not take the address within 5s (is it eligible? its balancer must be ready): %w", to, err))
		return
	}
	st := o.Status()
	web.WriteJSON(w, http.StatusOK, map[string]any{"holder": st.Holder, "epoch": st.Epoch, "took_ms": time.Since(start).Milliseconds()})
}

func (a *Agent) balancerNodes(name string) []string {
	for _, b := range a.config().BalancersOn(a.opt.Node) {
		if b.Name == name {
			return b.Nodes
		}
	}
	return nil
}
