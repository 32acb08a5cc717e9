package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/demoapp"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/testenv"
)

// The tests run real agents on loopback: demo web applications in this
// process on 127.0.0.1 ports, a haven.yaml in a temporary directory, and
// the admin API and the balancer reached over HTTP as an operator would.

// freeAddr returns a 127.0.0.1 address that was free a moment ago, below
// the ephemeral range, and that no other freeAddr call of this process has
// returned (testenv.FreePort).
func freeAddr(t *testing.T) string {
	t.Helper()
	return testenv.FreeAddr(t, "127.0.0.1")
}

// app is a demo web application served in this process.
type app struct {
	*demoapp.App
	addr string
}

func startApp(t *testing.T, name string) *app {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &app{App: demoapp.New(name), addr: ln.Addr().String()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Serve(ctx, ln, slog.New(slog.DiscardHandler)); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// cluster is what the tests write into haven.yaml.
type cluster struct {
	admin     string // lb1's admin address
	listen    string // balancer web's listen address
	lameduck  string // balancer web's lameduck, "" for the default
	tokenFile string
	backends  []*app
	weights   map[string]int
	// coordination is haven.yaml's coordination section, "" for none.
	coordination string
	// database is haven.yaml's database section, "" for none.
	database string
	// traffic is haven.yaml's traffic section, "" for none, and
	// moreChecks are more entries of its checks section (indented).
	traffic, moreChecks string
	// pprof sets admin.pprof.
	pprof bool
	// objectives and drills are haven.yaml's sections, "" for none.
	objectives, drills string
}

func (c *cluster) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: test\n")
	switch {
	case c.tokenFile != "":
		fmt.Fprintf(&b, "admin: {token_file: %q, pprof: %v}\n", c.tokenFile, c.pprof)
	case c.pprof:
		fmt.Fprintf(&b, "admin: {pprof: true}\n")
	}
	if c.coordination != "" {
		fmt.Fprintf(&b, "coordination: %s\n", c.coordination)
	}
	if c.database != "" {
		fmt.Fprintf(&b, "database: %s\n", c.database)
	}
	if c.traffic != "" {
		fmt.Fprintf(&b, "traffic: %s\n", c.traffic)
	}
	if c.objectives != "" {
		fmt.Fprintf(&b, "objectives: %s\n", c.objectives)
	}
	if c.drills != "" {
		fmt.Fprintf(&b, "drills: %s\n", c.drills)
	}
	fmt.Fprintf(&b, `regions:
  local:
    nodes:
      lb1: {address: 127.0.0.1, zone: a, admin: %q}
      lb2: {address: 127.0.0.2, zone: b}
checks:
  web:
    http: {path: /healthz, expect_status: [200], expect_body: "ok"}
    interval: 200ms
    timeout: 200ms
    rise: 1
    fall: 2
%sbalancers:
  web:
    nodes: [lb1]
    listen: %q
    check: web
`, c.admin, c.moreChecks, c.listen)
	if c.lameduck != "" {
		fmt.Fprintf(&b, "    lameduck: %s\n", c.lameduck)
	}
	fmt.Fprintf(&b, "    backends:\n")
	for _, be := range c.backends {
		w := ""
		if n, ok := c.weights[be.Name]; ok {
			w = fmt.Sprintf(", weight: %d", n)
		}
		fmt.Fprintf(&b, "      - {name: %s, address: %q%s}\n", be.Name, be.addr, w)
	}
	return b.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// env is a running agent and what it was started from.
type env struct {
	t      *testing.T
	c      *cluster
	path   string
	agent  *Agent
	log    *testenv.Buffer
	cancel context.CancelFunc
	done   chan error
}

// newEnv writes c to a haven.yaml and builds an agent for lb1 without
// running it.
func newEnv(t *testing.T, c *cluster) *env {
	t.Helper()
	e := &env{t: t, c: c, path: filepath.Join(t.TempDir(), "haven.yaml"), log: &testenv.Buffer{}}
	writeFile(t, e.path, c.yaml())
	a, err := New(Options{ConfigPath: e.path, Node: "lb1", Logger: slog.New(slog.NewTextHandler(e.log, nil)), Version: "v0.0.0-test"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.agent = a
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", e.log)
		}
	})
	return e
}

// run starts the agent; the test's cleanup stops it and checks that Run
// returned nil.
func (e *env) run() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- e.agent.Run(ctx) }()
	e.t.Cleanup(func() {
		if err := e.stop(); err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
}

// stop cancels the agent and waits for Run to return.
func (e *env) stop() error {
	e.cancel()
	select {
	case err := <-e.done:
		e.done <- err // later calls see the same result
		return err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("Run did not return within 30s of its context ending")
	}
}

// startAgent starts two demo backends and an agent in front of them, and
// waits until the agent is ready with both backends up.
func startAgent(t *testing.T) *env {
	t.Helper()
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1"), startApp(t, "web2")}}
	e := newEnv(t, c)
	e.run()
	e.waitUp("web1", "web2")
	return e
}

func (e *env) adminURL(path string) string { return "http://" + e.c.admin + path }

type reply struct {
	status int
	body   string
}

func do(t *testing.T, method, url string) reply {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b)}
}

