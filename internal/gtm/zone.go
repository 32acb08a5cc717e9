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
)

// Name is one managed name.
type Name struct {
	Policy  Policy
	TTL     time.Duration
	Targets []Target
}

// Target is one possible answer of a managed name.
type Target struct {
	Name string // unique within the name, such as "east"
	Addr netip.Addr
	// Weight is the target's share of answers under Weighted (0 takes
	// none while another has a weight).
	Weight int
	// Subnets are the clients the target serves under Cidr.
	Subnets []netip.Prefix
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
	for rel, n := range z.Names {
		if len(n.Targets) == 0 {
			return z, fmt.Errorf("gtm: name %s has no target", rel)
		}
		switch n.Policy {
		case Failover, All, Weighted, Hashed, Cidr:
		default:
			return z, fmt.Errorf("gtm: name %s: policy %q is not supported (failover, all, weighted, hashed, cidr)", rel, n.Policy)
		}
	}
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
