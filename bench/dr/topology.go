package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/drill/pgwrite"
	"github.com/haven-ha/haven/internal/netlab"
)

// The topology: two regions, each three database nodes and a client on its
// own segment, with netlab's router between the segments. Region east is
// segment 1 (198.18.1.11-14), region west segment 2 (198.18.2.11-14).
const (
	east = "east"
	west = "west"
)

var regions = []string{east, west}

// region is one region's hosts: its database nodes, then its client.
type region struct {
	name   string
	seg    int
	nodes  []string
	client string
}

var regionHosts = map[string]region{
	east: {name: east, seg: 1, nodes: []string{"east1", "east2", "east3"}, client: "east-client"},
	west: {name: west, seg: 2, nodes: []string{"west1", "west2", "west3"}, client: "west-client"},
}

// other is the region that is not r.
func other(r string) string {
	if r == east {
		return west
	}
	return east
}

// hosts is r's hosts in netlab's address order.
func (r region) hosts() []string { return append(append([]string{}, r.nodes...), r.client) }

// witness is the host in a third place that haven's targets add on
// segment 3 (198.18.3.11): the third member of haven's global scope, which
// keeps the active-region record decidable when one region is lost.
// Patroni's targets have no witness (each of its regions has its own etcd)
// and their network has no segment 3.
const witness = "witness"

// hostAddr is netlab's address of the host of that name: the i-th host of
// segment s (from 1) has 198.18.s.(10+i).
func hostAddr(name string) netip.Addr {
	if name == witness {
		return netip.AddrFrom4([4]byte{198, 18, 3, 11})
	}
	for _, r := range regionHosts {
		for i, h := range r.hosts() {
			if h == name {
				return netip.AddrFrom4([4]byte{198, 18, byte(r.seg), byte(11 + i)})
			}
		}
	}
	panic("bench/dr: no host " + name)
}

// regionOf is the region of a host.
func regionOf(host string) string {
	for _, r := range regionHosts {
		for _, h := range r.hosts() {
			if h == host {
				return r.name
			}
		}
	}
	return ""
}

// The writer's database, role and table: every target makes them on the
// active region's primary (they reach the standby region by replication).
const (
	pgPort      = 5432
	appUser     = "app"
	appPassword = "bench-app"
	appDB       = "postgres"
	// tableSQL makes the writer's table (pgwrite's) and lets appUser write it.
	tableSQL = "CREATE TABLE writes (run int, seq int, PRIMARY KEY (run, seq))"
	grantSQL = "GRANT SELECT, INSERT ON writes TO " + appUser
)

// netOptions is the network of a cell: east on segment 1, west on
// segment 2, and the router between them holding every packet from one
// region to the other for wanDelay; with withWitness, the witness on
// segment 3 (its packets to and from either region are delayed as well).
func netOptions(wanDelay time.Duration, withWitness bool) netlab.Options {
	o := netlab.Options{Hosts: regionHosts[east].hosts(), Segment2: regionHosts[west].hosts(), WANDelay: wanDelay}
	if withWitness {
		o.Segment3 = []string{witness}
	}
	return o
}

// dial opens a connection as the writer's role to addr (host:port), from
// the host from.
func dial(ctx context.Context, n *netlab.Net, from, addr string) (*pgx.Conn, error) {
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return nil, fmt.Errorf("bad address %q", addr)
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=%s sslmode=disable connect_timeout=5", host, port, appUser, appPassword, appDB))
	if err != nil {
		return nil, err
	}
	cfg.DialFunc = n.Host(from).DialContext
	return pgx.ConnectConfig(ctx, cfg)
}

// regionConnector connects from the client of from to region's write
// endpoint.
func regionConnector(n *netlab.Net, t target, from, region string) pgwrite.Connector {
	client := regionHosts[from].client
	return func(ctx context.Context) (*pgx.Conn, error) {
		return dial(ctx, n, client, t.WriteEndpoint(region))
	}
}

// followConnector is the connector of a writer that follows the active
// region, as an application that knows both regions' endpoints does: from
// the client of from, it tries each region's endpoint, its own first, and
// keeps the first connection whose server is not in recovery. The tries
// share the connect's timeout (a region that does not take writes refuses
// at once: its router has no server up).
func followConnector(n *netlab.Net, t target, from string) pgwrite.Connector {
	client := regionHosts[from].client
	order := []string{from, other(from)}
	return func(ctx context.Context) (*pgx.Conn, error) {
		var errs []string
		for _, r := range order {
			conn, err := dial(ctx, n, client, t.WriteEndpoint(r))
			if err == nil {
				var recovery bool
				err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&recovery)
				if err == nil && recovery {
					err = fmt.Errorf("in recovery")
				}
				if err != nil {
					conn.Close(context.Background())
				}
			}
			if err == nil {
				return conn, nil
			}
			errs = append(errs, r+": "+err.Error())
		}
		return nil, fmt.Errorf("no region takes writes: %s", strings.Join(errs, "; "))
	}
}
