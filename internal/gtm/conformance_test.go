package gtm

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// conformanceZone is testZone with a name whose target is a CNAME.
func conformanceZone() Zone {
	z := testZone()
	z.Names["alias"] = Name{Policy: Failover, TTL: 20 * time.Second, Targets: []Target{{Name: "elb", CNAME: "lb-1.elb.example."}}}
	return z
}

// query packs a query for name and qtype, without recursion desired,
// shaped by the options, as a client sends it (miekg packs without
// compression, as dig does).
func query(t *testing.T, name string, qtype uint16, opts ...func(*dns.Msg)) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = 0x1234
	m.RecursionDesired = false
	for _, o := range opts {
		o(m)
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// edns adds an OPT record: version, the DO bit, and options.
func edns(version uint8, do bool, opts ...dns.EDNS0) func(*dns.Msg) {
	return func(m *dns.Msg) {
		m.SetEdns0(1232, do)
		m.IsEdns0().SetVersion(version)
		m.IsEdns0().Option = opts
	}
}

// ecs is a client subnet option with the address bytes as given, however
// many its prefix needs.
func ecs(family uint16, source uint8, addr ...byte) dns.EDNS0 {
	d := binary.BigEndian.AppendUint16(nil, family)
	return &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: append(append(d, source, 0), addr...)}
}

// exchange sends the message b over network and returns the reply's bytes.
func exchange(t *testing.T, network, addr string, b []byte) []byte {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if network == "tcp" {
		b = append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	if network == "udp" {
		buf := make([]byte, dns.MaxMsgSize)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("udp: %v", err)
		}
		return buf[:n]
	}
	var n uint16
	if err := binary.Read(c, binary.BigEndian, &n); err != nil {
		t.Fatalf("tcp: %v", err)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("tcp: %v", err)
	}
	return buf
}

