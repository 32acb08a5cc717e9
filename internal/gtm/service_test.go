package gtm

import (
	"context"
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

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/health"
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

// runService answers with svc until the test ends.
func runService(t *testing.T, svc *Service) {
	t.Helper()
	udp, tcp, err := svc.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, udp, tcp) }()
	t.Cleanup(func() { cancel(); <-done; svc.Close() })
}

func answers(s *Service) []string { return s.Status().Names[0].Answers }

func eastHealth(s *Service) health.State { return s.Status().Names[0].Targets[0].Health.State }

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	eastAnswer = []string{"127.0.0.2"}
	westAnswer = []string{"127.0.0.3"}
)

// With delays, a verdict must hold for the delay before the answers
// follow it: when the check has just said down (or up again), the
// answer has not moved yet; it moves later by itself.
func TestFailoverAndFailbackDelays(t *testing.T) {
	site := startSwitchable(t)
	svc := startService(t, site.port, time.Second, time.Second)
	waitUntil(t, "east's check says up", func() bool { return eastHealth(svc) == health.Up })
	waitUntil(t, "east answered", func() bool { return slices.Equal(answers(svc), eastAnswer) })

	site.up.Store(false)
	waitUntil(t, "east's check says down", func() bool { return eastHealth(svc) == health.Down })
	if got := answers(svc); !slices.Equal(got, eastAnswer) {
		t.Errorf("the moment east went down the answer was already %v: no failover delay", got)
	}
	waitUntil(t, "failover to west", func() bool { return slices.Equal(answers(svc), westAnswer) })

	site.up.Store(true)
	waitUntil(t, "east's check says up", func() bool { return eastHealth(svc) == health.Up })
	if got := answers(svc); !slices.Equal(got, westAnswer) {
		t.Errorf("the moment east came back the answer was already %v: no failback delay", got)
	}
	waitUntil(t, "failback to east", func() bool { return slices.Equal(answers(svc), eastAnswer) })
}

// A blip shorter than the failover delay moves nothing. The delays are long
// (30 s) so that a blip stays shorter than the failover delay on a starved
// machine too, and so that an answer the blip had moved would still be
// west when it ends; the test never waits for either.
func TestBlipShorterThanFailoverDelay(t *testing.T) {
	site := startSwitchable(t)
	svc := startService(t, site.port, 30*time.Second, 30*time.Second)
	waitUntil(t, "east's check says up", func() bool { return eastHealth(svc) == health.Up })
	waitUntil(t, "east answered", func() bool { return slices.Equal(answers(svc), eastAnswer) })
	site.up.Store(false)
	waitUntil(t, "east's check says down", func() bool { return eastHealth(svc) == health.Down })
	site.up.Store(true)
	waitUntil(t, "east's check says up", func() bool { return eastHealth(svc) == health.Up })
	if got := answers(svc); !slices.Equal(got, eastAnswer) {
		t.Errorf("a blip shorter than the failover delay moved the answer to %v", got)
	}
}

// A drain takes a healthy target out of the answers until it ends, by
// itself or by Enable; unknown targets are refused.
func TestDrain(t *testing.T) {
	site := startSwitchable(t)
	svc := startService(t, site.port, 0, 0)
	waitUntil(t, "east's check says up", func() bool { return eastHealth(svc) == health.Up })
	if err := svc.Drain("www", "east", time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := answers(svc); !slices.Equal(got, westAnswer) {
		t.Errorf("drained east: answers %v, want west at once", got)
	}
	if st := svc.Status().Names[0].Targets[0]; st.DrainedUntil.IsZero() {
		t.Errorf("status does not say east is drained: %+v", st)
	}
	if err := svc.Enable("www", "east"); err != nil {
		t.Fatal(err)
	}
	if got := answers(svc); !slices.Equal(got, eastAnswer) {
		t.Errorf("enabled east: answers %v, want east", got)
	}
	if err := svc.Drain("www", "east", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the drain ends by itself", func() bool { return slices.Equal(answers(svc), eastAnswer) })
	if err := svc.Drain("www", "nope", time.Minute); err == nil {
		t.Error("a drain of a target www does not have succeeded")
	}
	if err := svc.Drain("www", "west", time.Minute); err != nil {
		t.Errorf("drain of an unchecked target: %v", err)
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
	waitUntil(t, "east up for both names", func() bool {
		api, www := both()
		return slices.Equal(api, []string{"127.0.0.2", "127.0.0.3"}) && slices.Equal(www, eastAnswer)
	})
	site.up.Store(false)
	waitUntil(t, "east down for both names", func() bool {
		api, www := both()
		return slices.Equal(api, westAnswer) && slices.Equal(www, westAnswer)
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
