package config

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// KernelRTOMin is Linux's own minimum retransmission timeout: with
// coordination.rto_min at this value haven installs no peer routes.
const KernelRTOMin = 200 * time.Millisecond

// endpointSchemes are the schemes of an external etcd's endpoints.
var endpointSchemes = []string{"http", "https"}

// coordination checks the top-level scope, then each region's scope, then
// the global scope (see the Coordination type for what each is).
func (v *validator) coordination() {
	c := v.cfg.Coordination
	if c == nil {
		return
	}
	const path = "coordination"
	v.scope(c, path)
	for i, m := range c.Members {
		if n, ok := v.nodes[m]; ok && c.Regions[n.Region] != nil {
			v.errorf(index(path+".members", i), "%s is in region %s, which has a scope of its own (coordination.regions.%s): the top-level members serve the nodes of the other regions; move %s to coordination.regions.%s.members, or remove that scope", m, n.Region, n.Region, m, n.Region)
		}
	}
	for _, name := range sortedKeys(c.Regions) {
		v.regionScope(name, c.Regions[name])
	}
	if c.Global != nil {
		v.globalScope(c.Global)
	}
}

// scope checks what every scope shares: ports, raft timings, TLS files,
// and members or endpoints. A value a region scope or the global scope
// takes from the top-level scope was checked there: a check runs on a
// scope below the top level only when one of its keys is written in it.
func (v *validator) scope(c *Coordination, path string) {
	own := func(keys ...string) bool {
		if path == "coordination" {
			return true
		}
		for _, k := range keys {
			if v.given(path + "." + k) {
				return true
			}
		}
		return false
	}
	// at picks, of keys, the first written one, to report a check of two
	// keys where the user wrote one.
	at := func(keys ...string) string {
		for _, k := range keys {
			if v.given(path + "." + k) {
				return path + "." + k
			}
		}
		return path + "." + keys[0]
	}
	for _, key := range []string{"client_port", "peer_port"} {
		p := c.ClientPort
		if key == "peer_port" {
			p = c.PeerPort
		}
		if own(key) && (p < 1 || p > 65535) {
			v.errorf(path+"."+key, "%d is not a port between 1 and 65535", p)
		}
	}
	if c.ClientPort == c.PeerPort && own("client_port", "peer_port") {
		if p := at("peer_port", "client_port"); strings.HasSuffix(p, ".peer_port") {
			v.errorf(p, "%d is also the client port: etcd needs two ports", c.PeerPort)
		} else {
			v.errorf(p, "%d is also the peer port: etcd needs two ports", c.ClientPort)
		}
	}
	if hb, et := c.Heartbeat.D(), c.ElectionTimeout.D(); et < 5*hb && own("heartbeat", "election_timeout") {
		if p := at("election_timeout", "heartbeat"); strings.HasSuffix(p, ".election_timeout") {
			v.errorf(p, "%s is less than 5 heartbeats (%s): etcd would hold elections while the leader is healthy", c.ElectionTimeout, Duration(5*hb))
		} else {
			v.errorf(p, "%s: 5 heartbeats (%s) are more than the election timeout (%s): etcd would hold elections while the leader is healthy", c.Heartbeat, Duration(5*hb), c.ElectionTimeout)
		}
	}
	if d := c.RTOMin.D(); own("rto_min") && (d < 5*time.Millisecond || d > KernelRTOMin || d%time.Millisecond != 0) {
		v.errorf(path+".rto_min", "%s is not a whole number of milliseconds from 5ms to %s (the kernel's own floor, which leaves the routes alone)", c.RTOMin, Duration(KernelRTOMin))
	}
	if own("data_dir") {
		v.nodePath(path+".data_dir", c.DataDir)
	}
	if t := c.TLS; t != nil && own("tls") {
		for _, key := range []string{"ca", "cert", "key"} {
			f := map[string]string{"ca": t.CA, "cert": t.Cert, "key": t.Key}[key]
			if f == "" {
				v.errorf(path+".tls."+key, "required: a PEM file; `haven certs` makes them")
			} else if !strings.Contains(f, "{node}") {
				v.readable(path+".tls."+key, f)
			}
		}
	}
	switch {
	case len(c.Members) > 0 && len(c.Endpoints) > 0:
		v.errorf(path+".endpoints", "give members (embedded etcd) or endpoints (external etcd), not both")
	case len(c.Endpoints) > 0:
		for i, e := range c.Endpoints {
			v.url(index(path+".endpoints", i), e, endpointSchemes)
		}
	default:
		v.nodeRefs(path+".members", c.Members, "the nodes that run embedded etcd, such as members: [db1, db2, db3], or endpoints")
		v.zones(path+".members", c.Members)
	}
}

