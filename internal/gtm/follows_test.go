package gtm

import (
	"context"
	"encoding/json"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/coord"
)

// A target that follows haven's state is up while an agent of its region
// publishes that state up: the name fails over when east's balancer stops
// being ready or east's agent disappears, and back when it returns.
func TestFollows(t *testing.T) {
	cli, _ := startEtcd(t)
	publish := func(node, region, state string) {
		t.Helper()
		b, _ := json.Marshal(coord.MemberInfo{Node: node, Region: region, Checks: map[string]string{coord.BalancerState("web"): state}})
		if _, err := cli.Put(context.Background(), coord.MembersPrefix("t")+node, string(b)); err != nil {
			t.Fatal(err)
		}
	}
	publish("lb-east", "east", coord.CheckUp)
	publish("lb-west", "west", coord.CheckUp)

	cfg := quorumConfig(1)
	cfg.Traffic.Nameservers, cfg.Traffic.Listen = []string{"n1"}, "127.0.0.1:0"
	cfg.Traffic.Records["www"].Targets = []*config.Target{
		{Name: "east", Address: "127.0.0.2", Follows: &config.Follows{Balancer: "web", Region: "east"}},
		{Name: "west", Address: "127.0.0.3", Follows: &config.Follows{Balancer: "web", Region: "west"}}}
	svc, err := NewService(cfg, "n1", ServiceOptions{Cluster: "t", Etcd: func(context.Context) (*clientv3.Client, error) { return cli, nil }})
	if err != nil {
		t.Fatal(err)
	}
	runService(t, svc)

	answersSoon(t, svc, "east answered", eastAnswer)
	if f := svc.Status().Names[0].Targets[0].Follows; f != "balancer web in east" {
		t.Errorf("status says east follows %q", f)
	}
	publish("lb-east", "east", coord.CheckDown)
	answersSoon(t, svc, "east's balancer not ready: west", westAnswer)
	publish("lb-east", "east", coord.CheckUp)
	answersSoon(t, svc, "east ready again", eastAnswer)
	if _, err := cli.Delete(context.Background(), coord.MembersPrefix("t")+"lb-east"); err != nil {
		t.Fatal(err)
	}
	// lb-west still publishes balancer web up: a node of another region
	// does not count for east.
	answersSoon(t, svc, "east's agent gone: west", westAnswer)

	cfg.Traffic.Records["www"].Targets[0].Follows.Region = "west"
	if _, err := svc.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	answersSoon(t, svc, "east now follows west's balancer, which is ready", eastAnswer)

	cfg.Coordination = nil
	if _, err := NewService(cfg, "n1", ServiceOptions{}); err == nil {
		t.Error("NewService accepted a followed target without etcd")
	}
}

// In a database that spans two regions, a target that follows the database
// of a region is up while that region holds the active-region record, as
// ActiveRegion says, whatever the region's own agents publish: the name
// moves to west when west becomes active, and back.
func TestFollowsTheActiveRegion(t *testing.T) {
	cli, _ := startEtcd(t)
	cfg := quorumConfig(1)
	cfg.Traffic.Nameservers, cfg.Traffic.Listen = []string{"n1"}, "127.0.0.1:0"
	cfg.Traffic.Records["www"].Targets = []*config.Target{
		{Name: "east", Address: "127.0.0.2", Follows: &config.Follows{Database: true, Region: "east"}},
		{Name: "west", Address: "127.0.0.3", Follows: &config.Follows{Database: true, Region: "west"}}}
	regions := make(chan string, 1)
	regions <- "east"
	svc, err := NewService(cfg, "n1", ServiceOptions{Cluster: "t",
		Etcd: func(context.Context) (*clientv3.Client, error) { return cli, nil },
		ActiveRegion: func(ctx context.Context, fn func(string)) {
			for {
				select {
				case r := <-regions:
					fn(r)
				case <-ctx.Done():
					return
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	runService(t, svc)
	answersSoon(t, svc, "east active", eastAnswer)
	regions <- "west"
	answersSoon(t, svc, "west active", westAnswer)
	regions <- ""
	answersSoon(t, svc, "no region active: every target down, the all-down answer", []string{"127.0.0.2", "127.0.0.3"})
	regions <- "east"
	answersSoon(t, svc, "east active again", eastAnswer)
}
