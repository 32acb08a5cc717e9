package doctor

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strconv"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/gtm"
)

// Linux capability numbers (capability.h) of the capabilities roles use.
const (
	capChown          = 0
	capDacOverride    = 1
	capFowner         = 3
	capKill           = 5
	capSetgid         = 6
	capSetuid         = 7
	capNetBindService = 10
	capNetAdmin       = 12
	capNetRaw         = 13
)

var capNames = map[int]string{
	capChown: "CAP_CHOWN", capDacOverride: "CAP_DAC_OVERRIDE", capFowner: "CAP_FOWNER", capKill: "CAP_KILL",
	capSetgid: "CAP_SETGID", capSetuid: "CAP_SETUID", capNetBindService: "CAP_NET_BIND_SERVICE",
	capNetAdmin: "CAP_NET_ADMIN", capNetRaw: "CAP_NET_RAW",
}

// need is one thing a node's roles need, and the role that needs it.
type need struct {
	cap int
	why string
}

// listen is a port the node's agent will listen on.
type listen struct {
	addr  string // HOST:PORT, HOST may be empty
	proto string // tcp or udp
	why   string // the role, as "balancer web"
	key   string // the configuration key that sets it
}

// peer is an address the node's agent must reach.
type peer struct {
	addr string
	what string // "db2's admin API"
	node string // "db2"; "" for an external etcd
}

// disk is a directory the node writes, with the key that sets it.
type disk struct {
	path, key string
}

// needs is what node's roles ask of its machine.
type needs struct {
	node     *config.Node
	adminTLS bool // the admin API speaks HTTPS
	caps     []need
	fences   []string // the roles that build nftables fences
	listens  []listen
	peers    []peer
	disks    []disk
	bricks   []disk   // volumes' bricks on this storage node
	mounts   []string // the volumes this node mounts, by key
}

// needsOf reads node's roles in cfg.
func needsOf(cfg *config.Config, n *config.Node) needs {
	nd := needs{node: n, adminTLS: cfg.Admin.TLS != nil}
	capFor := func(c int, why string) { nd.caps = append(nd.caps, need{c, why}) }
	listenOn := func(addr, proto, why, key string) {
		nd.listens = append(nd.listens, listen{addr, proto, why, key})
		if _, p, err := net.SplitHostPort(addr); err == nil {
			if port, _ := strconv.Atoi(p); port > 0 && port < 1024 {
				capFor(capNetBindService, fmt.Sprintf("%s listens on port %d", why, port))
			}
		}
	}

	listenOn(n.Admin, "tcp", "the admin API", "regions."+n.Region+".nodes."+n.Name+".admin")
	for _, other := range cfg.NodeNames() {
		if o, _ := cfg.Node(other); other != n.Name && o.Admin != "" {
			nd.peers = append(nd.peers, peer{o.Admin, other + "'s admin API", other})
		}
	}
	for _, b := range cfg.BalancersOn(n.Name) {
		listenOn(b.Listen, "tcp", "balancer "+b.Name, "balancers."+b.Name+".listen")
		if b.VIP != nil {
			why := fmt.Sprintf("balancer %s's floating address %s", b.Name, b.VIP.Address)
			capFor(capNetAdmin, why)
			capFor(capNetRaw, why+" (gratuitous ARP, unsolicited NA)")
			nd.fences = append(nd.fences, why)
		}
	}
	for _, scope := range []*config.Coordination{cfg.CoordinationOf(n.Name), cfg.GlobalCoordination()} {
		if scope == nil {
			continue
		}
		member := slices.Contains(scope.Members, n.Name)
		global := scope == cfg.GlobalCoordination()
		if global && !member {
			continue // only the global scope's members use it directly
		}
		what := "the coordination member"
		if global {
			what = "the global coordination member"
		}
		if member {
			listenOn(net.JoinHostPort(n.Address, strconv.Itoa(scope.ClientPort)), "tcp", what+" (etcd clients)", "coordination.client_port")
			listenOn(net.JoinHostPort(n.Address, strconv.Itoa(scope.PeerPort)), "tcp", what+" (etcd peers)", "coordination.peer_port")
			nd.disks = append(nd.disks, disk{config.NodePath(scope.DataDir, n.Name), "coordination.data_dir"})
		}
		// Every node is a client of its scope's members; a member is also
		// their peer.
		for _, m := range scope.Members {
			if o, ok := cfg.Node(m); ok && m != n.Name {
				nd.peers = append(nd.peers, peer{net.JoinHostPort(o.Address, strconv.Itoa(scope.ClientPort)), m + "'s etcd client port", m})
				if member {
					nd.peers = append(nd.peers, peer{net.JoinHostPort(o.Address, strconv.Itoa(scope.PeerPort)), m + "'s etcd peer port", m})
				}
			}
		}
		for _, ep := range scope.Endpoints {
			if u, err := url.Parse(ep); err == nil && u.Host != "" {
				nd.peers = append(nd.peers, peer{u.Host, "etcd endpoint " + ep, ""})
			}
		}
	}
	if db := cfg.Database; db != nil && cfg.IsDatabaseNode(n.Name) {
		listenOn(net.JoinHostPort("", strconv.Itoa(db.Port)), "tcp", "PostgreSQL", "database.port")
		for _, c := range []int{capSetuid, capSetgid, capChown, capFowner, capDacOverride, capKill} {
			capFor(c, "PostgreSQL runs as "+db.User+" in a data directory it owns")
		}
		if db.FenceWrites() {
			capFor(capNetAdmin, "the database's write fence")
			nd.fences = append(nd.fences, "the database's write fence")
		}
		nd.disks = append(nd.disks, disk{db.NodeDataDir(n.Name), "database.data_dir"})
		if db.Backup != nil {
			for _, r := range db.Backup.Repositories {
				if u, err := url.Parse(r.URL); err == nil && u.Scheme == "file" {
					nd.disks = append(nd.disks, disk{u.Path, "database.backup.repositories " + r.Name})
				}
			}
		}
	}
	if cfg.RoutesOn(n.Name) {
		l := cfg.Database.Listen
		listenOn(l.Primary, "tcp", "the database router (primary)", "database.listen.primary")
		if l.Replicas != "" {
			listenOn(l.Replicas, "tcp", "the database router (replicas)", "database.listen.replicas")
		}
	}
	if cfg.IsNameserver(n.Name) {
		addr := cfg.Traffic.Listen
		if addr == "" {
			addr = gtm.DefaultListen
		}
		listenOn(addr, "udp", "the DNS traffic manager", "traffic.listen")
		listenOn(addr, "tcp", "the DNS traffic manager", "traffic.listen")
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Volumes)) {
		v := cfg.Volumes[name]
		if slices.Contains(v.Servers, n.Name) {
			nd.disks = append(nd.disks, disk{config.NodePath(v.Brick, n.Name), "volumes." + name + ".brick"},
				disk{config.NodePath(v.GlusterdDir, n.Name), "volumes." + name + ".glusterd_dir"})
			nd.bricks = append(nd.bricks, disk{config.NodePath(v.Brick, n.Name), "volumes." + name + ".brick"})
		}
		if v.Mount != nil && slices.Contains(v.Mount.Nodes, n.Name) {
			nd.mounts = append(nd.mounts, "volumes."+name+".mount")
		}
	}
	if cfg.Drills != nil && cfg.Drills.Enabled {
		capFor(capNetAdmin, "drills' drop and loss faults (drills.enabled)")
		capFor(capKill, "drills' kill and pause faults (drills.enabled)")
	}
	return nd
}
