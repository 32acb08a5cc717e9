package galera

import (
	"slices"
	"testing"
)

func TestRoutesFrom(t *testing.T) {
	serving := func(host string, view ...string) MemberState {
		return MemberState{Host: host, Port: 3306, Serving: true, Status: Status{ClusterStatus: "Primary", IncomingAddresses: view}}
	}
	all3 := []string{"198.18.1.11:3306", "198.18.1.12:3306", "198.18.1.13:3306"}
	for _, tc := range []struct {
		name             string
		holder           string
		all              bool
		members          map[string]MemberState
		writers, readers []string
	}{
		{"the holder writes, every serving node reads", "db2", false,
			map[string]MemberState{"db1": serving("198.18.1.11", all3...), "db2": serving("198.18.1.12", all3...), "db3": serving("198.18.1.13", all3...)},
			[]string{"db2"}, []string{"db1", "db2", "db3"}},
		{"a holder that does not serve gets no writes", "db2", false,
			map[string]MemberState{"db1": serving("198.18.1.11", all3...), "db2": {Host: "198.18.1.12", Port: 3306}},
			nil, []string{"db1"}},
		{"writers all", "", true,
			map[string]MemberState{"db1": serving("198.18.1.11", all3...), "db3": serving("198.18.1.13", all3...)},
			[]string{"db1", "db3"}, []string{"db1", "db3"}},
		// db3 is cut off: its own last word (serving, all three in view)
		// is stale; db1 and db2's component no longer has it.
		{"a node the others' component left out is out at once", "db3", false,
			map[string]MemberState{"db1": serving("198.18.1.11", all3[:2]...), "db2": serving("198.18.1.12", all3[:2]...), "db3": serving("198.18.1.13", all3...)},
			nil, []string{"db1", "db2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := RoutesFrom(tc.holder, tc.members, tc.all)
			if !slices.Equal(r.Writers, tc.writers) || !slices.Equal(r.Readers, tc.readers) {
				t.Errorf("writers %v readers %v, want %v and %v", r.Writers, r.Readers, tc.writers, tc.readers)
			}
		})
	}
}