// try is do that reports a transport error instead of failing.
func try(method, url string) (reply, error) { return tryBody(method, url, "") }

// tryBody is try with a request body.
func tryBody(method, url, body string) (reply, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return reply{}, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b)}, nil
}

func (e *env) balancers() []lb.Status {
	e.t.Helper()
	r := do(e.t, "GET", e.adminURL("/api/v1/balancers"))
	if r.status != 200 {
		e.t.Fatalf("GET /api/v1/balancers = %d %s", r.status, r.body)
	}
	var sts []lb.Status
	if err := json.Unmarshal([]byte(r.body), &sts); err != nil {
		e.t.Fatalf("GET /api/v1/balancers: %v\n%s", err, r.body)
	}
	return sts
}

func (e *env) backend(name string) lb.BackendStatus {
	e.t.Helper()
	for _, st := range e.balancers() {
		for _, b := range st.Backends {
			if st.Name == "web" && b.Name == name {
				return b
			}
		}
	}
	e.t.Fatalf("backend %s is not in the status API", name)
	return lb.BackendStatus{}
}

func summary(sts []lb.Status) string {
	var parts []string
	for _, st := range sts {
		for _, b := range st.Backends {
			parts = append(parts, fmt.Sprintf("%s/%s=%s,%s", st.Name, b.Name, b.Health.State, b.Admin))
		}
	}
	return strings.Join(parts, " ")
}

// waitUp waits until /readyz says ready and every named backend is up.
func (e *env) waitUp(names ...string) {
	e.t.Helper()
	testenv.Poll(e.t, 15*time.Second, "agent ready with "+strings.Join(names, ", ")+" up", func() (bool, string) {
		r, err := try("GET", e.adminURL("/readyz"))
		if err != nil {
			return false, err.Error()
		}
		if r.status != 200 {
			return false, fmt.Sprintf("/readyz %d %q", r.status, r.body)
		}
		sts := e.balancers()
		up := map[string]bool{}
		for _, st := range sts {
			for _, b := range st.Backends {
				up[b.Name] = b.Health.State == health.Up
			}
		}
		for _, n := range names {
			if !up[n] {
				return false, summary(sts)
			}
		}
		return true, ""
	})
}

// get sends one request through the balancer and returns the backend that
// served it.
func (e *env) get() (string, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + e.c.listen + "/counter")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("GET /counter through the balancer: %s", resp.Status)
	}
	return resp.Header.Get("X-Backend"), nil
}

// traffic sends n requests through the balancer, all of which must succeed,
// and counts them by backend.
func (e *env) traffic(n int) map[string]int {
	e.t.Helper()
	by := map[string]int{}
	for range n {
		be, err := e.get()
		if err != nil {
			e.t.Fatalf("after %v: %v", by, err)
		}
		by[be]++
	}
	return by
}

