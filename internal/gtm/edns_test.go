package gtm

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzUDPAnswer holds the UDP path, which reads the OPT record itself,
// packs the answer with its own compression map and writes the answer's
// OPT by hand, to the answer miekg builds and packs from the same query:
// byte for byte, for every query miekg parses.
func FuzzUDPAnswer(f *testing.F) {
	s, err := New(conformanceZone(), Options{ID: "lb1"})
	if err != nil {
		f.Fatal(err)
	}
	seed := func(name string, qtype uint16, opts ...dns.EDNS0) {
		m := new(dns.Msg)
		m.SetQuestion(name, qtype)
		m.SetEdns0(1232, false)
		o := m.IsEdns0()
		o.Option = opts
		b, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if len(opts) == 0 {
			m.Extra = nil
			b, _ = m.Pack()
			f.Add(b)
		}
	}
	v4 := func(a string, source, scope uint8) *dns.EDNS0_SUBNET {
		return &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: source, SourceScope: scope, Address: net.ParseIP(a)}
	}
	seed("www."+origin, dns.TypeA)
	seed("WWW."+origin, dns.TypeA, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
	seed("big."+origin, dns.TypeAAAA, v4("198.18.7.0", 24, 0))
	seed("www."+origin, dns.TypeA, v4("198.18.7.0", 24, 0), &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
	seed("www."+origin, dns.TypeA, v4("198.18.7.0", 24, 24))                                                          // a scope in a query
	seed("www."+origin, dns.TypeA, v4("198.18.7.1", 24, 0))                                                           // bits past the prefix
	seed("www."+origin, dns.TypeA, v4("198.18.7.0", 24, 0), v4("10.0.0.0", 8, 0))                                     // two
	seed("www."+origin, dns.TypeA, &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: []byte{0, 1, 24, 0, 198, 18, 7, 0}}) // a byte too many
	seed("WwW."+origin, dns.TypeTXT)
	seed("aLiAs."+origin, dns.TypeMX, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
	seed("www."+origin, dns.TypeA, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 2, SourceNetmask: 56, Address: net.ParseIP("2001:db8:1:200::")})
	seed("www."+origin, dns.TypeA, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 0})
	seed("x.example.", dns.TypeA, v4("198.18.7.0", 24, 0))
	seed(`a\.www.`+origin, dns.TypeA)
	from := netip.MustParseAddr("127.0.0.1")
	f.Fuzz(func(t *testing.T, b []byte) {
		r := new(dns.Msg)
		if r.Unpack(b) != nil || r.Response || len(r.Question) == 1 && (r.Question[0].Qtype == dns.TypeAXFR || r.Question[0].Qtype == dns.TypeIXFR) {
			return // not the answer path; FORMERR and REFUSED have tests of their own
		}
		e := ednsOfWire(r, b)
		if _, q, ok := parseQuery(b, nil); ok && q != e {
			t.Fatalf("parseQuery read %+v, miekg %+v, from %v", q, e, r)
		}
		want, err := s.answer(r, e, false, from).Pack()
		if err != nil {
			t.Fatalf("reply to %v does not pack: %v", r, err)
		}
		var sc scratch
		if got := s.answerPacket(&sc, b, from, make([]byte, 0, udpSize)); !bytes.Equal(got, want) {
			var m dns.Msg
			t.Fatalf("query %v:\nUDP path %x (unpacks: %v)\nmiekg    %x", r, got, m.Unpack(got), want)
		}
	})
}

// TestClientSubnetEcho checks every policy's ECS answers with dig, through
// the UDP path: the subnet echoed as sent, with the scope the policy used
// (0 when the answer does not depend on the client).
func TestClientSubnetEcho(t *testing.T) {
	z := policyZone()
	db, err := OpenGeoDB(writeGeoDB(t, map[string][2]string{"198.19.0.0/17": {"DE", "EU"}}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	z.Geo = db
	z.Names["g"] = Name{Policy: Geo, Targets: []Target{
		{Name: "us", Addr: netip.MustParseAddr("198.18.1.100"), Countries: []string{"US"}},
		{Name: "de", Addr: netip.MustParseAddr("198.18.2.100"), Countries: []string{"DE"}}}}
	z.Names["all"] = Name{Policy: All, Targets: []Target{{Name: "a", Addr: netip.MustParseAddr("198.18.1.1")}}}
	_, addr := startServer(t, z)
	dig := digAt(t, addr)
	for _, c := range []struct{ name, subnet, want string }{
		{"f", "198.18.7.0/24", "198.18.7.0/24/0"},             // failover: any client
		{"f", "2001:db8:1:200::/56", "2001:db8:1:200::/56/0"}, // over IPv6
		{"f", "0.0.0.0/0", "0.0.0.0/0/0"},
		{"all", "198.18.7.0/24", "198.18.7.0/24/0"},
		{"w", "198.18.7.0/24", "198.18.7.0/24/0"},              // weighted: any client
		{"h", "198.18.7.0/24", "198.18.7.0/24/24"},             // hashed: the subnet it hashed
		{"h", "2001:db8:1:200::/56", "2001:db8:1:200::/56/56"}, // at most /56
		{"c", "10.1.2.0/24", "10.1.2.0/24/16"},                 // cidr: the longest configured subnet
		{"g", "198.19.4.0/24", "198.19.4.0/24/17"},             // geo: the database network
	} {
		out := dig("+subnet="+c.subnet, "+nsid", c.name+"."+origin, "A")
		if !bytes.Contains([]byte(out), []byte("CLIENT-SUBNET: "+c.want)) || !bytes.Contains([]byte(out), []byte(`NSID: 6c 62 31 ("lb1")`)) {
			t.Errorf("dig +subnet=%s %s: want CLIENT-SUBNET: %s and NSID lb1 in\n%s", c.subnet, c.name, c.want, out)
		}
	}
}
