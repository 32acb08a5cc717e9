package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/testenv"
)

// procState is a process's state letter in /proc (S sleeping, T stopped).
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "gone"
	}
	return strings.Fields(string(b)[strings.LastIndex(string(b), ")")+1:])[0]
}

// TestDrillFaults pauses the node's postgres through the fault API: it is
// stopped while the fault lasts and runs again after, by the agent's own
// timer; a fault on a peer the configuration does not name is refused, and
// an agent without drills.enabled serves no fault API.
func TestDrillFaults(t *testing.T) {
	c := backupCluster(t, t.TempDir(), "")
	c.drills = "{enabled: true, max_duration: 1m}"
	e := newEnv(t, c)
	e.run()
	var pid int
	testenv.Poll(t, time.Minute, "postgres runs", func() (bool, string) {
		db := e.agent.current().db
		if db == nil {
			return false, "no database role"
		}
		pid = db.srv.PID()
		return pid != 0, ""
	})
	r, err := tryBody("POST", e.adminURL("/api/v1/drill/faults"), `{"kind": "pause", "target": "postgres", "duration": "1500ms"}`)
	if err != nil || r.status != 201 {
		t.Fatalf("inject a pause: %v %d %s", err, r.status, r.body)
	}
	var f fault.Fault
	if err := json.Unmarshal([]byte(r.body), &f); err != nil || f.Spec.Duration != 1500*time.Millisecond {
		t.Fatalf("the fault: %v %s", err, r.body)
	}
	testenv.Poll(t, time.Second, "postgres stopped by the pause", func() (bool, string) {
		s := procState(pid)
		return s == "T", s
	})
	if fs := e.faults(); len(fs) != 1 || fs[0].ID != f.ID {
		t.Errorf("the active faults: %+v, want the pause", fs)
	}
	testenv.Poll(t, 30*time.Second, "postgres running again after the pause", func() (bool, string) {
		s := procState(pid)
		return s != "T", s
	})
	if fs := e.faults(); len(fs) != 0 {
		t.Errorf("active faults after the pause: %+v", fs)
	}
	if r, _ := tryBody("POST", e.adminURL("/api/v1/drill/faults"), `{"kind": "drop", "peers": ["db9"], "duration": "1s"}`); r.status != 422 || !strings.Contains(r.body, `node \"db9\" is not in the configuration`) {
		t.Errorf("a drop of a node haven.yaml does not name: %d %s", r.status, r.body)
	}
	if r, _ := try("GET", e.adminURL("/metrics")); !strings.Contains(r.body, `haven_drill_faults_injected_total{kind="pause"} 1`) {
		t.Error("the metrics do not count the pause")
	}
}

// faults lists the active faults through the API.
func (e *env) faults() []fault.Fault {
	e.t.Helper()
	r, err := try("GET", e.adminURL("/api/v1/drill/faults"))
	var fs []fault.Fault
	if err != nil || json.Unmarshal([]byte(r.body), &fs) != nil {
		e.t.Fatalf("GET /api/v1/drill/faults: %v %s", err, r.body)
	}
	return fs
}

func TestDrillsOffByDefault(t *testing.T) {
	e := newEnv(t, &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")}})
	e.run()
	e.waitUp("web1")
	r, err := tryBody("POST", e.adminURL("/api/v1/drill/faults"), `{"kind": "pause", "target": "postgres", "duration": "1s"}`)
	if err != nil || r.status != 404 || !strings.Contains(r.body, "drills are off") {
		t.Errorf("a fault with drills off: %v %d %s", err, r.status, r.body)
	}
}
