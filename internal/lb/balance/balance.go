// Package balance implements the backend selection algorithms of haven's load
// balancer: smooth weighted round-robin, weighted least connections,
// consistent source hashing and weighted power of two choices.
//
// An Algorithm is given the balancer's current backend set on every call. The
// balancer publishes a new slice whenever a reload adds, removes or reweights
// backends and never mutates a slice it has passed to Pick; algorithms notice a
// new set by the identity of its first element and its length, without
// allocating, and rebuild the little per-set state they keep (keyed by
// Backend.Key, so that it survives the change). Effective weights may still
// change between calls on the same set (slow start), so every algorithm reads
// Weight on every call.
//
// All algorithms are safe for concurrent use and do not allocate per call.
package balance

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"

	"github.com/haven-ha/haven/internal/splitmix"
)

// Backend is what an algorithm needs to know about one server.
type Backend interface {
	// Weight is the effective weight now, 0 to 256. Slow start may lower it;
	// a backend of weight 0 takes no new traffic.
	Weight() int
	// Load is the number of requests or connections in flight now.
	Load() int64
	// Key is the backend's stable identity (its address). Hashing and
	// per-backend state are keyed by it.
	Key() string
}

// Algorithm picks among backends.
//
// Pick returns the index in backends of the chosen backend, or -1 when none is
// usable. skip(i) reports that backends[i] must not be used (unhealthy,
// draining, in maintenance, at max_conn, or already failed this request); skip
// may be nil. hash is the request's source hash (see HashAddr); only the source
// algorithm uses it. A backend of weight 0 or less is never picked.
//
// Pick is safe for concurrent use and does not allocate, except to rebuild
// per-set state the first time it sees a new backends slice.
type Algorithm interface {
	Pick(backends []Backend, skip func(int) bool, hash uint64) int
}

var names = []string{"roundrobin", "leastconn", "source", "random2"}

// Names returns the algorithm names New accepts, in documentation order.
func Names() []string { return append([]string(nil), names...) }

// New returns a new instance of the named algorithm: "roundrobin", "leastconn",
// "source" or "random2". Each balancer needs its own instance, since
// round-robin and least-connections keep state between calls.
func New(name string) (Algorithm, error) {
	switch name {
	case "roundrobin":
		return &roundRobin{}, nil
	case "leastconn":
		return &leastConn{}, nil
	case "source":
		return &source{}, nil
	case "random2":
		return &random2{}, nil
	}
	return nil, fmt.Errorf("balance: algorithm %q is not one of %s", name, strings.Join(names, ", "))
}

// HashAddr returns the source hash of a client address, for Pick's hash
// argument. It depends only on the address (not its zone, and an IPv4 address
// hashes like its IPv4-mapped IPv6 form), is identical across processes and
// runs, so that every balancer node sends a client to the same backend, and
// is well mixed even for consecutive addresses.
func HashAddr(a netip.Addr) uint64 {
	b := a.As16()
	hi := binary.BigEndian.Uint64(b[:8])
	lo := binary.BigEndian.Uint64(b[8:])
	return splitmix.Mix64(hi*0x9e3779b97f4a7c15 ^ lo ^ 0x2545f4914f6cdd1d)
}

// hashKey hashes a backend key (FNV-1a, then mixed): stable across processes.
func hashKey(s string) uint64 {
	h := uint64(0xcbf29ce484222325)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 0x100000001b3
	}
	return splitmix.Mix64(h)
}

// sameSet reports whether backends is the set identified by first and n.
func sameSet(backends []Backend, first *Backend, n int) bool {
	return len(backends) == n && n > 0 && &backends[0] == first
}
