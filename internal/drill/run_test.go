package drill

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
)

// TestScenarioTargets checks where each built-in scenario aims its faults
// in the warm standby of testdata.
func TestScenarioTargets(t *testing.T) {
	cfg := load(t)
	st := State{Primary: "db2", Region: "east", Holders: map[string]string{"web": "lb2"}}
	for _, tc := range []struct {
		scenario string
		want     []string // "node kind peers-or-target"
	}{
		{"primary-kill", []string{"db2 kill postgres"}},
		{"primary-partition", []string{"db2 drop db1,db3,lb1,lb2,wdb1,wdb2,wdb3,wit,wlb1,wlb2"}},
		{"node-loss", []string{"db2 pause agent db1,db3,lb1,lb2,wdb1,wdb2,wdb3,wit,wlb1,wlb2"}},
		{"balancer-loss", []string{"lb2 pause agent db1,db2,db3,lb1,wdb1,wdb2,wdb3,wit,wlb1,wlb2"}},
		{"backend-loss", []string{"lb1 drop 198.18.1.31", "lb2 drop 198.18.1.31", "wlb1 drop 198.18.2.31", "wlb2 drop 198.18.2.31"}},
		{"region-loss", []string{
			"db1 drop wdb1,wdb2,wdb3,wit,wlb1,wlb2", "db2 drop wdb1,wdb2,wdb3,wit,wlb1,wlb2", "db3 drop wdb1,wdb2,wdb3,wit,wlb1,wlb2",
			"lb1 drop wdb1,wdb2,wdb3,wit,wlb1,wlb2", "lb2 drop wdb1,wdb2,wdb3,wit,wlb1,wlb2"}},
	} {
		s, err := ScenarioNamed(tc.scenario)
		if err != nil {
			t.Fatal(err)
		}
		targets, err := s.Faults(cfg, st, 10*time.Second)
		if err != nil {
			t.Errorf("%s: %v", tc.scenario, err)
			continue
		}
		var got []string
		for _, tg := range targets {
			what := strings.TrimSpace(tg.Spec.Target + " " + strings.Join(tg.Spec.Peers, ","))
			if tg.Spec.Duration != 10*time.Second {
				t.Errorf("%s: fault %+v lasts %v, want the drill's 10s", tc.scenario, tg, tg.Spec.Duration)
			}
			got = append(got, fmt.Sprintf("%s %s %s", tg.Node, tg.Spec.Kind, what))
		}
		if strings.Join(got, "; ") != strings.Join(tc.want, "; ") {
			t.Errorf("%s:\n got %q\nwant %q", tc.scenario, got, tc.want)
		}
	}

	// Without the state they aim by, they say what is missing.
	for name, want := range map[string]string{
		"primary-pause": "no primary now",
		"balancer-loss": "no node holds a balancer's floating address",
		"region-loss":   "no region holds the active-region record",
	} {
		s, _ := ScenarioNamed(name)
		if _, err := s.Faults(cfg, State{}, time.Second); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s without state: %v, want %q", name, err, want)
		}
	}
	if _, err := ScenarioNamed("meteor"); err == nil || !strings.Contains(err.Error(), "primary-pause, primary-kill") {
		t.Errorf("an unknown scenario: %v", err)
	}
}

// outageAgents stands in for the agents: a fault makes the service answer
// 503 for its duration, and the balancer's address moves to lb2.
type outageAgents struct {
	down  atomic.Int64 // unix nanoseconds until which the service fails
	mu    sync.Mutex
	moved bool
}

func (a *outageAgents) State(context.Context) (State, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	holder := "lb1"
	if a.moved {
		holder = "lb2"
	}
	return State{Holders: map[string]string{"web": holder}}, nil
}

func (a *outageAgents) Inject(_ context.Context, node string, spec fault.Spec) (fault.Fault, error) {
	now := time.Now()
	if spec.Kind == fault.Pause {
		a.down.Store(now.Add(spec.Duration).UnixNano())
		a.mu.Lock()
		a.moved = true
		a.mu.Unlock()
	}
	return fault.Fault{ID: "1", Spec: spec, Started: now, Until: now.Add(spec.Duration), Detail: string(spec.Kind) + " on " + node}, nil
}

