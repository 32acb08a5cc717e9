package gtm

import (
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// table is one immutable set of answers for the whole zone. A health
// change builds a new table; queries read whichever table is current.
type table struct {
	origin string
	soa    []dns.RR // the SOA, for answers and for negative answers' authority
	ns     []dns.RR // the apex NS records
	glue   []dns.RR // their addresses, in the additional section
	owners map[string]*owner
	// nonTerminals are names that own nothing but have names below them:
	// they exist (NODATA, not NXDOMAIN; RFC 8020).
	nonTerminals map[string]bool
}

// owner is everything one name owns, by type.
type owner struct {
	rrs map[uint16][]dns.RR
	// pick, for a weighted or hashed name, chooses its address per query
	// (rrs then holds none).
	pick *picker
	// hinfo is the minimal answer to ANY (RFC 8482).
	hinfo []dns.RR
	// servfail: a closed name with no healthy target answers SERVFAIL.
	servfail bool
	// cname: the name answers a CNAME now (a target or backup that is a
	// name), and a CNAME owns its name alone: it is the answer to every
	// type (RFC 1034 3.6.2), but A and AAAA, which a picked name may
	// answer with an address target.
	cname bool
}

// Health says whether a target of a managed name is up: rel is the name
// as the zone's Names key it ("www"), target the target's name.
type Health func(rel, target string) bool

// build makes the table of zone z (normalized) under health h.
func build(z Zone, h Health) *table {
	t := &table{
		origin:       z.Origin,
		soa:          []dns.RR{z.soa()},
		owners:       map[string]*owner{},
		nonTerminals: map[string]bool{},
	}
	apex := t.owner(z.Origin, z.TTL)
	apex.rrs[dns.TypeSOA] = t.soa
	for _, ns := range z.Nameservers {
		host := fqdn(ns.Name, z.Origin)
		t.ns = append(t.ns, &dns.NS{Hdr: dns.RR_Header{Name: z.Origin, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: seconds(z.TTL)}, Ns: host})
		rr := address(host, ns.Addr, z.TTL)
		t.glue = append(t.glue, rr)
		o := t.owner(host, z.TTL)
		o.rrs[rr.Header().Rrtype] = append(o.rrs[rr.Header().Rrtype], rr)
	}
	apex.rrs[dns.TypeNS] = t.ns
	for rel, n := range z.Names {
		name := fqdn(rel, z.Origin)
		ttl := n.TTL
		if ttl <= 0 {
			ttl = defaultNameTTL
		}
		o := t.owner(name, ttl)
		targets, picked := choose(rel, n, h)
		o.servfail = targets == nil
		if picked {
			o.pick = newPicker(n.Policy, name, targets, ttl)
			o.pick.geo = z.Geo
			o.cname = len(o.pick.byType[dns.TypeCNAME]) > 0 && name != z.Origin
			continue
		}
		for _, tg := range targets {
			rr, types := record(name, tg, ttl)
			for _, typ := range types {
				o.rrs[typ] = append(o.rrs[typ], rr)
			}
		}
		o.cname = len(o.rrs[dns.TypeCNAME]) > 0 && name != z.Origin
	}
	for name := range t.owners {
		for parent := parentOf(name); parent != "" && dns.IsSubDomain(z.Origin, parent) && parent != z.Origin; parent = parentOf(parent) {
			if t.owners[parent] == nil {
				t.nonTerminals[parent] = true
			}
		}
	}
	return t
}

func (t *table) owner(name string, ttl time.Duration) *owner {
	if o := t.owners[name]; o != nil {
		return o
	}
	o := &owner{
		rrs: map[uint16][]dns.RR{},
		hinfo: []dns.RR{&dns.HINFO{
			Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeHINFO, Class: dns.ClassINET, Ttl: seconds(ttl)},
			Cpu: "RFC8482",
		}},
	}
	t.owners[name] = o
	return o
}

// parentOf returns name without its first label ("" for the root).
func parentOf(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return ""
	}
	return name[i+1:]
}

// choose returns the targets a managed name answers with now, and
// whether its policy picks one of them per query (else the answer is all
// of them). With no healthy target it answers by its AllDown mode: every
// target (open; the first alone for failover when a CNAME is among them,
// as a CNAME cannot share its name), none (closed: nil), or its backups.
func choose(rel string, n Name, h Health) (targets []Target, picked bool) {
	var up []Target
	for _, tg := range n.Targets {
		if h == nil || h(rel, tg.Name) {
			up = append(up, tg)
		}
	}
	picks := n.Policy == Weighted || n.Policy == Hashed || n.Policy == Cidr || n.Policy == Geo
	if len(up) == 0 {
		switch n.AllDown {
		case Closed:
			return nil, false
		case Backup:
			return n.Backups, false
		}
		up = n.Targets
		if n.Policy == Failover && !slices.ContainsFunc(up, isCNAME) {
			return up, false
		}
	}
	switch {
	case picks:
		return up, true
	case n.Policy == Failover:
		return up[:1], false
	case n.MaxAnswers > 0 && len(up) > n.MaxAnswers:
		return up[:n.MaxAnswers], false
	}
	return up, false
}
