package gtm_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/gtm"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// The partition test runs three `haven agent` traffic instances, each an
// embedded etcd member, in their own namespaces, and the demo application
// on the targets east and west. The instances share their views through
// etcd, so dns1 cut off from a healthy east by the network changes no
// answer, its own included, although dns1 itself sees east down. When
// east then fails for every instance, all three move to west within the
// checks' bound plus the quorum's propagation: the etcd write of the view
// that makes the majority and its delivery to the watches.

// quorumPropagation bounds how long a view takes from one instance's
// verdict to every instance's answers: a raft commit among three members
// and the watch events, on a small machine under -race.
const quorumPropagation = 1500 * time.Millisecond

// trafficStatus is what the test reads of an agent's /api/v1/status.
type trafficStatus struct {
	Traffic *gtm.Status    `json:"traffic"`
	Events  []health.Event `json:"events"`
}

func TestPartitionedInstanceKeepsAnswers(t *testing.T) {
	testnet.Require(t)
	bin := testenv.Haven(t)
	// Made before the namespaces, so it is removed after the agents (and
	// their etcd members) are gone.
	dir := t.TempDir()
	instances := []string{"dns1", "dns2", "dns3"}
	n := testnet.Start(t, testnet.Options{Hosts: append(slices.Clone(instances), "east", "west", "client")})
	eastAddr, westAddr := n.Host("east").Addr.String(), n.Host("west").Addr.String()
	cfg := fmt.Sprintf(`cluster: gtmq
admin: {token_file: %[1]s/token}
regions:
  r:
    nodes:
      dns1: {address: %[2]s, zone: a}
      dns2: {address: %[3]s, zone: b}
      dns3: {address: %[4]s, zone: c}
coordination:
  members: [dns1, dns2, dns3]
  data_dir: %[10]s/{node}/etcd
  join_timeout: 20s
  tls: {ca: "%[1]s/certs/ca.pem", cert: "%[1]s/certs/{node}.pem", key: "%[1]s/certs/{node}-key.pem"}
checks:
  site:
    http: {port: 8080, path: /healthz, expect_status: [200], expect_body: "ok"}
    interval: %[5]s
    timeout: %[6]s
    rise: 2
    fall: %[7]d
traffic:
  zone: gslb.t.
  nameservers: [dns1, dns2, dns3]
  records:
    www:
      policy: failover
      ttl: 1s
      targets:
        - {name: east, address: %[8]s, check: site}
        - {name: west, address: %[9]s, check: site}
`, dir, n.Host("dns1").Addr, n.Host("dns2").Addr, n.Host("dns3").Addr,
		checkInterval, checkTimeout, checkFall, eastAddr, westAddr, testenv.MemoryDir(t))
	for name, content := range map[string]string{"haven.yaml": cfg, "token": "gtm-e2e\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(bin, "certs", "-c", filepath.Join(dir, "haven.yaml"), "-o", filepath.Join(dir, "certs")).CombinedOutput(); err != nil {
		t.Fatalf("haven certs: %v\n%s", err, out)
	}
	east := startBackends(t, n, bin, "east", "west")["east"]
	agents := map[string]*testnet.Proc{}
	for _, name := range instances {
		p, err := n.Host(name).Start(context.Background(), bin, "agent", "-c", filepath.Join(dir, "haven.yaml"), "-n", name)
		if err != nil {
			t.Fatal(err)
		}
		agents[name] = p
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range instances {
				t.Logf("%s's log:\n%s", name, testnet.Outputs(30000, agents[name]))
			}
		}
	})

	client := n.Host("client")
	web := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
	answer := func(inst string) string { return askWWW(client, n.Host(inst).Addr.String()) }
	status := func(inst string) (trafficStatus, error) {
		var st trafficStatus
		resp, err := web.Get("http://" + net.JoinHostPort(n.Host(inst).Addr.String(), "9900") + "/api/v1/status")
		if err != nil {
			return st, err
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			return st, fmt.Errorf("status of %s: %w", inst, err)
		}
		if st.Traffic == nil || len(st.Traffic.Names) != 1 {
			return st, fmt.Errorf("status of %s: no traffic section with one name", inst)
		}
		return st, nil
	}
	// eastTarget is east in an instance's status: Up is what it answers
	// by, Health its own check's verdict.
	eastTarget := func(st trafficStatus) (gtm.TargetStatus, bool) {
		for _, tg := range st.Traffic.Names[0].Targets {
			if tg.Name == "east" {
				return tg, true
			}
		}
		return gtm.TargetStatus{}, false
	}
	// downSince is when inst last marked east down, at since or later;
	// zero if it did not.
	downSince := func(inst string, since time.Time) time.Time {
		st, err := status(inst)
		if err != nil {
			t.Errorf("events of %s: %v", inst, err)
			return time.Time{}
		}
		var at time.Time
		for _, ev := range st.Events {
			if ev.Target == eastAddr && ev.To == health.Down && !ev.At.Before(since) {
				at = ev.At
			}
		}
		return at
	}
	const pause = 20 * time.Millisecond

	// Every instance answers east, by the shared views of all three, and
	// its own check has east up.
	testenv.Poll(t, 90*time.Second, "start: every instance answers "+eastAddr+" by the shared views of three", func() (bool, string) {
		var seen []string
		ok := true
		for _, inst := range instances {
			got := answer(inst)
			st, err := status(inst)
			if err != nil {
				seen = append(seen, fmt.Sprintf("%s: %s, %v", inst, got, err))
				ok = false
				continue
			}
			// Its own check must have east up too: a first probe sent
			// before east listened marks it down, and the majority's
			// views then answer east all the same.
			tg, checked := eastTarget(st)
			own := checked && tg.Health != nil && tg.Health.State == health.Up
			seen = append(seen, fmt.Sprintf("%s: %s, views %s with %d peers, own check of east up %v", inst, got, st.Traffic.Views, st.Traffic.Peers, own))
			ok = ok && got == eastAddr && st.Traffic.Views == gtm.Shared && st.Traffic.Peers == 2 && own
		}
		return ok, strings.Join(seen, "; ")
	})

	// dns1 loses east; the two others still reach it. Every instance keeps
	// answering east while dns1's check marks east down and its view
	// reaches the others, until each has decided by that view (its status
	// shows the votes behind its answer: east down in 1 of 3 views) and
	// still answers east. A round reads the votes before it asks, so the
	// answer it checks was given after that decision.
	detect := checkInterval*checkFall + checkTimeout
	partitioned := time.Now()
	if err := n.Partition(n.Host("dns1"), n.Host("east")); err != nil {
		t.Fatal(err)
	}
	oneOfThree := gtm.Votes{Down: 1, Of: 3}
	hardEnd := partitioned.Add(detect + quorumPropagation + 10*time.Second)
	var dns1Down time.Time // when dns1's status first showed east down
	decided := map[string]bool{}
	votes := map[string]*gtm.Votes{}
	rounds := 0
	for ; len(decided) < len(instances); rounds++ {
		if now := time.Now(); now.After(hardEnd) || rounds == 1000 {
			if dns1Down.IsZero() {
				t.Fatalf("partitioned: dns1 did not report east down within %v (%d rounds)", now.Sub(partitioned).Round(time.Millisecond), rounds)
			}
			t.Fatalf("partitioned: after %v (%d rounds) east's votes are %v, want %v on every instance; dns1 reported east down after %v",
				now.Sub(partitioned).Round(time.Millisecond), rounds, votes, oneOfThree, dns1Down.Sub(partitioned).Round(time.Millisecond))
		}
		for _, inst := range instances {
			st, err := status(inst)
			if err != nil {
				t.Fatalf("partitioned: %v", err)
			}
			tg, ok := eastTarget(st)
			if !ok || tg.Health == nil {
				t.Fatalf("partitioned: %s's status has no checked target east: %+v", inst, st.Traffic.Names[0])
			}
			if st.Traffic.Views != gtm.Shared || !tg.Up || !slices.Equal(st.Traffic.Names[0].Answers, []string{eastAddr}) {
				t.Fatalf("partitioned: %s answers %v by views %s (east up %v, votes %v), want %s by the shared views",
					inst, st.Traffic.Names[0].Answers, st.Traffic.Views, tg.Up, tg.Votes, eastAddr)
			}
			if inst == "dns1" && dns1Down.IsZero() && tg.Health.State == health.Down {
				dns1Down = time.Now()
			}
			votes[inst] = tg.Votes
			if got := answer(inst); got != eastAddr {
				t.Fatalf("partitioned: %v after dns1 lost east, %s answers %s (votes on east %v), want %s: the other two still reach east",
					time.Since(partitioned).Round(time.Millisecond), inst, got, tg.Votes, eastAddr)
			}
			if tg.Votes != nil && *tg.Votes == oneOfThree {
				decided[inst] = true
			}
		}
		time.Sleep(pause)
	}
	if dns1Down.IsZero() {
		t.Fatalf("partitioned: every instance decided by east down in one view, but dns1's check never showed it down")
	}
	for _, inst := range instances[1:] {
		st, err := status(inst)
		if err != nil {
			t.Fatal(err)
		}
		if tg, ok := eastTarget(st); !ok || tg.Health == nil || tg.Health.State != health.Up {
			t.Errorf("partitioned: %s's own check of east: %+v, want up", inst, tg.Health)
		}
	}
	// The metrics say the same: dns1's check has east down, its answers
	// follow the shared views and have east up.
	resp, err := web.Get("http://" + net.JoinHostPort(n.Host("dns1").Addr.String(), "9900") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(body), "\n")
	for _, want := range []string{
		fmt.Sprintf(`haven_health_target_state{check="site",state="down",target=%q} 1`, eastAddr),
		`haven_dns_views{mode="shared",zone="gslb.t."} 1`,
		`haven_dns_target_up{name="www.gslb.t.",target="east",zone="gslb.t."} 1`,
	} {
		if !slices.Contains(lines, want) {
			var near []string
			for _, l := range lines {
				if name, _, _ := strings.Cut(want, "{"); strings.HasPrefix(l, name+"{") {
					near = append(near, l)
				}
			}
			t.Errorf("partitioned: dns1's metrics lack %s; they have:\n%s", want, strings.Join(near, "\n"))
		}
	}
	dns1Event := downSince("dns1", partitioned)
	if dns1Event.IsZero() {
		t.Fatalf("partitioned: dns1's events have no transition of east to down")
	}
	t.Logf("partitioned: dns1 marked east down after %v (bound interval × fall + timeout + 0.5 s = %v); "+
		"every instance decided by its view, and none failed over, in %d rounds of queries over %v",
		dns1Event.Sub(partitioned).Round(time.Millisecond), detect+500*time.Millisecond,
		rounds, time.Since(partitioned).Round(time.Millisecond))

	// east fails for every instance: all three move to west.
	stopped := time.Now()
	if err := east.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = east.Wait() // killed: the exit status is the signal
	bound := detect + 500*time.Millisecond + quorumPropagation
	moved := map[string]time.Time{}
	last := map[string]string{}
	deadline := stopped.Add(bound + 30*time.Second)
	for i := 0; len(moved) < len(instances); i++ {
		if time.Now().After(deadline) || i == 3000 {
			t.Fatalf("east stopped: after %v, answers %v, want %s from every instance", time.Since(stopped).Round(time.Millisecond), last, westAddr)
		}
		for _, inst := range instances {
			if _, done := moved[inst]; done {
				continue
			}
			if last[inst] = answer(inst); last[inst] == westAddr {
				moved[inst] = time.Now()
			}
		}
		time.Sleep(pause)
	}
	allMoved := stopped
	for _, at := range moved {
		if at.After(allMoved) {
			allMoved = at
		}
	}
	// The majority saw east down when the second instance did: dns1 had
	// long before, so when the first of dns2 and dns3 did.
	// The majority needs one of them only: the other may see it later.
	downs := []time.Time{dns1Event}
	for _, inst := range instances[1:] {
		var at time.Time
		for i := 0; at.IsZero(); i++ {
			if time.Now().After(deadline) || i == 1000 {
				t.Fatalf("east stopped: after %v, %s's events have no transition of east to down", time.Since(stopped).Round(time.Millisecond), inst)
			}
			if at = downSince(inst, stopped); at.IsZero() {
				time.Sleep(pause)
			}
		}
		downs = append(downs, at)
	}
	slices.SortFunc(downs, time.Time.Compare)
	majority := downs[1]
	t.Logf("east stopped: dns2 and dns3 marked it down after %v and %v (the earlier made the majority, with dns1); the majority saw it down after %v; "+
		"answers moved to west after %v (dns1 %v, dns2 %v, dns3 %v): quorum propagation %v; "+
		"bound interval × fall + timeout + 0.5 s + %v = %v",
		downs[1].Sub(stopped).Round(time.Millisecond), downs[2].Sub(stopped).Round(time.Millisecond),
		majority.Sub(stopped).Round(time.Millisecond), allMoved.Sub(stopped).Round(time.Millisecond),
		moved["dns1"].Sub(stopped).Round(time.Millisecond), moved["dns2"].Sub(stopped).Round(time.Millisecond),
		moved["dns3"].Sub(stopped).Round(time.Millisecond), allMoved.Sub(majority).Round(time.Millisecond),
		quorumPropagation, bound)
	if took := allMoved.Sub(stopped); took > bound {
		t.Errorf("east stopped: every instance answered west after %v, more than the bound %v", took.Round(time.Millisecond), bound)
	}
}
