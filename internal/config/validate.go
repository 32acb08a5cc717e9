package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Valid values of the enumerated keys.
var (
	modes           = []string{"http", "tcp"}
	algorithms      = []string{"roundrobin", "leastconn", "source", "random2"}
	proxyProtocols  = []string{"", "v1", "v2"}
	probeKinds      = []string{"tcp", "http", "https", "icmp", "exec"}
	engines         = []string{"postgres"}
	replModes       = []string{"async", "sync", "strict"}
	drModes         = []string{"async", "sync"}
	recordPolicies  = []string{"failover", "weighted", "hashed", "all", "cidr", "geo"}
	allDownModes    = []string{"open", "closed", "backup"}
	continents      = []string{"AF", "AN", "AS", "EU", "NA", "OC", "SA"}
	backupSchemes   = []string{"file", "s3"}
	endpointSchemes = []string{"http", "https"}
)

const notSupported = "is not yet supported by this version and is ignored"

// validator checks a decoded, defaulted Config. It reports through the
// report, so that every message points at the value it is about.
type validator struct {
	*report
	cfg       *Config
	nodes     map[string]*Node // first definition of each name
	nodeNames []string         // sorted
}

func validate(c *Config, r *report) {
	v := &validator{report: r, cfg: c, nodes: map[string]*Node{}}
	v.cluster()
	v.admin()
	v.regions()
	for _, name := range sortedKeys(c.Checks) {
		v.check(c.Checks[name], "checks."+name)
	}
	for _, name := range sortedKeys(c.Balancers) {
		v.balancer(c.Balancers[name], "balancers."+name)
	}
	v.coordination()
	v.database()
	v.traffic()
	if c.Objectives != nil {
		v.warnf("objectives", "this section %s", notSupported)
	}
	v.listeners()
	v.adminAddresses()
}

func (v *validator) cluster() {
	switch {
	case v.cfg.Cluster == "":
		v.errorf("cluster", "required: name the cluster, such as cluster: shop")
	case !isName(v.cfg.Cluster):
		v.errorf("cluster", "%q %s", v.cfg.Cluster, badName)
	}
}

const badName = "is not a valid name: use up to 63 letters, digits, '-', '_' and '.'"

func (v *validator) admin() {
	if p := v.cfg.Admin.Port; p < 1 || p > 65535 {
		v.errorf("admin.port", "%d is not a port between 1 and 65535", p)
	}
	if f := v.cfg.Admin.TokenFile; f != "" {
		v.readable("admin.token_file", f)
	}
}

func (v *validator) regions() {
	for _, rname := range sortedKeys(v.cfg.Regions) {
		rpath := "regions." + rname
		if !isName(rname) {
			v.keyErrorf(rpath, "%q %s", rname, badName)
		}
		nodes := v.cfg.Regions[rname].Nodes
		if len(nodes) == 0 {
			v.errorf(rpath+".nodes", "required: at least one node, such as nodes: {lb1: {address: 198.18.1.11}}")
		}
		for _, nname := range sortedKeys(nodes) {
			v.node(nodes[nname], rpath+".nodes."+nname)
		}
	}
	v.nodeNames = sortedKeys(v.nodes)
	if len(v.nodeNames) == 0 {
		v.errorf("regions", "required: at least one region with one node, such as regions: {east: {nodes: {lb1: {address: 198.18.1.11}}}}")
	}
}

func (v *validator) node(n *Node, path string) {
	if !isName(n.Name) {
		v.keyErrorf(path, "%q %s", n.Name, badName)
	}
	if prev, dup := v.nodes[n.Name]; dup {
		v.keyErrorf(path, "node %s is already defined in region %s: node names are unique across regions", n.Name, prev.Region)
	} else {
		v.nodes[n.Name] = n
	}
	if n.Address == "" {
		v.errorf(path+".address", "required: the node's IP address, such as address: 198.18.1.11")
	} else if _, err := netip.ParseAddr(n.Address); err != nil {
		v.errorf(path+".address", "%q is not an IP address (IPv4 or IPv6)", n.Address)
	}
	if v.given(path + ".admin") {
		if _, _, err := splitListen(n.Admin); err != nil {
			v.errorf(path+".admin", "%q is not a listen address: %v", n.Admin, err)
		}
	}
}

func (v *validator) balancer(b *Balancer, path string) {
	if !isName(b.Name) {
		v.keyErrorf(path, "%q %s", b.Name, badName)
	}
	v.nodeRefs(path+".nodes", b.Nodes, "the nodes that run this balancer, such as nodes: [lb1, lb2]")
	v.zones(path+".nodes", b.Nodes)
	if b.Listen == "" {
		v.errorf(path+".listen", `required: the address to listen on, such as listen: ":80"`)
	} else if _, _, err := splitListen(b.Listen); err != nil {
		v.errorf(path+".listen", "%q is not a listen address: %v", b.Listen, err)
	}
	modeOK := slices.Contains(modes, b.Mode)
	if !modeOK {
		v.errorf(path+".mode", "%s", notOneOf(b.Mode, modes...))
	}
	if !slices.Contains(algorithms, b.Algorithm) {
		v.errorf(path+".algorithm", "%s", notOneOf(b.Algorithm, algorithms...))
	}
	if b.Check != "" {
		v.checkRef(path+".check", b.Check)
	}
	v.backends(b, path+".backends")
	if modeOK {
		v.modeOptions(b, path)
	}
	v.trafficOptions(b, path)
	if b.VIP != nil {
		v.vip(b.VIP, b.Nodes, path+".vip")
	}
}