// TestConformance sends raw queries over UDP and TCP and checks the raw
// replies, as miekg unpacks them: the rcode and flags, the question
// echoed (or not), the OPT record's DO bit (RFC 3225), the answer, the
// client's case in the answer's owner, and the size that name compression
// gives.
func TestConformance(t *testing.T) {
	_, addr := startServer(t, conformanceZone())
	www, alias := "www."+origin, "alias."+origin
	// The question of the report: a name, then one byte of its type.
	cutType, err := hex.DecodeString("123400000001000000000000037777770467736c620570726f626504746573740000")
	if err != nil {
		t.Fatal(err)
	}
	// The same name in this zone, then nothing: miekg reads type 0, class 0.
	noType := query(t, www, dns.TypeA)
	noType = noType[:len(noType)-4]
	const noOPT, noDO, do = 0, 1, 2
	for _, tc := range []struct {
		name     string
		query    []byte
		rcode    int
		aa       bool
		question bool     // the question echoed
		opt      int      // noOPT, or an OPT with the DO bit clear (noDO) or set (do)
		answer   []string // each record as text, the TTL cut
		answers  int      // when answer is nil: how many records (not checked on a truncated reply)
		udp, tcp int      // the reply's size, when not 0
	}{
		{"one A record, owner compressed to a pointer", query(t, www, dns.TypeA), dns.RcodeSuccess, true, true, noOPT,
			[]string{"www.gslb.shop.example. IN A 198.18.1.100"}, 0, 12 + 23 + 4 + 16, 12 + 23 + 4 + 16},
		{"the DO bit copied (RFC 3225)", query(t, www, dns.TypeA, edns(0, true)), dns.RcodeSuccess, true, true, do,
			[]string{"www.gslb.shop.example. IN A 198.18.1.100"}, 0, 12 + 23 + 4 + 16 + 11, 0},
		{"no DO bit, none in the answer", query(t, www, dns.TypeA, edns(0, false)), dns.RcodeSuccess, true, true, noDO,
			[]string{"www.gslb.shop.example. IN A 198.18.1.100"}, 0, 0, 0},
		{"the DO bit on BADVERS", query(t, www, dns.TypeA, edns(1, true)), dns.RcodeBadVers, false, true, do, nil, 0, 0, 0},
		{"the DO bit on FORMERR (a scope in the query)", query(t, www, dns.TypeA, edns(0, true, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET,
			Family: 1, SourceNetmask: 24, SourceScope: 24, Address: net.IPv4(198, 18, 7, 0)})), dns.RcodeFormatError, false, true, do, nil, 0, 0, 0},
		{"the DO bit on NXDOMAIN", query(t, "nope."+origin, dns.TypeA, edns(0, true)), dns.RcodeNameError, true, true, do, nil, 0, 0, 0},
		{"0x20: the answer in the question's case", query(t, "wWw.GsLb.shop.EXAMPLE.", dns.TypeA), dns.RcodeSuccess, true, true, noOPT,
			[]string{"wWw.GsLb.shop.EXAMPLE. IN A 198.18.1.100"}, 0, 12 + 23 + 4 + 16, 0},
		{"a CNAME answers A", query(t, alias, dns.TypeA), dns.RcodeSuccess, true, true, noOPT,
			[]string{"alias.gslb.shop.example. IN CNAME lb-1.elb.example."}, 0, 0, 0},
		{"a CNAME answers TXT (RFC 1034 3.6.2)", query(t, alias, dns.TypeTXT), dns.RcodeSuccess, true, true, noOPT,
			[]string{"alias.gslb.shop.example. IN CNAME lb-1.elb.example."}, 0, 0, 0},
		{"a CNAME answers MX", query(t, alias, dns.TypeMX), dns.RcodeSuccess, true, true, noOPT,
			[]string{"alias.gslb.shop.example. IN CNAME lb-1.elb.example."}, 0, 0, 0},
		{"a CNAME answers ANY", query(t, alias, dns.TypeANY), dns.RcodeSuccess, true, true, noOPT,
			[]string{"alias.gslb.shop.example. IN CNAME lb-1.elb.example."}, 0, 0, 0},
		{"a CNAME in the client's case", query(t, "ALIAS.gslb.shop.example.", dns.TypeSRV), dns.RcodeSuccess, true, true, noOPT,
			[]string{"ALIAS.gslb.shop.example. IN CNAME lb-1.elb.example."}, 0, 0, 0},
		{"an address name's NODATA is unchanged", query(t, www, dns.TypeTXT), dns.RcodeSuccess, true, true, noOPT, nil, 0, 0, 0},
		{"a question cut in its type: FORMERR, no question", cutType, dns.RcodeFormatError, false, false, noOPT, nil, 0, 12, 12},
		{"a question without type and class: FORMERR, no question", noType, dns.RcodeFormatError, false, false, noOPT, nil, 0, 12, 12},
		{"ECS with more address bytes than its prefix needs (RFC 7871 §6)", query(t, www, dns.TypeA, edns(0, false, ecs(1, 24, 198, 18, 7, 0))),
			dns.RcodeFormatError, false, true, noDO, nil, 0, 0, 0},
		{"ECS with fewer address bytes than its prefix needs", query(t, www, dns.TypeA, edns(0, false, ecs(1, 24, 198, 18))),
			dns.RcodeFormatError, false, true, noDO, nil, 0, 0, 0},
		{"ECS /0 with an address byte", query(t, www, dns.TypeA, edns(0, false, ecs(1, 0, 0))), dns.RcodeFormatError, false, true, noDO, nil, 0, 0, 0},
		{"ECS with the bytes of its prefix", query(t, www, dns.TypeA, edns(0, true, ecs(1, 24, 198, 18, 7))), dns.RcodeSuccess, true, true, do,
			[]string{"www.gslb.shop.example. IN A 198.18.1.100"}, 0, 12 + 23 + 4 + 16 + 11 + 4 + 7, 0},
		{"80 AAAA records: whole over TCP, compressed", query(t, "big."+origin, dns.TypeAAAA), dns.RcodeSuccess, true, true, noOPT,
			nil, 80, 0, 12 + 23 + 4 + 80*(2+10+16)},
	} {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				b := exchange(t, network, addr, tc.query)
				r := new(dns.Msg)
				if err := r.Unpack(b); err != nil {
					t.Fatalf("reply %x does not unpack: %v", b, err)
				}
				if r.Id != 0x1234 || !r.Response || r.Rcode != tc.rcode || r.Authoritative != tc.aa || r.RecursionAvailable ||
					(r.Truncated && network == "tcp") {
					t.Errorf("id %#x qr %v rcode %s aa %v ra %v tc %v; want id 0x1234, qr, %s, aa %v, no ra",
						r.Id, r.Response, dns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable, r.Truncated,
						dns.RcodeToString[tc.rcode], tc.aa)
				}
				var q dns.Msg
				q.Unpack(tc.query) // what of the question miekg reads
				if want := tc.question && len(q.Question) == 1; want != (len(r.Question) == 1) ||
					want && r.Question[0] != q.Question[0] {
					t.Errorf("question %v, want it echoed: %v (%v)", r.Question, want, q.Question)
				}
				opt := noOPT
				if o := r.IsEdns0(); o != nil {
					opt = noDO
					if o.Do() {
						opt = do
					}
				}
				if opt != tc.opt {
					t.Errorf("OPT %v (0 none, 1 no DO, 2 DO); want %d", r.IsEdns0(), tc.opt)
				}
				if tc.answer == nil && len(r.Answer) != tc.answers && !r.Truncated {
					t.Errorf("%d answers, want %d", len(r.Answer), tc.answers)
				}
				if tc.answer != nil {
					var got []string
					for _, rr := range r.Answer {
						f := strings.Fields(rr.String())
						got = append(got, strings.Join(slices.Delete(f, 1, 2), " ")) // without the TTL
					}
					if !slices.Equal(got, tc.answer) {
						t.Errorf("answer %q, want %q", got, tc.answer)
					}
				}
				if want := map[string]int{"udp": tc.udp, "tcp": tc.tcp}[network]; want != 0 && len(b) != want {
					t.Errorf("%d bytes, want %d", len(b), want)
				}
				// Every owner of the answer that is the question's name
				// is a pointer to the question (RFC 1035 4.1.4).
				if len(r.Answer) > 0 && len(r.Question) == 1 {
					at := headerSize + len(r.Question[0].Name) + 1 + 4
					if b[at] != 0xC0 || b[at+1] != headerSize {
						t.Errorf("the answer's owner is %x, want the pointer c00c", b[at:at+2])
					}
				}
			})
		}
	}
}

