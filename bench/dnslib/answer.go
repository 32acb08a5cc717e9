package main

import (
	"encoding/binary"
	"net"
	"net/netip"

	dns2 "codeberg.org/miekg/dns"
	"codeberg.org/miekg/dns/rdata"
	dns1 "github.com/miekg/dns"
)

// The one name every query asks and every server answers, the way haven's
// traffic manager answers a static name: a precomputed A record.
const (
	qname    = "www.gslb.example.com."
	answerIP = "198.18.1.10"
	ttl      = 20

	// udpSize is the EDNS0 buffer size an answer advertises, haven's too.
	udpSize = 1232

	// ecsScope is the scope an echoed client-subnet option carries.
	ecsScope = 24
)

// ecsAddr and ecsBits are the client subnet the ECS queries carry.
var (
	ecsAddr = netip.MustParseAddr("198.18.0.0")
	ecsBits = uint8(24)
)

// query is one wire-format query the benchmarks and tests feed both libraries.
type query struct {
	name string // sub-benchmark name
	wire []byte
}

// queries returns the queries, packed by v1 (whose packing follows RFC 7871:
// the ECS address is cut to its prefix, 3 octets for a /24):
//
//   - plain: no EDNS;
//   - ecs: an OPT with a 1232 buffer and an ECS option 198.18.0.0/24;
//   - ecs4: the same with the address not cut, all 4 octets, which is what
//     v2 itself sends and the only form its v0.6.0 unpacks (see
//     TestV2ECSDefects).
func queries() []query {
	q := new(dns1.Msg)
	q.SetQuestion(qname, dns1.TypeA)
	q.Id = 0xbeef
	plain, err := q.Pack()
	if err != nil {
		panic(err)
	}
	q.SetEdns0(udpSize, false)
	opt := q.IsEdns0()
	opt.Option = append(opt.Option, &dns1.EDNS0_SUBNET{Code: dns1.EDNS0SUBNET, Family: 1,
		SourceNetmask: ecsBits, Address: net.IP(ecsAddr.AsSlice())})
	ecs, err := q.Pack()
	if err != nil {
		panic(err)
	}
	return []query{{"plain", plain}, {"ecs", ecs}, {"ecs4", widenECS(ecs)}}
}

// widenECS returns a copy of b, a query whose last record is an OPT holding
// only a 3-octet IPv4 ECS option, with the address widened to 4 octets.
func widenECS(b []byte) []byte {
	w := append(append([]byte(nil), b...), 0)
	// The OPT's RDLENGTH is 2+2+7 octets before the end, the option's
	// length 2+7 before it.
	rdlen := len(b) - 11 - 2
	binary.BigEndian.PutUint16(w[rdlen:], binary.BigEndian.Uint16(b[rdlen:])+1)
	optlen := len(b) - 7 - 2
	binary.BigEndian.PutUint16(w[optlen:], binary.BigEndian.Uint16(b[optlen:])+1)
	return w
}

// v1Answer is the answer section every v1 response carries, built once.
var v1Answer = []dns1.RR{&dns1.A{
	Hdr: dns1.RR_Header{Name: qname, Rrtype: dns1.TypeA, Class: dns1.ClassINET, Ttl: ttl},
	A:   net.ParseIP(answerIP).To4(),
}}

// v2Answer is the answer section every v2 response carries, built once.
var v2Answer = []dns2.RR{&dns2.A{
	Hdr: dns2.Header{Name: qname, Class: dns2.ClassINET, TTL: ttl},
	A:   rdata.A{Addr: netip.MustParseAddr(answerIP)},
}}

