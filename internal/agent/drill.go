package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/web"
)

// The fault API (drills.enabled): each agent injects faults on its own
// node when a drill asks, and undoes each when its time is up, whatever
// becomes of the drill's client (package fault).

// roleProcess is the one role whose process and data directory the
// faults reach; the agent itself (fault.TargetAgent) and the processes of
// drills.processes (process:NAME) are targets too.
const roleProcess = "postgres"

// startDrills makes the node's fault manager when drills are enabled,
// after clearing what a killed agent left, and stacks its undoing of
// every active fault first of all at stop.
func (a *Agent) startDrills(cfg *config.Config, st *stack) error {
	if cfg.Drills == nil || !cfg.Drills.Enabled {
		return nil
	}
	// The agent's pause is held by this binary run again (haven drill
	// hold): a stopped agent cannot wake itself.
	var hold []string
	if exe, err := os.Executable(); err == nil {
		hold = []string{exe, "drill", "hold"}
	} else {
		a.log.Warn("drill: the agent cannot pause itself: its binary's path is unknown", "err", err)
	}
	m := fault.NewManager(fault.Env{
		Process:     a.faultProcess,
		DataDir:     a.faultDataDir,
		Address:     a.faultAddress,
		Processes:   a.faultNamedProcess,
		HoldCommand: hold,
		MaxDuration: cfg.Drills.MaxDuration.D(),
		Logger:      a.log,
		Injected:    func(k fault.Kind) { a.drillm.injected.WithLabelValues(string(k)).Inc() },
	})
	var dirs []string
	if dir, err := a.faultDataDir(roleProcess); err == nil {
		dirs = append(dirs, dir)
	}
	if err := m.Recover(dirs...); err != nil {
		a.log.Warn("drill: cannot clear what a previous run left", "err", err)
	}
	a.mu.Lock()
	a.faults = m
	a.mu.Unlock()
	a.log.Warn("drills are enabled: this agent injects faults on its node when asked through its admin API", "max_duration", cfg.Drills.MaxDuration)
	st.push("drill faults", func() {
		if err := m.Close(); err != nil {
			a.log.Error("drill: faults not undone at stop", "err", err)
		}
	})
	return nil
}

func (a *Agent) faultProcess(role string) (int, error) {
	if role != roleProcess {
		return 0, fmt.Errorf("target %q: give %s, %s or %sNAME (a process of drills.processes)", role, roleProcess, fault.TargetAgent, fault.ProcessPrefix)
	}
	db := a.current().db
	if db == nil {
		return 0, fmt.Errorf("node %s runs no postgres", a.opt.Node)
	}
	pid := db.srv.PID()
	if pid == 0 {
		return 0, errors.New("postgres does not run now")
	}
	return pid, nil
}

func (a *Agent) faultDataDir(role string) (string, error) {
	db := a.current().db
	if role != roleProcess || db == nil {
		return "", fmt.Errorf("target %q: node %s has no data directory of it (the faults reach %s's only)", role, a.opt.Node, roleProcess)
	}
	dir := db.srv.DataDir()
	if _, err := os.Stat(dir); err != nil {
		return "", err
	}
	return dir, nil
}

// faultNamedProcess returns the process of drills.processes called name.
func (a *Agent) faultNamedProcess(name string) (fault.Process, error) {
	cfg := a.config()
	var p *config.DrillProcess
	if cfg.Drills != nil {
		p = cfg.Drills.Processes[name]
	}
	if p == nil {
		var names []string
		if cfg.Drills != nil {
			names = slices.Sorted(maps.Keys(cfg.Drills.Processes))
		}
		return fault.Process{}, fmt.Errorf("process %q is not in drills.processes (it names: %s)", name, listOrNone(names))
	}
	return fault.Process{PIDFile: p.PIDFile, Unit: p.Unit}, nil
}

func (a *Agent) faultAddress(peer string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), peerLookup)
	defer cancel()
	return peerAddrs(ctx, a.config(), peer, net.DefaultResolver.LookupNetIP)
}

// peerLookup bounds the DNS lookup of a backend's host name.
const peerLookup = 2 * time.Second

