package drill_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// webLab is the web half of examples/warm-standby.yaml in namespaces: the
// balancer web on lb1 and lb2 behind 198.18.1.100, a witness (wit) that is
// only the third etcd member, so that the coordination quorum outlives one
// balancer node, the application servers app1 and app2 (haven backend) and
// a client, which runs the drills as an operator would.
type webLab struct {
	t      *testing.T
	net    *testnet.Net
	bin    string
	dir    string
	agents map[string]*testnet.Proc
	admin  *http.Client // from the client host
}

// webLabNodes are the lab's haven nodes; app1 and app2 are backends, not
// nodes.
var webLabNodes = []string{"lb1", "lb2", "wit"}

const (
	webVIP   = "198.18.1.100"
	webToken = "webdrill-e2e"
	// webRTO is the file's objective for the web part.
	webRTO = "objectives: {web: {rto: 10s}}"
)

func startWebLab(t *testing.T) *webLab {
	testnet.Require(t)
	l := &webLab{t: t, bin: testenv.Haven(t), dir: t.TempDir(), agents: map[string]*testnet.Proc{}}
	l.net = testnet.Start(t, testnet.Options{Hosts: []string{"lb1", "lb2", "wit", "app1", "app2", "client"}})
	l.admin = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: l.net.Host("client").DialContext, DisableKeepAlives: true}}
	addr := func(h string) string { return l.net.Host(h).Addr.String() }
	cfg := fmt.Sprintf(`cluster: webdrill
admin: {token_file: %[1]s/token}
regions:
  east:
    nodes:
      lb1: {address: %[3]s, zone: a}
      lb2: {address: %[4]s, zone: b}
      wit: {address: %[5]s, zone: c}
coordination:
  members: [lb1, lb2, wit]
  data_dir: %[2]s/{node}/etcd
  join_timeout: 20s
  tls: {ca: "%[1]s/certs/ca.pem", cert: "%[1]s/certs/{node}.pem", key: "%[1]s/certs/{node}-key.pem"}
checks:
  app:
    http: {port: 8080, path: /healthz, expect_status: [200]}
    interval: 1s
    timeout: 500ms
balancers:
  web:
    nodes: [lb1, lb2]
    listen: ":80"
    check: app
    vip: %[8]s/24
    backends:
      - {name: app1, address: "%[6]s:8080"}
      - {name: app2, address: "%[7]s:8080"}
drills: {enabled: true, url: "http://%[8]s/"}
%[9]s
`, l.dir, testenv.MemoryDir(t), addr("lb1"), addr("lb2"), addr("wit"), addr("app1"), addr("app2"), webVIP, webRTO)
	for name, content := range map[string]string{"haven.yaml": cfg, "token": webToken + "\n"} {
		if err := os.WriteFile(filepath.Join(l.dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(l.bin, "certs", "-c", l.config(), "-o", filepath.Join(l.dir, "certs")).CombinedOutput(); err != nil {
		t.Fatalf("haven certs: %v\n%s", err, out)
	}
	for _, app := range []string{"app1", "app2"} {
		if _, err := l.net.Host(app).Start(context.Background(), l.bin, "backend", "--listen", addr(app)+":8080", "--name", app); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range webLabNodes {
		p, err := l.net.Host(n).Start(context.Background(), l.bin, "agent", "-c", l.config(), "-n", n)
		if err != nil {
			t.Fatal(err)
		}
		l.agents[n] = p
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("HAVEN_E2E_DEBUG") != "" {
			var procs []*testnet.Proc
			for _, n := range webLabNodes {
				procs = append(procs, l.agents[n])
			}
			t.Logf("agents' logs:\n%s", testnet.Outputs(200000, procs...))
		}
	})
	return l
}

func (l *webLab) config() string { return filepath.Join(l.dir, "haven.yaml") }

// get asks node's admin API for path, as the client host, into v.
func (l *webLab) get(node, path string, v any) error {
	req, err := http.NewRequest("GET", "http://"+l.net.Host(node).Addr.String()+":9900"+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+webToken)
	resp, err := l.admin.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s%s: %s", node, path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// settled waits until both balancer nodes agree on the address's holder,
// the other one is its backup, both see both backends up and the address
// answers, and returns the holder. A drill aimed before then would aim at
// a deployment still recovering from the last one.
func (l *webLab) settled(what string) string {
	l.t.Helper()
	var holder string
	testenv.Poll(l.t, 90*time.Second, what+": one holder of "+webVIP+", both backends up on both nodes", func() (bool, string) {
		var seen []string
		holders, backups, up := map[string]bool{}, 0, 0
		for _, n := range []string{"lb1", "lb2"} {
			var vips []struct {
				Name, State, Holder string
			}
			var lbs []struct {
				Backends []struct {
					Address string
					Health  struct{ State string }
				}
			}
			if err := l.get(n, "/api/v1/vips", &vips); err != nil || len(vips) != 1 {
				seen = append(seen, fmt.Sprintf("%s: vips %v %v", n, vips, err))
				continue
			}
			if err := l.get(n, "/api/v1/balancers", &lbs); err != nil || len(lbs) != 1 {
				seen = append(seen, fmt.Sprintf("%s: balancers %v", n, err))
				continue
			}
			v := vips[0]
			holders[v.Holder] = true
			if v.State == "backup" {
				backups++
			}
			var states []string
			for _, b := range lbs[0].Backends {
				states = append(states, b.Address+"="+b.Health.State)
				if b.Health.State == "up" {
					up++
				}
			}
			seen = append(seen, fmt.Sprintf("%s: %s, holder %s, backends %s", n, v.State, v.Holder, strings.Join(states, " ")))
		}
		holder = ""
		for h := range holders {
			holder = h
		}
		if len(holders) != 1 || holder == "" || backups != 1 || up != 4 {
			return false, strings.Join(seen, "; ")
		}
		resp, err := l.admin.Get("http://" + webVIP + "/")
		if err != nil {
			return false, strings.Join(append(seen, err.Error()), "; ")
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, strings.Join(append(seen, "GET / "+resp.Status), "; ")
	})
	return holder
}

// drill runs haven drill run from the client host with the configuration
// cfg and returns its standard output and error apart.
func (l *webLab) drill(cfg string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := l.net.Host("client").Command(ctx, l.bin, append(append([]string{"drill", "run"}, args...), "-c", cfg)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// drillJSON runs scenario against the file's objectives and returns its
// result, failing the test when the drill did not give one.
func (l *webLab) drillJSON(scenario string) drill.Result {
	l.t.Helper()
	out, log, err := l.drill(l.config(), scenario, "--for", "6s", "-o", "json")
	l.t.Logf("haven drill run %s:\n%s", scenario, log)
	var r drill.Result
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		l.t.Fatalf("haven drill run %s: %v; its JSON: %v\n%s", scenario, err, jerr, out)
	}
	if err != nil {
		l.t.Errorf("haven drill run %s: %v (reasons %q)", scenario, err, r.Reasons)
	}
	return r
}

// checkWeb checks what every web drill must show: met, one part (web,
// through the address), clients that succeeded again within the
// objective.
func checkWeb(t *testing.T, r drill.Result) drill.PartResult {
	t.Helper()
	if len(r.Parts) != 1 {
		t.Fatalf("drill %s: parts %+v; want one, the web's", r.Scenario, r.Parts)
	}
	p := r.Parts[0]
	t.Logf("drill %s: RTO %v; %d requests succeeded, %d failed; events %+v", r.Scenario, p.RTO.Round(time.Millisecond), p.OK, p.Failed, r.Events)
	if !r.Met || !p.Met || p.Part != "web" || p.Workload != "HTTP GET http://"+webVIP+"/" || p.Unbounded || p.OK == 0 {
		t.Errorf("drill %s: %+v; want it met, for the web, requests through %s answered again", r.Scenario, p, webVIP)
	}
	if p.ObjectiveRTO == nil || *p.ObjectiveRTO != 10*time.Second || p.RTO >= *p.ObjectiveRTO {
		t.Errorf("drill %s: RTO %v, objective %v; want one under the file's 10s", r.Scenario, p.RTO, p.ObjectiveRTO)
	}
	return p
}

// checkClean checks that the drill left nothing behind once its faults
// ended: no dropped peer in the drill's nftables table on either balancer
// node (each element's kernel timeout is the fault's duration and a
// second; the drill ends 3s after the faults do), and no stopped process
// in the lab.
func (l *webLab) checkClean(what string) {
	l.t.Helper()
	for _, n := range []string{"lb1", "lb2"} {
		out, err := exec.Command("ip", "netns", "exec", l.net.Host(n).Namespace, "nft", "list", "table", "inet", fault.DropTable).CombinedOutput()
		switch {
		case err != nil && strings.Contains(string(out), "No such file or directory"):
			// No drop was ever injected on n.
		case err != nil:
			l.t.Errorf("%s: nft list table inet %s on %s: %v\n%s", what, fault.DropTable, n, err, out)
		case strings.Contains(string(out), "elements ="):
			l.t.Errorf("%s: %s still drops peers:\n%s", what, n, out)
		}
	}
	for _, p := range l.net.Procs() {
		for _, pid := range fault.Tree(p.PID) {
			if s := procState(pid); s == "T" || s == "t" {
				l.t.Errorf("%s: pid %d (under %s) is still stopped", what, pid, p)
			}
		}
	}
}

// procState is a process's state letter in /proc/PID/stat ("" if gone).
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// TestDrillWebScenarios plays the web's built-in drills against the lab,
// from the client, as issue 17 asks: balancer-loss loses the node holding
// the address (its traffic with the other nodes dropped, its agent and
// the balancer in it frozen) and the address must move to the other node;
// backend-loss cuts app1 off from both balancer nodes and the balancers
// must serve from app2. Each must keep the file's RTO of 10s and leave
// nothing behind. Judged against an RTO of 100ms, which no failover keeps,
// balancer-loss must fail and say why.
func TestDrillWebScenarios(t *testing.T) {
	l := startWebLab(t)

	held := l.settled("start")
	r := l.drillJSON("balancer-loss")
	p := checkWeb(t, r)
	other := map[string]string{"lb1": "lb2", "lb2": "lb1"}[held]
	if p.Failed == 0 {
		// A frozen holder fails the requests in flight to it, unless it
		// had already let the address go: on a starved machine a holder
		// can miss its lease's renewal between the drill's choice of it
		// and the freeze (seen in CI with three packages side by side),
		// and the address moves before the fault, harming nothing.
		if out := l.agents[held].Output(); !releasedBefore(out, `msg="fault injected"`) {
			t.Errorf("balancer-loss: no request failed while %s, the address's holder, was frozen", held)
		} else {
			t.Logf("balancer-loss: no request failed: %s had let the address go before it was frozen (a missed renewal)", held)
		}
	}
	// One fault: the agent frozen and, from that moment, cut off from the
	// other nodes (not from the clients: the address's fence must close).
	if len(r.Faults) != 1 {
		t.Errorf("balancer-loss: faults %+v; want one, the loss of %s", r.Faults, held)
	}
	for _, f := range r.Faults {
		s := f.Fault.Spec
		others := []string{other, "wit"}
		slices.Sort(others)
		if f.Node != held || s.Kind != fault.Pause || s.Target != fault.TargetAgent || !slices.Equal(s.Peers, others) {
			t.Errorf("balancer-loss: fault %+v on %s; want a pause of the agent cut off from %v on %s, which held the address", s, f.Node, others, held)
		}
	}
	moved := fmt.Sprintf("balancer web's address is on %s (was %s)", other, held)
	if !slices.ContainsFunc(r.Events, func(e drill.Event) bool { return e.What == moved }) {
		t.Errorf("balancer-loss: events %+v; want %q", r.Events, moved)
	}
	l.checkClean("after balancer-loss")
	if now := l.settled("after balancer-loss"); now != other {
		t.Errorf("after balancer-loss the address is on %s; want %s", now, other)
	}

	r = l.drillJSON("backend-loss")
	checkWeb(t, r)
	app1 := l.net.Host("app1").Addr.String()
	var on []string
	for _, f := range r.Faults {
		on = append(on, f.Node)
		if s := f.Fault.Spec; s.Kind != fault.Drop || !slices.Equal(s.Peers, []string{app1}) {
			t.Errorf("backend-loss: fault %+v on %s; want a drop of app1's address %s", s, f.Node, app1)
		}
	}
	if !slices.Equal(on, []string{"lb1", "lb2"}) {
		t.Errorf("backend-loss: faults on %v; want one on lb1 and one on lb2", on)
	}
	l.checkClean("after backend-loss")

	// The same drill judged against an RTO no failover keeps.
	held = l.settled("after backend-loss")
	b, err := os.ReadFile(l.config())
	if err != nil {
		t.Fatal(err)
	}
	strict := filepath.Join(l.dir, "strict.yaml")
	if err := os.WriteFile(strict, bytes.Replace(b, []byte(webRTO), []byte("objectives: {web: {rto: 100ms}}"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	out, log, err := l.drill(strict, "balancer-loss", "--for", "6s")
	t.Logf("balancer-loss against an RTO of 100ms (from %s):\n%s", held, out)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "drill balancer-loss: NOT MET") ||
		!strings.Contains(out, "not met: RTO 100ms: HTTP GET http://"+webVIP+"/ stopped for") {
		t.Errorf("balancer-loss against an RTO of 100ms: %v; want exit 1, NOT MET and the RTO's reason\n%s\n%s", err, out, log)
	}
	l.checkClean("after the strict balancer-loss")
}

// releasedBefore says whether an agent's log has it letting its floating
// address go before the first line containing mark (false when either is
// missing).
func releasedBefore(log, mark string) bool {
	rel, at := strings.Index(log, `msg="released the floating address"`), strings.Index(log, mark)
	return rel >= 0 && at > rel
}
