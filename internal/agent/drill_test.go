package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
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
	if r, _ := tryBody("POST", e.adminURL("/api/v1/drill/faults"), `{"kind": "drop", "peers": ["db9"], "duration": "1s"}`); r.status != 422 || !strings.Contains(r.body, `peer \"db9\": not a node or backend haven.yaml names`) {
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

// TestPeerAddrs resolves the peers of a drop or loss: a node by its name,
// a backend by its address as written or by its host (a name looked up),
// and refuses anything else.
func TestPeerAddrs(t *testing.T) {
	cfg, err := config.Parse("haven.yaml", []byte(`cluster: test
regions:
  local:
    nodes:
      lb1: {address: 198.18.1.11, zone: a}
      db1: {address: 198.18.1.21, zone: b}
balancers:
  web:
    nodes: [lb1]
    listen: 198.18.1.11:80
    backends:
      - {name: app1, address: 198.18.1.31:8080}
      - {address: "[2001:db8::31]:8080"}
      - {address: app.example:8080}
`))
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(_ context.Context, network, host string) ([]netip.Addr, error) {
		if host == "app.example" && network == "ip" {
			return []netip.Addr{netip.MustParseAddr("198.18.1.32"), netip.MustParseAddr("198.18.1.33")}, nil
		}
		return nil, errors.New("no such host")
	}
	for _, tc := range []struct {
		peer, want string
	}{
		{"db1", "[198.18.1.21]"},
		{"198.18.1.31:8080", "[198.18.1.31]"},
		{"198.18.1.31", "[198.18.1.31]"},
		{"2001:db8::31", "[2001:db8::31]"},
		{"[2001:db8::31]:8080", "[2001:db8::31]"},
		{"app.example", "[198.18.1.32 198.18.1.33]"},
		{"app1", `peer "app1": not a node or backend haven.yaml names`},
		{"198.18.1.31:9090", `peer "198.18.1.31:9090": not a node`},
		{"198.18.1.99", `peer "198.18.1.99": not a node`},
		{"db9", `peer "db9": not a node`},
	} {
		addrs, err := peerAddrs(context.Background(), cfg, tc.peer, lookup)
		got := fmt.Sprint(addrs)
		if err != nil {
			got = err.Error()
		}
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: %s, want %s", tc.peer, got, tc.want)
		}
	}
}
