// Package gtm is haven's traffic manager: an authoritative DNS server for a
// delegated subzone whose managed names answer with the addresses of the
// targets that are healthy now, chosen by a policy per name.
//
// The answer path reads an immutable table of precomputed answers, swapped
// atomically when health changes: a query takes no lock and builds no
// record.
package gtm

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Zone is what the server answers for: the delegated subzone, its name
// servers and its managed names.
type Zone struct {
	// Origin is the zone, such as "gslb.shop.example." (a final dot is
	// added when missing).
	Origin string
	// Nameservers are the zone's NS records, each with its glue address;
	// their names must be inside the zone.
	Nameservers []Nameserver
	// Names are the managed names, relative to Origin ("www") or "@".
	Names map[string]Name
	// SOA timers; zero values get the defaults below.
	Serial                          uint32
	Refresh, Retry, Expire, Minimum time.Duration
	// Geo locates clients for the names with the Geo policy.
	Geo *GeoDB
	// Hostmaster is the SOA's mailbox (default hostmaster.<origin>).
	Hostmaster string
	// TTL of the SOA and NS records (default 1h).
	TTL time.Duration
}

// Nameserver is one NS record of the zone and its glue.
type Nameserver struct {
	Name string // relative to Origin, such as "ns1"
	Addr netip.Addr
}

// Policy is how a managed name chooses among its healthy targets.
type Policy string

// Policies.
const (
	// Failover answers with the first healthy target, in order.
	Failover Policy = "failover"
	// All answers with every healthy target.
	All Policy = "all"
	// Weighted answers with one healthy target, chosen at random in
	// proportion to its weight.
	Weighted Policy = "weighted"
	// Hashed answers with one healthy target chosen by the client's
	// subnet (EDNS Client Subnet, else the resolver's address): a client
	// keeps its target while that target is healthy.
	Hashed Policy = "hashed"
	// Cidr answers with the healthy target whose subnets hold the client
	// (EDNS Client Subnet, else the resolver's address), the longest
	// prefix winning; a client in none gets the first healthy target.
	Cidr Policy = "cidr"
	// Geo answers with the healthy target that lists the client's
	// country, else one that lists its continent, else the first healthy
	// target; the client is located in the zone's GeoDB.
	Geo Policy = "geo"
)

// AllDown is what a managed name answers when none of its targets is
// healthy.
type AllDown string

// All-down modes.
const (
	// Open answers as if every target were healthy: an answer that may
	// fail is better than none when the checks are what broke.
	Open AllDown = "open"
	// Closed answers SERVFAIL: resolvers try again and keep nothing.
	Closed AllDown = "closed"
	// Backup answers with the name's Backup targets (a maintenance
	// page, a static copy of the site).
	Backup AllDown = "backup"
)

// Name is one managed name.
type Name struct {
	Policy  Policy
	TTL     time.Duration
	Targets []Target
	// AllDown is the answer when no target is healthy (default Open);
	// Backups are its targets under Backup.
	AllDown AllDown
	Backups []Target
	// MaxAnswers caps how many healthy targets an All name answers with,
	// the first in order (0: no cap).
	MaxAnswers int
}

// Target is one possible answer of a managed name: an address or a CNAME.
type Target struct {
	Name  string // unique within the name, such as "east"
	Addr  netip.Addr
	CNAME string // an absolute name, when the target is an alias, not an address
	// Weight is the target's share of answers under Weighted (0 takes
	// none while another has a weight).
	Weight int
	// Subnets are the clients the target serves under Cidr.
	Subnets []netip.Prefix
	// Countries (ISO 3166-1 codes, such as "DE") and Continents ("EU")
	// are the clients the target serves under Geo.
	Countries, Continents []string
}

// Zone defaults.
const (
	defaultZoneTTL = time.Hour
	defaultRefresh = time.Hour
	defaultRetry   = 10 * time.Minute
	defaultExpire  = 14 * 24 * time.Hour
	// defaultMinimum is the negative-caching TTL (RFC 2308): short, so a
	// name that is added is seen soon.
	defaultMinimum = 30 * time.Second
	defaultNameTTL = 20 * time.Second
)

// fqdn returns name as a lower-case absolute domain name under origin.
func fqdn(name, origin string) string {
	if name == "@" || name == "" {
		return origin
	}
	return strings.ToLower(dns.Fqdn(name)) + origin
}

// normalize checks z and fills its defaults; it returns a copy.
func (z Zone) normalize() (Zone, error) {
	z.Origin = strings.ToLower(dns.Fqdn(z.Origin))
	if _, ok := dns.IsDomainName(z.Origin); !ok || z.Origin == "." {
		return z, fmt.Errorf("gtm: zone %q is not a domain name", z.Origin)
	}
	if len(z.Nameservers) == 0 {
		return z, fmt.Errorf("gtm: zone %s has no name servers", z.Origin)
	}
	for _, ns := range z.Nameservers {
		if !ns.Addr.IsValid() {
			return z, fmt.Errorf("gtm: name server %s has no address", ns.Name)
		}
	}
	names := make(map[string]Name, len(z.Names))
	for rel, n := range z.Names {
		n, err := n.normalize(rel)
		if err != nil {
			return z, err
		}
		if n.Policy == Geo && z.Geo == nil {
			return z, fmt.Errorf("gtm: name %s: policy geo needs a geo database: set traffic.geoip to a MaxMind-format file", rel)
		}
		names[rel] = n
	}
	z.Names = names
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	setDur(&z.TTL, defaultZoneTTL)
	setDur(&z.Refresh, defaultRefresh)
	setDur(&z.Retry, defaultRetry)
	setDur(&z.Expire, defaultExpire)
	setDur(&z.Minimum, defaultMinimum)
	if z.Hostmaster == "" {
		z.Hostmaster = "hostmaster." + z.Origin
	}
	if z.Serial == 0 {
		z.Serial = uint32(time.Now().Unix())
	}
	return z, nil
}