func (v *validator) backends(b *Balancer, path string) {
	if len(b.Backends) == 0 {
		v.errorf(path, "required: at least one backend, such as backends: [{address: 198.18.1.31:8080}]")
		return
	}
	byAddr, byName := map[string]int{}, map[string]int{}
	anyWeight := false
	for i, be := range b.Backends {
		bpath := index(path, i)
		j, addrDup := byAddr[be.Address]
		switch {
		case be.Address == "":
			v.errorf(bpath+".address", "required: the backend's HOST:PORT, such as address: 198.18.1.31:8080")
		case checkHostPort(be.Address) != nil:
			v.errorf(bpath+".address", "%q is not HOST:PORT: %v", be.Address, checkHostPort(be.Address))
		case addrDup:
			v.errorf(bpath+".address", "%q is already the address of %s: addresses are unique within a balancer", be.Address, index(path, j))
		default:
			byAddr[be.Address] = i
		}
		// A name defaulted from a repeated address repeats too; that was
		// just reported.
		if j, dup := byName[be.Name]; dup && !addrDup && be.Name != "" {
			v.errorf(bpath+".name", "%q is already the name of %s: names are unique within a balancer", be.Name, index(path, j))
		} else if !dup {
			byName[be.Name] = i
		}
		if w := *be.Weight; w < 0 || w > 256 {
			v.errorf(bpath+".weight", "%d is not between 0 and 256", w)
		} else if w > 0 {
			anyWeight = true
		}
		if be.MaxConn < 0 {
			v.errorf(bpath+".max_conn", "%d is negative: want 0 (no cap of its own) or more", be.MaxConn)
		}
	}
	if !anyWeight {
		v.warnf(path, "every backend has weight 0: the balancer has nowhere to send new traffic")
	}
}

// modeOptions checks the keys that only apply in one mode.
func (v *validator) modeOptions(b *Balancer, path string) {
	if b.TLS != nil {
		if b.Mode != "http" {
			v.errorf(path+".tls", "only applies in mode http (this balancer is mode %s)", b.Mode)
		}
		v.tlsFile(path+".tls.cert", b.TLS.Cert, "the certificate chain, PEM")
		v.tlsFile(path+".tls.key", b.TLS.Key, "the private key, PEM")
	}
	if s := b.Sticky; s != nil {
		if b.Mode != "http" {
			v.errorf(path+".sticky", "only applies in mode http (this balancer is mode %s)", b.Mode)
		}
		if s.Cookie == "" {
			v.errorf(path+".sticky.cookie", "required: the name of the cookie that pins a client, such as cookie: srv")
		} else if !isToken(s.Cookie) {
			v.errorf(path+".sticky.cookie", "%q is not a valid cookie name: use letters, digits and !#$%%&'*+-.^_`|~", s.Cookie)
		}
	}
	switch {
	case !slices.Contains(proxyProtocols, b.ProxyProtocol):
		v.errorf(path+".proxy_protocol", "%s", notOneOf(b.ProxyProtocol, "v1", "v2"))
	case b.ProxyProtocol != "" && b.Mode != "tcp":
		v.errorf(path+".proxy_protocol", "only applies in mode tcp (this balancer is mode %s)", b.Mode)
	}
	if b.ShutdownSessions && b.Mode != "tcp" {
		v.errorf(path+".shutdown_sessions", "only applies in mode tcp (this balancer is mode %s)", b.Mode)
	}
}

func (v *validator) tlsFile(path, file, what string) {
	if file == "" {
		v.errorf(path, "required when tls is set: %s", what)
		return
	}
	v.readable(path, file)
}

// readable checks that file can be opened now, so that a missing or
// unreadable file fails `haven check` rather than the first handshake.
func (v *validator) readable(path, file string) {
	f, err := os.Open(file)
	if err == nil {
		var st fs.FileInfo
		st, err = f.Stat()
		f.Close()
		if err == nil && st.IsDir() {
			err = errors.New("is a directory")
		}
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		v.errorf(path, "%q cannot be read: %v", file, err)
	}
}

// trafficOptions checks timeouts, limits, retries and passive health. The
// zero timeouts were refused when defaults were applied.
func (v *validator) trafficOptions(b *Balancer, path string) {
	if l := b.Limits; l.MaxConn < 0 {
		v.errorf(path+".limits.max_conn", "%d is negative: want 0 (unlimited) or more", l.MaxConn)
	}
	if q := b.Limits.QueueSize; q < 0 {
		v.errorf(path+".limits.queue_size", "%d is negative: want 1 or more", q)
	}
	if n := *b.Retries.Count; n < 0 {
		v.errorf(path+".retries.count", "%d is negative: want 0 (no retries) or more", n)
	}
	for i, m := range b.Retries.Methods {
		if !isToken(m) {
			v.errorf(index(path+".retries.methods", i), "%q is not an HTTP method", m)
		}
	}
	if n := *b.Passive.ConsecutiveFailures; n < 0 {
		v.errorf(path+".passive.consecutive_failures", "%d is negative: want 0 (off) or more", n)
	}
	if p := *b.Passive.MaxEjectedPercent; p < 0 || p > 100 {
		v.errorf(path+".passive.max_ejected_percent", "%d is not between 0 and 100", p)
	}
}

