package gtm

import (
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkAnswerPacket measures one UDP query's cost from its bytes to
// the answer's bytes, the work a UDP loop does per datagram: plain, with
// an EDNS0 OPT record, and with an ECS option on a name that ignores it
// and on one that hashes it. bench/dns measures the same paths with
// dnsperf; this one isolates haven's share and its allocations.
func BenchmarkAnswerPacket(b *testing.B) {
	s, err := New(policyZone(), Options{ID: "lb1"})
	if err != nil {
		b.Fatal(err)
	}
	from := netip.MustParseAddr("127.0.0.1")
	query := func(name string, edns bool, ecs netip.Prefix) []byte {
		q := new(dns.Msg)
		q.SetQuestion(name, dns.TypeA)
		if edns {
			q.SetEdns0(1232, false)
		}
		if ecs.IsValid() {
			q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET,
				Family: 1, SourceNetmask: uint8(ecs.Bits()), Address: ecs.Addr().AsSlice()})
		}
		p, err := q.Pack()
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	subnet := netip.MustParsePrefix("198.18.7.0/24")
	for _, c := range []struct {
		name string
		wire []byte
	}{
		{"plain", query("f."+origin, false, netip.Prefix{})},
		{"edns", query("f."+origin, true, netip.Prefix{})},
		{"ecs-failover", query("f."+origin, true, subnet)},
		{"ecs-hashed", query("h."+origin, true, subnet)},
	} {
		b.Run(c.name, func(b *testing.B) {
			var sc scratch
			out := make([]byte, 0, udpSize)
			b.ReportAllocs()
			for b.Loop() {
				if out = s.answerPacket(&sc, c.wire, from, out); len(sc.reply.Answer) != 1 {
					b.Fatalf("answer %v", &sc.reply)
				}
			}
		})
	}
}