// nested reports the regions and global keys in a scope that cannot have
// them.
func (v *validator) nested(c *Coordination, path, what string) {
	if c.Regions != nil {
		v.errorf(path+".regions", "%s has no regions of its own: region scopes are under coordination.regions", what)
	}
	if c.Global != nil {
		v.errorf(path+".global", "%s has no global scope of its own: the global scope is coordination.global", what)
	}
}

// regionScope checks coordination.regions.NAME: a region of the file,
// whose embedded members are nodes of that region, so that the region
// keeps its quorum when it is cut off from the others.
func (v *validator) regionScope(name string, c *Coordination) {
	path := "coordination.regions." + name
	_, defined := v.cfg.Regions[name]
	if !defined {
		v.keyErrorf(path, "%s", undefined("region", name, sortedKeys(v.cfg.Regions)))
	}
	v.nested(c, path, "a region's scope")
	v.scope(c, path)
	for i, m := range c.Members {
		if !defined {
			break
		}
		if n, ok := v.nodes[m]; ok && n.Region != name {
			v.errorf(index(path+".members", i), "%s is a node of region %s, not %s: a region's scope has members of that region only, so that it keeps its quorum when the regions are cut apart", m, n.Region, name)
		}
	}
}

// minGlobalMembers is the smallest global scope that survives the loss
// of a region: one member in each of three regions.
const minGlobalMembers = 3

// globalScope checks coordination.global: embedded members spread so that
// losing any one region leaves a quorum, a witness among them when the
// database has a standby cluster, and ports and data directories apart
// from those of a member's own region scope on the same node.
func (v *validator) globalScope(g *Coordination) {
	const path = "coordination.global"
	v.nested(g, path, "the global scope")
	v.scope(g, path)
	if len(g.Members) == 0 || len(g.Endpoints) > 0 {
		return // endpoints: an external cluster, trusted
	}
	var members []string
	byRegion := map[string][]string{}
	for _, m := range g.Members {
		if n, ok := v.nodes[m]; ok && !slices.Contains(members, m) {
			members = append(members, m)
			byRegion[n.Region] = append(byRegion[n.Region], m)
		}
	}
	count := len(members)
	regions := sortedKeys(byRegion)
	switch {
	case count == 0:
		return // each member is reported as undefined
	case count < minGlobalMembers:
		v.errorf(path+".members", "%d %s: the global scope needs at least %d, in %d regions (one in each database region and a witness in a third), so that losing any one region leaves a quorum, such as members: [db1, wdb1, witness1]", count, plural(count, "member"), minGlobalMembers, minGlobalMembers)
		return
	case count%2 == 0:
		v.errorf(path+".members", "%d members: give an odd number (3 or 5): %d members tolerate no more lost members than %d do, and have one more to lose", count, count, count-1)
	}
	// With a standby cluster, the database's region and the standby's
	// are two of the regions at most, so a third is a witness's: one
	// that holds no database node and decides, with the side it can
	// still reach, which region is active.
	if len(regions) < minGlobalMembers {
		v.errorf(path+".members", "the members are in %s only: the global scope needs members in at least %d regions, so that losing any one region leaves a quorum; add a witness, a member in a third region without database nodes", andList(regionsWithNodes(regions, byRegion)), minGlobalMembers)
	} else {
		for _, r := range regions {
			if in := byRegion[r]; 2*len(in) > count {
				v.errorf(path+".members", "region %s holds %d of the %d members (%s): losing region %s loses the global scope's quorum, and with it the active-region record, so that no region could take over; move members to other regions", r, len(in), count, strings.Join(in, ", "), r)
			}
		}
	}
	v.globalApart(g, members)
}

