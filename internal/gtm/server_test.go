package gtm

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
	"github.com/miekg/dns"
)

const origin = "gslb.shop.example."

func testZone() Zone {
	many := make([]Target, 0, 80)
	for i := range 80 {
		many = append(many, Target{Name: fmt.Sprint("t", i), Addr: netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1))})
	}
	return Zone{
		Origin:      "GSLB.shop.example", // case and the final dot do not matter
		Nameservers: []Nameserver{{Name: "ns1", Addr: netip.MustParseAddr("198.18.1.11")}, {Name: "ns2", Addr: netip.MustParseAddr("198.18.1.12")}},
		Names: map[string]Name{
			"www": {Policy: Failover, TTL: 20 * time.Second, Targets: []Target{
				{Name: "east", Addr: netip.MustParseAddr("198.18.1.100")}, {Name: "west", Addr: netip.MustParseAddr("198.18.2.100")}}},
			"api.v1": {Policy: All, Targets: []Target{
				{Name: "a", Addr: netip.MustParseAddr("198.18.1.101")}, {Name: "b", Addr: netip.MustParseAddr("198.18.1.102")}}},
			"big": {Policy: All, Targets: many},
		},
	}
}

// startServer serves z on loopback and returns its address.
func startServer(t *testing.T, z Zone) (*Server, string) {
	t.Helper()
	return startServerOpts(t, z, Options{ID: "lb1", TSIG: map[string]string{xfrKey: xfrSecret}})
}

const (
	xfrKey    = "xfr.gslb.shop.example."
	xfrSecret = "aGF2ZW4tdGVzdC10c2lnLXNlY3JldA=="
)

func startServerOpts(t *testing.T, z Zone, opt Options) (*Server, string) {
	t.Helper()
	s, err := New(z, opt)
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", tcp.Addr().String())
	if err != nil {
		tcp.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, udp, tcp) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, tcp.Addr().String()
}

// ask sends one query; edns > 0 adds an OPT record with that buffer size.
func ask(t *testing.T, addr, network, name string, qtype uint16, edns uint16) *dns.Msg {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, qtype)
	q.RecursionDesired = false
	if edns > 0 {
		q.SetEdns0(edns, false)
	}
	c := &dns.Client{Net: network, Timeout: 5 * time.Second}
	r, _, err := c.Exchange(q, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, dns.TypeToString[qtype], network, err)
	}
	return r
}

func addrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		case *dns.CNAME:
			out = append(out, rr.Target)
		}
	}
	slices.Sort(out)
	return out
}

func TestAnswers(t *testing.T) {
	_, addr := startServer(t, testZone())
	for _, tc := range []struct {
		name, qname string
		qtype       uint16
		rcode       int
		aa          bool
		answer      []string // addresses, or the one record's type
		soa         bool     // SOA in the authority section
	}{
		{"failover: the first target", "www." + origin, dns.TypeA, dns.RcodeSuccess, true, []string{"198.18.1.100"}, false},
		{"case-insensitive", "WwW.GSLB.shop.example.", dns.TypeA, dns.RcodeSuccess, true, []string{"198.18.1.100"}, false},
		{"all: every target", "api.v1." + origin, dns.TypeA, dns.RcodeSuccess, true, []string{"198.18.1.101", "198.18.1.102"}, false},
		{"NODATA: no AAAA for www", "www." + origin, dns.TypeAAAA, dns.RcodeSuccess, true, nil, true},
		{"NODATA: an empty non-terminal", "v1." + origin, dns.TypeA, dns.RcodeSuccess, true, nil, true},
		{"NXDOMAIN", "nope." + origin, dns.TypeA, dns.RcodeNameError, true, nil, true},
		{"NXDOMAIN below a managed name", "x.www." + origin, dns.TypeA, dns.RcodeNameError, true, nil, true},
		{"REFUSED outside the zone", "www.example.com.", dns.TypeA, dns.RcodeRefused, false, nil, false},
		{"REFUSED for the parent", "shop.example.", dns.TypeSOA, dns.RcodeRefused, false, nil, false},
		{"the apex SOA", origin, dns.TypeSOA, dns.RcodeSuccess, true, []string{"SOA"}, false},
		{"ANY: minimal (RFC 8482)", "www." + origin, dns.TypeANY, dns.RcodeSuccess, true, []string{"HINFO"}, false},
		{"glue of a name server", "ns2." + origin, dns.TypeA, dns.RcodeSuccess, true, []string{"198.18.1.12"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ask(t, addr, "udp", tc.qname, tc.qtype, 0)
			if r.Rcode != tc.rcode || r.Authoritative != tc.aa || r.RecursionAvailable || r.Truncated {
				t.Errorf("rcode %s aa %v ra %v tc %v; want %s aa %v, no ra, no tc", dns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable, r.Truncated,
					dns.RcodeToString[tc.rcode], tc.aa)
			}
			got := addrs(r)
			if len(r.Answer) == 1 && got == nil {
				got = []string{dns.TypeToString[r.Answer[0].Header().Rrtype]}
			}
			if !slices.Equal(got, tc.answer) {
				t.Errorf("answer %v, want %v", r.Answer, tc.answer)
			}
			hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tc.soa {
				t.Errorf("authority %v; want the SOA: %v", r.Ns, tc.soa)
			}
			if hasSOA {
				if soa := r.Ns[0].(*dns.SOA); soa.Hdr.Ttl != soa.Minttl || soa.Minttl != 30 {
					t.Errorf("negative answer's SOA TTL %d, minimum %d; want both 30 (RFC 2308)", soa.Hdr.Ttl, soa.Minttl)
				}
			}
		})
	}
	r := ask(t, addr, "udp", "www."+origin, dns.TypeA, 0)
	if ttl := r.Answer[0].Header().Ttl; ttl != 20 {
		t.Errorf("www's TTL %d, want 20", ttl)
	}
	r = ask(t, addr, "udp", origin, dns.TypeNS, 0)
	if len(r.Answer) != 2 || len(r.Extra) != 2 {
		t.Errorf("apex NS: answer %v, additional %v; want two NS and their glue", r.Answer, r.Extra)
	}
}