// normalize checks a managed name and fills its defaults.
func (n Name) normalize(rel string) (Name, error) {
	if len(n.Targets) == 0 {
		return n, fmt.Errorf("gtm: name %s has no target", rel)
	}
	switch n.Policy {
	case Failover, All, Weighted, Hashed, Cidr, Geo:
	default:
		return n, fmt.Errorf("gtm: name %s: policy %q is not supported (failover, all, weighted, hashed, cidr, geo)", rel, n.Policy)
	}
	if n.AllDown == "" {
		n.AllDown = Open
	}
	switch n.AllDown {
	case Open, Closed:
		if len(n.Backups) > 0 {
			return n, fmt.Errorf("gtm: name %s: backup targets need all_down backup (it is %s)", rel, n.AllDown)
		}
	case Backup:
		if len(n.Backups) == 0 {
			return n, fmt.Errorf("gtm: name %s: all_down backup needs backup targets", rel)
		}
	default:
		return n, fmt.Errorf("gtm: name %s: all_down %q is not open, closed or backup", rel, n.AllDown)
	}
	n.Targets, n.Backups = slices.Clone(n.Targets), slices.Clone(n.Backups)
	for _, set := range [][]Target{n.Targets, n.Backups} {
		for i := range set {
			tg := &set[i]
			if tg.Addr.IsValid() == (tg.CNAME != "") {
				return n, fmt.Errorf("gtm: name %s target %s: give an address or a cname, not both or neither", rel, tg.Name)
			}
			if tg.CNAME != "" {
				tg.CNAME = strings.ToLower(dns.Fqdn(tg.CNAME))
				if _, ok := dns.IsDomainName(tg.CNAME); !ok {
					return n, fmt.Errorf("gtm: name %s target %s: cname %q is not a domain name", rel, tg.Name, tg.CNAME)
				}
			}
		}
	}
	// A CNAME owns its name alone (RFC 1034 3.6.2): it cannot be one of
	// several records in an answer.
	if n.Policy == All && slices.ContainsFunc(n.Targets, isCNAME) {
		return n, fmt.Errorf("gtm: name %s: policy all answers every healthy target together, and a cname cannot share its name with other records: use failover or weighted", rel)
	}
	if len(n.Backups) > 1 && slices.ContainsFunc(n.Backups, isCNAME) {
		return n, fmt.Errorf("gtm: name %s: the backup answer is every backup target together, and a cname cannot share its name: give one cname or only addresses", rel)
	}
	return n, nil
}

func isCNAME(tg Target) bool { return tg.CNAME != "" }

// answer is what the target answers with, as text.
func (tg Target) answer() string {
	if tg.CNAME != "" {
		return tg.CNAME
	}
	return tg.Addr.String()
}

func seconds(d time.Duration) uint32 { return uint32(d / time.Second) }

// soa is the zone's SOA record.
func (z Zone) soa() *dns.SOA {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: z.Origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: seconds(z.TTL)},
		Ns:      fqdn(z.Nameservers[0].Name, z.Origin),
		Mbox:    dns.Fqdn(z.Hostmaster),
		Serial:  z.Serial,
		Refresh: seconds(z.Refresh),
		Retry:   seconds(z.Retry),
		Expire:  seconds(z.Expire),
		Minttl:  seconds(z.Minimum),
	}
}

// record is a target's answer, and the query types it answers: an
// address its own type, a CNAME every address type and CNAME itself.
func record(owner string, tg Target, ttl time.Duration) (dns.RR, []uint16) {
	if tg.CNAME != "" {
		hdr := dns.RR_Header{Name: owner, Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: seconds(ttl)}
		return &dns.CNAME{Hdr: hdr, Target: tg.CNAME}, cnameTypes
	}
	rr := address(owner, tg.Addr, ttl)
	if rr.Header().Rrtype == dns.TypeA {
		return rr, aTypes
	}
	return rr, aaaaTypes
}

var (
	cnameTypes = []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeCNAME}
	aTypes     = []uint16{dns.TypeA}
	aaaaTypes  = []uint16{dns.TypeAAAA}
)

// address is an A or AAAA record for addr.
func address(owner string, addr netip.Addr, ttl time.Duration) dns.RR {
	hdr := dns.RR_Header{Name: owner, Class: dns.ClassINET, Ttl: seconds(ttl)}
	if addr.Is4() {
		hdr.Rrtype = dns.TypeA
		return &dns.A{Hdr: hdr, A: addr.AsSlice()}
	}
	hdr.Rrtype = dns.TypeAAAA
	return &dns.AAAA{Hdr: hdr, AAAA: addr.AsSlice()}
}
