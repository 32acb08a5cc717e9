package gtm

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/miekg/dns"
)

// writeGeoDB writes a MaxMind-format country database mapping each
// network to a country and continent, as GeoLite2-Country records them.
func writeGeoDB(t testing.TB, places map[string][2]string) string {
	t.Helper()
	// The test networks are in reserved ranges (198.18.0.0/15, 10/8),
	// which the writer leaves out unless told.
	w, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-Country", RecordSize: 24, IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, at := range places {
		_, network, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		rec := mmdbtype.Map{
			"country":   mmdbtype.Map{"iso_code": mmdbtype.String(at[0])},
			"continent": mmdbtype.Map{"code": mmdbtype.String(at[1])},
		}
		if err := w.Insert(network, rec); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), "country.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// A geo name answers each client with the target serving its country,
// else its continent, else the first; the ECS scope is the database
// network that decided it; a target that goes down hands its clients to
// the next match.
func TestGeo(t *testing.T) {
	path := writeGeoDB(t, map[string][2]string{
		"198.18.0.0/16":   {"US", "NA"},
		"198.19.0.0/17":   {"DE", "EU"},
		"198.19.128.0/18": {"FR", "EU"},
		"10.0.0.0/8":      {"JP", "AS"},
		"2001:db8::/32":   {"DE", "EU"},
	})
	db, err := OpenGeoDB(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	a := netip.MustParseAddr
	z := Zone{Origin: origin, Nameservers: []Nameserver{{Name: "ns1", Addr: a("198.18.1.11")}}, Geo: db,
		Names: map[string]Name{"www": {Policy: Geo, Targets: []Target{
			{Name: "us", Addr: a("198.18.1.100"), Countries: []string{"US", "CA"}},
			{Name: "de", Addr: a("198.18.2.100"), Countries: []string{"DE"}},
			{Name: "eu", Addr: a("198.18.3.100"), Continents: []string{"EU"}},
		}}}}
	s, srv := startServer(t, z)
	cases := []struct {
		subnet string
		want   string
		scope  int
	}{
		{"198.18.7.0/24", "198.18.1.100", 16},   // US
		{"198.19.5.0/24", "198.18.2.100", 17},   // DE: by country
		{"198.19.130.0/24", "198.18.3.100", 18}, // FR: by continent
		{"10.1.0.0/16", "198.18.1.100", 8},      // JP: no match, the first
		{"2001:db8:1::/48", "198.18.2.100", 32}, // DE over IPv6
		{"203.0.113.0/24", "198.18.1.100", -1},  // not in the database
	}
	for _, c := range cases {
		r := askECS(t, srv, "www."+origin, netip.MustParsePrefix(c.subnet), 0)
		scope, ok := replyScope(r)
		if got := addrs(r); len(got) != 1 || got[0] != c.want || !ok || (c.scope >= 0 && scope != c.scope) {
			t.Errorf("client %s: %v scope %d (%v), want %s scope %d", c.subnet, got, scope, ok, c.want, c.scope)
		}
	}
	// Without ECS the resolver's own address decides (127.0.0.1: unknown).
	if got := addrs(ask(t, srv, "udp", "www."+origin, dns.TypeA, 0)); len(got) != 1 || got[0] != "198.18.1.100" {
		t.Errorf("no ECS, resolver unknown: %v, want the first target", got)
	}
	s.SetHealth("www", "de", false)
	if got := addrs(askECS(t, srv, "www."+origin, netip.MustParsePrefix("198.19.5.0/24"), 0)); len(got) != 1 || got[0] != "198.18.3.100" {
		t.Errorf("de down, a client in DE: %v, want eu (its continent)", got)
	}
}

// A file that is not a MaxMind database is an error naming it.
func TestOpenGeoDBError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "not.mmdb")
	os.WriteFile(path, []byte("not a database"), 0o644)
	if _, err := OpenGeoDB(path); err == nil {
		t.Error("OpenGeoDB accepted a file that is not a database")
	}
	if _, err := New(Zone{Origin: origin, Nameservers: []Nameserver{{Name: "ns1", Addr: netip.MustParseAddr("198.18.1.11")}},
		Names: map[string]Name{"www": {Policy: Geo, Targets: []Target{{Name: "a", Addr: netip.MustParseAddr("198.18.1.1")}}}}}, Options{}); err == nil {
		t.Error("New accepted a geo name without a database")
	}
}
