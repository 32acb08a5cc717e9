package config

import (
	"fmt"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Defaults, documented in docs/configuration.md; change both together.
const (
	defaultAdminPort = 9900

	defaultInterval        = 2 * time.Second
	defaultTimeout         = time.Second
	minFastInterval        = 100 * time.Millisecond
	defaultRise            = 2
	defaultFall            = 3
	defaultJitter          = 0.1
	defaultProbeMethod     = "GET"
	defaultProbePath       = "/"
	defaultProbeBodyLimit  = 64 << 10
	defaultMode            = "http"
	defaultAlgorithm       = "roundrobin"
	defaultWeight          = 1
	defaultConnectTimeout  = 2 * time.Second
	defaultHeaderTimeout   = 10 * time.Second
	defaultClientTimeout   = 60 * time.Second
	defaultServerTimeout   = 60 * time.Second
	defaultQueueTimeout    = 5 * time.Second
	defaultTunnelTimeout   = time.Hour
	defaultMaxHeaderBytes  = 16 << 10 // HAProxy's tune.bufsize
	defaultMaxHeaders      = 100      // as many as HAProxy's tune.http.maxhdr 101 admits
	defaultQueueSize       = 1024
	defaultRetries         = 2
	defaultPassiveFailures = 5
	defaultMaxEjectedPct   = 50
	defaultEjectFor        = 10 * time.Second

	defaultVIPPriority     = 100
	defaultVIPLease        = 500 * time.Millisecond
	defaultNotifyTimeout   = 10 * time.Second
	defaultClientPort      = 2379
	defaultPeerPort        = 2380
	defaultDataDir         = "/var/lib/haven/{node}/etcd"
	defaultHeartbeat       = 50 * time.Millisecond
	defaultElectionTimeout = 500 * time.Millisecond
	defaultRTOMin          = 20 * time.Millisecond
	defaultJoinTimeout     = time.Minute

	// The global scope's (coordination.global) own defaults: ports beside
	// a region scope's member on the same node, and etcd's own raft
	// timings, meant for a WAN (its tuning guide sets the heartbeat near
	// the round trip between members and the election timeout ten times
	// that), where the LAN's 50ms/500ms would hold elections at every
	// burst of loss. Its rto_min is the kernel's: a 20ms floor on a link
	// whose round trip is tens of milliseconds retransmits spuriously.
	defaultGlobalClientPort      = 2381
	defaultGlobalPeerPort        = 2382
	defaultGlobalDataDir         = "/var/lib/haven/{node}/etcd-global"
	defaultGlobalHeartbeat       = 100 * time.Millisecond
	defaultGlobalElectionTimeout = time.Second

	defaultEngine    = "postgres"
	defaultDBPort    = 5432
	defaultDBDataDir = "/var/lib/haven/pg"
	defaultDBUser    = "postgres"
	defaultDBLease   = 2 * time.Second
	defaultReplMode  = "async"
	// A Galera node: MariaDB's ports, Debian's user, and a writer
	// record as short as a floating address's (the writer is a
	// preference, not a fence: two writers cost certification
	// conflicts, not data; a shorter lease moves the writes sooner
	// when its holder dies, measured in bench/galera).
	defaultGaleraPort       = 3306
	defaultGaleraDataDir    = "/var/lib/haven/galera"
	defaultGaleraUser       = "mysql"
	defaultGaleraLease      = 500 * time.Millisecond
	defaultGroupPort        = 4567
	defaultISTPort          = 4568
	defaultSSTPort          = 4444
	defaultSSTMethod        = "mariabackup"
	defaultGCacheSize       = 128 << 20
	defaultFailureDetection = 5 * time.Second
	defaultGaleraCheck      = 500 * time.Millisecond
	defaultWriters          = "one"
	defaultSyncStandbys     = 1
	defaultMaxLag           = 1 << 20
	defaultReplUser         = "replicator"
	// defaultRepository names the repository that database.backup.target
	// stands for.
	defaultRepository     = "main"
	defaultBackupParallel = 2
	defaultDBTagPriority  = 100
	defaultReplicaMaxLag  = 1 << 20
	defaultRouterHold     = 5 * time.Second

	defaultDRMode     = "async"
	defaultDRFailover = "manual"
	// defaultDRMaxLag is dr.max_lag without objectives.rpo: a standby a
	// few seconds behind under a steady writer is a standby that works.
	defaultDRMaxLag = 5 * time.Second
	// defaultDRLease is the active-region record's lease: seconds, not
	// the database lease's milliseconds, so that a WAN's slow renewals
	// and a global leader election do not cost the active region its
	// writes; a lost region is replaced about one lease later.
	defaultDRLease = 10 * time.Second
)

// applyDefaults fills every defaulted field that was left out and copies
// names from map keys. Relative file paths are resolved against dir, the
// directory of the file, so that they do not depend on the agent's working
// directory.
func applyDefaults(c *Config, r *report, dir string) {
	r.defaultInt(&c.Admin.Port, "admin.port", defaultAdminPort)
	c.Admin.TokenFile = resolvePath(dir, c.Admin.TokenFile)
	c.Admin.ReadTokenFile = resolvePath(dir, c.Admin.ReadTokenFile)
	if t := c.Admin.TLS; t != nil {
		t.CA, t.Cert, t.Key = resolvePath(dir, t.CA), resolvePath(dir, t.Cert), resolvePath(dir, t.Key)
	}
	for _, rname := range sortedKeys(c.Regions) {
		for _, nname := range sortedKeys(c.Regions[rname].Nodes) {
			n := c.Regions[rname].Nodes[nname]
			n.Name, n.Region = nname, rname
			if n.Admin == "" && n.Address != "" {
				n.Admin = net.JoinHostPort(n.Address, strconv.Itoa(c.Admin.Port))
			}
		}
	}
	for _, name := range sortedKeys(c.Checks) {
		c.Checks[name].Name = name
		defaultCheck(c.Checks[name], r, "checks."+name)
	}
	for _, name := range sortedKeys(c.Balancers) {
		c.Balancers[name].Name = name
		defaultBalancer(c.Balancers[name], r, "balancers."+name, dir)
	}
	for _, name := range sortedKeys(c.Checks) {
		if vp := c.Checks[name].Volume; vp != nil {
			r.defaultInt(&vp.Port, "checks."+name+".volume.port", c.Admin.Port)
			if t := c.Admin.TLS; t != nil {
				vp.TLS, vp.CA = true, t.CA
			}
		}
	}
	for _, name := range sortedKeys(c.Volumes) {
		if v := c.Volumes[name]; v != nil {
			v.Name = name
			defaultVolume(v, r, dir)
		}
	}
	if c.Coordination != nil {
		defaultCoordination(c.Coordination, r, dir)
	}
	if c.Database != nil {
		defaultDatabase(c.Database, r, dir, c.Cluster)
		if c.Database.DR != nil {
			defaultDR(c.Database.DR, r, c.Objectives)
		}
	}
	if c.Traffic != nil {
		defaultTraffic(c.Traffic, r, dir)
	}
	if c.Drills != nil {
		c.Drills.DSNFile = resolvePath(dir, c.Drills.DSNFile)
		r.defaultDuration(&c.Drills.MaxDuration, "drills.max_duration", defaultDrillMaxDuration)
		for i, s := range c.Drills.Schedule {
			if s != nil {
				r.defaultDuration(&s.For, fmt.Sprintf("drills.schedule[%d].for", i), defaultDrillFaultFor)
			}
		}
	}
}

// A volume's defaults: glusterd's state and the bricks beside etcd's data,
// and a ping timeout of seconds (GlusterFS's own, 42s, is how long every
// client stalls when a server dies without closing its connections:
// measured in bench/volume).
const (
	defaultVolumeEngine      = "glusterfs"
	defaultVolumeBrick       = "/var/lib/haven/{node}/bricks/"
	defaultVolumeGlusterdDir = "/var/lib/haven/{node}/glusterd"
	defaultVolumePingTimeout = 2 * time.Second
	defaultVolumeCopyEvery   = time.Minute
)

func defaultVolume(v *Volume, r *report, dir string) {
	path := "volumes." + v.Name
	if v.Engine == "" {
		v.Engine = defaultVolumeEngine
	}
	if v.Brick == "" {
		v.Brick = defaultVolumeBrick + v.Name
	}
	// Clean: glusterd names a brick by its canonical path, and haven
	// compares the two.
	v.Brick = filepath.Clean(resolvePath(dir, v.Brick))
	if v.GlusterdDir == "" {
		v.GlusterdDir = defaultVolumeGlusterdDir
	}
	v.GlusterdDir = filepath.Clean(resolvePath(dir, v.GlusterdDir))
	if v.Mount != nil && v.Mount.Path != "" {
		v.Mount.Path = filepath.Clean(resolvePath(dir, v.Mount.Path))
	}
	r.defaultDuration(&v.PingTimeout, path+".ping_timeout", defaultVolumePingTimeout)
	if c := v.Copy; c != nil {
		r.defaultDuration(&c.Every, path+".copy.every", defaultVolumeCopyEvery)
		if c.Repository != nil {
			c.Repository.CredentialsFile = resolvePath(dir, c.Repository.CredentialsFile)
			if c.Repository.Name == "" {
				c.Repository.Name = "volume " + v.Name
			}
		}
	}
}

// defaultDrillMaxDuration bounds a fault: long enough for a region's
// loss, short enough that a forgotten one ends.
const defaultDrillMaxDuration = 10 * time.Minute

// defaultDrillFaultFor is a scheduled drill's fault: longer than a
// failover takes, short enough to be a drill.
const defaultDrillFaultFor = 10 * time.Second

// defaultMaxAnswers is the all policy's cap: eight addresses fit a UDP
// answer with room to spare, as Route 53's multivalue answers do.
const defaultMaxAnswers = 8

// defaultTraffic gives every target left without a weight the weight 1
// (under the weighted policy a written 0 takes no answers), each record
// its all-down mode, and the all policy its answer cap.
// defaultQuerySample logs one query in a hundred: enough to see who asks
// what, at a cost nobody measures.
const defaultQuerySample = 100

func defaultTraffic(t *Traffic, r *report, dir string) {
	if t.TSIG != nil {
		t.TSIG.SecretFile = resolvePath(dir, t.TSIG.SecretFile)
	}
	if t.GeoIP != "" {
		t.GeoIP = resolvePath(dir, t.GeoIP)
	}
	if t.QueryLog != nil && t.QueryLog.Sample == 0 {
		t.QueryLog.Sample = defaultQuerySample
	}
	for _, name := range sortedKeys(t.Records) {
		rec := t.Records[name]
		if rec.AllDown == "" {
			rec.AllDown = "open"
			if len(rec.Backup) > 0 {
				rec.AllDown = "backup"
			}
		}
		if rec.MaxAnswers == nil && rec.Policy == "all" {
			n := defaultMaxAnswers
			rec.MaxAnswers = &n
		}
		for i, tg := range rec.Targets {
			if tg != nil && !r.given(fmt.Sprintf("traffic.records.%s.targets[%d].weight", name, i)) {
				tg.Weight = 1
			}
		}
	}
}

func defaultDatabase(db *Database, r *report, dir, cluster string) {
	if db.Engine == "" {
		db.Engine = defaultEngine
	}
	port, dataDir, user, lease := defaultDBPort, defaultDBDataDir, defaultDBUser, defaultDBLease
	if db.Engine == "galera" {
		port, dataDir, user, lease = defaultGaleraPort, defaultGaleraDataDir, defaultGaleraUser, defaultGaleraLease
		if db.Galera == nil {
			db.Galera = &Galera{}
		}
		defaultGalera(db.Galera, r, cluster)
	}
	r.defaultInt(&db.Port, "database.port", port)
	if db.DataDir == "" {
		db.DataDir = dataDir
	}
	db.DataDir = resolvePath(dir, db.DataDir)
	if db.User == "" {
		db.User = user
	}
	r.defaultDuration(&db.Lease, "database.lease", lease)
	defaultSettings(db, r)
	if db.Replication == nil {
		db.Replication = &Replication{}
	}
	rp := db.Replication
	if rp.Mode == "" {
		rp.Mode = defaultReplMode
	}
	switch rp.Mode {
	case "sync", "strict":
		// A written 0 is left for validation, which says what is valid.
		if rp.SyncStandbys == 0 && !r.given("database.replication.sync_standbys") {
			rp.SyncStandbys = defaultSyncStandbys
		}
	case "async":
		r.defaultSize(&rp.MaxLagOnFailover, "database.replication.max_lag_on_failover", defaultMaxLag)
	}
	if rp.User == "" {
		rp.User = defaultReplUser
	}
	rp.PasswordFile = resolvePath(dir, rp.PasswordFile)
	if b := db.Backup; b != nil {
		// target is validated where it is written; the repository made
		// of it is checked as every other one is.
		if b.Target != "" && len(b.Repositories) == 0 {
			b.Repositories = []*BackupRepository{{Name: defaultRepository, URL: b.Target}}
		}
		for _, repo := range b.Repositories {
			if repo != nil {
				repo.CredentialsFile = resolvePath(dir, repo.CredentialsFile)
			}
		}
		b.EncryptionKeyFile = resolvePath(dir, b.EncryptionKeyFile)
		if b.Archive == "" {
			b.Archive = "async"
		}
		if b.Compression == "" {
			b.Compression = "lz4"
		}
		if b.Parallel == 0 {
			b.Parallel = defaultBackupParallel
		}
		if b.From == "" {
			b.From = "replica"
		}
		if b.RetainCount == 0 {
			// Without an age, keep two full backups: one to restore, one
			// in case it is damaged. With one, the newest is always kept.
			b.RetainCount = 2
			if b.Retain != 0 {
				b.RetainCount = 1
			}
		}
	}
	if db.Listen != nil {
		if len(db.Routers) == 0 {
			db.Routers = slices.Clone(db.Nodes)
			if db.DR != nil {
				// The standby region serves the clients once it is
				// active, and its read-only pool before.
				db.Routers = append(db.Routers, db.DR.Nodes...)
			}
		}
		r.defaultSize(&db.ReplicaMaxLag, "database.replica_max_lag", defaultReplicaMaxLag)
		// A written 0s is kept: it turns the hold off, which is what it
		// says (unlike a timeout of 0s, which would read as "none").
		if db.RouterHold == 0 && !r.given("database.router_hold") {
			db.RouterHold = Duration(defaultRouterHold)
		}
	}
	if db.Tags == nil {
		db.Tags = map[string]*DBTag{}
	}
	tagged := db.Nodes
	if db.DR != nil {
		tagged = append(slices.Clone(db.Nodes), db.DR.Nodes...)
	}
	for _, n := range tagged {
		if db.Tags[n] == nil {
			db.Tags[n] = &DBTag{}
		}
	}
	for _, t := range db.Tags {
		if t.Priority == nil {
			t.Priority = new(defaultDBTagPriority)
		}
	}
}

func defaultGalera(g *Galera, r *report, cluster string) {
	const path = "database.galera"
	if g.ClusterName == "" {
		g.ClusterName = cluster
	}
	r.defaultInt(&g.GroupPort, path+".group_port", defaultGroupPort)
	r.defaultInt(&g.ISTPort, path+".ist_port", defaultISTPort)
	r.defaultInt(&g.SSTPort, path+".sst_port", defaultSSTPort)
	if g.SSTMethod == "" {
		g.SSTMethod = defaultSSTMethod
	}
	r.defaultSize(&g.GCacheSize, path+".gcache_size", defaultGCacheSize)
	r.defaultDuration(&g.FailureDetection, path+".failure_detection", defaultFailureDetection)
	r.defaultDuration(&g.CheckInterval, path+".check_interval", defaultGaleraCheck)
	if g.Writers == "" {
		g.Writers = defaultWriters
	}
}

// defaultSettings lowercases the names of database.settings, as PostgreSQL
// does. Of names that differ only by case the first written is kept;
// validation reports the others, from settingKeys.
func defaultSettings(db *Database, r *report) {
	if len(db.Settings) == 0 {
		return
	}
	written := slices.SortedFunc(maps.Keys(db.Settings), func(a, b string) int {
		pa, pb := r.pos.keys["database.settings."+a], r.pos.keys["database.settings."+b]
		if pa.line != pb.line {
			return pa.line - pb.line
		}
		if pa.col != pb.col {
			return pa.col - pb.col
		}
		return strings.Compare(a, b)
	})
	out := make(map[string]string, len(written))
	db.settingKeys = make(map[string][]string, len(written))
	for _, name := range written {
		low := strings.ToLower(name)
		if db.Engine == "galera" {
			// MariaDB reads innodb-buffer-pool-size as innodb_buffer_pool_size.
			low = strings.ReplaceAll(low, "-", "_")
		}
		if _, dup := out[low]; !dup {
			out[low] = db.Settings[name]
		}
		db.settingKeys[low] = append(db.settingKeys[low], name)
	}
	db.Settings = out
}

// defaultDR fills database.dr. max_lag follows the region's RPO
// (objectives.region.rpo, else objectives.rpo): the lag at which a region
// may promote on its own is the data it may lose.
func defaultDR(dr *DR, r *report, obj *Objectives) {
	if dr.Mode == "" {
		dr.Mode = defaultDRMode
	}
	if dr.Failover == "" {
		dr.Failover = defaultDRFailover
	}
	maxLag := defaultDRMaxLag
	if _, rpo := obj.For(PartRegion); rpo != nil && *rpo > 0 {
		maxLag = *rpo
	}
	r.defaultDuration(&dr.MaxLag, "database.dr.max_lag", maxLag)
	r.defaultDuration(&dr.Lease, "database.dr.lease", defaultDRLease)
}

// defaultCoordination fills the top-level scope from the built-in
// defaults, then each region's scope from the top-level one (inheritance
// first, so that a region scope's left-out key is the top-level's value,
// defaulted or written), then the global scope from its own WAN defaults,
// but for the TLS files and the join timeout, which it shares with the
// top level.
func defaultCoordination(c *Coordination, r *report, dir string) {
	defaultScope(c, r, dir, "coordination", &Coordination{
		ClientPort: defaultClientPort, PeerPort: defaultPeerPort, DataDir: defaultDataDir,
		Heartbeat: Duration(defaultHeartbeat), ElectionTimeout: Duration(defaultElectionTimeout),
		JoinTimeout: Duration(defaultJoinTimeout), RTOMin: Duration(defaultRTOMin),
	})
	for _, name := range sortedKeys(c.Regions) {
		defaultScope(c.Regions[name], r, dir, "coordination.regions."+name, c)
	}
	if c.Global != nil {
		defaultScope(c.Global, r, dir, "coordination.global", &Coordination{
			ClientPort: defaultGlobalClientPort, PeerPort: defaultGlobalPeerPort, DataDir: defaultGlobalDataDir,
			TLS: c.TLS, Heartbeat: Duration(defaultGlobalHeartbeat), ElectionTimeout: Duration(defaultGlobalElectionTimeout),
			JoinTimeout: c.JoinTimeout, RTOMin: Duration(KernelRTOMin),
		})
	}
}

// defaultScope fills the keys of the scope c, at path, that were left out
// with those of def, whose paths are already resolved. The scope's own
// relative paths are resolved against dir.
func defaultScope(c *Coordination, r *report, dir, path string, def *Coordination) {
	r.defaultInt(&c.ClientPort, path+".client_port", def.ClientPort)
	r.defaultInt(&c.PeerPort, path+".peer_port", def.PeerPort)
	if c.DataDir == "" {
		c.DataDir = def.DataDir
	} else {
		c.DataDir = resolvePath(dir, c.DataDir)
	}
	r.defaultDuration(&c.Heartbeat, path+".heartbeat", def.Heartbeat.D())
	r.defaultDuration(&c.ElectionTimeout, path+".election_timeout", def.ElectionTimeout.D())
	r.defaultDuration(&c.JoinTimeout, path+".join_timeout", def.JoinTimeout.D())
	r.defaultDuration(&c.RTOMin, path+".rto_min", def.RTOMin.D())
	switch t := c.TLS; {
	case t != nil:
		t.CA, t.Cert, t.Key = resolvePath(dir, t.CA), resolvePath(dir, t.Cert), resolvePath(dir, t.Key)
	case def.TLS != nil:
		inherited := *def.TLS
		c.TLS = &inherited
	}
}

func defaultVIP(v *VIP, r *report, path string, nodes []string) {
	if v.Priority == nil {
		v.Priority = map[string]int{}
	}
	for _, n := range nodes {
		if _, ok := v.Priority[n]; !ok {
			v.Priority[n] = defaultVIPPriority
		}
	}
	if v.Preempt == nil {
		v.Preempt = new(true)
	}
	r.defaultDuration(&v.Lease, path+".lease", defaultVIPLease)
	r.defaultDuration(&v.Notify.Timeout, path+".notify.timeout", defaultNotifyTimeout)
}

func defaultCheck(ch *Check, r *report, path string) {
	r.defaultDuration(&ch.Interval, path+".interval", defaultInterval)
	interval := ch.Interval.D()
	r.defaultDuration(&ch.Timeout, path+".timeout", min(defaultTimeout, interval))
	// Probing faster while a verdict is pending shortens detection without
	// probing stable targets more; the floor keeps it from becoming a flood.
	r.defaultDuration(&ch.FastInterval, path+".fast_interval", min(max(interval/4, minFastInterval), interval))
	r.defaultDuration(&ch.DownInterval, path+".down_interval", interval)
	r.defaultInt(&ch.Rise, path+".rise", defaultRise)
	r.defaultInt(&ch.Fall, path+".fall", defaultFall)
	if ch.Jitter == nil {
		ch.Jitter = new(defaultJitter)
	}
	defaultHTTPProbe(ch.HTTP, r, path+".http")
	defaultHTTPProbe(ch.HTTPS, r, path+".https")
}

// defaultHTTPProbe fills an http or https probe. ExpectStatus stays nil,
// which means 200-399: a list could not say "any 2xx or 3xx" compactly.
func defaultHTTPProbe(p *HTTPProbe, r *report, path string) {
	if p == nil {
		return
	}
	p.Method = strings.ToUpper(p.Method)
	if p.Method == "" {
		p.Method = defaultProbeMethod
	}
	if p.Path == "" {
		p.Path = defaultProbePath
	}
	r.defaultSize(&p.BodyLimit, path+".body_limit", defaultProbeBodyLimit)
	if p.TLSVerify == nil {
		p.TLSVerify = new(true)
	}
}

func defaultBalancer(b *Balancer, r *report, path, dir string) {
	if b.Mode == "" {
		b.Mode = defaultMode
	}
	if b.Algorithm == "" {
		b.Algorithm = defaultAlgorithm
	}
	if b.AccessLog != nil && b.AccessLog.Format == "" {
		b.AccessLog.Format = "haproxy"
	}
	for _, be := range b.Backends {
		if be.Name == "" {
			be.Name = be.Address
		}
		if be.Weight == nil {
			be.Weight = new(defaultWeight)
		}
	}
	t, tp := &b.Timeouts, path+".timeouts."
	r.defaultDuration(&t.Connect, tp+"connect", defaultConnectTimeout)
	r.defaultDuration(&t.ClientHeader, tp+"client_header", defaultHeaderTimeout)
	r.defaultDuration(&t.Client, tp+"client", defaultClientTimeout)
	r.defaultDuration(&t.Server, tp+"server", defaultServerTimeout)
	r.defaultDuration(&t.Queue, tp+"queue", defaultQueueTimeout)
	r.defaultDuration(&t.Tunnel, tp+"tunnel", defaultTunnelTimeout)
	r.defaultSize(&b.Limits.MaxHeaderBytes, path+".limits.max_header_bytes", defaultMaxHeaderBytes)
	r.defaultInt(&b.Limits.MaxHeaders, path+".limits.max_headers", defaultMaxHeaders)
	r.defaultInt(&b.Limits.QueueSize, path+".limits.queue_size", defaultQueueSize)
	if b.Retries.Count == nil {
		b.Retries.Count = new(defaultRetries)
	}
	for i, m := range b.Retries.Methods {
		b.Retries.Methods[i] = strings.ToUpper(m)
	}
	p := &b.Passive
	if p.ConsecutiveFailures == nil {
		p.ConsecutiveFailures = new(defaultPassiveFailures)
	}
	if p.MaxEjectedPercent == nil {
		p.MaxEjectedPercent = new(defaultMaxEjectedPct)
	}
	r.defaultDuration(&p.EjectFor, path+".passive.eject_for", defaultEjectFor)
	if b.VIP != nil {
		defaultVIP(b.VIP, r, path+".vip", b.Nodes)
	}
	if b.TLS != nil {
		b.TLS.Cert = resolvePath(dir, b.TLS.Cert)
		b.TLS.Key = resolvePath(dir, b.TLS.Key)
	}
}

// defaultDuration fills a duration that was left out. A zero written out
// is refused rather than replaced: whoever writes "timeouts.server: 0s"
// means "no timeout", and silently getting 60s instead would surprise.
func (r *report) defaultDuration(d *Duration, path string, def time.Duration) {
	if *d != 0 {
		return
	}
	if r.given(path) {
		r.errorf(path, "0s is not allowed: leave the key out for the default %s", Duration(def))
	}
	*d = Duration(def)
}

// defaultInt is defaultDuration for counts.
func (r *report) defaultInt(v *int, path string, def int) {
	if *v != 0 {
		return
	}
	if r.given(path) {
		r.errorf(path, "0 is not allowed: leave the key out for the default %d", def)
	}
	*v = def
}

// defaultSize is defaultDuration for sizes.
func (r *report) defaultSize(s *Size, path string, def Size) {
	if *s != 0 {
		return
	}
	if r.given(path) {
		r.errorf(path, "0 is not allowed: leave the key out for the default %s", def)
	}
	*s = def
}

func resolvePath(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
