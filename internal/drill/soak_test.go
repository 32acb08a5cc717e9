package drill

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

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