func (v *validator) check(ch *Check, path string) {
	if !isName(ch.Name) {
		v.keyErrorf(path, "%q %s", ch.Name, badName)
	}
	set := ch.probeKinds()
	switch {
	case len(set) == 0:
		v.errorf(path, "no probe: want exactly one of %s", strings.Join(probeKinds, ", "))
	case len(set) > 1:
		all := "all"
		if len(set) == 2 {
			all = "both"
		}
		v.errorf(path+"."+set[1], "%s are %s set: want exactly one of %s", andList(set), all, strings.Join(probeKinds, ", "))
	}
	if ch.Rise < 1 {
		v.errorf(path+".rise", "%d is less than 1", ch.Rise)
	}
	if ch.Fall < 1 {
		v.errorf(path+".fall", "%d is less than 1", ch.Fall)
	}
	if ch.Timeout > ch.Interval {
		v.errorf(path+".timeout", "%s is longer than the interval %s: a probe must end before the next one starts", ch.Timeout, ch.Interval)
	}
	if j := *ch.Jitter; j < 0 || j >= 1 {
		v.errorf(path+".jitter", "%v is not a fraction from 0 up to (not including) 1", j)
	}
	if ch.TCP != nil {
		v.probePort(path+".tcp.port", ch.TCP.Port)
	}
	v.httpProbe(ch.HTTP, path+".http", false)
	v.httpProbe(ch.HTTPS, path+".https", true)
	if ch.Exec != nil && (len(ch.Exec.Command) == 0 || ch.Exec.Command[0] == "") {
		v.errorf(path+".exec.command", "required: the program and its arguments, such as command: [/usr/local/bin/check-app, --quick]")
	}
}

// probeKinds lists the probe kinds set on ch, in the order of probeKinds.
func (ch *Check) probeKinds() []string {
	var set []string
	for i, on := range []bool{ch.TCP != nil, ch.HTTP != nil, ch.HTTPS != nil, ch.ICMP != nil, ch.Exec != nil} {
		if on {
			set = append(set, probeKinds[i])
		}
	}
	return set
}

func (v *validator) probePort(path string, port int) {
	if v.given(path) && (port < 1 || port > 65535) {
		v.errorf(path, "%d is not a port between 1 and 65535 (leave it out to probe the target's own port)", port)
	}
}

func (v *validator) httpProbe(p *HTTPProbe, path string, https bool) {
	if p == nil {
		return
	}
	v.probePort(path+".port", p.Port)
	if !isToken(p.Method) {
		v.errorf(path+".method", "%q is not an HTTP method", p.Method)
	}
	if !strings.HasPrefix(p.Path, "/") {
		v.errorf(path+".path", "%q does not start with /", p.Path)
	}
	if p.ExpectStatus != nil && len(p.ExpectStatus) == 0 {
		// Consumers read nil as 200-399; an empty list would accept nothing.
		v.errorf(path+".expect_status", "an empty list accepts no status: leave the key out for any 200-399")
	}
	for i, code := range p.ExpectStatus {
		if code < 100 || code > 599 {
			v.errorf(index(path+".expect_status", i), "%d is not an HTTP status code (100-599)", code)
		}
	}
	if p.ExpectRegex != "" {
		if _, err := regexp.Compile(p.ExpectRegex); err != nil {
			v.errorf(path+".expect_regex", "%q does not compile: %v", p.ExpectRegex, err)
		}
	}
	if !https {
		for _, key := range []string{"tls_verify", "sni"} {
			if v.given(path + "." + key) {
				v.errorf(path+"."+key, "only applies to https probes")
			}
		}
	}
}

// Bounds on a floating address's lease: shorter cannot be renewed reliably
// through etcd; longer makes failover slower than keepalived's defaults.
const (
	minVIPLease = 100 * time.Millisecond
	maxVIPLease = time.Minute
)

