package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
)

// listener is one TCP address an agent listens on.
type listener struct {
	path string     // key path of the address, for messages
	what string     // how messages name it
	addr string     // as written
	ip   netip.Addr // invalid for ":PORT"
	port int
}

// collides reports whether a and b cannot both be bound on one machine.
// A wildcard address (":80", "0.0.0.0:80", "[::]:80") collides with every
// address on its port: Go listens on a wildcard dual-stack, and Linux
// refuses a specific address while a wildcard on its port is listening.
// Two different specific addresses on one port do not collide.
func (a listener) collides(b listener) bool {
	if a.port != b.port {
		return false
	}
	if a.wildcard() || b.wildcard() {
		return true
	}
	return a.ip.Unmap() == b.ip.Unmap()
}

func (a listener) wildcard() bool { return !a.ip.IsValid() || a.ip.IsUnspecified() }

// listeners reports two listeners on one address of one node: the second
// agent role to bind would fail at start, on that node only, which is
// better found by `haven check`.
func (v *validator) listeners() {
	reported := map[[2]string]bool{}
	for _, name := range v.nodeNames {
		ls := v.listenersOn(name)
		for j := range ls {
			for i := range j {
				pair := [2]string{ls[i].path, ls[j].path}
				if reported[pair] || !ls[i].collides(ls[j]) {
					continue
				}
				reported[pair] = true
				v.errorf(ls[j].path, "%q collides with %s %q on node %s: two listeners on one address",
					ls[j].addr, ls[i].what, ls[i].addr, name)
			}
		}
	}
}

// listenersOn lists the well-formed listen addresses of node: its admin
// address first, then its balancers by name, then the database's.
func (v *validator) listenersOn(node string) []listener {
	var ls []listener
	if n := v.nodes[node]; n != nil {
		path := "regions." + n.Region + ".nodes." + node + ".admin"
		ls = appendListener(ls, path, "the admin address", n.Admin)
	}
	for _, b := range v.cfg.BalancersOn(node) {
		path := "balancers." + b.Name + ".listen"
		ls = appendListener(ls, path, path, b.Listen)
	}
	if db := v.cfg.Database; db != nil {
		runsPG := slices.Contains(db.Nodes, node) || (db.DR != nil && slices.Contains(db.DR.Nodes, node))
		if n := v.nodes[node]; n != nil && runsPG {
			ls = appendListener(ls, "database.port", "PostgreSQL's database.port", net.JoinHostPort(n.Address, strconv.Itoa(db.Port)))
		}
		if v.cfg.RoutesOn(node) {
			ls = appendListener(ls, "database.listen.primary", "database.listen.primary", db.Listen.Primary)
			if db.Listen.Replicas != "" {
				ls = appendListener(ls, "database.listen.replicas", "database.listen.replicas", db.Listen.Replicas)
			}
		}
	}
	return ls
}

func appendListener(ls []listener, path, what, addr string) []listener {
	ip, port, err := splitListen(addr)
	if err != nil {
		return ls // reported where the address is checked
	}
	return append(ls, listener{path: path, what: what, addr: addr, ip: ip, port: port})
}

// adminAddresses reports nodes that share a specific admin address: they
// are on one machine (the address is the machine's), so their agents'
// admin listeners would collide. This happens with loopback test
// topologies that forget to give each node its own admin port.
func (v *validator) adminAddresses() {
	owner := map[netip.AddrPort]string{}
	for _, name := range v.nodeNames {
		n := v.nodes[name]
		ip, port, err := splitListen(n.Admin)
		if err != nil || !ip.IsValid() || ip.IsUnspecified() {
			continue
		}
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		if other, dup := owner[ap]; dup {
			path := "regions." + n.Region + ".nodes." + name + ".admin"
			v.errorf(path, "%q is also the admin address of node %s: two listeners on one address (give each node its own admin: ADDR:PORT)", n.Admin, other)
			continue
		}
		owner[ap] = name
	}
}

// splitListen parses a listener address, "HOST:PORT" or ":PORT" with HOST
// an IP address: a host name would be resolved once, at start, and could
// later name another machine. The address is invalid for ":PORT" (every
// address).
func splitListen(s string) (netip.Addr, int, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}, 0, errors.New(`want HOST:PORT or :PORT, such as ":80" or "127.0.0.1:8080"`)
	}
	p, err := parsePort(port)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	if host == "" {
		return netip.Addr{}, p, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("%q is not an IP address: a listener binds an address, not a host name", host)
	}
	return ip, p, nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q is not a number between 1 and 65535", s)
	}
	return p, nil
}
