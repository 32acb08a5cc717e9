package drill

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/fault"
)

// TestDrawFault: every class a soak can draw gives a fault an agent
// takes (its kind, target and level within what fault.Manager accepts),
// on a database node, for 1-5 s; a fill leaves room on the disk (80-95 %).
func TestDrawFault(t *testing.T) {
	cfg := load(t)
	st := State{Primary: "db2"}
	for _, k := range soakKinds {
		opt := SoakOptions{Kinds: []fault.Kind{k}}
		opt.defaults()
		rng := rand.New(rand.NewPCG(1, uint64(len(k))))
		for range 200 {
			f := drawFault(rng, cfg, st, opt)
			s := f.Spec
			if !strings.HasPrefix(f.Node, "db") || s.Duration < time.Second || s.Duration > 5*time.Second {
				t.Fatalf("%s: drew %+v on %s: want a database node, for 1-5 s", k, s, f.Node)
			}
			switch k {
			case agentPause:
				if s.Kind != fault.Pause || s.Target != fault.TargetAgent {
					t.Fatalf("pause-agent drew %+v", s)
				}
			case fault.Fill:
				if s.Kind != fault.Fill || s.Target != "postgres" || s.Level < 80 || s.Level > 95 {
					t.Fatalf("fill drew %+v: want postgres's data directory filled to 80-95 %%", s)
				}
			case fault.Loss:
				if s.Level < 20 || s.Level > 80 || len(s.Peers) == 0 {
					t.Fatalf("loss drew %+v", s)
				}
			case fault.Drop:
				if len(s.Peers) == 0 {
					t.Fatalf("drop drew %+v with no peers", s)
				}
			default:
				if s.Kind != k || s.Target != "postgres" {
					t.Fatalf("%s drew %+v", k, s)
				}
			}
		}
	}
}

// TestSoakRefusesAnUnknownClass: a --kinds the soak cannot draw is
// refused before anything is injected, naming the classes it can.
func TestSoakRefusesAnUnknownClass(t *testing.T) {
	_, err := Soak(context.Background(), load(t), nil, SoakOptions{Kinds: []fault.Kind{fault.Kill, "stop"}}, nil)
	if err == nil || !strings.Contains(err.Error(), `"stop"`) || !strings.Contains(err.Error(), "pause-agent, fill") {
		t.Fatalf("a soak of kill,stop: %v; want a refusal naming stop and the classes", err)
	}
}

// fullDiskAgents stand in for agents whose disks are fuller than any
// fill: they refuse every fill and take every other fault.
type fullDiskAgents struct{ cfg *config.Config }

func (a fullDiskAgents) State(context.Context) (State, error) {
	nodes := a.cfg.Database.Nodes
	return State{Primary: nodes[0], Replicas: nodes[1:]}, nil
}

func (a fullDiskAgents) Inject(_ context.Context, node string, spec fault.Spec) (fault.Fault, error) {
	if spec.Kind == fault.Fill {
		return fault.Fault{}, fmt.Errorf("/var/lib/haven/pg is 91%% full already, at or above 85%%: %w", fault.ErrAlreadyFull)
	}
	now := time.Now()
	return fault.Fault{ID: "1", Spec: spec, Started: now, Until: now.Add(spec.Duration), Detail: string(spec.Kind) + " on " + node}, nil
}

// TestSoakDrawsAgainAfterARefusedFill: a fill an agent refuses (its disk
// already fuller than drawn) is drawn again as another fault and counted,
// not the soak's end; when no disk takes a fill, the soak stops and says
// why instead of drawing forever.
func TestSoakDrawsAgainAfterARefusedFill(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }))
	t.Cleanup(srv.Close)
	cfg := load(t)
	opt := SoakOptions{URL: srv.URL, Faults: 6, Kinds: []fault.Kind{fault.Fill, fault.Kill}, Seed: 7,
		FaultMin: 50 * time.Millisecond, FaultMax: 60 * time.Millisecond, GapMin: 10 * time.Millisecond, GapMax: 20 * time.Millisecond,
		Heal: 5 * time.Second, Every: 10 * time.Millisecond}
	r, err := Soak(context.Background(), cfg, fullDiskAgents{cfg}, opt, func(m string) { t.Log(m) })
	if err != nil {
		t.Fatal(err)
	}
	if r.Stopped != "" || len(r.Faults) != 6 || r.ByKind["kill postgres"] != 6 || r.Skipped == 0 || !r.Met {
		t.Fatalf("soak of fills and kills on full disks: stopped %q, %d faults %v, %d fills refused, met %v; want 6 kills, the fills drawn again",
			r.Stopped, len(r.Faults), r.ByKind, r.Skipped, r.Met)
	}
	if !strings.Contains(r.Summary(), "fills refused (the disk already fuller) and drawn again") {
		t.Errorf("the summary does not count the refused fills:\n%s", r.Summary())
	}

	opt.Kinds = []fault.Kind{fault.Fill}
	r, err = Soak(context.Background(), cfg, fullDiskAgents{cfg}, opt, func(m string) { t.Log(m) })
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Faults) != 0 || r.Skipped != maxRefusedFills || !strings.Contains(r.Stopped, "inject fill") || !strings.Contains(r.Stopped, "full already") {
		t.Fatalf("soak of fills only on full disks: stopped %q after %d refused; want it stopped on the fill after %d refused", r.Stopped, r.Skipped, maxRefusedFills)
	}
}
