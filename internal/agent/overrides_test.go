package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/opstate"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestOverridesSurviveRestart: with coordination, a drain and a weight
// set through the admin API are records in etcd that say who set them;
// an agent stopped and started again (a new process would be the same: it
// keeps nothing in memory) applies them again without being asked, a
// reload keeps them, a drain with --for ends by itself, and enable and
// weight default remove them.
func TestOverridesSurviveRestart(t *testing.T) {
	url, _ := startExternalEtcd(t)
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1"), startApp(t, "web2"), startApp(t, "web3")},
		coordination: fmt.Sprintf("{endpoints: [%q]}", url), weights: map[string]int{"web1": 3}}
	e := newEnv(t, c)
	e.run()
	e.waitUp("web1", "web2", "web3")
	waitOverridesSeen(t, e)

	post := func(path string) {
		t.Helper()
		r, err := tryHeader("POST", e.adminURL(path), "X-Haven-Operator", "ops@laptop")
		if err != nil || r.status != 200 {
			t.Fatalf("POST %s = %+v, %v", path, r, err)
		}
	}
	post("/api/v1/balancers/web/backends/web2/drain?reason=kernel+upgrade")
	post("/api/v1/balancers/web/backends/web1/weight/7")
	post("/api/v1/balancers/web/backends/web3/maint?for=6s")
	if got := e.backend("web2"); got.Admin != "drain" {
		t.Fatalf("web2 after drain: %q", got.Admin)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	rs, _, _, err := opstate.List(context.Background(), cli, "test")
	if err != nil || len(rs) != 3 {
		t.Fatalf("records in etcd: %+v, %v; want three", rs, err)
	}
	for _, r := range rs {
		if r.Owner != "ops@laptop" || (r.Backend == "web2" && r.Reason != "kernel upgrade") || (r.Backend == "web3" && r.Until.IsZero()) {
			t.Errorf("record %+v: want owner ops@laptop, web2's reason, web3's end", r)
		}
	}

	// web3's maintenance ends by itself; the others outlive a restart.
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t, c)
	e2.run()
	// The records are read before the balancer starts: its first status
	// already shows the drain (no moment of traffic to web2).
	testenv.Poll(t, 30*time.Second, "the restarted agent's balancer", func() (bool, string) {
		r, err := try("GET", e2.adminURL("/api/v1/balancers"))
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(r.body, `"web2"`), r.body
	})
	if got := e2.backend("web2"); got.Admin != "drain" {
		t.Errorf("the restarted agent's balancer started with web2 %s: the drain must be read before it starts", got.Admin)
	}
	waitOverridesSeen(t, e2)
	testenv.Poll(t, 30*time.Second, "the restarted agent applies the records (web3's 6 s maintenance ended)", func() (bool, string) {
		w1, w2, w3 := e2.backend("web1"), e2.backend("web2"), e2.backend("web3")
		return w2.Admin == "drain" && w1.Weight == 7 && w3.Admin == "ready",
			fmt.Sprintf("web1 weight %d, web2 %s, web3 %s", w1.Weight, w2.Admin, w3.Admin)
	})
	e2.waitUp("web1", "web3")
	if by := e2.traffic(20); by["web2"] != 0 {
		t.Errorf("after the restart drained web2 took %d of 20 requests", by["web2"])
	}
	// A reload that changes web2's weight in the file: the file's new
	// weight for web2 (no record), the record's for web1.
	c.weights["web2"] = 4
	writeFile(t, e2.path, c.yaml())
	if err := e2.agent.Reload(); err != nil {
		t.Fatal(err)
	}
	if w1, w2 := e2.backend("web1"), e2.backend("web2"); w1.Weight != 7 || w2.Weight != 4 {
		t.Errorf("after a reload giving web2 weight 4: web1 %d (record 7), web2 %d (file 4)", w1.Weight, w2.Weight)
	}

	e = e2
	post("/api/v1/balancers/web/backends/web2/enable")
	post("/api/v1/balancers/web/backends/web1/weight/default")
	if w1, w2 := e.backend("web1"), e.backend("web2"); w2.Admin != "ready" || w1.Weight != 3 {
		t.Errorf("after enable and weight default: web2 %s, web1 weight %d; want ready and the file's 3", w2.Admin, w1.Weight)
	}
	if rs, _, _, _ := opstate.List(context.Background(), cli, "test"); len(rs) != 0 {
		t.Errorf("records left: %+v", rs)
	}
}

func waitOverridesSeen(t *testing.T, e *env) {
	t.Helper()
	testenv.Poll(t, 30*time.Second, "the agent reads the operator's records", func() (bool, string) {
		r, err := try("GET", e.adminURL("/api/v1/operator"))
		if err != nil {
			return false, err.Error()
		}
		var got struct{ Seen bool }
		json.Unmarshal([]byte(r.body), &got)
		return got.Seen, r.body
	})
}

// tryHeader is try with one request header.
func tryHeader(method, url, key, value string) (reply, error) {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set(key, value)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b)}, nil
}
