package agent

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestDrillLock: one drill at a time. A second lock is refused and says
// whose the first is; a token that is not the lock's gives nothing back
// (a token is a lease's id, and any lease could be named); the holder's
// token gives it back, and the lock can be taken again.
func TestDrillLock(t *testing.T) {
	url, _ := startExternalEtcd(t)
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")},
		coordination: fmt.Sprintf("{endpoints: [%q]}", url), drills: "{enabled: true}"}
	e := newEnv(t, c)
	e.run()
	e.waitUp("web1")
	e.waitCoordination("lb1 connected to etcd", func(s CoordinationStatus) bool { return s.Connected })

	take := func(scenario string) reply {
		t.Helper()
		var r reply
		testenv.Poll(t, 30*time.Second, "an answer to POST /api/v1/drill/lock", func() (bool, string) {
			var err error
			r, err = tryBody("POST", e.adminURL("/api/v1/drill/lock"), fmt.Sprintf(`{"scenario": %q, "for": "10s"}`, scenario))
			return err == nil && r.status != 503, fmt.Sprint(r.status, r.body, err)
		})
		return r
	}
	first := take("primary-kill")
	var l DrillLock
	if err := json.Unmarshal([]byte(first.body), &l); first.status != 201 || err != nil || l.Token == "" || l.Node != "lb1" ||
		l.Until.Sub(l.Started) != 10*time.Second+drillSlack+time.Minute {
		t.Fatalf("the first lock: %d %s (%v); want 201 with a token, lasting the faults, the slack and a minute", first.status, first.body, err)
	}
	if r := take("node-loss"); r.status != 409 || !strings.Contains(r.body, "another drill runs: primary-kill, taken through lb1") {
		t.Errorf("a second lock while the first is held: %d %s; want 409 naming the first", r.status, r.body)
	}
	if r, err := try("DELETE", e.adminURL("/api/v1/drill/lock/1234abcd")); err != nil || r.status != 404 {
		t.Errorf("give back with a token that is not the lock's: %d %s %v; want 404", r.status, r.body, err)
	}
	if r := take("node-loss"); r.status != 409 {
		t.Errorf("the lock after a wrong token: %d %s; want still held (409)", r.status, r.body)
	}
	if r, err := try("DELETE", e.adminURL("/api/v1/drill/lock/"+l.Token)); err != nil || r.status != 200 {
		t.Fatalf("give the lock back: %d %s %v", r.status, r.body, err)
	}
	if r := take("node-loss"); r.status != 201 {
		t.Errorf("the lock once given back: %d %s; want taken (201)", r.status, r.body)
	}
	if r, _ := tryBody("POST", e.adminURL("/api/v1/drill/lock"), `{"scenario": "x", "for": "soon"}`); r.status != 400 {
		t.Errorf("a lock for no duration: %d %s; want 400", r.status, r.body)
	}
}
