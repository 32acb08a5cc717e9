package drill

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/fault"
)

// A scenario file describes a drill of the operator's own: the part it
// judges and its faults, each aimed at a node by name or by role, so that
// the file holds however the deployment has moved:
//
//	name: app-crash-during-failover
//	part: web
//	about: the application killed on app1 while the primary freezes
//	faults:
//	  - {node: app1, kind: kill, target: "process:app"}
//	  - {node: primary, kind: pause, target: postgres}
//	  - {node: primary, kind: drop, peers: [others]}
//
// A fault's node is a node's name, "primary" (the database's primary
// now), "replica" (the first streaming replica) or "holder:BALANCER" (the
// node holding the balancer's floating address). Peers are node names,
// backend addresses, or "others" for every node but the fault's own.
// Every fault lasts the drill's --for.
type scenarioFile struct {
	Name   string      `yaml:"name"`
	Part   string      `yaml:"part"`
	About  string      `yaml:"about"`
	Faults []fileFault `yaml:"faults"`
}

type fileFault struct {
	Node   string     `yaml:"node"`
	Kind   fault.Kind `yaml:"kind"`
	Target string     `yaml:"target"`
	Peers  []string   `yaml:"peers"`
	Level  int        `yaml:"level"`
}

// isScenarioFile says whether a scenario's name is a file's path.
func isScenarioFile(name string) bool {
	return strings.ContainsRune(name, '/') || strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

// LoadScenario reads a scenario file; its faults are checked against cfg
// when the drill aims them.
func LoadScenario(path string) (Scenario, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Scenario{}, fmt.Errorf("drill: scenario file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var f scenarioFile
	if err := dec.Decode(&f); err != nil {
		return Scenario{}, fmt.Errorf("drill: scenario file %s: %w", path, err)
	}
	if err := f.check(); err != nil {
		return Scenario{}, fmt.Errorf("drill: scenario file %s: %w", path, err)
	}
	return Scenario{Name: f.Name, Part: f.Part, About: f.About, Faults: f.aim}, nil
}

func (f *scenarioFile) check() error {
	var errs []error
	if f.Name == "" {
		errs = append(errs, errors.New("name: required"))
	}
	if !slices.Contains([]string{config.PartWeb, config.PartDatabase, config.PartRegion}, f.Part) {
		errs = append(errs, fmt.Errorf("part %q: give web, database or region (the objectives it is judged by)", f.Part))
	}
	if len(f.Faults) == 0 {
		errs = append(errs, errors.New("faults: give at least one"))
	}
	for i, ff := range f.Faults {
		if ff.Node == "" {
			errs = append(errs, fmt.Errorf("faults[%d].node: required: a node's name, primary, replica or holder:BALANCER", i))
		}
		if !slices.Contains(fault.Kinds, ff.Kind) {
			errs = append(errs, fmt.Errorf("faults[%d].kind %q: give one of %v", i, ff.Kind, fault.Kinds))
		}
	}
	return errors.Join(errs...)
}

// aim resolves the file's faults against the deployment's state.
func (f *scenarioFile) aim(cfg *config.Config, st State, d time.Duration) ([]Target, error) {
	var out []Target
	for i, ff := range f.Faults {
		node, err := resolveNode(cfg, st, ff.Node)
		if err != nil {
			return nil, fmt.Errorf("faults[%d]: %w", i, err)
		}
		spec := fault.Spec{Kind: ff.Kind, Target: ff.Target, Level: ff.Level, Duration: d}
		for _, p := range ff.Peers {
			if p == "others" {
				spec.Peers = append(spec.Peers, othersThan(cfg.NodeNames(), node)...)
			} else {
				spec.Peers = append(spec.Peers, p)
			}
		}
		out = append(out, Target{Node: node, Spec: spec})
	}
	return out, nil
}

// resolveNode turns a fault's node (a name or a role) into a node's name.
func resolveNode(cfg *config.Config, st State, node string) (string, error) {
	switch {
	case node == "primary":
		if st.Primary == "" {
			return "", errors.New("the database has no primary now (haven pg status says why)")
		}
		return st.Primary, nil
	case node == "replica":
		if len(st.Replicas) == 0 {
			return "", errors.New("the database has no streaming replica now")
		}
		return st.Replicas[0], nil
	case strings.HasPrefix(node, "holder:"):
		b := strings.TrimPrefix(node, "holder:")
		if n := st.Holders[b]; n != "" {
			return n, nil
		}
		return "", fmt.Errorf("no node holds balancer %s's address now", b)
	}
	if _, ok := cfg.Node(node); !ok {
		return "", fmt.Errorf("node %q is not in haven.yaml (nodes: %s)", node, strings.Join(cfg.NodeNames(), ", "))
	}
	return node, nil
}
