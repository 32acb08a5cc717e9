package gtm

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// headerSize is the length of a DNS message's header.
const headerSize = 12

// packCompressed packs m into buf, with names compressed (RFC 1035
// 4.1.4), the same bytes as miekg's m.PackBuffer with m.Compress set, but
// without its cost: miekg makes a compression map for every message,
// which cost the UDP path two allocations and a fifth of its time per
// query; comp is a map its caller keeps and packCompressed clears. It
// packs the records the UDP path answers with itself (A, AAAA, CNAME, NS,
// SOA) and names with miekg's dns.PackDomainName. ok is false for a
// message with any other record, an extended rcode, or more bytes than
// buf holds: the caller packs it with miekg.
func packCompressed(m *dns.Msg, buf []byte, comp map[string]int) (b []byte, ok bool) {
	if m.Rcode < 0 || m.Rcode > 0xF {
		return nil, false
	}
	buf = buf[:cap(buf)]
	if len(buf) < headerSize {
		return nil, false
	}
	bits := uint16(m.Opcode)<<11 | uint16(m.Rcode)
	for _, f := range []struct {
		set bool
		bit uint16
	}{{m.Response, 1 << 15}, {m.Authoritative, 1 << 10}, {m.Truncated, 1 << 9}, {m.RecursionDesired, 1 << 8},
		{m.RecursionAvailable, 1 << 7}, {m.Zero, 1 << 6}, {m.AuthenticatedData, 1 << 5}, {m.CheckingDisabled, 1 << 4}} {
		if f.set {
			bits |= f.bit
		}
	}
	binary.BigEndian.PutUint16(buf, m.Id)
	binary.BigEndian.PutUint16(buf[2:], bits)
	binary.BigEndian.PutUint16(buf[4:], uint16(len(m.Question)))
	binary.BigEndian.PutUint16(buf[6:], uint16(len(m.Answer)))
	binary.BigEndian.PutUint16(buf[8:], uint16(len(m.Ns)))
	binary.BigEndian.PutUint16(buf[10:], uint16(len(m.Extra)))
	off := headerSize
	var err error
	if addressesOnly(m) {
		// The hot path: a question, then addresses it owns, each owner a
		// pointer to the question (what miekg's map finds), no map.
		q := m.Question[0]
		if off, err = dns.PackDomainName(q.Name, buf, off, nil, false); err != nil || off+4 > len(buf) {
			return nil, false
		}
		binary.BigEndian.PutUint16(buf[off:], q.Qtype)
		binary.BigEndian.PutUint16(buf[off+2:], q.Qclass)
		off += 4
		for _, rr := range m.Answer {
			if off, ok = packAddress(rr, buf, off); !ok {
				return nil, false
			}
		}
		return buf[:off], true
	}
	clear(comp)
	for _, q := range m.Question {
		if off, err = dns.PackDomainName(q.Name, buf, off, comp, true); err != nil || off+4 > len(buf) {
			return nil, false
		}
		binary.BigEndian.PutUint16(buf[off:], q.Qtype)
		binary.BigEndian.PutUint16(buf[off+2:], q.Qclass)
		off += 4
	}
	for _, section := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range section {
			if off, ok = packRR(rr, buf, off, comp); !ok {
				return nil, false
			}
		}
	}
	return buf[:off], true
}

// packRR packs one record at buf[off:] as miekg does, compressing the
// names RFC 1035 lets it compress; false for another type or no room.
func packRR(rr dns.RR, buf []byte, off int, comp map[string]int) (int, bool) {
	h := rr.Header()
	off, err := dns.PackDomainName(h.Name, buf, off, comp, true)
	if err != nil || off+10 > len(buf) {
		return 0, false
	}
	binary.BigEndian.PutUint16(buf[off:], h.Rrtype)
	binary.BigEndian.PutUint16(buf[off+2:], h.Class)
	binary.BigEndian.PutUint32(buf[off+4:], h.Ttl)
	start := off + 10
	off = start
	name := func(n string) bool {
		off, err = dns.PackDomainName(n, buf, off, comp, true)
		return err == nil
	}
	fixed := func(b []byte) bool {
		if off+len(b) > len(buf) {
			return false
		}
		off += copy(buf[off:], b)
		return true
	}
	switch rr := rr.(type) {
	case *dns.A:
		a := rr.A.To4()
		if a == nil || !fixed(a) {
			return 0, false
		}
	case *dns.AAAA:
		if len(rr.AAAA) != 16 || !fixed(rr.AAAA) {
			return 0, false
		}
	case *dns.CNAME:
		if !name(rr.Target) {
			return 0, false
		}
	case *dns.NS:
		if !name(rr.Ns) {
			return 0, false
		}
	case *dns.SOA:
		var timers [20]byte
		for i, v := range []uint32{rr.Serial, rr.Refresh, rr.Retry, rr.Expire, rr.Minttl} {
			binary.BigEndian.PutUint32(timers[4*i:], v)
		}
		if !name(rr.Ns) || !name(rr.Mbox) || !fixed(timers[:]) {
			return 0, false
		}
	default:
		return 0, false
	}
	binary.BigEndian.PutUint16(buf[start-2:], uint16(off-start))
	return off, true
}

// addressesOnly reports whether m is a question and A or AAAA records of
// its name, nothing else.
func addressesOnly(m *dns.Msg) bool {
	if len(m.Question) != 1 || len(m.Ns) != 0 || len(m.Extra) != 0 || m.Question[0].Name == "." {
		return false
	}
	for _, rr := range m.Answer {
		if h := rr.Header(); h.Name != m.Question[0].Name || h.Rrtype != dns.TypeA && h.Rrtype != dns.TypeAAAA {
			return false
		}
	}
	return true
}

// packAddress packs an A or AAAA record whose owner is the question's name
// at buf[off:], the owner a pointer to the question.
func packAddress(rr dns.RR, buf []byte, off int) (int, bool) {
	var a []byte
	switch rr := rr.(type) {
	case *dns.A:
		a = rr.A.To4()
	case *dns.AAAA:
		if len(rr.AAAA) == 16 {
			a = rr.AAAA
		}
	}
	if a == nil || off+12+len(a) > len(buf) {
		return 0, false
	}
	h := rr.Header()
	binary.BigEndian.PutUint16(buf[off:], 0xC000|headerSize)
	binary.BigEndian.PutUint16(buf[off+2:], h.Rrtype)
	binary.BigEndian.PutUint16(buf[off+4:], h.Class)
	binary.BigEndian.PutUint32(buf[off+6:], h.Ttl)
	binary.BigEndian.PutUint16(buf[off+10:], uint16(len(a)))
	return off + 12 + copy(buf[off+12:], a), true
}
