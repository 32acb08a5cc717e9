package gtm

import (
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/haven-ha/haven/internal/config"
)

// A reload changes names and targets in place: a monitor whose check and
// address stay keeps running with its verdict, and now also decides for
// the targets that follow it; a changed check gets a new monitor; a
// configuration the server cannot answer with changes nothing.
func TestReload(t *testing.T) {
	site := startSwitchable(t)
	svc := startService(t, site.port, 0, 0)
	answersSoon(t, svc, "east answered", eastAnswer)
	kept := svc.probes[probeKey{"site", "127.0.0.2"}]

	cfg := quorumConfig(site.port)
	cfg.Traffic.Nameservers, cfg.Traffic.Listen = []string{"n1"}, svc.listen
	cfg.Traffic.Records["www"].Targets[1] = &config.Target{Name: "north", Address: "127.0.0.4"}
	cfg.Traffic.Records["api"] = &config.Record{Policy: "all", Targets: []*config.Target{
		{Name: "a", Address: "127.0.0.5"}, {Name: "e", Address: "127.0.0.2", Check: "site"}}}
	restart, err := svc.Reload(cfg)
	if err != nil || len(restart) > 0 {
		t.Fatalf("Reload: %v, restart %v", err, restart)
	}
	if svc.probes[probeKey{"site", "127.0.0.2"}] != kept || len(svc.probes) != 1 {
		t.Errorf("the unchanged check of east was replaced: %d monitors", len(svc.probes))
	}
	st := svc.Status()
	if len(st.Names) != 2 || !slices.Equal(st.Names[0].Answers, []string{"127.0.0.5", "127.0.0.2"}) || !slices.Equal(st.Names[1].Answers, eastAnswer) {
		t.Fatalf("after the reload: %+v, want api [a east] and www [east] at once", st.Names)
	}
	site.up.Store(false)
	waitFor(t, "east down: www to north, api without east", func() (bool, any) {
		st := svc.Status()
		return slices.Equal(st.Names[0].Answers, []string{"127.0.0.5"}) && slices.Equal(st.Names[1].Answers, []string{"127.0.0.4"}), st.Names
	})

	bad := quorumConfig(site.port)
	bad.Traffic.Records["www"].Policy = "geo" // no geo database
	if _, err := svc.Reload(bad); err == nil {
		t.Error("Reload accepted a geo name without a database")
	}
	if got := answers(svc); len(svc.Status().Names) != 2 || len(got) != 1 {
		t.Errorf("a rejected reload changed the answers: %+v", svc.Status().Names)
	}

	cfg.Checks["site"].Interval = config.Duration(50 * time.Millisecond)
	if _, err := svc.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if svc.probes[probeKey{"site", "127.0.0.2"}] == kept {
		t.Error("a changed check kept its old monitor")
	}
	site.up.Store(true)
	waitFor(t, "east back, seen by the new monitor", func() (bool, any) { www := svc.Status().Names[1].Answers; return slices.Equal(www, eastAnswer), www })
	// east moves to an address where nothing answers: it stays answered
	// as it was until its new check's first verdict, then leaves.
	cfg.Traffic.Records["www"].Targets[0].Address = "127.0.0.7"
	if _, err := svc.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "east at its new, dead address: north", func() (bool, any) {
		www := svc.Status().Names[1].Answers
		return slices.Equal(www, []string{"127.0.0.4"}), www
	})
	cfg.Traffic.Listen = "127.0.0.1:1"
	if restart, err := svc.Reload(cfg); err != nil || !slices.Equal(restart, []string{"traffic.listen"}) {
		t.Errorf("a new listener: %v %v, want it reported as needing a restart", restart, err)
	}
}

// A new zone keeps the health of the targets it still has, from the first
// table it builds: a reload never answers with a dead target, not even
// until the next verdict.
func TestSetZoneKeepsHealth(t *testing.T) {
	s, addr := startServer(t, testZone())
	s.SetHealth("www", "east", false)
	z, err := testZone().normalize()
	if err != nil {
		t.Fatal(err)
	}
	s.setZone(z)
	if got := addrs(ask(t, addr, "udp", "www."+origin, dns.TypeA, 0)); !slices.Equal(got, []string{"198.18.2.100"}) {
		t.Errorf("after setZone: %v, want west (east is down)", got)
	}
	delete(z.Names, "www")
	s.setZone(z)
	if _, known := s.answered("www", "east"); known {
		t.Error("the health of a name the zone no longer has was kept")
	}
}