func TestAgentServesAndReports(t *testing.T) {
	e := startAgent(t)

	by := e.traffic(20)
	if by["web1"] == 0 || by["web2"] == 0 || by["web1"]+by["web2"] != 20 {
		t.Fatalf("20 requests served by %v, want both web1 and web2", by)
	}

	r := do(t, "GET", e.adminURL("/readyz"))
	if r.status != 200 || strings.TrimSpace(r.body) != "ready" {
		t.Errorf("GET /readyz = %d %q, want 200 ready", r.status, r.body)
	}
	if r := do(t, "GET", e.adminURL("/healthz")); r.status != 200 {
		t.Errorf("GET /healthz = %d, want 200", r.status)
	}

	// The status API: node, cluster and version, readiness, balancers with
	// their backends, health and counters, and the health events.
	r = do(t, "GET", e.adminURL("/api/v1/status"))
	var st struct {
		Node, Cluster, Version, Config string
		Ready                          bool
		Balancers                      []lb.Status
		Events                         []health.Event
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil {
		t.Fatalf("GET /api/v1/status: %v\n%s", err, r.body)
	}
	if st.Node != "lb1" || st.Cluster != "test" || st.Version != "v0.0.0-test" || st.Config != e.path || !st.Ready {
		t.Errorf("status = node %q cluster %q version %q config %q ready %v; want lb1, test, v0.0.0-test, %s, true",
			st.Node, st.Cluster, st.Version, st.Config, st.Ready, e.path)
	}
	if len(st.Balancers) != 1 {
		t.Fatalf("status lists %d balancers, want 1: %s", len(st.Balancers), r.body)
	}
	b := st.Balancers[0]
	if b.Name != "web" || b.Listen != e.c.listen || b.Mode != "http" || b.Algorithm != "roundrobin" || !b.Ready {
		t.Errorf("balancer = %s %s %s %s ready %v, want web %s http roundrobin ready", b.Name, b.Listen, b.Mode, b.Algorithm, b.Ready, e.c.listen)
	}
	if len(b.Backends) != 2 {
		t.Fatalf("balancer web has %d backends, want 2", len(b.Backends))
	}
	var total uint64
	for i, be := range b.Backends {
		want := e.c.backends[i]
		if be.Name != want.Name || be.Address != want.addr || be.Admin != "ready" || be.Weight != 1 || be.Health.State != health.Up || be.Health.Check != "web" {
			t.Errorf("backend %d = %s %s admin %s weight %d health %s check %q; want %s %s ready 1 up web",
				i, be.Name, be.Address, be.Admin, be.Weight, be.Health.State, be.Health.Check, want.Name, want.addr)
		}
		if be.Health.Last == nil || !be.Health.Last.OK {
			t.Errorf("backend %s: last probe %+v, want a passing one", be.Name, be.Health.Last)
		}
		total += be.Requests
	}
	if total < 20 {
		t.Errorf("backends counted %d requests, want at least the 20 sent", total)
	}
	ups := map[string]bool{}
	for _, ev := range st.Events {
		if ev.To == health.Up {
			ups[ev.Target] = true
		}
	}
	for _, be := range e.c.backends {
		if !ups[be.addr] {
			t.Errorf("no up event for %s in %+v", be.addr, st.Events)
		}
	}
}

func TestReadyzNamesBalancerWithoutBackends(t *testing.T) {
	e := startAgent(t)
	for _, be := range e.c.backends {
		be.SetMode(demoapp.Fail)
	}
	testenv.Poll(t, 10*time.Second, "/readyz 503 naming balancer web", func() (bool, string) {
		r := do(t, "GET", e.adminURL("/readyz"))
		return r.status == http.StatusServiceUnavailable && strings.Contains(r.body, "\n  balancer web: ") && strings.Contains(r.body, "no healthy backend"), fmt.Sprintf("%d %q", r.status, r.body)
	})
	for _, be := range e.c.backends {
		if got := e.backend(be.Name); got.Health.State != health.Down {
			t.Errorf("backend %s health %s, want down", be.Name, got.Health.State)
		}
	}
	e.c.backends[0].SetMode(demoapp.OK)
	e.waitUp("web1")
}

func TestDrainEnableMaintThroughAdminAPI(t *testing.T) {
	e := startAgent(t)

	var bs lb.BackendStatus
	r := do(t, "POST", e.adminURL("/api/v1/balancers/web/backends/web2/drain"))
	if r.status != 200 {
		t.Fatalf("drain web2 = %d %s", r.status, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), &bs); err != nil || bs.Name != "web2" || bs.Admin != "drain" {
		t.Fatalf("drain web2 answered %s, want web2's status with admin drain", r.body)
	}
	if got := e.backend("web2"); got.Admin != "drain" || !got.Drained {
		t.Errorf("after drain: web2 admin %q drained %v, want drain, true", got.Admin, got.Drained)
	}
	if by := e.traffic(10); by["web2"] != 0 || by["web1"] != 10 {
		t.Errorf("while web2 drains, 10 requests went to %v, want all to web1", by)
	}
	// A drained backend keeps being checked: it is still up.
	if got := e.backend("web2"); got.Health.State != health.Up {
		t.Errorf("drained web2 health %s, want up", got.Health.State)
	}

	// By address, too.
	r = do(t, "POST", e.adminURL("/api/v1/balancers/web/backends/"+e.c.backends[1].addr+"/enable"))
	if r.status != 200 || !strings.Contains(r.body, `"admin": "ready"`) {
		t.Fatalf("enable web2 by address = %d %s", r.status, r.body)
	}
	if by := e.traffic(10); by["web2"] == 0 {
		t.Errorf("after enable, 10 requests went to %v, want some to web2", by)
	}

	r = do(t, "POST", e.adminURL("/api/v1/balancers/web/backends/web1/maint"))
	if r.status != 200 || e.backend("web1").Admin != "maint" {
		t.Fatalf("maint web1 = %d %s; status admin %q", r.status, r.body, e.backend("web1").Admin)
	}
	if by := e.traffic(10); by["web1"] != 0 {
		t.Errorf("while web1 is in maint, 10 requests went to %v, want none to web1", by)
	}
}

func TestWeightThroughAdminAPI(t *testing.T) {
	e := startAgent(t)
	r := do(t, "POST", e.adminURL("/api/v1/balancers/web/backends/web1/weight/3"))
	var bs lb.BackendStatus
	if r.status != 200 || json.Unmarshal([]byte(r.body), &bs) != nil || bs.Weight != 3 {
		t.Fatalf("weight web1 3 = %d %s, want 200 and weight 3", r.status, r.body)
	}
	if got := e.backend("web1"); got.Weight != 3 || got.EffectiveWeight != 3 {
		t.Errorf("status: web1 weight %d effective %d, want 3, 3", got.Weight, got.EffectiveWeight)
	}
	if by := e.traffic(40); by["web1"] < 27 || by["web1"] > 33 {
		t.Errorf("with weights 3:1, 40 requests went %v, want about 30 to web1 and 10 to web2", by)
	}

	// Weight 0 takes no traffic; the state stays ready.
	do(t, "POST", e.adminURL("/api/v1/balancers/web/backends/web1/weight/0"))
	if by := e.traffic(10); by["web1"] != 0 {
		t.Errorf("with web1 at weight 0, 10 requests went %v", by)
	}

	for _, w := range []string{"257", "-1", "heavy"} {
		r := do(t, "POST", e.adminURL("/api/v1/balancers/web/backends/web1/weight/"+w))
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, "0-256") {
			t.Errorf("weight %s = %d %s, want 400 saying 0-256", w, r.status, r.body)
		}
	}
}

