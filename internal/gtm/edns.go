package gtm

import (
	"encoding/binary"
	"net/netip"

	"github.com/miekg/dns"
)

// queryEDNS is what a query's OPT record (RFC 6891) asks of the answer.
// The UDP path reads it from the wire without allocating (parseQuery);
// the TCP path from miekg's parsed OPT (ednsOf). Both give the same value
// for a message miekg parses.
type queryEDNS struct {
	present bool   // the query has an OPT record
	version uint8  // EDNS version (only 0 exists)
	size    uint16 // the client's UDP buffer size
	nsid    bool   // it asks for the server's NSID (RFC 5001)
	// malformed is an EDNS Client Subnet option that breaks RFC 7871
	// §7.1.1 (a scope in a query, address bits past the source prefix,
	// an unknown family, two options): FORMERR.
	malformed bool
	subnet    bool // it carries a well-formed client subnet:
	family    uint16
	source    uint8
	addr      netip.Addr
}

// ednsOf reads a query's EDNS from miekg's parsed message.
func ednsOf(r *dns.Msg) queryEDNS {
	opt := r.IsEdns0()
	if opt == nil {
		return queryEDNS{}
	}
	q := queryEDNS{present: true, version: opt.Version(), size: opt.UDPSize()}
	for _, o := range opt.Option {
		q.nsid = q.nsid || o.Option() == dns.EDNS0NSID
	}
	ecs, ok := clientSubnet(opt)
	switch {
	case !ok:
		q.malformed = true
	case ecs != nil:
		a, _ := netip.AddrFromSlice(ecs.Address)
		if ecs.Family != 2 {
			a = a.Unmap()
		}
		q.subnet, q.family, q.source, q.addr = true, ecs.Family, ecs.SourceNetmask, a
	}
	return q
}

// clientSubnet returns the query's EDNS Client Subnet option (nil when
// none), or false when it is malformed (RFC 7871 §7.1.1: FORMERR): a
// scope in a query, address bits past the source prefix, or two options.
func clientSubnet(opt *dns.OPT) (*dns.EDNS0_SUBNET, bool) {
	var ecs *dns.EDNS0_SUBNET
	for _, o := range opt.Option {
		e, ok := o.(*dns.EDNS0_SUBNET)
		if !ok {
			continue
		}
		if ecs != nil || e.SourceScope != 0 {
			return nil, false
		}
		a, ok := netip.AddrFromSlice(e.Address)
		if !ok {
			return nil, false
		}
		if e.Family != 2 { // miekg stores IPv4 (and family 0's 0.0.0.0) as 16 bytes
			a = a.Unmap()
		}
		if (e.Family == 2) == a.Is4() {
			return nil, false
		}
		if pfx, err := a.Prefix(int(e.SourceNetmask)); err != nil || pfx.Addr() != a {
			return nil, false
		}
		ecs = e
	}
	return ecs, true
}

// parseQuery splits the common shape of a query — one question and at
// most one additional record, an OPT — into the header and question, for
// miekg to unpack, and the OPT, which it reads itself: miekg allocates a
// record per option and an address per client subnet, and ECS queries
// paid for that on every query. head is b's header and question with the
// additional count cleared, built in scratch. ok is false for any other
// shape, which the caller gives to miekg whole.
func parseQuery(b, scratch []byte) (head []byte, q queryEDNS, ok bool) {
	if len(b) < 12 || binary.BigEndian.Uint16(b[4:]) != 1 || binary.BigEndian.Uint16(b[6:]) != 0 ||
		binary.BigEndian.Uint16(b[8:]) != 0 || binary.BigEndian.Uint16(b[10:]) != 1 {
		return nil, q, false
	}
	off := 12
	for {
		if off >= len(b) || b[off]&0xC0 != 0 { // a pointer or an extended label
			return nil, q, false
		}
		l := int(b[off])
		off += 1 + l
		if l == 0 {
			break
		}
	}
	off += 4 // type and class
	// The OPT record: the root name, type 41, the buffer size as class, the
	// extended rcode, version and flags as TTL, then its options.
	if off+11 > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT {
		return nil, q, false
	}
	rdata := b[off+11:]
	if int(binary.BigEndian.Uint16(b[off+9:])) != len(rdata) {
		return nil, q, false
	}
	q = queryEDNS{present: true, size: binary.BigEndian.Uint16(b[off+3:]), version: b[off+6]}
	for len(rdata) > 0 {
		if len(rdata) < 4 {
			return nil, q, false
		}
		code, n := binary.BigEndian.Uint16(rdata), int(binary.BigEndian.Uint16(rdata[2:]))
		if len(rdata) < 4+n {
			return nil, q, false
		}
		switch code {
		case dns.EDNS0NSID:
			q.nsid = true
		case dns.EDNS0SUBNET:
			q.readSubnet(rdata[4 : 4+n])
		}
		rdata = rdata[4+n:]
	}
	head = append(scratch[:0], b[:off]...)
	head[10], head[11] = 0, 0
	return head, q, true
}