// A TCP message shorter than a header (a zero length, the worst case)
// ends the connection at once rather than at the idle timeout (10 s).
func TestTCPShortMessageCloses(t *testing.T) {
	_, addr := startServer(t, conformanceZone())
	for _, msg := range [][]byte{{0, 0}, {0, 5, 1, 2, 3, 4, 5}} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		// Well below the idle timeout: a deadline error here is the
		// connection held open.
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(make([]byte, 512)); !errors.Is(err, io.EOF) {
			t.Errorf("after %x: read %d bytes, %v; want the connection closed (EOF)", msg, n, err)
		}
	}
	// A query after a malformed client subnet on the same connection is
	// still answered.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, want := range []int{dns.RcodeFormatError, dns.RcodeSuccess} {
		b := query(t, "www."+origin, dns.TypeA)
		if want == dns.RcodeFormatError {
			b = query(t, "www."+origin, dns.TypeA, edns(0, false, ecs(1, 8, 10, 0)))
		}
		c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...))
		var n uint16
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			t.Fatal(err)
		}
		reply := make([]byte, n)
		if _, err := io.ReadFull(c, reply); err != nil {
			t.Fatal(err)
		}
		var r dns.Msg
		if err := r.Unpack(reply); err != nil || r.Rcode != want {
			t.Errorf("rcode %s (%v), want %s", dns.RcodeToString[r.Rcode], err, dns.RcodeToString[want])
		}
	}
}

// dig sees the DO bit copied, a CNAME answered to every type, the answer
// in the question's case, and sizes that compression gives.
func TestDigConformance(t *testing.T) {
	_, addr := startServer(t, conformanceZone())
	dig := digAt(t, addr)
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"www." + origin, "A", "+norec", "+dnssec"}, []string{"status: NOERROR", "flags: do;", "MSG SIZE  rcvd: 66"}},
		{[]string{"www." + origin, "A", "+norec", "+dnssec", "+edns=1", "+noednsnegotiation"}, []string{"status: BADVERS", "flags: do;"}},
		{[]string{"alias." + origin, "TXT", "+norec"}, []string{"status: NOERROR", "ANSWER: 1,", "alias.gslb.shop.example. 20\tIN\tCNAME\tlb-1.elb.example."}},
		{[]string{"alias." + origin, "MX", "+norec", "+tcp"}, []string{"status: NOERROR", "alias.gslb.shop.example. 20\tIN\tCNAME\tlb-1.elb.example."}},
		{[]string{"WwW.gSlB.shop.example.", "A", "+norec"}, []string{"WwW.gSlB.shop.example.\t20\tIN\tA\t198.18.1.100"}},
		{[]string{"big." + origin, "AAAA", "+norec", "+tcp"}, []string{"ANSWER: 80,", "MSG SIZE  rcvd: 2290"}},
	} {
		out := dig(c.args...)
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("dig %s lacks %q:\n%s", strings.Join(c.args, " "), w, out)
			}
		}
	}
}
