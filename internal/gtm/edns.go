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
	do      bool   // DNSSEC OK: the answer's OPT echoes it (RFC 3225)
	nsid    bool   // it asks for the server's NSID (RFC 5001)
	// malformed is an EDNS Client Subnet option that breaks RFC 7871
	// §6 and §7.1.1 (a scope in a query, address bits past the source
	// prefix, more or fewer address bytes than the prefix needs, an
	// unknown family, two options): FORMERR.
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
	q := queryEDNS{present: true, version: opt.Version(), size: opt.UDPSize(), do: opt.Do()}
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

// ednsOfWire is ednsOf for a message whose bytes b are at hand: it also
// rejects a client subnet whose address has more or fewer bytes than its
// prefix needs (RFC 7871 §6), which miekg's parsed option no longer shows:
// it pads or cuts the address to the family's length.
func ednsOfWire(r *dns.Msg, b []byte) queryEDNS {
	q := ednsOf(r)
	if q.subnet && !subnetSizesOK(b) {
		q.reject()
	}
	return q
}

// subnetSizesOK reports whether every client subnet option of message b
// carries the bytes of its prefix, no more, no fewer; true when b has no
// OPT record it can find.
func subnetSizesOK(b []byte) bool {
	rdata, ok := optData(b)
	for ok && len(rdata) >= 4 {
		code, n := binary.BigEndian.Uint16(rdata), int(binary.BigEndian.Uint16(rdata[2:]))
		if len(rdata) < 4+n {
			return true // miekg parsed no such option
		}
		if d := rdata[4 : 4+n]; code == dns.EDNS0SUBNET && len(d) >= 4 && len(d)-4 != (int(d[2])+7)/8 {
			return false
		}
		rdata = rdata[4+n:]
	}
	return true
}

// optData returns the data of message b's OPT record, walking its sections
// by their counts; false when it finds none.
func optData(b []byte) ([]byte, bool) {
	if len(b) < 12 {
		return nil, false
	}
	off := 12
	for range binary.BigEndian.Uint16(b[4:]) {
		if off = skipName(b, off) + 4; off < 4 {
			return nil, false
		}
	}
	an, ns, ar := int(binary.BigEndian.Uint16(b[6:])), int(binary.BigEndian.Uint16(b[8:])), int(binary.BigEndian.Uint16(b[10:]))
	for i := range an + ns + ar {
		if off = skipName(b, off); off < 0 || off+10 > len(b) {
			return nil, false
		}
		typ, end := binary.BigEndian.Uint16(b[off:]), off+10+int(binary.BigEndian.Uint16(b[off+8:]))
		if end > len(b) {
			return nil, false
		}
		if i >= an+ns && typ == dns.TypeOPT {
			return b[off+10 : end], true
		}
		off = end
	}
	return nil, false
}

// skipName returns the offset after the domain name at b[off:], or -1.
func skipName(b []byte, off int) int {
	for off < len(b) {
		switch c := b[off]; {
		case c == 0:
			return off + 1
		case c&0xC0 == 0xC0:
			if off+2 > len(b) {
				return -1
			}
			return off + 2
		case c&0xC0 != 0:
			return -1
		default:
			off += 1 + int(c)
		}
	}
	return -1
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
	q = queryEDNS{present: true, size: binary.BigEndian.Uint16(b[off+3:]), version: b[off+6], do: b[off+7]&0x80 != 0}
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
		q.reject()
		return
	}
	family, source := binary.BigEndian.Uint16(d), d[2]
	if len(d)-4 != (int(source)+7)/8 { // RFC 7871 §6: the address cut to the prefix's bytes
		q.reject()
		return
	}
	var a netip.Addr
	switch family {
	case 0: // dig's +subnet=0: use no client address
		if source != 0 {
			q.reject()
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
		q.reject()
		return
	}
	if pfx, err := a.Prefix(int(source)); err != nil || pfx.Addr() != a {
		q.reject()
		return
	}
	q.subnet, q.family, q.source, q.addr = true, family, source, a
}

// reject marks q's client subnet malformed, forgetting any subnet.
func (q *queryEDNS) reject() {
	*q = queryEDNS{present: true, version: q.version, size: q.size, do: q.do, nsid: q.nsid, malformed: true}
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
	if e.query.do {
		o.SetDo()
	}
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
	var do byte
	if e.query.do {
		do = 0x80 // RFC 3225: the DO bit, copied from the query
	}
	b = append(b, 0, byte(dns.TypeOPT>>8), byte(dns.TypeOPT), byte(udpSize>>8), byte(udpSize&0xff), 0, 0, do, 0, 0, 0)
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