// peerAddrs resolves a peer of a drop or loss: a node by its name, or a
// backend of a balancer by its address (HOST:PORT, as the configuration
// writes it, or its HOST alone), so that a drill can cut the balancers off
// one backend. A backend's host name is looked up with lookup.
func peerAddrs(ctx context.Context, cfg *config.Config, peer string, lookup func(context.Context, string, string) ([]netip.Addr, error)) ([]netip.Addr, error) {
	if n, ok := cfg.Node(peer); ok {
		addr, err := netip.ParseAddr(n.Address)
		if err != nil {
			return nil, fmt.Errorf("node %s: address %q: %w", peer, n.Address, err)
		}
		return []netip.Addr{addr}, nil
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Balancers)) {
		for _, be := range cfg.Balancers[name].Backends {
			host, _, err := net.SplitHostPort(be.Address)
			if err != nil || (peer != be.Address && peer != host) {
				continue
			}
			if addr, err := netip.ParseAddr(host); err == nil {
				return []netip.Addr{addr.Unmap()}, nil
			}
			addrs, err := lookup(ctx, "ip", host)
			if err != nil {
				return nil, fmt.Errorf("backend %s of balancer %s: %w", be.Address, name, err)
			}
			return addrs, nil
		}
	}
	return nil, fmt.Errorf("peer %q: not a node or backend haven.yaml names (give a node's name or a backend's address)", peer)
}

// listOrNone joins names, or says there are none.
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// drillMetrics counts the faults.
type drillMetrics struct {
	injected *prometheus.CounterVec
}

func newDrillMetrics(reg prometheus.Registerer, a *Agent) *drillMetrics {
	m := &drillMetrics{injected: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "haven_drill_faults_injected_total",
		Help: "Faults this agent injected on its node for drills, by kind (kill, pause, stop, drop, loss, fill).",
	}, []string{"kind"})}
	active := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "haven_drill_faults_active",
		Help: "Faults active on this node now; each ends by itself at its duration.",
	}, func() float64 {
		if f := a.faultManager(); f != nil {
			return float64(len(f.List()))
		}
		return 0
	})
	reg.MustRegister(m.injected, active)
	return m
}

func (a *Agent) faultManager() *fault.Manager {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.faults
}

// drillRoutes mounts GET and POST /api/v1/drill/faults and POST
// /api/v1/drill/faults/{id}/stop.
func (a *Agent) drillRoutes() {
	a.admin.HandleRead("GET /api/v1/drill/faults", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := a.drillsOn(w); ok {
			web.WriteJSON(w, http.StatusOK, m.List())
		}
	})
	a.admin.HandleMutating("POST /api/v1/drill/faults", a.injectFault)
	a.admin.HandleMutating("POST /api/v1/drill/faults/{id}/stop", func(w http.ResponseWriter, r *http.Request) {
		m, ok := a.drillsOn(w)
		if !ok {
			return
		}
		switch err := m.Stop(r.PathValue("id")); {
		case errors.Is(err, fault.ErrUnknown):
			web.WriteError(w, http.StatusNotFound, err)
		case err != nil:
			web.WriteError(w, http.StatusInternalServerError, err)
		default:
			web.WriteJSON(w, http.StatusOK, map[string]string{"result": "undone"})
		}
	})
}

// drillsOn returns the fault manager, or writes why there is none.
func (a *Agent) drillsOn(w http.ResponseWriter) (*fault.Manager, bool) {
	m := a.faultManager()
	switch cfg := a.config(); {
	case m != nil:
		return m, true
	case cfg.Drills != nil && cfg.Drills.Enabled:
		// On, but the agent has not got that far in its start: the
		// caller may ask again.
		web.WriteError(w, http.StatusServiceUnavailable, errors.New("drills are on but the agent is still starting: ask again"))
	default:
		web.WriteError(w, http.StatusNotFound, errors.New("drills are off: set drills.enabled: true in haven.yaml and restart the agent"))
	}
	return nil, false
}

// injectFault serves POST /api/v1/drill/faults: the body is a fault.Spec
// ({"kind": "pause", "target": "postgres", "duration": "10s"}).
func (a *Agent) injectFault(w http.ResponseWriter, r *http.Request) {
	m, ok := a.drillsOn(w)
	if !ok {
		return
	}
	var spec fault.Spec
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&spec); err != nil {
		web.WriteError(w, http.StatusBadRequest, fmt.Errorf("the body is not a fault: %w", err))
		return
	}
	f, err := m.Inject(spec)
	switch {
	case errors.Is(err, fault.ErrAlreadyFull):
		web.WriteError(w, http.StatusConflict, err)
		return
	case err != nil:
		web.WriteError(w, http.StatusUnprocessableEntity, err)
		return
	}
	web.WriteJSON(w, http.StatusCreated, f)
}
