package gtm

import (
	"math"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func policyZone() Zone {
	addr := netip.MustParseAddr
	return Zone{
		Origin:      origin,
		Nameservers: []Nameserver{{Name: "ns1", Addr: addr("198.18.1.11")}},
		Names: map[string]Name{
			"w": {Policy: Weighted, Targets: []Target{
				{Name: "a", Addr: addr("198.18.1.101"), Weight: 1},
				{Name: "b", Addr: addr("198.18.1.102"), Weight: 3},
				{Name: "c", Addr: addr("198.18.1.103"), Weight: 0}}},
			"h": {Policy: Hashed, Targets: []Target{
				{Name: "a", Addr: addr("198.18.1.101")}, {Name: "b", Addr: addr("198.18.1.102")}, {Name: "c", Addr: addr("198.18.1.103")}}},
			"f": {Policy: Failover, Targets: []Target{{Name: "a", Addr: addr("198.18.1.101")}}},
			"c": {Policy: Cidr, Targets: []Target{
				{Name: "x", Addr: addr("198.18.1.100")},
				{Name: "a", Addr: addr("198.18.1.101"), Subnets: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}},
				{Name: "b", Addr: addr("198.18.1.102"), Subnets: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}}},
		},
	}
}

// askECS sends a query with an EDNS Client Subnet option.
func askECS(t *testing.T, addr, name string, subnet netip.Prefix, scope uint8) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	q.SetEdns0(1232, false)
	family := uint16(1)
	if subnet.Addr().Is6() {
		family = 2
	}
	q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: family,
		SourceNetmask: uint8(subnet.Bits()), SourceScope: scope, Address: net.IP(subnet.Addr().AsSlice())})
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func replyScope(r *dns.Msg) (int, bool) {
	opt := r.IsEdns0()
	if opt == nil {
		return 0, false
	}
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_SUBNET); ok {
			return int(e.SourceScope), true
		}
	}
	return 0, false
}

// Weighted answers split by weight: over 1000 queries within ±3% of the
// weights' shares; a target of weight 0 gets nothing, nor does a target
// that is down.
func TestWeighted(t *testing.T) {
	s, addr := startServer(t, policyZone())
	count := func() map[string]int {
		n := map[string]int{}
		for range 1000 {
			for _, a := range addrs(ask(t, addr, "udp", "w."+origin, dns.TypeA, 0)) {
				n[a]++
			}
		}
		return n
	}
	n := count()
	for a, want := range map[string]float64{"198.18.1.101": 0.25, "198.18.1.102": 0.75, "198.18.1.103": 0} {
		if got := float64(n[a]) / 1000; math.Abs(got-want) > 0.03 {
			t.Errorf("%s answered in %.1f%% of 1000 queries, want %.0f%% ± 3%%", a, 100*got, 100*want)
		}
	}
	s.SetHealth("w", "b", false)
	if n := count(); n["198.18.1.101"] != 1000 {
		t.Errorf("b down: answers %v, want a every time", n)
	}
}

// Hashed answers depend on the client's subnet only: the same /24 gets
// the same target, the ECS scope says /24 was used, and a client keeps its
// target when another goes down. Answers that do not depend on the client
// carry scope 0.
func TestHashedAndClientSubnet(t *testing.T) {
	s, addr := startServer(t, policyZone())
	first := map[netip.Prefix]string{}
	seen := map[string]bool{}
	for i := range 64 {
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), byte(i * 7), 0}), 24)
		r := askECS(t, addr, "h."+origin, subnet, 0)
		got := addrs(r)
		if len(got) != 1 {
			t.Fatalf("hashed answer %v, want one address", r.Answer)
		}
		if scope, ok := replyScope(r); !ok || scope != 24 {
			t.Errorf("ECS scope %d (present %v), want 24", scope, ok)
		}
		first[subnet] = got[0]
		seen[got[0]] = true
		// A longer source prefix in the same /24 hashes the same: haven
		// uses at most /24.
		host := netip.PrefixFrom(subnet.Addr().Next(), 32)
		if again := addrs(askECS(t, addr, "h."+origin, host, 0)); again[0] != got[0] {
			t.Errorf("%s and %s answered %s and %s; want the same target for one /24", subnet, host, got[0], again[0])
		}
	}
	if len(seen) != 3 {
		t.Errorf("64 subnets reached %d targets, want all 3", len(seen))
	}
	s.SetHealth("h", "c", false)
	for subnet, was := range first {
		got := addrs(askECS(t, addr, "h."+origin, subnet, 0))[0]
		if was != "198.18.1.103" && got != was {
			t.Errorf("%s moved from %s to %s when another target went down", subnet, was, got)
		}
		if got == "198.18.1.103" {
			t.Errorf("%s still answered with c, which is down", subnet)
		}
	}
	if scope, ok := replyScope(askECS(t, addr, "f."+origin, netip.MustParsePrefix("10.1.2.0/24"), 0)); !ok || scope != 0 {
		t.Errorf("failover answer's ECS scope %d (present %v), want 0: it does not depend on the client", scope, ok)
	}
}

// A malformed ECS option gets FORMERR (RFC 7871 §7.1.1). The options are
// written byte by byte: miekg's own packing would mend them.
func TestClientSubnetFormErr(t *testing.T) {
	_, addr := startServer(t, policyZone())
	for name, data := range map[string][]byte{
		"a scope in a query":           {0, 1, 24, 8, 10, 1, 2},
		"address bits past the prefix": {0, 1, 24, 0, 10, 1, 2, 3},
		"an unknown family":            {0, 3, 24, 0, 10, 1, 2},
		"a prefix longer than 32 bits": {0, 1, 33, 0, 10, 1, 2, 3, 4},
	} {
		q := new(dns.Msg)
		q.SetQuestion("h."+origin, dns.TypeA)
		q.SetEdns0(1232, false)
		q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: data})
		r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, addr)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Rcode != dns.RcodeFormatError {
			t.Errorf("%s: rcode %s, want FORMERR", name, dns.RcodeToString[r.Rcode])
		}
	}
}

// cidr sends a client to the target whose subnets hold it, the longest
// prefix winning, else to the first healthy target; the ECS scope is the
// longest subnet's length, the answer being valid for that much of the
// client's address.
func TestCidr(t *testing.T) {
	s, addr := startServer(t, policyZone())
	for _, tc := range []struct {
		subnet string
		want   string
		scope  int
	}{
		{"10.1.2.0/24", "198.18.1.101", 16},
		{"10.9.0.0/24", "198.18.1.102", 16},
		{"192.168.1.0/24", "198.18.1.100", 16},
		{"10.0.0.0/12", "198.18.1.102", 12}, // reveals too little to tell 10.1/16 apart
	} {
		r := askECS(t, addr, "c."+origin, netip.MustParsePrefix(tc.subnet), 0)
		got := addrs(r)
		scope, _ := replyScope(r)
		if len(got) != 1 || got[0] != tc.want || scope != tc.scope {
			t.Errorf("client %s: %v scope %d, want %s scope %d", tc.subnet, got, scope, tc.want, tc.scope)
		}
	}
	s.SetHealth("c", "a", false)
	if got := addrs(askECS(t, addr, "c."+origin, netip.MustParsePrefix("10.1.2.0/24"), 0)); len(got) != 1 || got[0] != "198.18.1.102" {
		t.Errorf("a down: client 10.1.2.0/24 got %v, want b (the next longest match)", got)
	}
}
