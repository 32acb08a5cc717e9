package agent

import (
	"strings"
	"testing"
)

// TestKeepsQuorum: a change is allowed only when each of its steps leaves
// a majority of the members it counts answering.
func TestKeepsQuorum(t *testing.T) {
	g := func(healthy ...bool) EtcdGroup {
		var out EtcdGroup
		for i, h := range healthy {
			out.Members = append(out.Members, EtcdMember{Name: string(rune('a' + i)), Healthy: h, Started: true})
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		g      EtcdGroup
		remove string
		add    int
		want   string // "" when allowed
	}{
		{"replace a dead one of three", g(true, true, false), "c", 1, ""},
		{"replace a live one of three", g(true, true, true), "c", 1, ""},
		{"replace one of three when another is dead", g(true, false, true), "c", 1, "no majority"},
		{"add to three", g(true, true, true), "", 1, ""},
		{"add to three with one dead", g(true, true, false), "", 1, "no majority"},
		{"remove from two, one dead", g(true, false), "a", 1, "no majority"},
		{"replace one of five, two dead", g(true, true, true, false, false), "e", 1, ""},
		{"an unknown member", g(true, true, true), "z", 1, "not a member"},
	} {
		err := keepsQuorum(tc.g, tc.remove, tc.add)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
