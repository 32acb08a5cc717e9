package gtm

import (
	"encoding/binary"
	"hash/maphash"
	"math/bits"
	"net/netip"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/haven-ha/haven/internal/splitmix"
)

// picker chooses one of a weighted or hashed name's healthy targets per
// query. Its candidates are built with the table: a query only draws a
// number or hashes the client's subnet, then returns a ready answer.
type picker struct {
	policy Policy
	// maxBits is the longest Cidr subnet per family (index 0: IPv4, 1:
	// IPv6): the ECS scope of a Cidr answer.
	maxBits [2]int
	byType  map[uint16][]candidate // A and AAAA candidates apart
	total   map[uint16]uint64      // sum of the weights, per type
	geo     *GeoDB                 // for Geo
	// seq numbers the queries. Weighted answers follow a Weyl sequence
	// (query number × the golden ratio): as unpredictable to a client as
	// a random draw, but any run of queries splits by weight within a
	// fraction of a percent, where a random draw over 1000 queries is off
	// by 1-3% as often as not.
	seq atomic.Uint64
}

type candidate struct {
	answer  []dns.RR       // the one-record answer
	upTo    uint64         // cumulative weight, for Weighted
	seed    uint64         // the target's own hash, for Hashed
	subnets []netip.Prefix // for Cidr
	// countries and continents, for Geo
	countries, continents []string
}

// client is who a query is for: the subnet the resolver sent (ECS) or the
// resolver's own address.
type client struct {
	addr netip.Addr
	bits int    // how much of addr is known: the ECS source prefix, or all of it
	key  uint64 // hash of the subnet, for Hashed
	// keyBits is how many bits key covers (Hashed's ECS scope).
	keyBits int
}

func newClient(addr netip.Addr, bits int) client {
	addr = addr.Unmap()
	bits = min(bits, addr.BitLen())
	key, keyBits := clientKey(addr, bits)
	return client{addr: addr, bits: bits, key: key, keyBits: keyBits}
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

func newPicker(policy Policy, name string, targets []Target, ttl time.Duration) *picker {
	p := &picker{policy: policy, byType: map[uint16][]candidate{}, total: map[uint16]uint64{}}
	anyWeight := false
	for _, tg := range targets {
		anyWeight = anyWeight || tg.Weight > 0
	}
	for _, tg := range targets {
		rr, types := record(name, tg, ttl)
		w := uint64(max(tg.Weight, 0))
		if !anyWeight {
			w = 1 // all at 0: equal shares rather than no answer
		}
		if policy == Weighted && w == 0 {
			continue
		}
		for _, typ := range types {
			p.total[typ] += w
			p.byType[typ] = append(p.byType[typ], candidate{answer: []dns.RR{rr}, upTo: p.total[typ], seed: hashString(tg.Name), subnets: tg.Subnets,
				countries: tg.Countries, continents: tg.Continents})
		}
		for _, s := range tg.Subnets {
			f := family(s.Addr())
			p.maxBits[f] = max(p.maxBits[f], s.Bits())
		}
	}
	return p
}

// choose returns the answer for c, and the ECS scope it is valid for (0:
// any client).
func (p *picker) choose(qtype uint16, c client) ([]dns.RR, int) {
	cs := p.byType[qtype]
	if len(cs) == 0 {
		return nil, 0
	}
	switch p.policy {
	case Weighted:
		hi, _ := bits.Mul64(p.seq.Add(1)*0x9e3779b97f4a7c15, p.total[qtype])
		i := sort.Search(len(cs), func(i int) bool { return cs[i].upTo > hi })
		return cs[i].answer, 0
	case Cidr:
		return cs[p.longestMatch(cs, c)].answer, min(c.bits, p.maxBits[family(c.addr)])
	case Geo:
		at, scope := p.geo.locate(c.addr)
		return cs[nearest(cs, at)].answer, scope
	}
	// Rendezvous hashing: the highest score wins, so a client moves only
	// when its own target goes down.
	best, bestScore := 0, uint64(0)
	for i, cand := range cs {
		if s := splitmix.Mix64(cand.seed ^ c.key); s >= bestScore {
			best, bestScore = i, s
		}
	}
	return cs[best].answer, c.keyBits
}

// longestMatch is the candidate whose subnet holds the client's with the
// longest prefix; the first candidate when none does. A subnet longer than
// what the client revealed cannot be matched.
func (p *picker) longestMatch(cs []candidate, c client) int {
	best, bestBits := 0, -1
	for i, cand := range cs {
		for _, s := range cand.subnets {
			if s.Bits() > c.bits || s.Bits() <= bestBits || !s.Contains(c.addr) {
				continue
			}
			best, bestBits = i, s.Bits()
		}
	}
	return best
}

// nearest is the first candidate that lists the client's country, else
// the first that lists its continent, else the first.
func nearest(cs []candidate, at place) int {
	if at.country != "" {
		for i, cand := range cs {
			if slices.Contains(cand.countries, at.country) {
				return i
			}
		}
	}
	if at.continent != "" {
		for i, cand := range cs {
			if slices.Contains(cand.continents, at.continent) {
				return i
			}
		}
	}
	return 0
}

var hashSeed = maphash.MakeSeed()

func hashString(s string) uint64 { return maphash.String(hashSeed, s) }

// Subnet lengths the hashed policy uses at most: a client's /24 (IPv4)
// or /56 (IPv6), the usual ECS source prefixes; longer prefixes are cut.
const (
	hashBits4 = 24
	hashBits6 = 56
)

// clientKey hashes the client's subnet: addr masked to at most bits (and
// the family's cap). It returns the hash and the prefix length used.
func clientKey(addr netip.Addr, bits int) (uint64, int) {
	addr = addr.Unmap()
	limit := hashBits6
	if addr.Is4() {
		limit = hashBits4
	}
	bits = min(bits, limit)
	pfx, err := addr.Prefix(bits)
	if err != nil {
		return 0, 0
	}
	var b [17]byte
	a := pfx.Addr().As16()
	copy(b[:16], a[:])
	b[16] = byte(bits)
	return binary.LittleEndian.Uint64(b[:8]) ^ splitmix.Mix64(binary.LittleEndian.Uint64(b[8:16])^uint64(b[16])), bits
}