func TestAdminAPIUnknownNames(t *testing.T) {
	e := startAgent(t)
	for _, tc := range []struct {
		path   string
		status int
		want   []string
	}{
		{"/api/v1/balancers/web/backends/web9/drain", 404, []string{`"web9"`, "web1, web2"}},
		{"/api/v1/balancers/web/backends/web9/weight/2", 404, []string{`"web9"`, "web1, web2"}},
		{"/api/v1/balancers/api/backends/web1/drain", 404, []string{`"api"`, "[web]"}},
		{"/api/v1/balancers/api/backends/web1/weight/2", 404, []string{`"api"`, "[web]"}},
		{"/api/v1/balancers/web/backends/web1/pause", 400, []string{`"pause"`, "drain, maint, enable"}},
	} {
		r := do(t, "POST", e.adminURL(tc.path))
		var body struct{ Error string }
		json.Unmarshal([]byte(r.body), &body)
		if r.status != tc.status || body.Error == "" {
			t.Errorf("POST %s = %d %s, want %d with an error", tc.path, r.status, r.body, tc.status)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(body.Error, w) {
				t.Errorf("POST %s: error %q does not mention %s", tc.path, body.Error, w)
			}
		}
	}
	if r := do(t, "GET", e.adminURL("/api/v1/database")); r.status != http.StatusNotFound || !strings.Contains(r.body, "neither a database node nor a router") {
		t.Errorf("GET /api/v1/database on a balancer node = %d %s, want 404 saying why", r.status, r.body)
	}
	if r := do(t, "GET", e.adminURL("/api/v1/balancers/web/backends/web1/drain")); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET on a mutating route = %d, want 405", r.status)
	}
	if got := e.backend("web1"); got.Admin != "ready" {
		t.Errorf("failed calls changed web1 to %q", got.Admin)
	}
}