// regionsWithNodes names each region with its members, "east (db1, db2)".
func regionsWithNodes(regions []string, byRegion map[string][]string) []string {
	var out []string
	for _, r := range regions {
		out = append(out, fmt.Sprintf("%s (%s)", r, strings.Join(byRegion[r], ", ")))
	}
	return out
}

// globalApart reports global members that are also embedded members of
// their own region's scope with a port or the data directory in common:
// the two etcd members on that node would collide.
func (v *validator) globalApart(g *Coordination, members []string) {
	const path = "coordination.global"
	type clash struct{ key, other string }
	nodes := map[clash][]string{}
	var order []clash
	add := func(c clash, node string) {
		if nodes[c] == nil {
			order = append(order, c)
		}
		nodes[c] = append(nodes[c], node)
	}
	for _, m := range members {
		spath, sc := v.scopeOf(m)
		if !slices.Contains(sc.Members, m) {
			continue
		}
		for _, gk := range []struct {
			key  string
			port int
		}{{"client_port", g.ClientPort}, {"peer_port", g.PeerPort}} {
			for _, sk := range []struct {
				key  string
				port int
			}{{"client_port", sc.ClientPort}, {"peer_port", sc.PeerPort}} {
				if gk.port == sk.port {
					add(clash{gk.key, spath + "." + sk.key}, m)
				}
			}
		}
		if NodePath(g.DataDir, m) == NodePath(sc.DataDir, m) {
			add(clash{"data_dir", spath + ".data_dir"}, m)
		}
	}
	for _, c := range order {
		in := nodes[c]
		verb := "is a member"
		if len(in) > 1 {
			verb = "are members"
		}
		switch c.key {
		case "data_dir":
			v.errorf(path+".data_dir", "%q is also %s, and %s %s of both scopes: the node's two etcd members need directories of their own", g.DataDir, c.other, andList(in), verb)
		default:
			port := g.ClientPort
			if c.key == "peer_port" {
				port = g.PeerPort
			}
			v.errorf(path+"."+c.key, "%d is also %s, and %s %s of both scopes: the node's two etcd members need ports of their own", port, c.other, andList(in), verb)
		}
	}
}

// scopeOf returns the scope node coordinates through, and its key path:
// its region's own scope when the region has one, else the top-level one.
func (v *validator) scopeOf(node string) (string, *Coordination) {
	c := v.cfg.Coordination
	if n, ok := v.nodes[node]; ok && c.Regions[n.Region] != nil {
		return "coordination.regions." + n.Region, c.Regions[n.Region]
	}
	return "coordination", c
}

// drRegions returns the region of database.nodes and that of
// database.dr.nodes when the database has a standby cluster and each list
// lies in one region; "" where it does not (validation says why).
func (v *validator) drRegions() (db, dr string) {
	d := v.cfg.Database
	if d == nil || d.DR == nil {
		return "", ""
	}
	one := func(names []string) string {
		rs := v.regionsOf(names)
		if len(rs) != 1 {
			return ""
		}
		for r := range rs {
			return r
		}
		return ""
	}
	return one(d.Nodes), one(d.DR.Nodes)
}

// regionsOf groups the defined nodes of names by region.
func (v *validator) regionsOf(names []string) map[string][]string {
	out := map[string][]string{}
	for _, name := range names {
		if n, ok := v.nodes[name]; ok && !slices.Contains(out[n.Region], name) {
			out[n.Region] = append(out[n.Region], name)
		}
	}
	return out
}

// plural returns word, with an s unless n is 1.
func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
