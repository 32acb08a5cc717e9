package galera

import (
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