func TestNewUnknownNodeListsNodes(t *testing.T) {
	c := &cluster{admin: "127.0.0.1:9900", listen: "127.0.0.1:8080", backends: []*app{{App: demoapp.New("web1"), addr: "127.0.0.1:9001"}}}
	path := filepath.Join(t.TempDir(), "haven.yaml")
	writeFile(t, path, c.yaml())
	_, err := New(Options{ConfigPath: path, Node: "lb9"})
	if err == nil || !strings.Contains(err.Error(), `node "lb9" is not in `+path) || !strings.Contains(err.Error(), "[lb1 lb2]") {
		t.Fatalf("New for an unknown node = %v, want it to name lb9 and list [lb1 lb2]", err)
	}
}

func TestNewRejectsEmptyTokenFile(t *testing.T) {
	dir := t.TempDir()
	tok := filepath.Join(dir, "admin.token")
	writeFile(t, tok, "\n")
	c := &cluster{admin: "127.0.0.1:9900", listen: "127.0.0.1:8080", tokenFile: tok, backends: []*app{{App: demoapp.New("web1"), addr: "127.0.0.1:9001"}}}
	path := filepath.Join(dir, "haven.yaml")
	writeFile(t, path, c.yaml())
	_, err := New(Options{ConfigPath: path, Node: "lb1"})
	if err == nil || !strings.Contains(err.Error(), "token file "+tok+" is empty") {
		t.Fatalf("New with an empty token file = %v, want it to say the file is empty", err)
	}
}

func TestNewRejectsInvalidFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "haven.yaml")
	writeFile(t, path, "cluster: test\nregions: {local: {nodes: {lb1: {address: 127.0.0.1}}}}\nbalancers:\n  web: {nodes: [lb1], listen: \"127.0.0.1:8080\", algoritm: roundrobin, backends: [{address: \"127.0.0.1:9001\"}]}\n")
	_, err := New(Options{ConfigPath: path, Node: "lb1"})
	if err == nil || !strings.Contains(err.Error(), path+":4:") || !strings.Contains(err.Error(), "balancers.web.algoritm: unknown key") {
		t.Fatalf("New with a misspelt key = %v, want %s:4:...: balancers.web.algoritm: unknown key", err, path)
	}
}