func (v *validator) vip(x *VIP, nodes []string, path string) {
	if x.Address == "" {
		v.errorf(path+".address", "required: the floating address with its prefix length, such as 198.18.1.100/24")
	} else if p, err := netip.ParsePrefix(x.Address); err != nil {
		v.errorf(path+".address", "%q is not an address with a prefix length, such as 198.18.1.100/24", x.Address)
	} else {
		for _, n := range nodes {
			if node, ok := v.nodes[n]; ok && node.Address == p.Addr().String() {
				v.errorf(path+".address", "%s is node %s's own address: a floating address must be one no node has", p.Addr(), n)
			}
		}
	}
	for _, n := range sortedKeys(x.Priority) {
		if !slices.Contains(nodes, n) {
			v.errorf(path+".priority."+n, "%s is not one of this balancer's nodes (%s)", n, strings.Join(nodes, ", "))
		}
		if p := x.Priority[n]; p < 1 || p > 255 {
			v.errorf(path+".priority."+n, "%d is not a priority between 1 and 255", p)
		}
	}
	if d := x.Lease.D(); d < minVIPLease || d > maxVIPLease {
		v.errorf(path+".lease", "%s is not between %s and %s", x.Lease, Duration(minVIPLease), Duration(maxVIPLease))
	}
	for key, cmd := range map[string][]string{"holder": x.Notify.Holder, "backup": x.Notify.Backup, "fault": x.Notify.Fault} {
		if v.given(path+".notify."+key) && (len(cmd) == 0 || cmd[0] == "") {
			v.errorf(path+".notify."+key, "want a command and its arguments, such as [/usr/local/bin/vip-moved, --quiet]")
		}
	}
	if v.cfg.Coordination == nil {
		v.errorf(path, "a floating address needs coordination: add a coordination section with members (embedded etcd) or endpoints")
	}
}

func (v *validator) coordination() {
	c := v.cfg.Coordination
	if c == nil {
		return
	}
	for _, key := range []string{"client_port", "peer_port"} {
		p := c.ClientPort
		if key == "peer_port" {
			p = c.PeerPort
		}
		if p < 1 || p > 65535 {
			v.errorf("coordination."+key, "%d is not a port between 1 and 65535", p)
		}
	}
	if c.ClientPort == c.PeerPort {
		v.errorf("coordination.peer_port", "%d is also the client port: etcd needs two ports", c.PeerPort)
	}
	if hb, et := c.Heartbeat.D(), c.ElectionTimeout.D(); et < 5*hb {
		v.errorf("coordination.election_timeout", "%s is less than 5 heartbeats (%s): etcd would hold elections while the leader is healthy", c.ElectionTimeout, Duration(5*hb))
	}
	if t := c.TLS; t != nil {
		for key, f := range map[string]string{"ca": t.CA, "cert": t.Cert, "key": t.Key} {
			if f == "" {
				v.errorf("coordination.tls."+key, "required: a PEM file; `haven certs` makes them")
			} else if !strings.Contains(f, "{node}") {
				v.readable("coordination.tls."+key, f)
			}
		}
	}
	switch {
	case len(c.Members) > 0 && len(c.Endpoints) > 0:
		v.errorf("coordination.endpoints", "give members (embedded etcd) or endpoints (external etcd), not both")
	case len(c.Endpoints) > 0:
		for i, e := range c.Endpoints {
			v.url(index("coordination.endpoints", i), e, endpointSchemes)
		}
	default:
		v.nodeRefs("coordination.members", c.Members, "the nodes that run embedded etcd, such as members: [db1, db2, db3], or endpoints")
		v.zones("coordination.members", c.Members)
	}
}

// Bounds on the database primary's lease: shorter cannot be renewed
// reliably through etcd while PostgreSQL is busy; longer makes failover
// slower than Patroni's tuned settings.
const (
	minDBLease = 500 * time.Millisecond
	maxDBLease = time.Minute
)

const maxTagPriority = 1000

