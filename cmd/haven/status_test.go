package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/vip"
)

// frozenAdmin is a node whose agent is frozen (SIGSTOP, a machine that
// swaps or is paused): its kernel completes the connection into the
// listener's backlog, and nobody ever reads the request. It returns the
// listener's address.
func frozenAdmin(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// liveAdmin serves what an agent on lb1 answers, built from the agent's
// own types: lb1 holds the floating address and the database primary, lb2
// is its replica, as etcd's records say.
func liveAdmin(t *testing.T) string {
	t.Helper()
	vips := []agent.VIPStatus{{
		Status: vip.Status{Name: "web", Address: "198.18.1.100/24", State: vip.StateHolder, Epoch: 3},
		Holder: "lb1", HeldEpoch: 3,
	}}
	db := &agent.DatabaseStatus{
		Primary: "lb1", Epoch: 3,
		Members: map[string]keeper.MemberState{
			"lb1": {Node: "lb1", Role: keeper.RolePrimary, Timeline: 2, LSN: 0x3000060},
			"lb2": {Node: "lb2", Role: keeper.RoleReplica, Timeline: 2, LSN: 0x3000060, Upstream: "lb1"},
		},
		Sync: keeper.SyncState{Leader: "lb1", K: 1, Standbys: []string{"lb2"}},
	}
	balancers := []lb.Status{{Name: "web", Backends: []lb.BackendStatus{
		{Name: "app1", Address: "127.0.0.1:9001", Admin: "ready", EffectiveWeight: 1, Health: health.Status{State: health.Up}},
	}}}
	status := map[string]any{
		"ready": true, "version": "test",
		"balancers":    balancers,
		"coordination": agent.CoordinationStatus{Connected: true, VIPs: vips, Database: db},
	}
	mux := http.NewServeMux()
	for path, v := range map[string]any{"/api/v1/vips": vips, "/api/v1/database": db, "/api/v1/balancers": balancers, "/api/v1/status": status} {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) { json.NewEncoder(w).Encode(v) })
	}
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// TestStatusWithAFrozenNode: with lb2's agent frozen, every status command
// returns after its wait (it took the whole freeze before: each node was
// asked in turn, with a 10s timeout), shows what lb1 says, and marks lb2.
func TestStatusWithAFrozenNode(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "pg-replication.password"), []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "haven.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf(`cluster: shop
regions:
  east:
    nodes:
      lb1: {address: 127.0.0.1, zone: a, admin: %q}
      lb2: {address: 127.0.0.2, zone: b, admin: %q}
coordination:
  members: [lb1, lb2]
balancers:
  web:
    nodes: [lb1, lb2]
    listen: "127.0.0.1:8080"
    vip: 198.18.1.100/24
    backends: [{name: app1, address: 127.0.0.1:9001}]
database:
  nodes: [lb1, lb2]
  replication: {mode: sync, password_file: pg-replication.password}
`, liveAdmin(t), frozenAdmin(t))), 0o644); err != nil {
		t.Fatal(err)
	}
	// lb2 never answers: a command that waited for it would never return,
	// and haven() fails the test after 20 s. Returning at all, with lb2
	// marked silent, is the behaviour; the time is logged (about the wait
	// plus 0.2 s on an idle machine) and not asserted.
	const wait = 300 * time.Millisecond
	testenv.HavenRace(t) // built before the clock starts
	for _, c := range []struct {
		args []string
		want []string // regular expressions, each on one line of stdout
	}{
		{[]string{"vip", "status"}, []string{
			`web\s+198\.18\.1\.100/24\s+lb1\s+holder\s+lb1 \(3\)`,
			`web\s+198\.18\.1\.100/24\s+lb2\s+silent\s+-\s+no answer within 300ms`,
		}},
		{[]string{"pg", "status"}, []string{
			`primary: lb1 \(epoch 3\); sync: k=1 of \[lb2\]`,
			`etcd's records as lb1 read them; answered: lb1$`,
			`lb1\s+primary\s+-\s+2\s+0/3000060`,
			`lb2\s+replica\s+sync\s+2\s+0/3000060`,
			`lb2: no answer within 300ms; its row is what it last published`,
		}},
		{[]string{"lb", "status"}, []string{
			`lb1\s+app1\s+127\.0\.0\.1:9001\s+up\s+ready`,
			`lb2(\s+-){7}\s+no answer within 300ms`,
		}},
		{[]string{"status"}, []string{
			`^lb1: ready \(version test\)`,
			`^lb2: no answer within 300ms`,
			`lb1\s+holder\s+lb1 \(3\)`,
			`lb2\s+silent\s+-\s+no answer within 300ms`,
			`lb2\s+replica\s+sync`,
			`lb1\s+app1\s+127\.0\.0\.1:9001\s+up`,
		}},
	} {
		args := append(c.args, "-c", path, "--node-timeout", wait.String())
		start := time.Now()
		r := haven(t, 20*time.Second, args...)
		took := time.Since(start)
		t.Logf("haven %s: %v\n%s", strings.Join(c.args, " "), took.Round(time.Millisecond), r.stdout)
		if r.code != 1 || !strings.Contains(r.stderr, "node lb2: no answer within 300ms") {
			t.Errorf("haven %s:\n%s\nwant exit 1 naming the silent node", strings.Join(args, " "), r)
		}
		for _, w := range c.want {
			if !regexp.MustCompile(`(?m)` + w).MatchString(r.stdout) {
				t.Errorf("haven %s: no line matches %s:\n%s", strings.Join(args, " "), w, r.stdout)
			}
		}
	}
	// Without --node-timeout each node has 500ms.
	for _, cmd := range []string{"vip", "pg"} {
		start := time.Now()
		r := haven(t, 20*time.Second, cmd, "status", "-c", path)
		took := time.Since(start)
		t.Logf("haven %s status, default --node-timeout: %v", cmd, took.Round(time.Millisecond))
		if r.code != 1 || !strings.Contains(r.stdout, "no answer within 500ms") {
			t.Errorf("haven %s status without --node-timeout:\n%s\nwant exit 1 and lb2 marked silent after the default 500ms", cmd, r)
		}
	}
}

