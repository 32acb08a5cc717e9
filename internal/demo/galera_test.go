package demo

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/galera"
)

// A Galera wait that times out must say which node stayed out of the
// component and why, not only how many served (TestDemoGalera's failure
// said "0 nodes serving" and nothing more).
func TestDescribeMembersNamesTheNodeLeftOut(t *testing.T) {
	running := func(size int, state string) galera.Status {
		return galera.Status{ClusterStatus: "Primary", ClusterSize: size, LocalStateComment: state}
	}
	got := describeMembers(map[string]galera.MemberState{
		"db3": {Server: galera.ServerRunning, Status: running(2, "Synced"), Serving: true},
		"db1": {Server: galera.ServerRunning, Status: running(2, "Synced"), Serving: true},
		"db2": {Server: galera.ServerRunning, Status: galera.Status{ClusterStatus: "non-Primary", ClusterSize: 1, LocalStateComment: "Initialized"}, Why: "not in a primary component"},
	})
	want := "db1: running Primary size 2 Synced, serving; " +
		"db2: running non-Primary size 1 Initialized, not serving: not in a primary component; " +
		"db3: running Primary size 2 Synced, serving"
	if got != want {
		t.Errorf("describeMembers:\n got %s\nwant %s", got, want)
	}
	if got := describeMembers(map[string]galera.MemberState{"db1": {Server: "stopped", Why: "waiting for its position"}}); got != "db1: stopped, not serving: waiting for its position" {
		t.Errorf("a stopped server: %s", got)
	}
}

// The failure carries the end of each server's own log, and says which
// log it could not read.
func TestServerLogsShowsEachServersTail(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "db1", "galera"), 0o755); err != nil {
		t.Fatal(err)
	}
	log := strings.Repeat("x", 100) + "[ERROR] WSREP: failed to open gcomm backend connection"
	if err := os.WriteFile(filepath.Join(dir, "db1", "galera", "mariadb.log"), []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	out := serverLogs(dir, 60)
	if !strings.Contains(out, "failed to open gcomm backend connection") || strings.Contains(out, strings.Repeat("x", 20)) {
		t.Errorf("db1's log is not its last 60 bytes:\n%s", out)
	}
	for _, node := range []string{"db2", "db3"} {
		if !strings.Contains(out, "--- "+node+": open ") {
			t.Errorf("no word of %s's missing log:\n%s", node, out)
		}
	}
}