var (
	// settingName is a PostgreSQL parameter name, with an optional custom
	// class ("pg_stat_statements.max").
	settingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)
	// roleName is a replication role that needs no quoting, in SQL or in
	// pg_hba.conf.
	roleName = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	// osUserName is a Linux user name, as useradd accepts it.
	osUserName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,31}$`)
)

// hbaTypes are the connection types of a pg_hba.conf line.
var hbaTypes = []string{"local", "host", "hostssl", "hostnossl", "hostgssenc", "hostnogssenc"}

func (v *validator) database() {
	db := v.cfg.Database
	if db == nil {
		return
	}
	if v.cfg.Coordination == nil {
		v.errorf("database", "the primary is chosen through coordination: add a coordination section with members (embedded etcd) or endpoints")
	}
	if !slices.Contains(engines, db.Engine) {
		v.errorf("database.engine", "%s", notOneOf(db.Engine, engines...))
	}
	v.nodeRefs("database.nodes", db.Nodes, "the nodes that run PostgreSQL, such as nodes: [db1, db2, db3]")
	v.zones("database.nodes", db.Nodes)
	if p := db.Port; p < 1 || p > 65535 {
		v.errorf("database.port", "%d is not a port between 1 and 65535", p)
	}
	v.nodePath("database.data_dir", db.DataDir)
	if db.Bindir != "" && !filepath.IsAbs(db.Bindir) {
		v.errorf("database.bindir", "%q is not an absolute path: give PostgreSQL's binary directory, such as /usr/lib/postgresql/15/bin, or leave the key out to search PATH, then pg_config", db.Bindir)
	}
	switch {
	case db.User == "root":
		v.errorf("database.user", "%q: PostgreSQL refuses to run as root; use an unprivileged user such as postgres", db.User)
	case !osUserName.MatchString(db.User):
		v.errorf("database.user", "%q is not a user name: use up to 32 letters, digits, '_', '.' and '-', starting with a letter or '_'", db.User)
	}
	if d := db.Lease.D(); d < minDBLease || d > maxDBLease {
		v.errorf("database.lease", "%s is not between %s and %s", db.Lease, Duration(minDBLease), Duration(maxDBLease))
	}
	v.settings(db)
	for i, line := range db.HBA {
		if f := strings.Fields(line); len(f) < 4 || strings.ContainsAny(line, "\n\r") || !slices.Contains(hbaTypes, f[0]) {
			v.errorf(index("database.hba", i), "%q is not a pg_hba.conf line: TYPE DATABASE USER [ADDRESS] METHOD, such as \"host app app 198.18.1.0/24 scram-sha-256\"", line)
		}
	}
	v.replication(db)
	v.tags(db)
	v.dbListen(db)
	if dr := db.DR; dr != nil {
		v.warnf("database.dr", "%s", notSupported)
		v.nodeRefs("database.dr.nodes", dr.Nodes, "the nodes of the standby cluster, such as nodes: [wdb1]")
		for i, n := range dr.Nodes {
			if slices.Contains(db.Nodes, n) {
				v.errorf(index("database.dr.nodes", i), "%s is also in database.nodes: a standby cluster needs its own nodes", n)
			}
		}
		if dr.Mode != "" && !slices.Contains(drModes, dr.Mode) {
			v.errorf("database.dr.mode", "%s", notOneOf(dr.Mode, drModes...))
		}
	}
	if b := db.Backup; b != nil {
		v.warnf("database.backup", "%s", notSupported)
		if b.Target == "" {
			v.errorf("database.backup.target", "required: where backups go, such as target: file:///var/lib/haven/backups or s3://bucket/prefix")
		} else {
			v.url("database.backup.target", b.Target, backupSchemes)
		}
	}
}

// dbListen checks the routers' listeners (listeners reports collisions,
// with PostgreSQL's own port among others).
func (v *validator) dbListen(db *Database) {
	l := db.Listen
	if l == nil {
		if len(db.Routers) > 0 {
			v.errorf("database.routers", "routers serve database.listen, which is not set: add listen: {primary: \":6432\"}")
		}
		return
	}
	v.nodeRefs("database.routers", db.Routers, "the nodes that proxy the database's clients, such as routers: [lb1, lb2]")
	if db.ReplicaMaxLag < 0 {
		v.errorf("database.replica_max_lag", "%s is negative", db.ReplicaMaxLag)
	}
	if l.Primary == "" {
		v.errorf("database.listen.primary", "required: where clients connect for the primary, such as primary: \":6432\"")
	}
	for _, f := range []struct{ key, addr string }{{"primary", l.Primary}, {"replicas", l.Replicas}} {
		if f.addr == "" {
			continue
		}
		if _, _, err := splitListen(f.addr); err != nil {
			v.errorf("database.listen."+f.key, "%q: %v", f.addr, err)
		}
	}
}

// nodePath checks a path in which "{node}" stands for the node name: a
// brace left after the placeholders is a misspelt one.
func (v *validator) nodePath(path, p string) {
	if strings.ContainsAny(strings.ReplaceAll(p, nodePlaceholder, ""), "{}") {
		v.errorf(path, "%q has a brace that is not part of %s: %s is the only placeholder, replaced by the node name", p, nodePlaceholder, nodePlaceholder)
	}
}

// settings checks database.settings, by the names as written.
func (v *validator) settings(db *Database) {
	for _, low := range sortedKeys(db.settingKeys) {
		names := db.settingKeys[low]
		for i, name := range names {
			path := "database.settings." + name
			if !settingName.MatchString(name) {
				v.keyErrorf(path, "%q is not a PostgreSQL parameter name: use letters, digits and '_', with one '.' after a custom class, such as pg_stat_statements.max", name)
				continue
			}
			if i > 0 {
				v.keyErrorf(path, "%q and %q are the same setting (%s): PostgreSQL ignores case in names; keep one", names[0], name, low)
				continue
			}
			switch val := db.Settings[low]; {
			case !v.given(path):
				v.keyErrorf(path, "no value: give one, such as %s: \"\" for an empty string", name)
			case strings.ContainsAny(val, "\n\r\x00"):
				v.errorf(path, "%q: a value cannot contain a newline or NUL", val)
			}
		}
	}
}

func (v *validator) replication(db *Database) {
	const path = "database.replication"
	r := db.Replication
	n := len(db.Nodes)
	switch r.Mode {
	case "sync", "strict":
		switch {
		case n == 1:
			v.errorf(path+".mode", "%s needs a synchronous standby, and database.nodes has one node: add nodes or use mode async", r.Mode)
		case n > 1 && (r.SyncStandbys < 1 || r.SyncStandbys > n-1):
			v.errorf(path+".sync_standbys", "%d is not between 1 and %d: in mode %s the primary needs that many other database nodes", r.SyncStandbys, n-1, r.Mode)
		}
		if v.given(path + ".max_lag_on_failover") {
			v.errorf(path+".max_lag_on_failover", "only applies in mode async (replication is mode %s, which promotes only a synchronous standby): remove it", r.Mode)
		}
	case "async":
		if r.SyncStandbys != 0 {
			v.errorf(path+".sync_standbys", "%d: mode async has no synchronous standbys; leave the key out, or use mode sync or strict", r.SyncStandbys)
		}
	default:
		v.errorf(path+".mode", "%s", notOneOf(r.Mode, replModes...))
		if r.SyncStandbys < 0 || (n > 0 && r.SyncStandbys >= n) {
			v.errorf(path+".sync_standbys", "%d is not between 0 and %d: the primary needs that many other nodes", r.SyncStandbys, max(n-1, 0))
		}
	}
	if !roleName.MatchString(r.User) {
		v.errorf(path+".user", "%q is not a role name: use up to 63 lowercase letters, digits and '_', starting with a letter or '_'", r.User)
	} else if r.User == "all" || r.User == "postgres" {
		v.errorf(path+".user", "%q is reserved (%s): name a role of its own, such as replicator", r.User, map[string]string{
			"all": "pg_hba.conf reads it as every role", "postgres": "the superuser haven connects as"}[r.User])
	}
	members := len(db.Nodes)
	if db.DR != nil {
		members = len(slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(db.Nodes), db.DR.Nodes...)))))
	}
	switch {
	case r.PasswordFile != "":
		v.secret(path+".password_file", r.PasswordFile)
	case members >= 2:
		v.errorf(path+".password_file", "required with %d database nodes (dr nodes included): a file holding the replication role's password, such as password_file: /etc/haven/pg-replication.password", members)
	}
}

// secret checks a file holding a secret: readable, and not empty once
// surrounding space is trimmed, as its reader does.
func (v *validator) secret(path, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		v.readable(path, file)
		return
	}
	if strings.TrimSpace(string(data)) == "" {
		v.errorf(path, "%q is empty: write the secret in it", file)
	}
}

func (v *validator) tags(db *Database) {
	all := len(db.Nodes) > 0
	for _, n := range db.Nodes {
		if t := db.Tags[n]; t == nil || !t.NoFailover {
			all = false
		}
	}
	for _, name := range sortedKeys(db.Tags) {
		path := "database.tags." + name
		if !slices.Contains(db.Nodes, name) {
			v.keyErrorf(path, "%s is not one of database.nodes (%s)", name, strings.Join(db.Nodes, ", "))
		}
		if p := *db.Tags[name].Priority; p < 0 || p > maxTagPriority {
			v.errorf(path+".priority", "%d is not a priority between 0 and %d", p, maxTagPriority)
		}
	}
	if all {
		v.warnf("database.tags", "every database node has nofailover: a lost primary is never replaced; clear it on at least one node")
	}
}

func (v *validator) traffic() {
	t := v.cfg.Traffic
	if t == nil {
		return
	}
	if t.Zone == "" {
		v.errorf("traffic.zone", "required: the DNS zone delegated to haven, such as zone: gslb.shop.example.")
	} else if !isDomain(t.Zone) {
		v.errorf("traffic.zone", "%q is not a domain name", t.Zone)
	}
	v.nodeRefs("traffic.nameservers", t.Nameservers, "the nodes that answer DNS, such as nameservers: [lb1, lb2]")
	if t.Listen != "" {
		if _, _, err := splitListen(t.Listen); err != nil {
			v.errorf("traffic.listen", "%q is not a listen address: %v", t.Listen, err)
		}
	}
	for _, name := range sortedKeys(t.Records) {
		v.record(t.Records[name], "traffic.records."+name)
	}
	if t.GeoIP != "" {
		if _, err := os.Stat(t.GeoIP); err != nil {
			v.errorf("traffic.geoip", "%q cannot be read: %v", t.GeoIP, errors.Unwrap(err))
		}
	}
	if k := t.TSIG; k != nil {
		if !isDomain(k.Name) {
			v.errorf("traffic.tsig.name", "%q is not a key name: use a domain name, such as xfr.%s", k.Name, t.Zone)
		}
		if k.SecretFile == "" {
			v.errorf("traffic.tsig.secret_file", "required: the file holding the key's base64 secret (openssl rand -base64 32 > tsig.secret)")
		} else if b, err := os.ReadFile(k.SecretFile); err != nil {
			v.errorf("traffic.tsig.secret_file", "%q cannot be read: %v", k.SecretFile, errors.Unwrap(err))
		} else if sec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err != nil || len(sec) < 16 {
			v.errorf("traffic.tsig.secret_file", "%s does not hold a base64 secret of at least 16 bytes (openssl rand -base64 32)", k.SecretFile)
		}
	}
}

// targetAnswer checks that a target is an address or a CNAME.
func (v *validator) targetAnswer(tg *Target, path, policy string) {
	switch {
	case tg.Address != "" && tg.CNAME != "":
		v.errorf(path, "give address or cname, not both")
	case tg.CNAME != "":
		if !isDomain(tg.CNAME) {
			v.errorf(path+".cname", "%q is not a domain name", tg.CNAME)
		}
		if policy == "all" {
			v.errorf(path+".cname", "policy all answers every healthy target together, and a CNAME cannot share its name with other records: use failover or weighted")
		}
	default:
		if _, err := netip.ParseAddr(tg.Address); err != nil {
			v.errorf(path+".address", "%q is not an IP address (IPv4 or IPv6); for a name, use cname", tg.Address)
		}
	}
}

// follows checks the haven state a target follows.
func (v *validator) follows(tg *Target, path string) {
	f, path := tg.Follows, path+".follows"
	set := 0
	for _, given := range []bool{f.Balancer != "", f.VIP != "", f.Database} {
		if given {
			set++
		}
	}
	switch {
	case set != 1:
		v.errorf(path, "give exactly one of balancer, vip or database, such as follows: {balancer: web, region: east}")
	case tg.Check != "":
		v.errorf(path, "a target takes its health from a check or from follows, not both")
	case v.cfg.Coordination == nil:
		v.errorf(path, "follows reads haven's state from etcd: it needs the coordination section")
	case f.Balancer != "" && v.cfg.Balancers[f.Balancer] == nil:
		v.errorf(path+".balancer", "%s", undefined("balancer", f.Balancer, sortedKeys(v.cfg.Balancers)))
	case f.VIP != "" && (v.cfg.Balancers[f.VIP] == nil || v.cfg.Balancers[f.VIP].VIP == nil):
		v.errorf(path+".vip", "%q is not a balancer with a vip section", f.VIP)
	case f.Database && v.cfg.Database == nil:
		v.errorf(path+".database", "there is no database section to follow: add one, or follow a balancer or a vip")
	}
	if f.Region != "" && v.cfg.Regions[f.Region] == nil {
		v.errorf(path+".region", "%s", undefined("region", f.Region, sortedKeys(v.cfg.Regions)))
	}
}

// geoTarget checks a target's countries and continents.
func (v *validator) geoTarget(tg *Target, path, policy string) {
	for j, c := range tg.Countries {
		if len(c) != 2 || strings.ToUpper(c) != c || strings.ToLower(c) == c {
			v.errorf(index(path+".countries", j), "%q is not an ISO 3166-1 country code such as DE or US", c)
		}
	}
	for j, c := range tg.Continents {
		if !slices.Contains(continents, c) {
			v.errorf(index(path+".continents", j), "%s", notOneOf(c, continents...))
		}
	}
	if len(tg.Countries)+len(tg.Continents) > 0 && policy != "geo" {
		v.errorf(path, "countries and continents only apply to the geo policy (this record's is %s)", policy)
	}
}

// allDown checks what a record answers with no healthy target.
func (v *validator) allDown(rec *Record, path string) {
	if !slices.Contains(allDownModes, rec.AllDown) {
		v.errorf(path+".all_down", "%s", notOneOf(rec.AllDown, allDownModes...))
	}
	switch {
	case rec.AllDown == "backup" && len(rec.Backup) == 0:
		v.errorf(path+".backup", "required by all_down: backup: the answers when every target is down, such as backup: [198.18.9.1]")
	case rec.AllDown != "backup" && len(rec.Backup) > 0:
		v.errorf(path+".backup", "only answers under all_down: backup (this record's is %s)", rec.AllDown)
	}
	names := 0
	for i, b := range rec.Backup {
		if _, err := netip.ParseAddr(b); err == nil {
			continue
		}
		names++
		if !isDomain(b) {
			v.errorf(index(path+".backup", i), "%q is neither an IP address nor a domain name", b)
		}
	}
	if names > 0 && len(rec.Backup) > 1 {
		v.errorf(path+".backup", "the backup answer is every entry together, and a CNAME cannot share its name: give one domain name or only addresses")
	}
	if rec.MaxAnswers != nil {
		switch {
		case *rec.MaxAnswers < 0:
			v.errorf(path+".max_answers", "%d is negative", *rec.MaxAnswers)
		case rec.Policy != "all":
			v.errorf(path+".max_answers", "only applies to the all policy (this record's is %s)", rec.Policy)
		}
	}
}

func (v *validator) record(rec *Record, path string) {
	v.allDown(rec, path)
	switch {
	case !slices.Contains(recordPolicies, rec.Policy):
		v.errorf(path+".policy", "%s", notOneOf(rec.Policy, recordPolicies...))
	case rec.Policy == "geo" && v.cfg.Traffic.GeoIP == "":
		v.errorf(path+".policy", "geo locates clients in a MaxMind-format database: set traffic.geoip to its file (such as GeoLite2-Country.mmdb)")
	}
	if rec.Policy == "geo" && !slices.ContainsFunc(rec.Targets, func(tg *Target) bool { return tg != nil && len(tg.Countries)+len(tg.Continents) > 0 }) {
		v.errorf(path+".policy", "geo needs countries or continents on at least one target, such as countries: [DE, FR]")
	}
	if len(rec.Targets) == 0 {
		v.errorf(path+".targets", "required: at least one target, such as targets: [{name: east, address: 198.18.1.100}]")
	}
	if rec.Policy == "cidr" && !slices.ContainsFunc(rec.Targets, func(tg *Target) bool { return tg != nil && len(tg.Subnets) > 0 }) {
		v.errorf(path+".policy", "cidr needs subnets on at least one target, such as subnets: [10.0.0.0/8]")
	}
	names := map[string]bool{}
	for i, tg := range rec.Targets {
		tpath := index(path+".targets", i)
		switch {
		case tg.Name == "":
			v.errorf(tpath+".name", "required: a name for this answer, such as name: east")
		case names[tg.Name]:
			v.errorf(tpath+".name", "%q is already the name of another target", tg.Name)
		}
		names[tg.Name] = true
		v.targetAnswer(tg, tpath, rec.Policy)
		if tg.Follows != nil {
			v.follows(tg, tpath)
		}
		if tg.Check != "" {
			v.checkRef(tpath+".check", tg.Check)
			if ch := v.cfg.Checks[tg.Check]; ch != nil && ch.ICMP != nil && tg.CNAME != "" {
				v.errorf(tpath+".check", "check %s pings, and a cname target has no address to ping: use a tcp or http check", tg.Check)
			}
			if ch := v.cfg.Checks[tg.Check]; ch != nil && ch.TCP != nil && ch.TCP.Port == 0 {
				v.errorf(tpath+".check", "check %s probes TCP without a port, and a target is only an address: set checks.%s.tcp.port", tg.Check, tg.Check)
			}
		}
		if tg.Weight < 0 {
			v.errorf(tpath+".weight", "%d is negative", tg.Weight)
		}
		for j, sn := range tg.Subnets {
			spath := index(tpath+".subnets", j)
			pfx, err := netip.ParsePrefix(sn)
			switch {
			case err != nil:
				v.errorf(spath, "%q is not a subnet such as 10.0.0.0/8", sn)
			case pfx.Masked() != pfx:
				v.errorf(spath, "%q has host bits set: write %s", sn, pfx.Masked())
			}
		}
		if len(tg.Subnets) > 0 && rec.Policy != "cidr" {
			v.errorf(tpath+".subnets", "only applies to the cidr policy (this record's is %s)", rec.Policy)
		}
		v.geoTarget(tg, tpath, rec.Policy)
	}
}

// nodeRefs checks a list of node names: not empty, no repeats, each defined.
func (v *validator) nodeRefs(path string, names []string, what string) {
	if len(names) == 0 {
		v.errorf(path, "required: %s", what)
		return
	}
	seen := map[string]bool{}
	for i, name := range names {
		ipath := index(path, i)
		if seen[name] {
			v.errorf(ipath, "%s is listed twice", name)
			continue
		}
		seen[name] = true
		if _, ok := v.nodes[name]; !ok {
			v.errorf(ipath, "%s", undefined("node", name, v.nodeNames))
		}
	}
}

func (v *validator) checkRef(path, name string) {
	if _, ok := v.cfg.Checks[name]; !ok {
		v.errorf(path, "%s", undefined("check", name, sortedKeys(v.cfg.Checks)))
	}
}

// undefined is the message for a reference to a name that is not defined.
func undefined(kind, name string, defined []string) string {
	if len(defined) == 0 {
		return fmt.Sprintf("%q is not a %s: no %ss are defined", name, kind, kind)
	}
	hint := ""
	if s := closest(name, defined); s != "" {
		hint = fmt.Sprintf(" (did you mean %s?)", s)
	}
	return fmt.Sprintf("%q is not a %s%s; %ss are %s", name, kind, hint, kind, strings.Join(defined, ", "))
}

// zones warns when members of a redundant group share a zone of a region:
// one zone failure would take them together. Members without a zone are
// left out, as nothing is known about where they are.
func (v *validator) zones(path string, members []string) {
	type place struct{ region, zone string }
	groups := map[place][]string{}
	var order []place
	for _, name := range members {
		n, ok := v.nodes[name]
		if !ok || n.Zone == "" || slices.Contains(groups[place{n.Region, n.Zone}], name) {
			continue
		}
		p := place{n.Region, n.Zone}
		if groups[p] == nil {
			order = append(order, p)
		}
		groups[p] = append(groups[p], name)
	}
	for _, p := range order {
		names := groups[p]
		switch {
		case len(names) == 2:
			v.warnf(path, "%s are both in zone %s of region %s; a zone failure takes both (spread them across zones)", andList(names), p.zone, p.region)
		case len(names) > 2:
			v.warnf(path, "%s are all in zone %s of region %s; a zone failure takes all of them (spread them across zones)", andList(names), p.zone, p.region)
		}
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

// checkHostPort checks a backend address, HOST:PORT where HOST is an IP
// address or a DNS name.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want HOST:PORT, such as 198.18.1.31:8080 or app1.internal:8080")
	}
	if _, err := parsePort(port); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(host); err != nil && !isDomain(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

func parsePort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("port %q is not a number between 1 and 65535", s)
	}
	return p, nil
}

// isDomain reports whether s is a DNS name: dot-separated labels of
// letters, digits and inner hyphens, with an optional final dot.
func isDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// url checks a URL's scheme; the rest is left to the component that uses it.
func (v *validator) url(path, s string, schemes []string) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || rest == "" || !slices.Contains(schemes, scheme) {
		v.errorf(path, "%q is not a URL with scheme %s", s, strings.Join(schemes, " or "))
	}
}
