package keeper

import (
	"context"
	"net"
	"slices"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
)

// Routes are where the database's clients go: writes to the primary,
// reads to replicas close enough behind it.
type Routes struct {
	// Primary is the acting primary's node and address ("" while there is
	// none: during a failover, or while the holder of the record has not
	// promoted yet).
	Primary     string
	PrimaryAddr string
	// Replicas are the running replicas at most the lag bound behind, by
	// node name; Addrs the same, as HOST:PORT.
	Replicas []string
	Addrs    []string
	// Standby: the members are a standby cluster (one is its region's
	// standby leader), a live copy of another region's primary; its
	// leader is among Replicas.
	Standby bool
	// MoreWriters, for an engine whose every node takes writes (Galera
	// with writers: all), are the primary pool's nodes after Primary,
	// and MoreWriterAddrs the same as HOST:PORT.
	MoreWriters     []string `json:",omitempty"`
	MoreWriterAddrs []string `json:",omitempty"`
}

// Same reports whether r and o send clients to the same places.
func (r Routes) Same(o Routes) bool {
	return r.Primary == o.Primary && r.PrimaryAddr == o.PrimaryAddr && r.Standby == o.Standby &&
		slices.Equal(r.Replicas, o.Replicas) && slices.Equal(r.Addrs, o.Addrs) &&
		slices.Equal(r.MoreWriters, o.MoreWriters) && slices.Equal(r.MoreWriterAddrs, o.MoreWriterAddrs)
}

// RoutesFrom computes the routes from the holder of the primary's
// ownership record and the members' published states. The primary route
// needs both: the record alone would name a node that has not promoted
// yet, and a member's own word alone would name a frozen former primary
// whose state has not expired (its write fence has closed; its record has
// passed to another node).
func RoutesFrom(holder string, members map[string]MemberState, maxLag uint64) Routes {
	var r Routes
	if m, ok := members[holder]; ok && holder != "" && m.Role == RolePrimary {
		r.Primary, r.PrimaryAddr = holder, m.addr()
	}
	names := make([]string, 0, len(members))
	for name := range members {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		m := members[name]
		if m.Role == RoleStandbyLeader {
			r.Standby = true
		}
		if m.Role != RoleReplica && m.Role != RoleStandbyLeader || m.Lag > maxLag || m.Host == "" {
			continue
		}
		r.Replicas = append(r.Replicas, name)
		r.Addrs = append(r.Addrs, m.addr())
	}
	return r
}

func (m MemberState) addr() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// WatchRoutes calls fn with database name's routes, then again each time
// they change, until ctx ends; then it returns nil. It follows the
// primary's ownership record and the members' states in etcd (replicas
// more than maxLag bytes behind are left out). fn runs on one goroutine at
// a time and should return quickly. While etcd is unreachable the last
// routes stand: a former primary is fenced by its own write fence, not by
// its clients' routes.
func WatchRoutes(ctx context.Context, cli *clientv3.Client, cluster, name string, maxLag uint64, fn func(Routes)) error {
	var (
		last   Routes
		called bool
	)
	return coord.WatchOwned(ctx, cli, coord.OwnerPrefix(cluster, "pg", name), StatePrefix(cluster, name), func(holder string, members map[string]MemberState) {
		r := RoutesFrom(holder, members, maxLag)
		if called && r.Same(last) {
			return
		}
		last, called = r, true
		fn(r)
	})
}