// TestRunJudgesTheOutage plays balancer-loss against a real HTTP server
// that fails while the fault lasts: the drill must see an outage about as
// long as the fault, judge it against the web objectives, and record the
// address's move.
func TestRunJudgesTheOutage(t *testing.T) {
	agents := &outageAgents{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if time.Now().UnixNano() < agents.down.Load() {
			http.Error(w, "no backend", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	}))
	t.Cleanup(srv.Close)
	s, _ := ScenarioNamed("balancer-loss")
	opt := Options{URL: srv.URL, FaultFor: 800 * time.Millisecond, Warmup: 300 * time.Millisecond, Settle: 300 * time.Millisecond, MaxOutage: 20 * time.Second}
	for _, tc := range []struct {
		objective string
		met       bool
	}{{"rto: 1m", true}, {"rto: 200ms", false}} {
		cfg := load(t, "objectives: {rto: 30s, rpo: 5s}", "objectives: {rto: 30s, rpo: 5s, web: {"+tc.objective+"}}")
		r, err := Run(context.Background(), cfg, agents, s, opt, func(m string) { t.Log(m) })
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Parts) != 1 || len(r.Faults) != 1 {
			t.Fatalf("%+v: want one part and the one fault of a node's loss", r)
		}
		p := r.Parts[0]
		// The outage is the fault's: at least most of it, and bounded.
		if p.Part != "web" || p.Failed == 0 || p.RTO < opt.FaultFor/2 || p.Unbounded || r.Met != tc.met || p.Met != tc.met {
			t.Errorf("objective %s: %+v", tc.objective, p)
		}
		if !tc.met && (len(r.Reasons) == 0 || !strings.Contains(r.Reasons[0], "web: RTO 200ms: HTTP GET "+srv.URL+" stopped for")) {
			t.Errorf("objective %s: reasons %q", tc.objective, r.Reasons)
		}
		if !strings.Contains(r.Summary(), "balancer web's address is on lb2 (was lb1)") {
			t.Errorf("the summary does not show the move:\n%s", r.Summary())
		}
		failed := 0
		for _, b := range p.Outcomes {
			failed += b.Failed
		}
		if failed != p.Failed {
			t.Errorf("the outcome buckets count %d failures, the part %d", failed, p.Failed)
		}
		agents.mu.Lock()
		agents.moved = false
		agents.mu.Unlock()
	}
}

// TestJudgeByDesign: a part whose objective the design cannot promise is
// not met, however the run went, and the reason names the design's limit.
func TestJudgeByDesign(t *testing.T) {
	// Async DR with max_lag 5s cannot promise a region RPO of 0.
	cfg := load(t, "objectives: {rto: 30s, rpo: 5s}", "objectives: {rto: 30s, rpo: 5s, region: {rpo: 0s}}")
	p := PartResult{Part: "region", Workload: "database writes", RTO: time.Second}
	p.judge(cfg)
	if p.Met || len(p.Reasons) != 1 || !strings.Contains(p.Reasons[0], "the design cannot promise it: region: RPO 0s") {
		t.Errorf("region RPO 0 with async DR, nothing lost: met %v, reasons %q", p.Met, p.Reasons)
	}
	p = PartResult{Part: "database", Workload: "database writes", RTO: time.Second}
	p.judge(cfg)
	if !p.Met {
		t.Errorf("the database part, sync, RTO 1s of 30s: %q", p.Reasons)
	}
}

// TestRunNeedsAWorkload: a drill that would watch nothing is refused.
func TestRunNeedsAWorkload(t *testing.T) {
	s, _ := ScenarioNamed("primary-kill")
	_, err := Run(context.Background(), load(t), &outageAgents{}, s, Options{}, nil)
	if err == nil || !strings.Contains(err.Error(), "no workload") {
		t.Errorf("a drill without a workload: %v", err)
	}
}

// TestRestoreLoss: the writes after the restored one, acknowledged before
// the restore began, are lost; the RPO is the time they span.
func TestRestoreLoss(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	ops := []pgwrite.Write{
		{Seq: 1, Start: ms(0), End: ms(10)},
		{Seq: 2, Start: ms(20), End: ms(30)},
		{Seq: 3, Start: ms(40), End: ms(50)},
		{Seq: 4, Start: ms(60), End: ms(70), Outcome: pgwrite.Failed},
		{Seq: 5, Start: ms(80), End: ms(90)},
		{Seq: 6, Start: ms(100), End: ms(110)}, // after the restore began
	}
	for _, tc := range []struct {
		restored int
		lost     []int
		rpo      time.Duration
	}{
		{5, nil, 0},
		{6, nil, 0},
		{2, []int{3, 5}, ms(60)},
		{0, []int{1, 2, 3, 5}, ms(90)},
	} {
		lost, rpo := restoreLoss(ops, tc.restored, ms(95))
		if fmt.Sprint(lost) != fmt.Sprint(tc.lost) || rpo != tc.rpo {
			t.Errorf("restored to write %d: lost %v, RPO %v; want %v, %v", tc.restored, lost, rpo, tc.lost, tc.rpo)
		}
	}
}

// TestBegan: a fault that begins after its answer (a cut, a pause of the
// agent) began that much later; a success in between is no recovery.
func TestBegan(t *testing.T) {
	now := time.Now()
	late := fault.Fault{Spec: fault.Spec{Duration: 2 * time.Second}, Started: now, Until: now.Add(2*time.Second + 500*time.Millisecond)}
	if got := began(time.Second, late); got != 1500*time.Millisecond {
		t.Errorf("a fault 500ms late, answered at 1s, began at %v", got)
	}
	atOnce := fault.Fault{Spec: fault.Spec{Duration: 2 * time.Second}, Started: now, Until: now.Add(2 * time.Second)}
	if got := began(time.Second, atOnce); got != time.Second {
		t.Errorf("a fault at once, answered at 1s, began at %v", got)
	}
}
