package gtm

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzUDPAnswer holds the UDP path, which reads the OPT record itself and
// writes the answer's by hand, to the answer miekg builds from the same
// query: byte for byte, for every query miekg parses.
func FuzzUDPAnswer(f *testing.F) {
	s, err := New(testZone(), Options{ID: "lb1"})
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
	seed("www."+origin, dns.TypeA, v4("198.18.7.0", 24, 24))                      // a scope in a query
	seed("www."+origin, dns.TypeA, v4("198.18.7.1", 24, 0))                       // bits past the prefix
	seed("www."+origin, dns.TypeA, v4("198.18.7.0", 24, 0), v4("10.0.0.0", 8, 0)) // two
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
		if _, q, ok := parseQuery(b, nil); ok && q != ednsOf(r) {
			t.Fatalf("parseQuery read %+v, miekg %+v, from %v", q, ednsOf(r), r)
		}
		want, err := s.answer(r, ednsOf(r), false, from).Pack()
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

// TestClientSubnetEcho checks the UDP path's ECS answers with dig: the
// subnet echoed as sent, with the scope the policy used.
func TestClientSubnetEcho(t *testing.T) {
	_, addr := startServer(t, testZone())
	dig := digAt(t, addr)
	for _, c := range []struct{ name, subnet, want string }{
		{"www." + origin, "198.18.7.0/24", "198.18.7.0/24/0"},
		{"www." + origin, "2001:db8:1:200::/56", "2001:db8:1:200::/56/0"},
		{"www." + origin, "0.0.0.0/0", "0.0.0.0/0/0"},
	} {
		out := dig("+subnet="+c.subnet, "+nsid", c.name, "A")
		if !bytes.Contains([]byte(out), []byte("CLIENT-SUBNET: "+c.want)) || !bytes.Contains([]byte(out), []byte(`NSID: 6c 62 31 ("lb1")`)) {
			t.Errorf("dig +subnet=%s %s: want CLIENT-SUBNET: %s and NSID lb1 in\n%s", c.subnet, c.name, c.want, out)
		}
	}
}