// answerV1 fills m with the answer to r the way haven's traffic manager
// does (internal/gtm answerInto): m is reset but keeps its Question and
// Extra arrays, the question is copied, AA set, the precomputed answer
// appended; a query with EDNS gets a new OPT with a 1232 buffer, echoing
// its ECS option with a scope; then Truncate to the client's size, which
// for an answer that fits also turns compression off.
func answerV1(m, r *dns1.Msg) *dns1.Msg {
	question, extra := m.Question[:0], m.Extra[:0]
	*m = dns1.Msg{}
	m.Id, m.Response, m.Opcode = r.Id, true, r.Opcode
	m.RecursionDesired, m.CheckingDisabled = r.RecursionDesired, r.CheckingDisabled
	m.Question = append(question, r.Question[0])
	m.Extra = extra
	m.Authoritative = true
	m.Answer = v1Answer
	size := dns1.MinMsgSize
	if opt := r.IsEdns0(); opt != nil {
		size = max(dns1.MinMsgSize, min(int(opt.UDPSize()), udpSize))
		o := &dns1.OPT{Hdr: dns1.RR_Header{Name: ".", Rrtype: dns1.TypeOPT}}
		o.SetUDPSize(udpSize)
		for _, e := range opt.Option {
			if s, ok := e.(*dns1.EDNS0_SUBNET); ok {
				o.Option = append(o.Option, &dns1.EDNS0_SUBNET{Code: dns1.EDNS0SUBNET, Family: s.Family,
					SourceNetmask: s.SourceNetmask, SourceScope: ecsScope, Address: s.Address})
			}
		}
		m.Extra = append(m.Extra, o)
	}
	m.Truncate(size)
	return m
}

// answerV2 fills m with the answer to r, doing with v2's API what answerV1
// does with v1's. v2 keeps EDNS in the message header (UDPSize) and its
// options in the Pseudo section; Pack builds the OPT record itself. v2 has
// no Truncate: the nearest equivalent is checking Len against the
// client's size, which is what this does (the answer always fits).
//
// m may share r's Data (a server's pooled buffer, via Copy): m.Data is
// kept so Pack reuses it.
func answerV2(m, r *dns2.Msg) *dns2.Msg {
	var ecs *dns2.SUBNET
	for _, o := range r.Pseudo {
		if s, ok := o.(*dns2.SUBNET); ok {
			ecs = s
		}
	}
	m.MsgHeader = dns2.MsgHeader{ID: r.ID, Response: true, Opcode: r.Opcode,
		RecursionDesired: r.RecursionDesired, CheckingDisabled: r.CheckingDisabled, Authoritative: true}
	m.Question = append(m.Question[:0], r.Question[0])
	m.Answer, m.Ns, m.Extra, m.Pseudo, m.Stateful = v2Answer, nil, m.Extra[:0], m.Pseudo[:0], nil
	size := dns2.MinMsgSize
	if r.UDPSize != 0 { // Unpack sets it (to at least 512) when the query has an OPT
		size = max(dns2.MinMsgSize, min(int(r.UDPSize), udpSize))
		m.UDPSize = udpSize
		if ecs != nil {
			m.Pseudo = append(m.Pseudo, &dns2.SUBNET{Family: ecs.Family, SourceNetmask: ecs.SourceNetmask,
				SourceScope: ecsScope, Address: ecs.Address})
		}
	}
	if m.Len() > size {
		m.Truncated, m.Answer = true, nil
	}
	return m
}

// unpackV2 unpacks b into r, reused from query to query. v2's Unpack leaves
// the EDNS fields of the header (UDPSize, Security, ...) as they were when
// b has no OPT record, so a reused Msg must have its header cleared first or
// a plain query inherits the previous query's EDNS.
func unpackV2(r *dns2.Msg, b []byte) error {
	r.MsgHeader = dns2.MsgHeader{}
	r.Data = b
	return r.Unpack()
}

// packV2 packs m into buf's array and returns the packed message.
func packV2(m *dns2.Msg, buf []byte) ([]byte, error) {
	m.Data = buf[:cap(buf)]
	if err := m.Pack(); err != nil {
		return nil, err
	}
	return m.Data, nil
}