// printObjectives prints the judgement of the node that sees the most
// parts, every failing reason, and what it could not judge.
func TestPrintObjectives(t *testing.T) {
	as := []answer[nodeStatus]{
		{node: "lb1", val: nodeStatus{Objectives: &drill.Compliance{Met: true, Checked: []string{"web"}, Unseen: []string{"database"}}}},
		{node: "db1", val: nodeStatus{Objectives: &drill.Compliance{Checked: []string{"web", "database"},
			Failing: []drill.Finding{{Part: "database", Why: "no replica can take over now", Fix: "bring a replica back"}}}}},
	}
	var b strings.Builder
	printObjectives(&b, as)
	want := "\nobjectives: NOT MET now (web, database, as db1 judges them):\n  database: no replica can take over now; fix: bring a replica back\n"
	if b.String() != want {
		t.Errorf("printed:\n%q\nwant:\n%q", b.String(), want)
	}
}

// TestStatusJSON: -o json gives a script each node's answer as its agent
// sent it, and names a node that did not answer, with the exit status of
// the tables (1 when a node is missing).
func TestStatusJSON(t *testing.T) {
	backend := startBackend(t, "app1")
	admin, listen := freeAddr(t), freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "haven.yaml")
	if err := os.WriteFile(cfg, []byte(e2eConfig(admin, listen, []e2eBackend{{name: "app1", addr: backend}}, "")), 0o644); err != nil {
		t.Fatal(err)
	}
	agent := start(t, "agent", "-c", cfg, "-n", "lb1")
	type lbAnswer struct {
		Nodes map[string]json.RawMessage `json:"nodes"`
	}
	testenv.Poll(t, 30*time.Second, "app1 up in haven lb status -o json", func() (bool, string) {
		r := haven(t, 20*time.Second, "lb", "status", "-o", "json", "-c", cfg)
		var got lbAnswer
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || r.code != 0 {
			return false, fmt.Sprintf("%v\n%s", err, r)
		}
		var sts []struct {
			Name     string
			Backends []struct {
				Name   string
				Health struct{ State string }
			}
		}
		if err := json.Unmarshal(got.Nodes["lb1"], &sts); err != nil {
			return false, r.stdout
		}
		return len(sts) == 1 && sts[0].Name == "web" && len(sts[0].Backends) == 1 && sts[0].Backends[0].Health.State == "up", r.stdout
	})
	r := haven(t, 20*time.Second, "status", "-o", "json", "-c", cfg)
	var st struct {
		Nodes map[string]struct {
			Ready   *bool  `json:"ready"`
			Version string `json:"version"`
			Error   string `json:"error"`
		} `json:"nodes"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 0 || st.Nodes["lb1"].Ready == nil || !*st.Nodes["lb1"].Ready {
		t.Fatalf("haven status -o json with lb1 up: %v\n%s", err, r)
	}

	agent.cmd.Process.Signal(syscall.SIGTERM)
	agent.wait(t, 30*time.Second)
	r = haven(t, 20*time.Second, "status", "-o", "json", "-c", cfg)
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || r.code != 1 || !strings.Contains(st.Nodes["lb1"].Error, "unreachable") {
		t.Fatalf("haven status -o json with lb1 down: %v\n%s\nwant exit 1 and lb1's error", err, r)
	}
	if r := haven(t, 20*time.Second, "status", "-o", "yaml", "-c", cfg); r.code != 1 || !strings.Contains(r.stderr, "give text or json") {
		t.Errorf("haven status -o yaml:\n%s", r)
	}
}
