package gtm

import (
	"fmt"
	"net/netip"
	"sync"

	"github.com/oschwald/maxminddb-golang/v2"
)

// GeoDB tells where a client's address is, from a database in MaxMind's
// format (GeoLite2-Country or -City, GeoIP2, DB-IP's lite databases): the
// operator provides the file, haven ships none.
type GeoDB struct {
	r *maxminddb.Reader
	// places caches decoded records by their offset in the database: it
	// holds a few hundred distinct records for millions of networks, so
	// a query decodes nothing once its record has been seen.
	places sync.Map // uintptr -> place
}

// place is where a network is: ISO 3166 country and continent codes.
type place struct{ country, continent string }

// geoRecord is the part of a country or city record haven reads.
type geoRecord struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	// RegisteredCountry stands in for networks with no country (such
	// as anycast ones).
	RegisteredCountry struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"registered_country"`
	Continent struct {
		Code string `maxminddb:"code"`
	} `maxminddb:"continent"`
}

// OpenGeoDB opens a MaxMind-format database file.
func OpenGeoDB(path string) (*GeoDB, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("gtm: geo database %s: %w", path, err)
	}
	return &GeoDB{r: r}, nil
}

// Close releases the database file now. A GeoDB that is dropped without
// Close is released when it becomes unreachable (the reader's cleanup).
func (g *GeoDB) Close() error { return g.r.Close() }

// locate returns where addr is, and how many of its leading bits decided
// that: the network's prefix length, which is the ECS scope of an answer
// chosen by it. A network the database does not know has an empty place.
func (g *GeoDB) locate(addr netip.Addr) (place, int) {
	res := g.r.Lookup(addr)
	bits := res.Prefix().Bits()
	if bits < 0 {
		bits = addr.BitLen()
	}
	if !res.Found() {
		return place{}, bits
	}
	off := res.Offset()
	if p, ok := g.places.Load(off); ok {
		return p.(place), bits
	}
	var rec geoRecord
	if err := res.Decode(&rec); err != nil {
		return place{}, bits
	}
	p := place{country: rec.Country.ISOCode, continent: rec.Continent.Code}
	if p.country == "" {
		p.country = rec.RegisteredCountry.ISOCode
	}
	g.places.Store(off, p)
	return p, bits
}
