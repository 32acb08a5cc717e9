package drill

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeScenario(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "drill.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestScenarioFile: a file's faults are aimed by role at the deployment
// as it is when the drill starts.
func TestScenarioFile(t *testing.T) {
	path := writeScenario(t, `name: crash-during-freeze
part: database
about: the replica killed while the primary is cut off
faults:
  - {node: replica, kind: kill, target: postgres}
  - {node: primary, kind: drop, peers: [others]}
  - {node: "holder:web", kind: pause, target: agent}
`)
	s, err := ScenarioNamed(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "crash-during-freeze" || s.Part != "database" {
		t.Errorf("scenario %+v", s)
	}
	cfg := load(t)
	targets, err := s.Faults(cfg, State{Primary: "db1", Replicas: []string{"db3", "db2"}, Holders: map[string]string{"web": "lb2"}}, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(targets) != 3 || targets[0].Node != "db3" || targets[1].Node != "db1" || targets[2].Node != "lb2" ||
		strings.Join(targets[1].Spec.Peers, ",") != "db2,db3,lb1,lb2,wdb1,wdb2,wdb3,wit,wlb1,wlb2" || targets[2].Spec.Duration != 5*time.Second {
		t.Errorf("targets %+v", targets)
	}
	if _, err := s.Faults(cfg, State{Primary: "db1"}, time.Second); err == nil || !strings.Contains(err.Error(), "faults[0]: the database has no streaming replica now") {
		t.Errorf("without a replica: %v", err)
	}
}

// TestScenarioFileErrors: a bad file says what to fix, all at once.
func TestScenarioFileErrors(t *testing.T) {
	path := writeScenario(t, `part: everything
faults:
  - {kind: explode}
`)
	_, err := ScenarioNamed(path)
	for _, want := range []string{"name: required", `part "everything": give web, database or region`, "faults[0].node: required", `faults[0].kind "explode": give one of`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v: want %q", err, want)
		}
	}
	if _, err := ScenarioNamed(writeScenario(t, "name: x\npart: web\nfault: []\n")); err == nil || !strings.Contains(err.Error(), "field fault not found") {
		t.Errorf("an unknown key: %v", err)
	}
	s, err := ScenarioNamed(writeScenario(t, "name: x\npart: web\nfaults: [{node: nowhere, kind: kill, target: postgres}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Faults(load(t), State{}, time.Second); err == nil || !strings.Contains(err.Error(), `node "nowhere" is not in haven.yaml`) {
		t.Errorf("an unknown node: %v", err)
	}
}
