package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// TestEtcdMetrics: an agent that runs an embedded etcd member exports the
// member's health on its own /metrics (a leader, the disk's fsync times,
// the database's size), and docs/coordination.md lists each family.
func TestEtcdMetrics(t *testing.T) {
	client, peer := freeAddr(t), freeAddr(t)
	port := func(a string) string { return a[strings.LastIndex(a, ":")+1:] }
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")},
		coordination: fmt.Sprintf("{members: [lb1], client_port: %s, peer_port: %s, data_dir: %q}", port(client), port(peer), filepath.Join(testenv.MemoryDir(t), "{node}"))}
	e := newEnv(t, c)
	e.run()
	testenv.Poll(t, time.Minute, "etcd_server_has_leader 1 on /metrics", func() (bool, string) {
		r, err := try("GET", e.adminURL("/metrics"))
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(r.body, "\netcd_server_has_leader 1\n") && strings.Contains(r.body, "etcd_disk_wal_fsync_duration_seconds_count"), r.body[:min(len(r.body), 2000)]
	})
	doc, err := os.ReadFile("../../docs/coordination.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range etcdFamilies {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("docs/coordination.md does not list %s", name)
		}
	}
}
