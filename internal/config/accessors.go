package config

import (
	"slices"
	"strings"
)

// The accessors below work on a Config built by hand (in another package's
// tests) as well as on a parsed one.

// Node returns the node called name, whatever its region.
func (c *Config) Node(name string) (*Node, bool) {
	for _, region := range sortedKeys(c.Regions) {
		if r := c.Regions[region]; r != nil {
			if n, ok := r.Nodes[name]; ok && n != nil {
				return n, true
			}
		}
	}
	return nil, false
}

// NodeNames returns the names of all nodes, sorted.
func (c *Config) NodeNames() []string {
	var names []string
	for _, r := range c.Regions {
		if r != nil {
			for name := range r.Nodes {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// RegionCoordination returns the coordination scope the nodes of region
// coordinate through: the region's own (coordination.regions.REGION) when
// it has one, else the top-level scope; nil without a coordination
// section. Parse has filled the keys a region's scope leaves out from the
// top-level scope.
func (c *Config) RegionCoordination(region string) *Coordination {
	if c.Coordination == nil {
		return nil
	}
	if rc := c.Coordination.Regions[region]; rc != nil {
		return rc
	}
	return c.Coordination
}

// CoordinationOf returns the coordination scope node coordinates through,
// that of its region (see RegionCoordination); the top-level scope for a
// node that is not defined.
func (c *Config) CoordinationOf(node string) *Coordination {
	n, ok := c.Node(node)
	if !ok {
		return c.Coordination
	}
	return c.RegionCoordination(n.Region)
}

// GlobalCoordination returns the scope spanning the regions and a witness
// (coordination.global), which holds the active-region record; nil when
// it is not set.
func (c *Config) GlobalCoordination() *Coordination {
	if c.Coordination == nil {
		return nil
	}
	return c.Coordination.Global
}

// GlobalMembersIn returns the members of the global coordination scope that
// are in region, in the configuration's order.
func (c *Config) GlobalMembersIn(region string) []string {
	g := c.GlobalCoordination()
	if g == nil {
		return nil
	}
	var out []string
	for _, name := range g.Members {
		if n, ok := c.Node(name); ok && n.Region == region {
			out = append(out, name)
		}
	}
	return out
}

// BalancersOn returns the balancers that node runs, sorted by name.
func (c *Config) BalancersOn(node string) []*Balancer {
	var out []*Balancer
	for _, name := range sortedKeys(c.Balancers) {
		if b := c.Balancers[name]; b != nil && slices.Contains(b.Nodes, node) {
			out = append(out, b)
		}
	}
	return out
}

// Check returns the check called name.
func (c *Config) Check(name string) (*Check, bool) {
	ch, ok := c.Checks[name]
	return ch, ok && ch != nil
}

// RetryCount returns how many other backends a request may be retried on.
func (b *Balancer) RetryCount() int {
	if b.Retries.Count == nil {
		return defaultRetries
	}
	return *b.Retries.Count
}

// Position returns where the value at path is written, such as
// "balancers.web.backends[0].address" or "checks.web.interval", so that a
// component that finds a problem at run time can point at its source. For
// a mapping or list written in block style it is the position of its key.
// ok is false when the value was not written (it was defaulted) or c was
// not parsed from a file.
func (c *Config) Position(path string) (line, col int, ok bool) {
	if c.positions == nil {
		return 0, 0, false
	}
	p, ok := c.positions.values[path]
	return p.line, p.col, ok
}

// NodeDataDir returns the data directory of database node node, with
// "{node}" in data_dir replaced by its name.
func (db *Database) NodeDataDir(node string) string {
	return NodePath(db.DataDir, node)
}

// FenceWrites reports whether the primary's port is under the kernel write
// fence (database.write_fence, default true).
func (db *Database) FenceWrites() bool { return db.WriteFence == nil || *db.WriteFence }

// SettingPath returns the key path of the database setting name (as in
// Settings, lowercased) as the file writes it, such as
// "database.settings.Work_Mem", for Config.Position.
func (db *Database) SettingPath(name string) string {
	if written := db.settingKeys[name]; len(written) > 0 {
		name = written[0]
	}
	return "database.settings." + name
}

// NodePath replaces every "{node}" in a configured path (coordination's
// data_dir and tls files, database.data_dir) by the name of node.
func NodePath(p, node string) string {
	return strings.ReplaceAll(p, nodePlaceholder, node)
}

const nodePlaceholder = "{node}"

// RoutesOn reports whether node serves the database's listeners.
func (c *Config) RoutesOn(node string) bool {
	return c.Database != nil && c.Database.Listen != nil && slices.Contains(c.Database.Routers, node)
}

// RouterBalancer is the TCP balancer behind the database's listener for
// pool "primary" or "replicas" (nil when that listener is not set), with
// no backends: they come from etcd. Health comes from the keepers too, so
// it has no check and no passive ejection. A node that leaves a pool has
// its connections closed: no client keeps writing to a node that is no
// longer the primary, or reading from a replica that fell behind. Both
// pools hold new connections for RouterHold while they have no node: a
// failover empties the primary's pool for about a lease, and the
// replicas' empties while its replicas are away or behind.
func (db *Database) RouterBalancer(pool string) *Balancer {
	if db.Listen == nil {
		return nil
	}
	b := &Balancer{Name: "database-" + pool, Mode: "tcp", ShutdownSessions: true}
	switch pool {
	case "primary":
		b.Listen, b.Algorithm = db.Listen.Primary, "roundrobin"
	case "replicas":
		b.Listen, b.Algorithm = db.Listen.Replicas, "leastconn"
	}
	if b.Listen == "" {
		return nil
	}
	b.Nodes = db.Routers
	b.Hold = db.RouterHold
	b.Passive.ConsecutiveFailures = new(0)
	defaultBalancer(b, newReport(""), "database.listen."+pool, "")
	return b
}

// IsDatabaseNode reports whether node runs a database keeper: it is one of
// database.nodes or of database.dr.nodes.
func (c *Config) IsDatabaseNode(node string) bool {
	db := c.Database
	if db == nil {
		return false
	}
	return slices.Contains(db.Nodes, node) || db.DR != nil && slices.Contains(db.DR.Nodes, node)
}

// ClusterNodes returns the database nodes of node's region: database.nodes
// for one of those, database.dr.nodes for a node of the standby cluster.
func (db *Database) ClusterNodes(node string) []string {
	if db.DR != nil && slices.Contains(db.DR.Nodes, node) {
		return db.DR.Nodes
	}
	return db.Nodes
}

// DatabaseRegions returns the regions of a database that spans two (database.dr):
// the region of database.nodes, then the standby cluster's; nil without
// dr.
func (c *Config) DatabaseRegions() []string {
	db := c.Database
	if db == nil || db.DR == nil || len(db.Nodes) == 0 || len(db.DR.Nodes) == 0 {
		return nil
	}
	home, _ := c.Node(db.Nodes[0])
	dr, _ := c.Node(db.DR.Nodes[0])
	return []string{home.Region, dr.Region}
}

// IsNameserver reports whether node serves the traffic manager (one of
// traffic.nameservers).
func (c *Config) IsNameserver(node string) bool {
	return c.Traffic != nil && slices.Contains(c.Traffic.Nameservers, node)
}