// The answers follow health: the failover name moves to its second target
// and back; with every target down it answers with all of them (open).
func TestHealthChangesAnswers(t *testing.T) {
	s, addr := startServer(t, testZone())
	www := func() []string { return addrs(ask(t, addr, "udp", "www."+origin, dns.TypeA, 0)) }
	s.SetHealth("www", "east", false)
	if got := www(); !slices.Equal(got, []string{"198.18.2.100"}) {
		t.Errorf("east down: %v, want west", got)
	}
	s.SetHealth("www", "west", false)
	if got := www(); !slices.Equal(got, []string{"198.18.1.100", "198.18.2.100"}) {
		t.Errorf("all down: %v, want both (open)", got)
	}
	s.SetHealth("www", "east", true)
	if got := www(); !slices.Equal(got, []string{"198.18.1.100"}) {
		t.Errorf("east back: %v, want east", got)
	}
	s.SetHealth("api.v1", "a", false)
	if got := addrs(ask(t, addr, "udp", "api.v1."+origin, dns.TypeA, 0)); !slices.Equal(got, []string{"198.18.1.102"}) {
		t.Errorf("all policy, a down: %v, want b only", got)
	}
}

// EDNS0: the reply carries an OPT with haven's 1232-byte buffer and the
// NSID when asked; an unknown EDNS version gets BADVERS.
func TestEDNS(t *testing.T) {
	_, addr := startServer(t, testZone())
	q := new(dns.Msg)
	q.SetQuestion("www."+origin, dns.TypeA)
	q.SetEdns0(4096, false)
	q.IsEdns0().Option = append(q.IsEdns0().Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
	r, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	opt := r.IsEdns0()
	if opt == nil || opt.UDPSize() != 1232 {
		t.Fatalf("reply OPT %v, want one advertising 1232 bytes", opt)
	}
	var nsid string
	for _, o := range opt.Option {
		if n, ok := o.(*dns.EDNS0_NSID); ok {
			nsid = n.Nsid
		}
	}
	if nsid != fmt.Sprintf("%x", "lb1") {
		t.Errorf("NSID %q, want hex of lb1", nsid)
	}
	q.IsEdns0().SetVersion(1)
	r, _, err = (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, addr)
	if err != nil {
		t.Fatal(err)
	}
	if r.Rcode != dns.RcodeBadVers {
		t.Errorf("EDNS version 1: rcode %s, want BADVERS", dns.RcodeToString[r.Rcode])
	}
}

// An answer too big for UDP is truncated with TC set; over TCP it comes
// whole. With EDNS0 the limit is the smaller of the client's buffer and
// 1232 bytes.
func TestTruncation(t *testing.T) {
	_, addr := startServer(t, testZone())
	for _, edns := range []uint16{0, 4096} {
		udp := ask(t, addr, "udp", "big."+origin, dns.TypeAAAA, edns)
		limit := 512
		if edns > 0 {
			limit = 1232
		}
		if !udp.Truncated || len(udp.Answer) >= 80 {
			t.Errorf("edns %d over UDP: TC %v with %d answers; want TC and fewer than 80", edns, udp.Truncated, len(udp.Answer))
		}
		udp.Compress = true // as it was sent
		if n := udp.Len(); n > limit {
			t.Errorf("edns %d over UDP: %d bytes, more than %d", edns, n, limit)
		}
	}
	tcp := ask(t, addr, "tcp", "big."+origin, dns.TypeAAAA, 0)
	if tcp.Truncated || len(tcp.Answer) != 80 {
		t.Errorf("over TCP: TC %v with %d answers; want all 80", tcp.Truncated, len(tcp.Answer))
	}
}

// dig, the tool operators use, sees an authoritative answer without
// recursion, the NSID, and falls back to TCP on TC.
func TestDig(t *testing.T) {
	_, addr := startServer(t, testZone())
	dig := digAt(t, addr)
	out := dig("www."+origin, "A", "+norec", "+nsid")
	for _, want := range []string{"status: NOERROR", "flags: qr aa;", "198.18.1.100", `NSID: 6c 62 31 ("lb1")`, "udp: 1232"} {
		if !strings.Contains(out, want) {
			t.Errorf("dig www A lacks %q:\n%s", want, out)
		}
	}
	out = dig("nope."+origin, "A")
	if !strings.Contains(out, "status: NXDOMAIN") || !strings.Contains(out, "AUTHORITY: 1") {
		t.Errorf("dig nope: want NXDOMAIN with the SOA:\n%s", out)
	}
	out = dig(origin, "AXFR")
	if !strings.Contains(out, "Transfer failed.") {
		t.Errorf("dig AXFR without a key: want the transfer refused:\n%s", out)
	}
	out = dig("-y", "hmac-sha256:"+xfrKey+":"+xfrSecret, origin, "AXFR")
	if !strings.Contains(out, "XFR size: 6 records") {
		t.Errorf("dig AXFR with the key: want the 6 records of the static part:\n%s", out)
	}
	out = dig("big."+origin, "AAAA", "+noedns")
	if !strings.Contains(out, "Truncated, retrying in TCP mode") || !strings.Contains(out, "ANSWER: 80") {
		t.Errorf("dig big AAAA: want TC and the TCP retry with 80 answers:\n%s", out)
	}
}

// AXFR gives the zone's static part to a client with the TSIG key, over
// TCP only; unsigned or badly signed requests are refused.
func TestZoneTransfer(t *testing.T) {
	_, addr := startServer(t, testZone())
	axfr := func(key, secret string) (*dns.Msg, error) {
		q := new(dns.Msg)
		q.SetAxfr(origin)
		c := &dns.Client{Net: "tcp", Timeout: 5 * time.Second}
		if key != "" {
			q.SetTsig(key, dns.HmacSHA256, 300, time.Now().Unix())
			c.TsigSecret = map[string]string{key: secret}
		}
		r, _, err := c.Exchange(q, addr)
		return r, err
	}
	r, err := axfr(xfrKey, xfrSecret)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, rr := range r.Answer {
		types = append(types, dns.TypeToString[rr.Header().Rrtype])
	}
	if got := strings.Join(types, " "); r.Rcode != dns.RcodeSuccess || got != "SOA NS NS A A SOA" {
		t.Errorf("AXFR with the key: %s %q; want SOA, the NS and glue, SOA (no managed name)", dns.RcodeToString[r.Rcode], got)
	}
	if r, err := axfr("", ""); err != nil || r.Rcode != dns.RcodeRefused {
		t.Errorf("AXFR without TSIG: %v %v, want REFUSED", r, err)
	}
	if r, err := axfr(xfrKey, "d3Jvbmctc2VjcmV0"); err == nil && r.Rcode != dns.RcodeNotAuth {
		t.Errorf("AXFR with a wrong secret: rcode %s, want NOTAUTH (or a signature the client rejects)", dns.RcodeToString[r.Rcode])
	}
	q := new(dns.Msg)
	q.SetAxfr(origin)
	q.SetTsig(xfrKey, dns.HmacSHA256, 300, time.Now().Unix())
	if r, _, err := (&dns.Client{Timeout: 5 * time.Second, TsigSecret: map[string]string{xfrKey: xfrSecret}}).Exchange(q, addr); err != nil || r.Rcode != dns.RcodeRefused {
		t.Errorf("AXFR over UDP: %v %v, want REFUSED", r, err)
	}
}

// digAt returns a function that runs dig against the server at addr; it
// fails the test when dig is missing in CI and skips it elsewhere.
func digAt(t *testing.T, addr string) func(args ...string) string {
	t.Helper()
	testenv.NeedCommand(t, "dig", "bind9-dnsutils")
	host, port, _ := net.SplitHostPort(addr)
	return func(args ...string) string {
		t.Helper()
		out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+time=5", "+tries=1"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
}

// FuzzAnswer feeds the answer path arbitrary messages: it must never
// panic, and every reply must pack.
func FuzzAnswer(f *testing.F) {
	s, err := New(testZone(), Options{ID: "lb1"})
	if err != nil {
		f.Fatal(err)
	}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"www." + origin, dns.TypeA}, {origin, dns.TypeANY}, {"x.example.", dns.TypeA}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		f.Add(b, false)
	}
	f.Fuzz(func(t *testing.T, b []byte, tcp bool) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return // the server answers FORMERR before the handler
		}
		r := s.answer(m, ednsOf(m), tcp, netip.MustParseAddr("127.0.0.1"))
		if _, err := r.Pack(); err != nil {
			t.Fatalf("reply to %v does not pack: %v", m, err)
		}
	})
}
