package gtm

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/clock"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

// switchable is a health endpoint on 127.0.0.2 that can be turned off.
type switchable struct {
	up   atomic.Bool
	port int
}

func startSwitchable(t *testing.T) *switchable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &switchable{port: ln.Addr().(*net.TCPAddr).Port}
	s.up.Store(true)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.up.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

// startService runs a one-instance traffic manager whose name www fails
// over from east (checked at 127.0.0.2:port) to west (unchecked).
func startService(t *testing.T, port int, failover, failback time.Duration) *Service {
	t.Helper()
	cfg := quorumConfig(port)
	cfg.Traffic.Nameservers = []string{"n1"}
	cfg.Traffic.Listen = "127.0.0.1:0"
	rec := cfg.Traffic.Records["www"]
	rec.FailoverDelay, rec.FailbackDelay = config.Duration(failover), config.Duration(failback)
	svc, err := NewService(cfg, "n1", ServiceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runService(t, svc)
	return svc
}

// runService answers with svc until the test ends, and returns the
// address it answers on.
func runService(t *testing.T, svc *Service) string {
	t.Helper()
	udp, tcp, err := svc.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, udp, tcp) }()
	t.Cleanup(func() { cancel(); <-done; svc.Close() })
	return udp.LocalAddr().String()
}

// firstAnswer returns the first answer for www that the server at addr
// gives; the query waits in the socket until the server reads it.
func firstAnswer(t *testing.T, addr string) []string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("www.gslb.t.", dns.TypeA)
	r, _, err := (&dns.Client{Timeout: 20 * time.Second}).Exchange(q, addr)
	if err != nil {
		t.Fatalf("no answer within 20s: %v", err)
	}
	return addrs(r)
}

func answers(s *Service) []string { return s.Status().Names[0].Answers }

// waitFor polls ok until it reports true, and fails after 20s with what
// it saw last.
func waitFor(t *testing.T, what string, ok func() (bool, any)) {
	t.Helper()
	testenv.Poll(t, 20*time.Second, what, func() (bool, string) {
		done, seen := ok()
		return done, fmt.Sprint(seen)
	})
}

// answersSoon waits until www (the first name) answers want.
func answersSoon(t *testing.T, svc *Service, what string, want []string) {
	t.Helper()
	waitFor(t, what, func() (bool, any) {
		got := answers(svc)
		return slices.Equal(got, want), got
	})
}

var (
	eastAnswer = []string{"127.0.0.2"}
	westAnswer = []string{"127.0.0.3"}
)

