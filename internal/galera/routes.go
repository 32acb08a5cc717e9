package galera

import (
	"context"
	"maps"
	"net"
	"slices"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
)

// Routes are where a Galera database's clients go: writes to the writer
// (or, with writers: all, to every serving node), reads to every serving
// node.
type Routes struct {
	// Writers are the nodes the primary pool sends to, by name, and
	// WriterAddrs the same as HOST:PORT: the holder of the writer record
	// while it serves (none while nobody holds it), or every serving node.
	Writers     []string
	WriterAddrs []string
	// Readers are every serving node; ReaderAddrs the same as HOST:PORT.
	Readers     []string
	ReaderAddrs []string
}

// Same reports whether r and o send clients to the same places.
func (r Routes) Same(o Routes) bool {
	return slices.Equal(r.Writers, o.Writers) && slices.Equal(r.WriterAddrs, o.WriterAddrs) &&
		slices.Equal(r.Readers, o.Readers) && slices.Equal(r.ReaderAddrs, o.ReaderAddrs)
}

// RoutesFrom computes the routes from the writer record's holder and the
// members' states. A holder whose own state says it does not serve gets
// no writes: it gives the record up within a check, and a node that left
// the primary component must not take writes meanwhile (it would refuse
// them).
//
// A node's own state is as old as its agent's last word: a node cut off
// from the others and from etcd still says it serves until its lease
// ends. The serving nodes' views are newer evidence: a node none of them
// counts in its component is left out as soon as one of them says so.
func RoutesFrom(holder string, members map[string]MemberState, all bool) Routes {
	var r Routes
	outside := map[string]bool{} // client addresses a primary component left out
	for _, m := range members {
		if m.Serving && len(m.Status.IncomingAddresses) > 0 {
			for _, o := range members {
				addr := net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
				if !slices.Contains(m.Status.IncomingAddresses, addr) {
					outside[addr] = true
				}
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(members)) {
		m := members[name]
		addr := net.JoinHostPort(m.Host, strconv.Itoa(m.Port))
		if !m.Serving || m.Host == "" || outside[addr] {
			continue
		}
		r.Readers = append(r.Readers, name)
		r.ReaderAddrs = append(r.ReaderAddrs, addr)
		if all || name == holder {
			r.Writers = append(r.Writers, name)
			r.WriterAddrs = append(r.WriterAddrs, addr)
		}
	}
	return r
}

// WatchRoutes calls fn with database name's routes, then each time they
// change, until ctx ends. While etcd is unreachable the last routes stand.
func WatchRoutes(ctx context.Context, cli *clientv3.Client, cluster, name string, all bool, fn func(Routes)) error {
	writer := WriterPrefix(cluster, name)
	if all {
		writer = "" // no writer record: every serving node writes
	}
	var (
		last   Routes
		called bool
	)
	return coord.WatchOwned(ctx, cli, writer, MembersPrefix(cluster, name), func(holder string, members map[string]MemberState) {
		r := RoutesFrom(holder, members, all)
		if called && r.Same(last) {
			return
		}
		last, called = r, true
		fn(r)
	})
}