func TestRunFailsWhenListenAddressIsBusy(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	c := &cluster{admin: freeAddr(t), listen: busy.Addr().String(), backends: []*app{startApp(t, "web1")}}
	e := newEnv(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = e.agent.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "balancer web: listen "+c.listen) {
		t.Fatalf("Run with the balancer's address taken = %v, want an error naming the address", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("Run returned only when its context ended")
	}
}

func TestReloadInvalidFileKeepsRunningConfig(t *testing.T) {
	e := startAgent(t)
	before := summary(e.balancers())

	good := e.c.yaml()
	bad := strings.Replace(good, "rise: 1", "rise: 0", 1)
	bad = strings.Replace(bad, "check: web", "check: wbe", 1)
	writeFile(t, e.path, bad)

	err := e.agent.Reload()
	if err == nil {
		t.Fatal("Reload of an invalid file succeeded")
	}
	for _, want := range []string{"reload rejected, the running configuration stays", e.path + ":", "checks.web.rise", "balancers.web.check"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Reload error does not mention %q:\n%v", want, err)
		}
	}
	if !strings.Contains(e.log.String(), "reload rejected") {
		t.Errorf("the agent did not log the rejected reload")
	}

	// Through the admin API: 422 with the problems.
	r := do(t, "POST", e.adminURL("/api/v1/reload"))
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "checks.web.rise") {
		t.Errorf("POST /api/v1/reload with a bad file = %d %s, want 422 naming checks.web.rise", r.status, r.body)
	}

	if after := summary(e.balancers()); after != before {
		t.Errorf("after a rejected reload the balancers are\n  %s\nwant\n  %s", after, before)
	}
	if by := e.traffic(10); by["web1"]+by["web2"] != 10 {
		t.Errorf("after a rejected reload: %v", by)
	}
	if r := do(t, "GET", e.adminURL("/readyz")); r.status != 200 {
		t.Errorf("after a rejected reload: /readyz %d %s", r.status, r.body)
	}

	// A file that drops this node is rejected too.
	writeFile(t, e.path, strings.ReplaceAll(good, "lb1", "lb7"))
	if err := e.agent.Reload(); err == nil || !strings.Contains(err.Error(), `node "lb1" is no longer in`) {
		t.Errorf("Reload of a file without lb1 = %v, want it rejected", err)
	}
}

func TestReloadAddsBackend(t *testing.T) {
	e := startAgent(t)
	web3 := startApp(t, "web3")
	e.c.backends = append(e.c.backends, web3)
	e.c.weights = map[string]int{"web1": 2}
	writeFile(t, e.path, e.c.yaml())

	r := do(t, "POST", e.adminURL("/api/v1/reload"))
	if r.status != 200 || !strings.Contains(r.body, "reloaded") {
		t.Fatalf("POST /api/v1/reload = %d %s", r.status, r.body)
	}
	e.waitUp("web1", "web2", "web3")
	if got := e.backend("web1"); got.Weight != 2 {
		t.Errorf("after reload web1 weight %d, want 2", got.Weight)
	}
	if got := e.backend("web3"); got.Address != web3.addr {
		t.Errorf("web3 address %s, want %s", got.Address, web3.addr)
	}
	if by := e.traffic(40); by["web3"] == 0 || by["web1"] <= by["web2"] {
		t.Errorf("after adding web3 and weighting web1 2, 40 requests went %v", by)
	}

	// Removing it again: it leaves the status API and takes no traffic.
	e.c.backends = e.c.backends[:2]
	writeFile(t, e.path, e.c.yaml())
	if err := e.agent.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	for _, st := range e.balancers() {
		for _, b := range st.Backends {
			if b.Name == "web3" {
				t.Errorf("web3 still listed after its removal: %+v", b)
			}
		}
	}
	if by := e.traffic(10); by["web3"] != 0 {
		t.Errorf("removed web3 still served: %v", by)
	}
	// Nor does it linger in /metrics as a series that never changes again.
	for _, line := range strings.Split(do(t, "GET", e.adminURL("/metrics")).body, "\n") {
		if strings.Contains(line, `backend="web3"`) || strings.Contains(line, `target="`+web3.addr+`"`) {
			t.Errorf("removed web3 still in /metrics: %s", line)
		}
	}
}

func TestReloadKeepsHealthAndDrain(t *testing.T) {
	e := startAgent(t)
	do(t, "POST", e.adminURL("/api/v1/balancers/web/backends/web2/drain"))
	e.traffic(4)
	before := e.backend("web1")
	since := before.Health.Since
	e.c.weights = map[string]int{"web1": 5}
	writeFile(t, e.path, e.c.yaml())
	if err := e.agent.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := e.backend("web2"); got.Admin != "drain" {
		t.Errorf("an operator's drain did not survive a reload: web2 admin %q", got.Admin)
	}
	if got := e.backend("web1"); got.Health.State != health.Up || !got.Health.Since.Equal(since) || got.Weight != 5 {
		t.Errorf("web1 after reload: health %s since %v weight %d; want up since %v (kept) and weight 5", got.Health.State, got.Health.Since, got.Weight, since)
	}
	if got := e.backend("web1"); got.Requests != before.Requests {
		t.Errorf("web1's request counter went from %d to %d across a reload that kept it", before.Requests, got.Requests)
	}
}

