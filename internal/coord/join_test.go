package coord

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestJoinRunningCluster: a member whose data dir is empty joins a running
// cluster that lists it (a member of the initial cluster starting late),
// and refuses, saying what to run, to start beside a running cluster that
// does not list it or that lists it as started (its data was lost).
func TestJoinRunningCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	log := testLog(t)
	cfgs := clusterConfigs(t, log, 4, "shop", "")
	// m1-m3 are the cluster; m4 is a machine nobody added.
	three := maps.Clone(cfgs[0].InitialCluster)
	delete(three, "m4")
	for i := range 3 {
		cfgs[i].InitialCluster = three
	}
	m1, m2 := startMember(t, cfgs[0]), startMember(t, cfgs[1])
	waitReady(t, m1, m2)

	m3 := startMember(t, cfgs[2])
	waitReady(t, m3)

	cfgs[3].JoinTimeout = 5 * time.Second
	err := startMember(t, cfgs[3]).wait(readyTimeout)
	if err == nil || !strings.Contains(err.Error(), "does not have this member") || !strings.Contains(err.Error(), "haven coord add m4") {
		t.Errorf("m4, not in the running cluster: %v; want a refusal saying to add it", err)
	}

	// m3 loses its data and starts again under its old identity.
	if err := m3.stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(cfgs[2].DataDir); err != nil {
		t.Fatal(err)
	}
	err = startMember(t, cfgs[2]).wait(readyTimeout)
	if err == nil || !strings.Contains(err.Error(), "its data was lost") || !strings.Contains(err.Error(), "haven coord replace m3 --with m3") {
		t.Errorf("m3 with its data lost: %v; want a refusal saying to replace it", err)
	}
}

// TestJoinSlowPeer: a member starting with an empty data dir whose peer
// takes a connection but is slow to answer (a loaded machine) asks again
// rather than take the peer for absent: beside a running cluster that
// does not list it, it refuses to start, saying what to run, instead of
// bootstrapping a cluster of its own.
func TestJoinSlowPeer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	log := testLog(t)
	cfgs := clusterConfigs(t, log, 3, "shop", "")
	two := maps.Clone(cfgs[0].InitialCluster)
	delete(two, "m3")
	cfgs[0].InitialCluster, cfgs[1].InitialCluster = two, two
	m1, m2 := startMember(t, cfgs[0]), startMember(t, cfgs[1])
	waitReady(t, m1, m2)

	// m1's peer port, as m3 reaches it, answers its first request only
	// after longer than a probe waits.
	target, err := url.Parse(cfgs[0].PeerURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var requests atomic.Int32
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			time.Sleep(clusterProbeTimeout + time.Second)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)
	cfgs[2].InitialCluster = map[string]string{"m1": slow.URL, "m3": cfgs[2].PeerURL}
	cfgs[2].JoinTimeout = 10 * time.Second
	err = startMember(t, cfgs[2]).wait(readyTimeout)
	if err == nil || !strings.Contains(err.Error(), "does not have this member") || !strings.Contains(err.Error(), "haven coord add m3") {
		t.Errorf("m3, not in the running cluster, its peer slow to answer: %v; want a refusal saying to add it", err)
	}
	if n := requests.Load(); n < 2 {
		t.Errorf("m3 asked the slow peer %d times; want it asked again after the first went unanswered", n)
	}
}

// TestJoinWaitsForTheClusterVersion: a member joining a cluster that has
// just formed waits until a member reports the cluster's version (etcd
// refuses to join while every member answers "not_decided"), and gives up
// at the join timeout with an error that says what it saw.
func TestJoinWaitsForTheClusterVersion(t *testing.T) {
	peer := func(decideAfter int32) (*httptest.Server, *atomic.Int32) {
		var asked atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/version" {
				http.NotFound(w, r)
				return
			}
			cluster := "not_decided"
			if n := asked.Add(1); decideAfter > 0 && n > decideAfter {
				cluster = "3.7.0"
			}
			fmt.Fprintf(w, `{"etcdserver":"3.7.3","etcdcluster":%q}`, cluster)
		}))
		t.Cleanup(srv.Close)
		return srv, &asked
	}
	member := func(join time.Duration) *Member {
		m, err := NewMember(MemberConfig{Name: "m3", DataDir: t.TempDir(), ClusterToken: "shop",
			InitialCluster: map[string]string{"m3": "127.0.0.1:2380"}, JoinTimeout: join, Logger: testLog(t)})
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	deciding, asked := peer(2)
	running := map[string]string{"m1": deciding.URL, "m3": "http://127.0.0.1:2380"}
	if err := member(10*time.Second).awaitClusterVersion(t.Context(), running); err != nil {
		t.Errorf("cluster deciding its version on the third answer: %v; want the join to go ahead", err)
	}
	if n := asked.Load(); n != 3 {
		t.Errorf("the peer was asked %d times; want 3 (twice not decided, then decided)", n)
	}

	undecided, _ := peer(0)
	running = map[string]string{"m1": undecided.URL, "m3": "http://127.0.0.1:2380"}
	err := member(time.Second).awaitClusterVersion(t.Context(), running)
	if err == nil || !strings.Contains(err.Error(), "m1: not decided") || !strings.Contains(err.Error(), "haven coord members") {
		t.Errorf("cluster that never decides: %v; want an error naming m1 as not decided and what to check", err)
	}
}
