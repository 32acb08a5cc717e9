package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/web"
)

// The fault API (drills.enabled): each agent injects faults on its own
// node when a drill asks, and undoes each when its time is up, whatever
// becomes of the drill's client (package fault).

// roleProcess is the one role whose process and data directory the
// faults reach so far.
const roleProcess = "postgres"

// startDrills makes the node's fault manager when drills are enabled,
// after clearing what a killed agent left, and stacks its undoing of
// every active fault first of all at stop.
func (a *Agent) startDrills(cfg *config.Config, st *stack) error {
	if cfg.Drills == nil || !cfg.Drills.Enabled {
		return nil
	}
	m := fault.NewManager(fault.Env{
		Process:     a.faultProcess,
		DataDir:     a.faultDataDir,
		Address:     a.faultAddress,
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
		return 0, fmt.Errorf("target %q: the faults reach %s only", role, roleProcess)
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

func (a *Agent) faultAddress(node string) ([]netip.Addr, error) {
	n, ok := a.config().Node(node)
	if !ok {
		return nil, fmt.Errorf("node %q is not in the configuration", node)
	}
	addr, err := netip.ParseAddr(n.Address)
	if err != nil {
		return nil, fmt.Errorf("node %s: address %q: %w", node, n.Address, err)
	}
	return []netip.Addr{addr}, nil
}

// drillMetrics counts the faults.
type drillMetrics struct {
	injected *prometheus.CounterVec
}

func newDrillMetrics(reg prometheus.Registerer, a *Agent) *drillMetrics {
	m := &drillMetrics{injected: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "haven_drill_faults_injected_total",
		Help: "Faults this agent injected on its node for drills, by kind (kill, pause, drop, fill).",
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
	if m == nil {
		web.WriteError(w, http.StatusNotFound, errors.New("drills are off: set drills.enabled: true in haven.yaml and restart the agent"))
		return nil, false
	}
	return m, true
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
	if err != nil {
		web.WriteError(w, http.StatusUnprocessableEntity, err)
		return
	}
	web.WriteJSON(w, http.StatusCreated, f)
}