func TestReloadChangesListen(t *testing.T) {
	e := startAgent(t)
	old := e.c.listen
	e.c.listen = freeAddr(t)
	writeFile(t, e.path, e.c.yaml())
	if err := e.agent.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	e.waitUp("web1", "web2")
	if sts := e.balancers(); len(sts) != 1 || sts[0].Listen != e.c.listen {
		t.Fatalf("after moving the listener, status says %+v, want one balancer on %s", sts, e.c.listen)
	}
	if by := e.traffic(10); by["web1"]+by["web2"] != 10 {
		t.Errorf("on the new address: %v", by)
	}
	if c, err := net.DialTimeout("tcp", old, time.Second); err == nil {
		c.Close()
		t.Errorf("the old address %s still accepts connections", old)
	}
}

func TestReloadToBusyListenIsReported(t *testing.T) {
	e := startAgent(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	good := e.c.listen
	e.c.listen = busy.Addr().String()
	writeFile(t, e.path, e.c.yaml())
	err = e.agent.Reload()
	if err == nil || !strings.Contains(err.Error(), "listen "+e.c.listen) {
		t.Fatalf("Reload onto a taken address = %v, want an error naming %s", err, e.c.listen)
	}
	// The agent must not claim to be ready while the balancer serves nowhere.
	r := do(t, "GET", e.adminURL("/readyz"))
	if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, "balancer web") || !strings.Contains(r.body, e.c.listen) {
		t.Errorf("after a failed restart: /readyz = %d %q, want 503 naming balancer web and %s", r.status, r.body, e.c.listen)
	}
	// Fixing the file and reloading again brings it back.
	e.c.listen = good
	writeFile(t, e.path, e.c.yaml())
	if err := e.agent.Reload(); err != nil {
		t.Fatalf("Reload back to %s: %v", good, err)
	}
	e.waitUp("web1", "web2")
	if by := e.traffic(4); by["web1"]+by["web2"] != 4 {
		t.Errorf("after reloading a good file: %v", by)
	}
}

func TestReloadBeforeRun(t *testing.T) {
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")}}
	e := newEnv(t, c)
	// A SIGHUP can arrive before Run: the new file must be what runs.
	c.backends = append(c.backends, startApp(t, "web2"))
	writeFile(t, e.path, c.yaml())
	if err := e.agent.Reload(); err != nil {
		t.Fatalf("Reload before Run: %v", err)
	}
	e.run()
	e.waitUp("web1", "web2")
}

func TestStopEntersLameduck(t *testing.T) {
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), lameduck: "1500ms", backends: []*app{startApp(t, "web1")}}
	e := newEnv(t, c)
	e.run()
	e.waitUp("web1")
	e.cancel()
	// Lameduck: not ready, still serving, until the period ends.
	testenv.Poll(t, 5*time.Second, "/readyz reporting the shutdown", func() (bool, string) {
		r, err := try("GET", e.adminURL("/readyz"))
		if err != nil {
			return false, err.Error()
		}
		return r.status == http.StatusServiceUnavailable && strings.Contains(r.body, "agent: shutting down"), fmt.Sprintf("%d %q", r.status, r.body)
	})
	if _, err := e.get(); err != nil {
		t.Errorf("in lameduck the balancer must still serve: %v", err)
	}
	if err := e.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := try("GET", e.adminURL("/healthz")); err == nil {
		t.Errorf("the admin API still answers after Run returned")
	}
}

