package drill

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/fault"
)

// State is what a drill needs to know of the deployment to aim its faults
// and to see it change: the database's primary, the active region, and
// which node holds each balancer's floating address.
type State struct {
	Primary string `json:"primary,omitempty"`
	// Replicas are the database's replicas streaming from it now.
	Replicas []string `json:"replicas,omitempty"`
	// Region is the active region (with database.dr), else "".
	Region string `json:"region,omitempty"`
	// Holders maps a balancer to the node holding its address.
	Holders map[string]string `json:"holders,omitempty"`
}

// Target is one fault of a scenario, on one node.
type Target struct {
	Node string
	Spec fault.Spec
}

// Scenario is a drill: the faults it injects, where, and the part whose
// objectives it is about.
type Scenario struct {
	Name, Part, About string
	// Faults picks the scenario's faults from the state before the drill;
	// every fault lasts d.
	Faults func(cfg *config.Config, st State, d time.Duration) ([]Target, error)
}

// Scenarios are the built-in drills.
var Scenarios = []Scenario{
	{Name: "primary-pause", Part: config.PartDatabase, About: "the primary's postgres frozen (SIGSTOP) for the fault's duration",
		Faults: onPrimary(func(_ *config.Config, _ string, d time.Duration) fault.Spec {
			return fault.Spec{Kind: fault.Pause, Target: "postgres", Duration: d}
		})},
	{Name: "primary-kill", Part: config.PartDatabase, About: "the primary's postgres killed (SIGKILL)",
		Faults: onPrimary(func(_ *config.Config, _ string, d time.Duration) fault.Spec {
			return fault.Spec{Kind: fault.Kill, Target: "postgres", Duration: d}
		})},
	{Name: "primary-partition", Part: config.PartDatabase, About: "the primary's node cut off from every other node for the fault's duration",
		Faults: onPrimary(func(cfg *config.Config, p string, d time.Duration) fault.Spec {
			return fault.Spec{Kind: fault.Drop, Peers: othersThan(cfg.NodeNames(), p), Duration: d}
		})},
	{Name: "node-loss", Part: config.PartDatabase, About: "the primary's node lost: every haven process on it frozen and its traffic dropped for the fault's duration",
		Faults: func(cfg *config.Config, st State, d time.Duration) ([]Target, error) {
			if st.Primary == "" {
				return nil, errors.New("the database has no primary now (haven pg status says why)")
			}
			return nodeLoss(cfg, st.Primary, d), nil
		}},
	{Name: "balancer-loss", Part: config.PartWeb, About: "the node holding a balancer's floating address lost: every haven process on it frozen and its traffic dropped",
		Faults: func(cfg *config.Config, st State, d time.Duration) ([]Target, error) {
			for _, b := range slices.Sorted(maps.Keys(st.Holders)) {
				if n := st.Holders[b]; n != "" {
					return nodeLoss(cfg, n, d), nil
				}
			}
			return nil, errors.New("no node holds a balancer's floating address now (haven vip status says why)")
		}},
	{Name: "backend-loss", Part: config.PartWeb, About: "one backend of each balancer cut off from the balancer's nodes for the fault's duration",
		Faults: backendLoss},
	{Name: "region-loss", Part: config.PartRegion, About: "the active region cut off from every other region for the fault's duration (set it longer than dr.lease)",
		Faults: regionLoss},
}

// onPrimary is a scenario of one fault on the primary's node.
func onPrimary(spec func(cfg *config.Config, primary string, d time.Duration) fault.Spec) func(*config.Config, State, time.Duration) ([]Target, error) {
	return func(cfg *config.Config, st State, d time.Duration) ([]Target, error) {
		if st.Primary == "" {
			return nil, errors.New("the database has no primary now (haven pg status says why)")
		}
		return []Target{{Node: st.Primary, Spec: spec(cfg, st.Primary, d)}}, nil
	}
}

// nodeLoss is a node's loss as a drill can make it and undo it: haven's
// processes on it frozen (the agent and everything under it) and its
// traffic with every other node dropped, so that it neither acts nor
// answers. It is one fault, a pause of the agent that names the peers,
// so that both start at once: the agent is stopped half a second after
// it answers (the answer must get out first), and a drop injected apart
// would start that much before, long enough for the agent, cut off but
// running, to give up its floating address or its primary's lease on its
// own: a partition, which a lost node does not get to handle.
func nodeLoss(cfg *config.Config, node string, d time.Duration) []Target {
	return []Target{
		{Node: node, Spec: fault.Spec{Kind: fault.Pause, Target: fault.TargetAgent, Peers: othersThan(cfg.NodeNames(), node), Duration: d}},
	}
}

// backendLoss cuts the first backend of each balancer off from the
// balancer's nodes.
func backendLoss(cfg *config.Config, _ State, d time.Duration) ([]Target, error) {
	var out []Target
	for _, name := range slices.Sorted(maps.Keys(cfg.Balancers)) {
		b := cfg.Balancers[name]
		if len(b.Backends) == 0 {
			continue
		}
		addr := backendHost(b.Backends[0].Address)
		for _, n := range b.Nodes {
			out = append(out, Target{Node: n, Spec: fault.Spec{Kind: fault.Drop, Peers: []string{addr}, Duration: d}})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("haven.yaml has no balancer with backends")
	}
	return out, nil
}

// regionLoss cuts every node of the active region off from the nodes of
// the other regions.
func regionLoss(cfg *config.Config, st State, d time.Duration) ([]Target, error) {
	if cfg.Database == nil || cfg.Database.DR == nil {
		return nil, errors.New("haven.yaml has no second region (database.dr): there is no region to lose to")
	}
	region := st.Region
	if region == "" {
		return nil, errors.New("no region holds the active-region record now (haven dr status says why)")
	}
	var in, out []string
	for _, n := range cfg.NodeNames() {
		if node, ok := cfg.Node(n); ok && node.Region == region {
			in = append(in, n)
		} else {
			out = append(out, n)
		}
	}
	var targets []Target
	for _, n := range in {
		targets = append(targets, Target{Node: n, Spec: fault.Spec{Kind: fault.Drop, Peers: out, Duration: d}})
	}
	return targets, nil
}

// backendHost is a backend address's host ("10.0.0.1:8080" → "10.0.0.1").
func backendHost(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i > 0 && !strings.HasSuffix(addr, "]") {
		addr = addr[:i]
	}
	return strings.Trim(addr, "[]")
}

func othersThan(names []string, n string) []string {
	return slices.DeleteFunc(slices.Clone(names), func(m string) bool { return m == n })
}

// ScenarioNamed returns the built-in scenario name, or the scenario of the
// file name names (a path, or a name ending in .yaml). The restore
// scenario is played by RunRestore, not Run.
func ScenarioNamed(name string) (Scenario, error) {
	if isScenarioFile(name) {
		return LoadScenario(name)
	}
	if name == restoreScenario.Name {
		return restoreScenario, nil
	}
	for _, s := range Scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	var names []string
	for _, s := range Scenarios {
		names = append(names, s.Name)
	}
	names = append(names, restoreScenario.Name)
	return Scenario{}, fmt.Errorf("drill: no scenario %q: the built-in ones are %s (or give a scenario file's path)", name, strings.Join(names, ", "))
}
