package agent

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestObjectivesInStatus runs one node with a balancer and a database of
// one node against an RTO: the status API and the metrics must say that
// the objectives are not met now, and why: the balancer and the database
// each have no spare to fail over to.
func TestObjectivesInStatus(t *testing.T) {
	c := backupCluster(t, t.TempDir(), "")
	c.objectives = "{rto: 30s, rpo: 5s}"
	e := newEnv(t, c)
	e.run()
	wants := []string{"web: balancer web serves on lb1 alone of its 1 nodes", "database: no replica can take over now"}
	failing := func(st drill.Compliance, want string) bool {
		for _, f := range st.Failing {
			if strings.HasPrefix(f.String(), want) {
				return true
			}
		}
		return false
	}
	var st drill.Compliance
	testenv.Poll(t, time.Minute, "the objectives judged on the web and the database, up", func() (bool, string) {
		r, err := try("GET", e.adminURL("/api/v1/status"))
		if err != nil {
			return false, err.Error()
		}
		var out struct {
			Objectives *drill.Compliance `json:"objectives"`
		}
		if err := json.Unmarshal([]byte(r.body), &out); err != nil || out.Objectives == nil {
			return false, fmt.Sprint(err, r.body)
		}
		st = *out.Objectives
		return strings.Join(st.Checked, ",") == "web,database,region" && failing(st, wants[0]) && failing(st, wants[1]), fmt.Sprintf("%+v", st)
	})
	if st.Met || len(st.Failing) != 2 {
		t.Errorf("objectives with one balancer node and one database node: %+v; want not met for those two reasons alone", st)
	}
	r, err := try("GET", e.adminURL("/metrics"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"haven_objectives_met 0", `haven_objective_failing{part="database"} 1`, `haven_objective_failing{part="web"} 1`} {
		if !strings.Contains(r.body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}