// On the real clock, with monitors running, the answers follow a verdict
// once its delay has passed, and a drain ends by itself. (When they may
// not move yet is tested on a fake clock: apply_test.go.)
func TestDelaysAndDrainsOnTheRealClock(t *testing.T) {
	site := startSwitchable(t)
	svc := startService(t, site.port, 200*time.Millisecond, 200*time.Millisecond)
	answersSoon(t, svc, "east answered", eastAnswer)
	site.up.Store(false)
	answersSoon(t, svc, "failover to west", westAnswer)
	site.up.Store(true)
	answersSoon(t, svc, "failback to east", eastAnswer)
	if err := svc.Drain("www", "east", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := answers(svc); !slices.Equal(got, westAnswer) {
		t.Errorf("drained east: answers %v, want west at once", got)
	}
	answersSoon(t, svc, "the drain ends by itself", eastAnswer)
}

// Run answers only once every first verdict is in the answers, so that
// the first answer after a start already reflects the checks. The fake
// clock never moves here: the wait can only end by the notification
// that east's first verdict is applied.
func TestRunWaitsForFirstVerdicts(t *testing.T) {
	site := startSwitchable(t)
	site.up.Store(false)
	cfg := quorumConfig(site.port)
	cfg.Traffic.Nameservers, cfg.Traffic.Listen = []string{"n1"}, "127.0.0.1:0"
	noJitter := 0.0
	cfg.Checks["site"].Jitter = &noJitter // the first probe at once, not at a random fake time
	svc, err := NewService(cfg, "n1", ServiceOptions{Clock: clock.NewFake(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	if got := firstAnswer(t, runService(t, svc)); !slices.Equal(got, westAnswer) {
		t.Errorf("first answer %v, want west: east never passed a check", got)
	}
}

// A target whose first verdict does not come (here, haven's state, with
// no etcd to read it from) is answered as up once firstVerdictWait has
// passed on the service's clock, and not before.
func TestRunAnswersAfterFirstVerdictWait(t *testing.T) {
	cfg := quorumConfig(1)
	cfg.Traffic.Nameservers, cfg.Traffic.Listen = []string{"n1"}, "127.0.0.1:0"
	cfg.Traffic.Records["www"].Targets[0] = &config.Target{Name: "east", Address: "127.0.0.2", Follows: &config.Follows{Balancer: "web"}}
	clk := clock.NewFake(epoch)
	noEtcd := func(ctx context.Context) (*clientv3.Client, error) { <-ctx.Done(); return nil, ctx.Err() }
	svc, err := NewService(cfg, "n1", ServiceOptions{Clock: clk, Cluster: "t", Etcd: noEtcd})
	if err != nil {
		t.Fatal(err)
	}
	addr := runService(t, svc)
	waitFor(t, "Run waits on the fake clock", func() (bool, any) { return clk.Waiters() == 1, fmt.Sprint(clk.Waiters(), " timers") })
	clk.Advance(firstVerdictWait - time.Nanosecond)
	if n := clk.Waiters(); n != 1 {
		t.Fatalf("%v after the start, %d timers pending: the wait for first verdicts ended early", firstVerdictWait-time.Nanosecond, n)
	}
	clk.Advance(time.Nanosecond)
	if got := firstAnswer(t, addr); !slices.Equal(got, eastAnswer) {
		t.Errorf("first answer %v, want east: a target without a verdict is answered as up", got)
	}
}

// A reload that drops the only monitor still without a first verdict
// ends Run's wait at once. The first probe is due at a random fake time
// within the check's jitter, which never comes: the clock does not move.
func TestReloadEndsTheWaitForFirstVerdicts(t *testing.T) {
	cfg := quorumConfig(1)
	cfg.Traffic.Nameservers, cfg.Traffic.Listen = []string{"n1"}, "127.0.0.1:0"
	clk := clock.NewFake(epoch)
	svc, err := NewService(cfg, "n1", ServiceOptions{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	addr := runService(t, svc)
	waitFor(t, "Run waits, and east's monitor for its first probe", func() (bool, any) { return clk.Waiters() == 2, fmt.Sprint(clk.Waiters(), " timers") })
	cfg.Traffic.Records["www"].Targets[0].Check = ""
	if _, err := svc.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if got := firstAnswer(t, addr); !slices.Equal(got, eastAnswer) {
		t.Errorf("first answer %v, want east (unchecked)", got)
	}
}

// Two names whose targets share a check and an address share one monitor:
// the target is probed once, and the names never disagree about it.
func TestNamesShareAMonitor(t *testing.T) {
	site := startSwitchable(t)
	cfg := quorumConfig(site.port)
	cfg.Traffic.Nameservers = []string{"n1"}
	cfg.Traffic.Listen = "127.0.0.1:0"
	cfg.Traffic.Records["api"] = &config.Record{Policy: "all", Targets: []*config.Target{{Name: "e", Address: "127.0.0.2", Check: "site"}, {Name: "w", Address: "127.0.0.3"}}}
	svc, err := NewService(cfg, "n1", ServiceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(svc.probes) != 1 {
		t.Fatalf("%d monitors for one check of one address, want 1", len(svc.probes))
	}
	runService(t, svc)
	both := func() (api, www []string) {
		st := svc.Status()
		return st.Names[0].Answers, st.Names[1].Answers // sorted: api, www
	}
	waitFor(t, "east up for both names", func() (bool, any) {
		api, www := both()
		return slices.Equal(api, []string{"127.0.0.2", "127.0.0.3"}) && slices.Equal(www, eastAnswer), fmt.Sprintf("api %v, www %v", api, www)
	})
	site.up.Store(false)
	waitFor(t, "east down for both names", func() (bool, any) {
		api, www := both()
		return slices.Equal(api, westAnswer) && slices.Equal(www, westAnswer), fmt.Sprintf("api %v, www %v", api, www)
	})
}

// haven.yaml's geo policy: traffic.geoip is opened and each target's
// countries route the clients located in it.
func TestGeoService(t *testing.T) {
	cfg := quorumConfig(1)
	cfg.Traffic.Nameservers = []string{"n1"}
	cfg.Traffic.Listen = "127.0.0.1:0"
	cfg.Traffic.GeoIP = writeGeoDB(t, map[string][2]string{"198.19.0.0/16": {"DE", "EU"}})
	cfg.Traffic.Records = map[string]*config.Record{"www": {Policy: "geo", Targets: []*config.Target{
		{Name: "us", Address: "198.18.1.100", Countries: []string{"US"}},
		{Name: "de", Address: "198.18.2.100", Countries: []string{"DE"}}}}}
	svc, err := NewService(cfg, "n1", ServiceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	cl := newClient(netip.MustParseAddr("198.19.4.0"), 24)
	rrs, scope := svc.srv.table.Load().owners["www."+cfg.Traffic.Zone].pick.choose(dns.TypeA, cl)
	if len(rrs) != 1 || rrs[0].(*dns.A).A.String() != "198.18.2.100" || scope != 16 {
		t.Errorf("a client in DE: %v scope %d, want de's address, scope 16", rrs, scope)
	}
	cfg.Traffic.GeoIP = filepath.Join(t.TempDir(), "missing.mmdb")
	if _, err := NewService(cfg, "n1", ServiceOptions{}); err == nil || !strings.Contains(err.Error(), "missing.mmdb") {
		t.Errorf("NewService with a missing database: %v, want an error naming it", err)
	}
}
