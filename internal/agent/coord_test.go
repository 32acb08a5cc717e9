package agent

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/coord/coordtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// startExternalEtcd runs a one-member etcd cluster on loopback, as an
// operator's own etcd would be, and returns its client URL and a function
// that stops it.
func startExternalEtcd(t *testing.T) (string, func()) {
	t.Helper()
	return coordtest.StartMember(t)
}

// coordinationStatus reads the status API's coordination section.
func (e *env) coordinationStatus() CoordinationStatus {
	e.t.Helper()
	r := do(e.t, "GET", e.adminURL("/api/v1/status"))
	var st struct {
		Coordination *CoordinationStatus `json:"coordination"`
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		e.t.Fatalf("GET /api/v1/status: %v\n%s", err, r.body)
	}
	if st.Coordination == nil {
		e.t.Fatalf("status has no coordination section:\n%s", r.body)
	}
	return *st.Coordination
}

// waitCoordination polls the status API until cond holds (a minute: a first
// primary needs initdb and a start, slow on a loaded machine).
func (e *env) waitCoordination(what string, cond func(CoordinationStatus) bool) CoordinationStatus {
	e.t.Helper()
	var last CoordinationStatus
	testenv.Poll(e.t, time.Minute, what, func() (bool, string) {
		last = e.coordinationStatus()
		b, _ := json.MarshalIndent(last, "", "  ")
		return cond(last), "coordination status:\n" + string(b)
	})
	return last
}

// An agent pointed at an etcd it does not run (coordination.endpoints)
// connects, publishes its membership and reports the endpoint's health;
// when that etcd dies, the balancer keeps serving and status says which
// endpoint is down.
func TestAgentWithExternalEtcd(t *testing.T) {
	url, stopEtcd := startExternalEtcd(t)
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1"), startApp(t, "web2")},
		coordination: fmt.Sprintf("{endpoints: [%q]}", url)}
	e := newEnv(t, c)
	e.run()
	e.waitUp("web1", "web2")

	st := e.waitCoordination("lb1 has not published itself", func(s CoordinationStatus) bool {
		_, ok := s.Members["lb1"]
		return s.Connected && ok
	})
	if st.Member != nil {
		t.Errorf("status reports an embedded member %+v; with endpoints, the agent runs none", st.Member)
	}
	if len(st.Endpoints) != 1 || st.Endpoints[0] != url {
		t.Errorf("status endpoints %v, want [%s]", st.Endpoints, url)
	}
	if len(st.Etcd) != 1 || !st.Etcd[0].Healthy {
		t.Errorf("etcd health %+v, want %s healthy", st.Etcd, url)
	}
	if me := st.Members["lb1"]; me.Node != "lb1" || me.Zone != "a" || me.Version != "v0.0.0-test" {
		t.Errorf("published membership %+v, want node lb1, zone a, version v0.0.0-test", me)
	}
	// Its balancer's state, which traffic targets may follow.
	e.waitCoordination("lb1 has not published balancer web as up", func(s CoordinationStatus) bool {
		return s.Members["lb1"].Checks[coord.BalancerState("web")] == coord.CheckUp
	})

	stopEtcd()
	e.waitCoordination("the dead endpoint is still reported healthy", func(s CoordinationStatus) bool {
		return len(s.Etcd) == 1 && !s.Etcd[0].Healthy && s.Etcd[0].Error != ""
	})
	if by := e.traffic(10); by["web1"]+by["web2"] != 10 {
		t.Errorf("with etcd gone, 10 requests were served as %v; the balancer must not depend on etcd", by)
	}
}