// TestMetricsLint scrapes the agent's /metrics as Prometheus would, after
// traffic, a drain and a health transition, and lints every family.
func TestMetricsLint(t *testing.T) {
	e := startAgent(t)
	e.traffic(10)
	do(t, "POST", e.adminURL("/api/v1/balancers/web/backends/web2/drain"))
	e.c.backends[1].SetMode(demoapp.Fail)
	testenv.Poll(t, 10*time.Second, "web2 down", func() (bool, string) {
		st := e.backend("web2").Health.State
		return st == health.Down, st.String()
	})

	r := do(t, "GET", e.adminURL("/metrics"))
	if r.status != 200 {
		t.Fatalf("GET /metrics = %d", r.status)
	}
	problems, err := promlint.New(strings.NewReader(r.body)).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	// The families an operator's dashboards rely on are there, with the
	// balancer and backend labels.
	for _, want := range []string{
		`haven_build_info{goversion="` + runtime.Version() + `",node="lb1",version="v0.0.0-test"} 1`,
		`haven_lb_backend_requests_total{backend="web1",balancer="web"}`,
		`haven_lb_backend_responses_total{backend="web1",balancer="web",class="2xx"}`,
		`haven_lb_backend_admin_state{backend="web2",balancer="web",state="drain"} 1`,
		`haven_lb_backend_weight{backend="web1",balancer="web"} 1`,
		`haven_lb_client_connections_total{balancer="web"}`,
		`haven_lb_request_duration_seconds_count{balancer="web"}`,
		`haven_health_target_state{check="web",state="down",target="` + e.c.backends[1].addr + `"} 1`,
		`haven_health_transitions_total{check="web",target="` + e.c.backends[1].addr + `",to="down"} 1`,
		`haven_health_probes_total{check="web",result="pass"}`,
		`haven_health_probe_duration_seconds_count{check="web"}`,
		"go_goroutines ",
		"process_open_fds ",
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", r.body)
	}

	// docs/admin.md lists every family.
	doc, err := os.ReadFile("../../docs/admin.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(r.body, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name = strings.Fields(name)[0]
			if !strings.Contains(string(doc), "`"+name+"`") {
				t.Errorf("docs/admin.md does not list the metric %s", name)
			}
		}
	}
}

func TestRestartOnlyChanges(t *testing.T) {
	load := func(vip, members string) *config.Config {
		t.Helper()
		y := `cluster: c
regions: {east: {nodes: {a: {address: 198.18.1.11}, b: {address: 198.18.1.12}, q: {address: 198.18.1.13}}}}
coordination: {members: [` + members + `]}
balancers:
  web: {nodes: [a, b], listen: ":80", vip: "` + vip + `", backends: [{address: "198.18.1.31:8080"}]}
`
		cfg, err := config.Parse("haven.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	base := load("198.18.1.100/24", "a, b, q")
	if got := restartOnly(base, load("198.18.1.100/24", "a, b, q"), "a"); len(got) != 0 {
		t.Errorf("no change reported as %v", got)
	}
	if got := restartOnly(base, load("198.18.1.101/24", "a, b, q"), "a"); !slices.Equal(got, []string{"vip"}) {
		t.Errorf("a moved vip reported as %v, want [vip]", got)
	}
	if got := restartOnly(base, load("198.18.1.100/24", "a, q, b"), "a"); !slices.Equal(got, []string{"coordination"}) {
		t.Errorf("reordered members reported as %v, want [coordination]", got)
	}
}

// Go's profiler answers on the admin port only while admin.pprof is set;
// a reload turns it on.
func TestPprof(t *testing.T) {
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")}}
	e := newEnv(t, c)
	e.run()
	e.waitUp("web1")
	if r, err := try("GET", e.adminURL("/debug/pprof/")); err != nil || r.status != http.StatusNotFound || !strings.Contains(r.body, "admin.pprof") {
		t.Errorf("profiler while off: %d %q %v, want 404 saying how to turn it on", r.status, r.body, err)
	}
	c.pprof = true
	writeFile(t, e.path, c.yaml())
	if err := e.agent.Reload(); err != nil {
		t.Fatal(err)
	}
	if r, err := try("GET", e.adminURL("/debug/pprof/")); err != nil || r.status != http.StatusOK || !strings.Contains(r.body, "goroutine") {
		t.Errorf("profiler index: %d %v, want 200 listing the profiles", r.status, err)
	}
	if r, err := try("GET", e.adminURL("/debug/pprof/profile?seconds=1")); err != nil || r.status != http.StatusOK || len(r.body) == 0 {
		t.Errorf("a 1 s CPU profile: %d, %d bytes, %v", r.status, len(r.body), err)
	}
}
