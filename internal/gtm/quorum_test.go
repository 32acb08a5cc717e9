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
)

func TestDecide(t *testing.T) {
	v := newViews("n1", "t", slog.New(slog.DiscardHandler), func() {})
	local := map[string]bool{"www/east": false, "www/west": true}
	if got, mode := v.decide(local); mode != Isolated || got["www/east"] {
		t.Errorf("isolated: %v %s; want the local view", got, mode)
	}
	v.setReachable(true)
	for _, tc := range []struct {
		name     string
		peers    map[string]map[string]bool
		wantEast bool
	}{
		{"alone in the views: its own", nil, false},
		{"two of three see east up: up", map[string]map[string]bool{"n2": {"www/east": true}, "n3": {"www/east": true}}, true},
		{"a tie stays up", map[string]map[string]bool{"n2": {"www/east": true}}, true},
		{"two of three see it down: down", map[string]map[string]bool{"n2": {"www/east": false}, "n3": {"www/east": true}}, false},
		{"a peer without a verdict does not count", map[string]map[string]bool{"n2": {}, "n3": {"www/east": false}}, false},
	} {
		v.mu.Lock()
		v.peers = tc.peers
		v.mu.Unlock()
		got, mode := v.decide(local)
		if mode != Shared || got["www/east"] != tc.wantEast || !got["www/west"] {
			t.Errorf("%s: %v %s; want east up %v, west up", tc.name, got, mode, tc.wantEast)
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
		svc, err := NewService(cfg, n, ServiceOptions{Cluster: "t", Etcd: func() *clientv3.Client { return cli }})
		if err != nil {
			t.Fatal(err)
		}
		runService(t, svc)
		svcs[n] = svc
	}
	expect := func(step string, want map[string]string, mode ViewMode) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var got []string
			ok := true
			for _, n := range []string{"n1", "n2", "n3"} {
				st := svcs[n].Status()
				answers := st.Names[0].Answers
				got = append(got, fmt.Sprintf("%s: %v %s", n, answers, st.Views))
				ok = ok && st.Views == mode && slices.Equal(answers, []string{want[n]})
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: answers %v, want %v in mode %s", step, got, want, mode)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	east := map[string]string{"n1": "127.0.0.2", "n2": "127.0.0.2", "n3": "127.0.0.2"}
	expect("n3 alone sees east down", east, Shared)
	// East stays answered with n1's view alone (one down of two is no
	// majority), so n2's view may arrive after the answers settle.
	waitFor(t, "n3 sees the other two views", func() (bool, any) { p := svcs["n3"].Status().Peers; return p == 2, fmt.Sprint(p, " peers") })
	// The watch that brought the views applies them on its goroutine, maybe
	// not yet: apply here, so that the answers are those of all three views.
	svcs["n3"].apply()
	if st := svcs["n3"].Status(); !slices.Equal(st.Names[0].Answers, []string{"127.0.0.2"}) || st.Views != Shared {
		t.Errorf("n3 with every view: %v by views %s, want east by the shared views (two of three see it up)", st.Names[0].Answers, st.Views)
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