// readSubnet reads one client subnet option's data the way miekg and
// clientSubnet judge it.
func (q *queryEDNS) readSubnet(d []byte) {
	if q.subnet || q.malformed || len(d) < 4 || d[3] != 0 {
		*q = queryEDNS{present: true, version: q.version, size: q.size, nsid: q.nsid, malformed: true}
		return
	}
	family, source := binary.BigEndian.Uint16(d), d[2]
	var a netip.Addr
	switch family {
	case 0: // dig's +subnet=0: use no client address
		if source != 0 {
			q.malformed = true
			return
		}
		a = netip.IPv4Unspecified()
	case 1:
		var b4 [4]byte
		copy(b4[:], d[4:])
		a = netip.AddrFrom4(b4)
	case 2:
		var b16 [16]byte
		copy(b16[:], d[4:])
		a = netip.AddrFrom16(b16)
	default:
		q.malformed = true
		return
	}
	if pfx, err := a.Prefix(int(source)); err != nil || pfx.Addr() != a {
		q.malformed = true
		return
	}
	q.subnet, q.family, q.source, q.addr = true, family, source, a
}

// ednsReply is the OPT record an answer carries.
type ednsReply struct {
	opt   bool // the answer has an OPT record
	query queryEDNS
	scope uint8 // the client subnet's scope, echoed when the query had one
}

// optRR is the reply's OPT record for miekg to pack (TCP, and UDP answers
// that need truncating).
func (s *Server) optRR(e ednsReply) *dns.OPT {
	o := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	o.SetUDPSize(udpSize)
	if e.query.nsid && s.nsid != "" {
		o.Option = append(o.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID, Nsid: s.nsid})
	}
	if q := e.query; q.subnet {
		// RFC 7871: echo the client's subnet, with the scope the answer
		// is valid for: 0 when it does not depend on the client.
		o.Option = append(o.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: q.family,
			SourceNetmask: q.source, SourceScope: e.scope, Address: q.addr.AsSlice()})
	}
	return o
}

// appendOPT appends the reply's OPT record to b, a packed message, the
// same bytes miekg makes of optRR, and counts it in the header.
func (s *Server) appendOPT(b []byte, e ednsReply) []byte {
	b = append(b, 0, byte(dns.TypeOPT>>8), byte(dns.TypeOPT), byte(udpSize>>8), byte(udpSize&0xff), 0, 0, 0, 0, 0, 0)
	start := len(b)
	if e.query.nsid && len(s.nsidRaw) > 0 {
		b = binary.BigEndian.AppendUint16(b, dns.EDNS0NSID)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.nsidRaw)))
		b = append(b, s.nsidRaw...)
	}
	if q := e.query; q.subnet {
		n := int(q.source+7) / 8
		b = binary.BigEndian.AppendUint16(b, dns.EDNS0SUBNET)
		b = binary.BigEndian.AppendUint16(b, uint16(4+n))
		b = binary.BigEndian.AppendUint16(b, q.family)
		b = append(b, q.source, e.scope)
		switch q.family {
		case 1:
			a := q.addr.As4()
			b = append(b, a[:n]...)
		case 2:
			a := q.addr.As16()
			b = append(b, a[:n]...)
		}
	}
	binary.BigEndian.PutUint16(b[start-2:], uint16(len(b)-start))
	binary.BigEndian.PutUint16(b[10:], binary.BigEndian.Uint16(b[10:])+1)
	return b
}
