package gtm

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/coord/coordtest"
	"github.com/haven-ha/haven/internal/testenv"
)

func TestDecide(t *testing.T) {
	v := newViews("n1", "t", slog.New(slog.DiscardHandler), func() {})
	local := map[string]bool{"www/east": false, "www/west": true}
	if got, votes, mode := v.decide(local); mode != Isolated || got["www/east"] || votes != nil {
		t.Errorf("isolated: %v %v %s; want the local view, no votes", got, votes, mode)
	}
	v.setReachable(true)
	for _, tc := range []struct {
		name     string
		peers    map[string]map[string]bool
		wantEast bool
		votes    Votes // on east
	}{
		{"alone in the views: its own", nil, false, Votes{1, 1}},
		{"two of three see east up: up", map[string]map[string]bool{"n2": {"www/east": true}, "n3": {"www/east": true}}, true, Votes{1, 3}},
		{"a tie stays up", map[string]map[string]bool{"n2": {"www/east": true}}, true, Votes{1, 2}},
		{"two of three see it down: down", map[string]map[string]bool{"n2": {"www/east": false}, "n3": {"www/east": true}}, false, Votes{2, 3}},
		{"a peer without a verdict does not count", map[string]map[string]bool{"n2": {}, "n3": {"www/east": false}}, false, Votes{2, 2}},
	} {
		v.mu.Lock()
		v.peers = tc.peers
		v.mu.Unlock()
		got, votes, mode := v.decide(local)
		if mode != Shared || got["www/east"] != tc.wantEast || !got["www/west"] || votes["www/east"] != tc.votes {
			t.Errorf("%s: %v by %v %s; want east up %v by %v, west up", tc.name, got, votes, mode, tc.wantEast, tc.votes)
		}
	}
}

// startEtcd runs a one-member embedded etcd and returns a client and a
// function that stops the member (also run at cleanup).
func startEtcd(t *testing.T) (*clientv3.Client, func()) {
	t.Helper()
	url, stop := coordtest.StartMember(t)
	cli, err := coord.NewClient(context.Background(), coord.ClientConfig{Endpoints: []string{url}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, stop
}

// quorumConfig is a haven.yaml of three traffic instances whose name www
// fails over from east (127.0.0.2) to west (127.0.0.3); the check probes
// port.
func quorumConfig(port int) *config.Config {
	nodes := map[string]*config.Node{}
	for i, n := range []string{"n1", "n2", "n3"} {
		nodes[n] = &config.Node{Name: n, Address: fmt.Sprintf("127.0.0.%d", 11+i)}
	}
	return &config.Config{
		Cluster: "t",
		Regions: map[string]*config.Region{"r": {Nodes: nodes}},
		Checks: map[string]*config.Check{"site": {Name: "site", HTTP: &config.HTTPProbe{Port: port, Path: "/", Method: "GET"},
			Interval: config.Duration(100 * time.Millisecond), Timeout: config.Duration(100 * time.Millisecond), Rise: 1, Fall: 1}},
		Traffic: &config.Traffic{Zone: "gslb.t.", Nameservers: []string{"n1", "n2", "n3"}, Records: map[string]*config.Record{
			"www": {Policy: "failover", Targets: []*config.Target{
				{Name: "east", Address: "127.0.0.2", Check: "site"}, {Name: "west", Address: "127.0.0.3"}}},
		}},
	}
}

// One instance that cannot reach a healthy target changes no answer: the
// majority of the instances' views says up. When every instance sees it
// down, all fail over. Cut off from etcd, each answers by its own checks.
func TestInstancesAgree(t *testing.T) {
	cli, stopEtcd := startEtcd(t)
	// east's site on 127.0.0.2:P; n3 probes port Q, where nothing listens:
	// as if it were partitioned away from east.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	site := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go site.Serve(ln)
	defer site.Close()
	dead, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := dead.Addr().(*net.TCPAddr).Port
	dead.Close()

	svcs := map[string]*Service{}
	for _, n := range []string{"n1", "n2", "n3"} {
		cfg := quorumConfig(port)
		if n == "n3" {
			cfg = quorumConfig(deadPort)
		}
		cfg.Traffic.Listen = "127.0.0.1:0"
		svc, err := NewService(cfg, n, ServiceOptions{Cluster: "t", Etcd: func(context.Context) (*clientv3.Client, error) { return cli, nil }})
		if err != nil {
			t.Fatal(err)
		}
		runService(t, svc)
		svcs[n] = svc
	}
	expect := func(step string, want map[string]string, mode ViewMode) {
		t.Helper()
		testenv.Poll(t, 20*time.Second, fmt.Sprintf("%s: answers %v in mode %s", step, want, mode), func() (bool, string) {
			var got []string
			ok := true
			for _, n := range []string{"n1", "n2", "n3"} {
				st := svcs[n].Status()
				answers := st.Names[0].Answers
				got = append(got, fmt.Sprintf("%s: %v %s", n, answers, st.Views))
				ok = ok && st.Views == mode && slices.Equal(answers, []string{want[n]})
			}
			return ok, fmt.Sprint(got)
		})
	}
	east := map[string]string{"n1": "127.0.0.2", "n2": "127.0.0.2", "n3": "127.0.0.2"}
	expect("n3 alone sees east down", east, Shared)
	// East stays answered with n1's view alone (one down of two is no
	// majority), so n2's view may arrive after the answers settle.
	// The votes are those the answers were decided by: once n3's are all
	// three views, its answers are those of all three.
	waitFor(t, "n3 decides by all three views", func() (bool, any) {
		v := svcs["n3"].Status().Names[0].Targets[0].Votes
		return v != nil && *v == Votes{Down: 1, Of: 3}, v
	})
	if got := svcs["n3"].Status().Names[0].Answers; !slices.Equal(got, []string{"127.0.0.2"}) {
		t.Errorf("n3 with every view: %v, want east (two of three see it up)", got)
	}
	site.Close()
	expect("east down for every instance", map[string]string{"n1": "127.0.0.3", "n2": "127.0.0.3", "n3": "127.0.0.3"}, Shared)

	ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	site = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})}
	go site.Serve(ln)
	defer site.Close()
	expect("east back", east, Shared)
	stopEtcd()
	expect("etcd gone: each by its own checks", map[string]string{"n1": "127.0.0.2", "n2": "127.0.0.2", "n3": "127.0.0.3"}, Isolated)
}
