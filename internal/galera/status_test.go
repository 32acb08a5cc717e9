package galera

import (
	"slices"
	"strings"
	"testing"
)

// Why a server does not serve points at what to look at: a partition for
// a connected node outside the primary component, the stopped replication
// for one that left the group (whose reason said "partitioned" before).
func TestServingSaysWhy(t *testing.T) {
	for _, tt := range []struct {
		name string
		s    Status
		want string
	}{
		{"partitioned", Status{Connected: true, ClusterStatus: "non-Primary"}, "partitioned from the majority"},
		{"left the group", Status{ClusterStatus: "Disconnected"}, "wsrep_connected OFF"},
		{"synced", Status{Connected: true, ClusterStatus: "Primary", Ready: true, LocalState: StateSynced}, ""},
	} {
		ok, why := tt.s.Serving(false)
		if ok != (tt.want == "") || !strings.Contains(why, tt.want) {
			t.Errorf("%s: Serving = %v, %q; want the reason to say %q", tt.name, ok, why, tt.want)
		}
	}
}

// The eviction list is read as the UUIDs it names, none when empty.
func TestStatusEvictList(t *testing.T) {
	const a, b = "aadde79f-89d2-11f0-8e50-1a2b3c4d5e6f", "c05da77a-87c7-11f0-9abc-1a2b3c4d5e6f"
	for v, want := range map[string][]string{"": nil, a: {a}, a + "," + b: {a, b}} {
		if got := statusFrom(map[string]string{"wsrep_evs_evict_list": v}).EvictList; !slices.Equal(got, want) {
			t.Errorf("wsrep_evs_evict_list %q: EvictList %q, want %q", v, got, want)
		}
	}
}
