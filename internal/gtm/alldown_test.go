package gtm

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// What a name answers when no target is healthy is the operator's choice:
// every target (open), SERVFAIL (closed) or a backup answer; and a target
// may be a CNAME, answered to A and AAAA queries alike.
func TestAllDownAndCNAMEs(t *testing.T) {
	addr := netip.MustParseAddr
	two := []Target{{Name: "east", Addr: addr("198.18.1.100")}, {Name: "west", Addr: addr("198.18.2.100")}}
	z := Zone{
		Origin:      origin,
		Nameservers: []Nameserver{{Name: "ns1", Addr: addr("198.18.1.11")}},
		Names: map[string]Name{
			"open":   {Policy: Failover, Targets: two},
			"closed": {Policy: Failover, Targets: two, AllDown: Closed},
			"sorry":  {Policy: Weighted, Targets: two, AllDown: Backup, Backups: []Target{{Name: "page", CNAME: "Sorry.Example.COM"}}},
			"static": {Policy: All, Targets: two, AllDown: Backup, Backups: []Target{{Name: "b1", Addr: addr("198.18.9.1")}, {Name: "b2", Addr: addr("198.18.9.2")}}},
			"cloud":  {Policy: Failover, Targets: []Target{{Name: "own", Addr: addr("198.18.1.100")}, {Name: "elb", CNAME: "lb-1.elb.example."}}},
			"split":  {Policy: Weighted, Targets: []Target{{Name: "own", Addr: addr("198.18.1.100"), Weight: 1}, {Name: "elb", CNAME: "lb-1.elb.example.", Weight: 1}}},
		},
	}
	s, srv := startServer(t, z)
	query := func(name string, qtype uint16) (int, []string) {
		r := ask(t, srv, "udp", name+"."+origin, qtype, 1232)
		return r.Rcode, addrs(r)
	}
	check := func(what, name string, qtype uint16, rcode int, want ...string) {
		t.Helper()
		if gotRcode, got := query(name, qtype); gotRcode != rcode || !slices.Equal(got, want) {
			t.Errorf("%s: %s %s = %s %v, want %s %v", what, name, dns.TypeToString[qtype], dns.RcodeToString[gotRcode], got,
				dns.RcodeToString[rcode], want)
		}
	}
	for _, n := range []string{"open", "closed", "sorry", "static"} {
		if rcode, got := query(n, dns.TypeA); rcode != dns.RcodeSuccess || len(got) == 0 || !slices.ContainsFunc(got, func(a string) bool { return a == "198.18.1.100" || a == "198.18.2.100" }) {
			t.Errorf("healthy: %s = %s %v, want east or west", n, dns.RcodeToString[rcode], got)
		}
		s.SetHealth(n, "east", false)
		s.SetHealth(n, "west", false)
	}
	check("open, all down", "open", dns.TypeA, dns.RcodeSuccess, "198.18.1.100", "198.18.2.100")
	check("closed, all down", "closed", dns.TypeA, dns.RcodeServerFailure)
	check("backup cname, all down", "sorry", dns.TypeA, dns.RcodeSuccess, "sorry.example.com.")
	check("backup cname, all down", "sorry", dns.TypeAAAA, dns.RcodeSuccess, "sorry.example.com.")
	check("backup addresses, all down", "static", dns.TypeA, dns.RcodeSuccess, "198.18.9.1", "198.18.9.2")
	s.SetHealth("closed", "west", true)
	check("closed, west back", "closed", dns.TypeA, dns.RcodeSuccess, "198.18.2.100")

	check("cname target, standby", "cloud", dns.TypeA, dns.RcodeSuccess, "198.18.1.100")
	s.SetHealth("cloud", "own", false)
	check("cname target, failed over", "cloud", dns.TypeA, dns.RcodeSuccess, "lb-1.elb.example.")
	check("cname target, failed over", "cloud", dns.TypeAAAA, dns.RcodeSuccess, "lb-1.elb.example.")
	check("cname target, failed over", "cloud", dns.TypeCNAME, dns.RcodeSuccess, "lb-1.elb.example.")
	s.SetHealth("cloud", "elb", false)
	check("open with a cname: the first target alone", "cloud", dns.TypeA, dns.RcodeSuccess, "198.18.1.100")

	seen := map[string]int{}
	for range 100 {
		_, got := query("split", dns.TypeA)
		seen[fmt.Sprint(got)]++
	}
	if len(seen) != 2 || seen["[198.18.1.100]"] < 40 || seen["[lb-1.elb.example.]"] < 40 {
		t.Errorf("weighted address and cname, 1:1: %v", seen)
	}
	if _, got := query("split", dns.TypeAAAA); len(got) > 0 && !slices.Equal(got, []string{"lb-1.elb.example."}) {
		t.Errorf("weighted, AAAA: %v, want the cname or NODATA", got)
	}
}

// The all policy answers at most MaxAnswers healthy targets, the first in
// order; the next healthy one replaces one that goes down.
func TestMaxAnswers(t *testing.T) {
	var targets []Target
	for i := range 5 {
		targets = append(targets, Target{Name: fmt.Sprint("t", i), Addr: netip.MustParseAddr(fmt.Sprintf("198.18.1.%d", i+1))})
	}
	z := Zone{Origin: origin, Nameservers: []Nameserver{{Name: "ns1", Addr: netip.MustParseAddr("198.18.1.11")}},
		Names: map[string]Name{"pool": {Policy: All, Targets: targets, MaxAnswers: 3}}}
	s, srv := startServer(t, z)
	if got := addrs(ask(t, srv, "udp", "pool."+origin, dns.TypeA, 0)); !slices.Equal(got, []string{"198.18.1.1", "198.18.1.2", "198.18.1.3"}) {
		t.Errorf("max 3 of 5: %v", got)
	}
	s.SetHealth("pool", "t1", false)
	if got := addrs(ask(t, srv, "udp", "pool."+origin, dns.TypeA, 0)); !slices.Equal(got, []string{"198.18.1.1", "198.18.1.3", "198.18.1.4"}) {
		t.Errorf("t1 down: %v, want t4 in its place", got)
	}
}

// A name's settings that cannot answer are errors when the server starts.
func TestNameErrors(t *testing.T) {
	a := netip.MustParseAddr("198.18.1.1")
	for _, n := range []Name{
		{Policy: All, Targets: []Target{{Name: "x", CNAME: "x.example."}}},
		{Policy: Failover, Targets: []Target{{Name: "x", Addr: a, CNAME: "x.example."}}},
		{Policy: Failover, Targets: []Target{{Name: "x"}}},
		{Policy: Failover, Targets: []Target{{Name: "x", Addr: a}}, AllDown: Backup},
		{Policy: Failover, Targets: []Target{{Name: "x", Addr: a}}, Backups: []Target{{Name: "b", Addr: a}}},
		{Policy: Failover, Targets: []Target{{Name: "x", Addr: a}}, AllDown: Backup, Backups: []Target{{Name: "b", Addr: a}, {Name: "c", CNAME: "c.example."}}},
	} {
		z := Zone{Origin: origin, Nameservers: []Nameserver{{Name: "ns1", Addr: a}}, Names: map[string]Name{"n": n}}
		if _, err := New(z, Options{}); err == nil {
			t.Errorf("New accepted %+v", n)
		}
	}
}
