package config

import "time"

// The types below are haven.yaml's contract (see docs/configuration.md).
// Field tags name the YAML keys; unknown keys are errors. Defaults are filled
// by applyDefaults after decoding, so a zero value here means "not given".

// Config is a whole haven.yaml.
type Config struct {
	Cluster      string               `yaml:"cluster"`
	Admin        Admin                `yaml:"admin"`
	Regions      map[string]*Region   `yaml:"regions"`
	Coordination *Coordination        `yaml:"coordination"`
	Checks       map[string]*Check    `yaml:"checks"`
	Balancers    map[string]*Balancer `yaml:"balancers"`
	Database     *Database            `yaml:"database"`
	Traffic      *Traffic             `yaml:"traffic"`
	Objectives   *Objectives          `yaml:"objectives"`
	Drills       *Drills              `yaml:"drills"`
	Volumes      map[string]*Volume   `yaml:"volumes"`

	// File is the path the config was loaded from ("" for in-memory input).
	File string `yaml:"-"`
	// Warnings are problems that do not stop haven from running, such as the
	// members of a redundant group sharing a zone.
	Warnings []string `yaml:"-"`

	positions *positions
}

// Admin configures every agent's admin listener (status API, metrics).
type Admin struct {
	// TokenFile names a file holding the bearer token that mutating admin
	// calls must present when the admin listener is not on loopback.
	TokenFile string `yaml:"token_file"`
	// Port is the admin port used when a node gives no admin address
	// (default 9900).
	Port int `yaml:"port"`
	// Pprof serves Go's profiler under /debug/pprof/ (default off), with
	// the token like the mutating calls.
	Pprof bool `yaml:"pprof"`
	// TLS serves the admin API over HTTPS with each node's certificate
	// ("{node}" in a path is replaced by the node name; `haven certs`
	// makes them), and the commands verify it with CA.
	TLS *CoordTLS `yaml:"tls"`
	// ReadTokenFile holds a second bearer token that allows reads only;
	// AuthenticateReads makes every read but /healthz, /readyz and the
	// database's health endpoints need it or the write token.
	ReadTokenFile     string `yaml:"read_token_file"`
	AuthenticateReads bool   `yaml:"authenticate_reads"`
}

// Region is a failure domain at the scale of a data centre.
type Region struct {
	Nodes map[string]*Node `yaml:"nodes"`
}

// Node is one machine that runs `haven agent -n NAME`.
type Node struct {
	Address string `yaml:"address"`
	Zone    string `yaml:"zone"`
	// Admin is the admin listener, "ADDR:PORT"; default ADDRESS:admin.port.
	Admin string `yaml:"admin"`

	// Name and Region are filled in from the map keys.
	Name   string `yaml:"-"`
	Region string `yaml:"-"`
}

// Coordination is the etcd cluster every singleton (floating address,
// database primary) is coordinated through: embedded in the agents of
// Members, or an external cluster at Endpoints.
//
// The same type describes three kinds of scope. The top-level one (the
// coordination section itself) serves every node whose region has no scope
// of its own. Each of Regions is a region's own quorum, for the fast
// failovers inside it: the nodes of that region coordinate through it, and
// the keys it leaves out are the top-level scope's. Global spans the
// regions plus a witness in a third place, with WAN timings; it holds the
// active-region record of a database with a standby cluster (database.dr).
// A region's scope and the global scope have no Regions or Global of their
// own. Read them with Config.CoordinationOf, Config.RegionCoordination and
// Config.GlobalCoordination.
type Coordination struct {
	Members   []string `yaml:"members"`
	Endpoints []string `yaml:"endpoints"`
	// ClientPort and PeerPort are the embedded members' etcd ports on
	// their node address (defaults 2379 and 2380).
	ClientPort int `yaml:"client_port"`
	PeerPort   int `yaml:"peer_port"`
	// DataDir holds each member's etcd data; "{node}" is replaced by the
	// node name (default /var/lib/haven/{node}/etcd).
	DataDir string `yaml:"data_dir"`
	// TLS secures peer and client traffic; "{node}" in a path is replaced
	// by the node name. `haven certs` makes these files.
	TLS *CoordTLS `yaml:"tls"`
	// Heartbeat and ElectionTimeout tune etcd's raft for a LAN (defaults
	// 50ms and 500ms; etcd's own are 100ms and 1s).
	Heartbeat       Duration `yaml:"heartbeat"`
	ElectionTimeout Duration `yaml:"election_timeout"`
	// JoinTimeout bounds how long a starting member waits for a quorum
	// before it reports which peers it could not reach (default 60s).
	JoinTimeout Duration `yaml:"join_timeout"`
	// RTOMin is TCP's minimum retransmission timeout on the routes to the
	// directly connected coordination peers (default 20ms; 200ms, the
	// kernel's own, leaves the routes alone). See internal/peerroute.
	RTOMin Duration `yaml:"rto_min"`
	// Regions are the scopes of the regions that have a quorum of their
	// own, by region name (top-level scope only).
	Regions map[string]*Coordination `yaml:"regions"`
	// Global is the scope spanning the regions plus a witness (top-level
	// scope only). Its defaults are its own, for a WAN: ports 2381 and
	// 2382, data_dir /var/lib/haven/{node}/etcd-global, heartbeat 100ms,
	// election timeout 1s, the kernel's rto_min; it takes the top-level
	// scope's TLS and JoinTimeout when it leaves them out.
	Global *Coordination `yaml:"global"`
}

// CoordTLS names the certificate files for etcd traffic.
type CoordTLS struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Check is a health check definition shared by balancers, and later by the
// traffic manager. Exactly one probe kind is set.
type Check struct {
	TCP   *TCPProbe  `yaml:"tcp"`
	HTTP  *HTTPProbe `yaml:"http"`
	HTTPS *HTTPProbe `yaml:"https"`
	ICMP  *ICMPProbe `yaml:"icmp"`
	Exec  *ExecProbe `yaml:"exec"`
	// Volume passes while the node at the target's address has volume
	// Name mounted, writable and answering (internal/volume).
	Volume *VolumeProbe `yaml:"volume"`

	// Interval between probes while the target is stable (default 2s).
	Interval Duration `yaml:"interval"`
	// FastInterval is used while a target is in transition, between its
	// first contrary result and its verdict (HAProxy's fastinter; default
	// interval/4, at least 100ms).
	FastInterval Duration `yaml:"fast_interval"`
	// DownInterval is used while a target is down (HAProxy's downinter;
	// default interval).
	DownInterval Duration `yaml:"down_interval"`
	// Timeout bounds one probe (default 1s, at most interval).
	Timeout Duration `yaml:"timeout"`
	// Rise consecutive successes mark a target up (default 2).
	Rise int `yaml:"rise"`
	// Fall consecutive failures mark a target down (default 3).
	Fall int `yaml:"fall"`
	// Jitter spreads probes by up to this fraction of the interval so that
	// probes of many targets do not synchronise (default 0.1).
	Jitter *float64 `yaml:"jitter"`

	Name string `yaml:"-"`
}

// TCPProbe passes when a TCP connection is established.
type TCPProbe struct {
	Port int `yaml:"port"`
}

// HTTPProbe passes when the response matches. Used for `http` and `https`.
type HTTPProbe struct {
	Port   int    `yaml:"port"`
	Method string `yaml:"method"` // default GET
	Path   string `yaml:"path"`   // default /
	Host   string `yaml:"host"`   // Host header; default the target address
	// ExpectStatus lists the accepted status codes (default 200-399).
	ExpectStatus []int `yaml:"expect_status"`
	// ExpectBody is a substring that must appear in the first BodyLimit bytes.
	ExpectBody string `yaml:"expect_body"`
	// ExpectRegex is a regular expression that must match the first
	// BodyLimit bytes.
	ExpectRegex string `yaml:"expect_regex"`
	// BodyLimit bounds how much of the body is read (default 64KiB).
	BodyLimit Size `yaml:"body_limit"`
	// TLSVerify checks the server certificate (https only; default true).
	TLSVerify *bool `yaml:"tls_verify"`
	// SNI is the TLS server name (https only; default Host, else none).
	SNI string `yaml:"sni"`
}

// ICMPProbe passes when an echo reply arrives (needs root or CAP_NET_RAW).
type ICMPProbe struct{}

// ExecProbe passes when the command exits 0 within the timeout. The target
// address is passed in HAVEN_TARGET, HAVEN_TARGET_HOST and HAVEN_TARGET_PORT.
type ExecProbe struct {
	Command []string `yaml:"command"`
}

// VolumeProbe asks the agent at the target's address, on its admin port,
// whether its mount of a volume is healthy: present, writable and
// answering within the check's timeout (GET /api/v1/volumes/NAME/mount).
type VolumeProbe struct {
	Name string `yaml:"name"`
	// Port is the agent's admin port (default admin.port).
	Port int `yaml:"port"`

	// TLS is set when the admin API is served over HTTPS (admin.tls):
	// the probe then verifies the agent's certificate with CA.
	TLS bool   `yaml:"-"`
	CA  string `yaml:"-"`
}

// Balancer is one load-balanced service.
type Balancer struct {
	Nodes     []string   `yaml:"nodes"`
	Listen    string     `yaml:"listen"`
	Mode      string     `yaml:"mode"`      // http (default) | tcp
	Algorithm string     `yaml:"algorithm"` // roundrobin (default) | leastconn | source | random2
	VIP       *VIP       `yaml:"vip"`
	Check     string     `yaml:"check"`
	Backends  []*Backend `yaml:"backends"`

	TLS           *TLS     `yaml:"tls"`
	Timeouts      Timeouts `yaml:"timeouts"`
	Limits        Limits   `yaml:"limits"`
	Retries       Retries  `yaml:"retries"`
	Passive       Passive  `yaml:"passive"`
	Sticky        *Sticky  `yaml:"sticky"`
	ProxyProtocol string   `yaml:"proxy_protocol"` // "" | v1 | v2 (to backends)
	// AcceptProxyFrom lists the addresses and networks (CIDR) of the
	// proxies in front of this listener, such as a cloud load balancer:
	// every connection must come from one of them and begin with a PROXY
	// protocol header (v1 or v2), whose client address haven then uses
	// (X-Forwarded-For, source hashing, logs, a PROXY header to backends).
	// Connections from anywhere else are refused. Nil: off.
	AcceptProxyFrom []string `yaml:"accept_proxy_from"`
	// SlowStart ramps a recovering backend's weight up over this period
	// (default 0: off).
	SlowStart Duration `yaml:"slow_start"`
	// Lameduck is how long a stopping balancer keeps serving while
	// reporting not ready (default 0s; set it to your health-check period
	// upstream).
	Lameduck Duration `yaml:"lameduck"`
	// ShutdownSessions, in mode tcp, closes the client connections of a
	// backend that goes down or leaves the pool, rather than leaving them
	// to their timeouts (HAProxy's on-marked-down shutdown-sessions). The
	// database's primary pool always does.
	ShutdownSessions bool `yaml:"shutdown_sessions"`
	// AccessLog writes a line per request (http) or connection (tcp):
	// off when nil.
	AccessLog *AccessLog `yaml:"access_log"`
	// Hold, in mode tcp, keeps a new client connection that finds no
	// usable backend, or that every usable backend refused, waiting up to
	// this long for one to take it, instead of closing it at once (0:
	// off). Only the database's router sets it
	// (database.router_hold): its pools empty during a failover and fill
	// again within a lease, while a balancer's own backends come back on
	// the scale of health checks.
	Hold Duration `yaml:"-"`

	Name string `yaml:"-"`
}

// AccessLog is a balancer's access log.
type AccessLog struct {
	// Path is the file lines are appended to ("-": the agent's standard
	// output, the journal under systemd). A reload reopens it, so that
	// logrotate's postrotate can reload the agent.
	Path string `yaml:"path"`
	// Format is "haproxy" (default: a line as HAProxy's httplog writes
	// one) or "json" (one object per line).
	Format string `yaml:"format"`
}

// VIP is a floating address held by exactly one node at a time among
// those whose tracked checks pass. `vip: 198.18.1.100/24` is short for
// `vip: {address: 198.18.1.100/24}`.
type VIP struct {
	// Address is ADDR/PREFIXLEN, such as 198.18.1.100/24.
	Address string `yaml:"address"`
	// Interface carries the address (default: the interface whose
	// network contains it).
	Interface string `yaml:"interface"`
	// Priority ranks nodes (default 100 each); the highest eligible node
	// is preferred.
	Priority map[string]int `yaml:"priority"`
	// Preempt hands the address to an eligible node of higher priority
	// when one appears (default true; false is keepalived's nopreempt).
	Preempt *bool `yaml:"preempt"`
	// Lease is how long one renewal keeps the holder in place; failover
	// takes about this long (default 500ms).
	Lease Duration `yaml:"lease"`
	// Notify runs commands when this node becomes holder, backup or fault
	// (keepalived's notify scripts).
	Notify Notify `yaml:"notify"`
}

func (*VIP) shorthandKey() string { return "address" }

// Notify lists the commands run on a floating address's transitions, each
// a program and its arguments. They get HAVEN_VIP, HAVEN_STATE, HAVEN_NODE
// and HAVEN_EPOCH in the environment.
type Notify struct {
	Holder []string `yaml:"holder"`
	Backup []string `yaml:"backup"`
	Fault  []string `yaml:"fault"`
	// Timeout bounds each command (default 10s).
	Timeout Duration `yaml:"timeout"`
}

// Backend is one server behind a balancer.
type Backend struct {
	Address string `yaml:"address"` // HOST:PORT
	Name    string `yaml:"name"`    // default: the address
	Weight  *int   `yaml:"weight"`  // 0-256, default 1; 0 takes no new traffic
	// MaxConn caps concurrent requests (HTTP) or connections (TCP) to this
	// backend; 0 means the balancer's limits.max_conn (default unlimited).
	MaxConn int `yaml:"max_conn"`
}

// TLS terminates TLS on the balancer's listener. Files are reloaded when
// they change.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Timeouts bound every phase of a proxied exchange.
type Timeouts struct {
	Connect Duration `yaml:"connect"` // to a backend (default 2s)
	// ClientHeader bounds reading a request head (default 10s; slowloris).
	ClientHeader Duration `yaml:"client_header"`
	// Client is the idle timeout on client connections: between requests,
	// and for each read of a request body and each write of a response
	// (default 60s).
	Client Duration `yaml:"client"`
	// Server bounds waiting for a backend's response head, and each read
	// from and write to the backend (default 60s).
	Server Duration `yaml:"server"`
	// RequestBody bounds the whole of a request body, however steadily it
	// arrives (default 0: no bound; the client timeout still bounds each
	// silence).
	RequestBody Duration `yaml:"request_body"`
	// Queue bounds how long a request waits for a backend slot (default 5s).
	Queue Duration `yaml:"queue"`
	// Tunnel is the idle timeout of upgraded (WebSocket) and TCP-mode
	// connections (default 1h).
	Tunnel Duration `yaml:"tunnel"`
}

// Limits protects the balancer and its backends.
type Limits struct {
	// MaxHeaderBytes bounds a request head, request line included
	// (default 16KiB, HAProxy's tune.bufsize).
	MaxHeaderBytes Size `yaml:"max_header_bytes"`
	// MaxHeaders bounds the header fields of a request (default 100, as
	// many as HAProxy's default tune.http.maxhdr of 101 admits).
	MaxHeaders   int  `yaml:"max_headers"`
	MaxBodyBytes Size `yaml:"max_body_bytes"` // default 0: unlimited
	// MaxConn is the default per-backend cap (0: unlimited).
	MaxConn int `yaml:"max_conn"`
	// QueueSize bounds requests waiting for a backend slot; when full, 503
	// (default 1024).
	QueueSize int `yaml:"queue_size"`
}

// Retries configures redispatch to another backend.
type Retries struct {
	// Count is how many other backends a request may be retried on
	// (default 2).
	Count *int `yaml:"count"`
	// Methods are non-idempotent methods that may also be retried after
	// the request was sent (GET, HEAD, OPTIONS always may).
	Methods []string `yaml:"methods"`
}

// Passive health from live traffic (outlier detection).
type Passive struct {
	// ConsecutiveFailures connection failures or 5xx responses in a row
	// mark a backend down (default 5; 0 disables).
	ConsecutiveFailures *int `yaml:"consecutive_failures"`
	// MaxEjectedPercent caps how many backends passive health may hold
	// down at once (default 50); the last healthy backend is never ejected.
	MaxEjectedPercent *int `yaml:"max_ejected_percent"`
	// EjectFor is how long a passively ejected backend stays out when the
	// balancer has no active check (default 10s).
	EjectFor Duration `yaml:"eject_for"`
}

// Sticky pins a client to a backend with a cookie (HTTP mode).
type Sticky struct {
	Cookie string `yaml:"cookie"`
}

// Database is the database cluster: each of Nodes runs a keeper
// (internal/pg) or a Galera node (internal/galera) in its agent.
type Database struct {
	Engine string   `yaml:"engine"` // postgres (default) | galera
	Nodes  []string `yaml:"nodes"`
	// Port is the server's port on each database node (default 5432;
	// 3306 for galera).
	Port int `yaml:"port"`
	// DataDir is each node's data directory; "{node}" is replaced by the
	// node name (NodeDataDir; default /var/lib/haven/pg).
	DataDir string `yaml:"data_dir"`
	// Bindir is PostgreSQL's binary directory, an absolute path. Empty:
	// searched, on PATH and then with pg_config.
	Bindir string `yaml:"bindir"`
	// User is the operating system user PostgreSQL runs as when the agent
	// runs as root (default postgres).
	User string `yaml:"user"`
	// Lease is how long one renewal of the primary's ownership record
	// keeps it primary; a lost primary is replaced about 1.02 × Lease
	// later (default 2s).
	Lease Duration `yaml:"lease"`
	// WriteFence gates TCP traffic to and from the primary's port with an
	// nftables dead-man's switch opened until its lease deadline (default
	// true; needs root). Off, a frozen agent's primary keeps taking
	// connections past its lease. Nil is true: read it with FenceWrites.
	WriteFence *bool `yaml:"write_fence"`
	// Settings are postgresql.conf settings, merged with haven's own,
	// which win. Names are lowercased, as PostgreSQL does; values are kept
	// as written (`max_connections: 200` is "200").
	Settings map[string]string `yaml:"settings"`
	// HBA are pg_hba.conf lines for the clients, after haven's own (the
	// replication role from the database nodes).
	HBA         []string     `yaml:"hba"`
	Replication *Replication `yaml:"replication"`
	// Listen, when set, makes the routers proxy the database's clients:
	// Primary to the primary, Replicas to replicas, as etcd says they are
	// now (a failover moves them without a reload).
	Listen *DBListen `yaml:"listen"`
	// Routers are the nodes that serve Listen (default: the database
	// nodes, and the dr nodes when DR is set).
	Routers []string `yaml:"routers"`
	// ReplicaMaxLag: a replica further behind the primary leaves the
	// replicas pool until it catches up (default 1MiB).
	ReplicaMaxLag Size `yaml:"replica_max_lag"`
	// RouterHold is how long the routers keep a new connection waiting
	// while its pool has no node to take it (during a failover) before
	// closing it (default 5s; 0s: no wait, closed at once).
	RouterHold Duration `yaml:"router_hold"`
	// Tags hold each database node's failover preferences; after defaults
	// every node of Nodes (and of DR.Nodes) has one.
	Tags   map[string]*DBTag `yaml:"tags"`
	DR     *DR               `yaml:"dr"`
	Backup *Backup           `yaml:"backup"`
	// Galera holds the settings of engine galera; after defaults it is
	// never nil with that engine, and an error with any other.
	Galera *Galera `yaml:"galera"`

	// settingKeys maps each key of Settings to the keys of the file that
	// were lowercased to it, in file order, for validation's messages.
	settingKeys map[string][]string
}

// Galera is a MariaDB Galera cluster's own settings (database.engine:
// galera). haven writes the server's wsrep settings from them and the
// nodes' addresses; database.settings add the rest of my.cnf.
type Galera struct {
	// ClusterName is wsrep_cluster_name (default: the cluster's name).
	ClusterName string `yaml:"cluster_name"`
	// GroupPort is the group communication port (default 4567), ISTPort
	// the incremental state transfer's (default 4568), SSTPort the full
	// state transfer's (default 4444), on each node's address.
	GroupPort int `yaml:"group_port"`
	ISTPort   int `yaml:"ist_port"`
	SSTPort   int `yaml:"sst_port"`
	// SSTMethod is how a joining node copies a donor's data:
	// mariabackup (default; the donor keeps serving) or rsync.
	SSTMethod string `yaml:"sst_method"`
	// GCacheSize is the write-set cache a node serves incremental state
	// transfers from (default 128MiB): a node that was away for less
	// than this much writing rejoins by IST, not a full copy.
	GCacheSize Size `yaml:"gcache_size"`
	// FailureDetection is how long a silent node has before the others
	// evict it (evs.suspect_timeout, default 5s, Galera's own); the
	// group's keepalives and checks are set from it. Commits wait for a
	// silent node's eviction; a node whose server is gone (its port
	// refuses) is evicted at once.
	FailureDetection Duration `yaml:"failure_detection"`
	// CheckInterval is how often each agent reads its server's wsrep
	// state (default 500ms): a node that leaves the primary component
	// or the synced state leaves the pools within it.
	CheckInterval Duration `yaml:"check_interval"`
	// Writers is one (default: the routers' primary pool sends every
	// write to one node, chosen through an ownership record) or all
	// (every synced node, for applications that retry certification
	// conflicts).
	Writers string `yaml:"writers"`
	// DonorServes keeps a node in the pools while it is a state
	// transfer's donor (default false: a donor leaves them).
	DonorServes bool `yaml:"donor_serves"`
	// ProviderOptions are further wsrep_provider_options, merged with
	// haven's own (which it derives from the keys above and may not be
	// given here).
	ProviderOptions map[string]string `yaml:"provider_options"`
}

// Replication of the database cluster. After defaults it is never nil
// when Database is not.
type Replication struct {
	Mode string `yaml:"mode"` // async (default) | sync | strict
	// SyncStandbys is how many standbys confirm each commit in mode sync
	// and strict (default 1); 0 in mode async.
	SyncStandbys int `yaml:"sync_standbys"`
	// MaxLagOnFailover: in mode async, a replica further behind than
	// this is never promoted (default 1MiB; 0 in the other modes).
	MaxLagOnFailover Size `yaml:"max_lag_on_failover"`
	// User is the role replicas and pg_rewind connect as (default
	// replicator).
	User string `yaml:"user"`
	// PasswordFile holds the replication role's password; required when
	// there are two or more database nodes (dr nodes included).
	PasswordFile string `yaml:"password_file"`
}

// DBListen are the routers' listeners for the database's clients, each
// "HOST:PORT" or ":PORT".
type DBListen struct {
	// Primary takes read-write connections (required).
	Primary string `yaml:"primary"`
	// Replicas takes read-only connections, spread over the replicas by
	// least connections (optional).
	Replicas string `yaml:"replicas"`
}

// DBTag is one database node's failover preferences.
type DBTag struct {
	// NoFailover keeps the node from ever being promoted.
	NoFailover bool `yaml:"nofailover"`
	// Priority ranks candidates for promotion, 0-1000 (default 100):
	// among replicas equally up to date, the highest is promoted.
	Priority *int `yaml:"priority"`
}

// DR is the standby cluster in another region: Nodes, all in one region
// other than database.nodes' region, replicate from the active region's
// primary. Which region is active is a record with a fencing epoch in
// coordination.global, held for Lease at a time.
type DR struct {
	Nodes []string `yaml:"nodes"`
	// Mode is async (default) or sync: in sync the standby cluster's
	// leader is in the primary's synchronous quorum.
	Mode string `yaml:"mode"`
	// Failover is manual (default: `haven dr promote` moves the active
	// region) or automatic (the standby region promotes when it acquires
	// the active-region record and its last known lag was within MaxLag).
	Failover string `yaml:"failover"`
	// MaxLag is the largest lag behind the active region at which the
	// standby region promotes on its own (default objectives.rpo when it
	// is set, else 5s).
	MaxLag Duration `yaml:"max_lag"`
	// Lease is how long one renewal of the active-region record keeps a
	// region active (default 10s); see minDRLease for its lower bounds.
	Lease Duration `yaml:"lease"`
	// ReadOnlyPool makes the standby region's routers serve
	// database.listen.replicas from the standby cluster; their primary
	// listener refuses connections.
	ReadOnlyPool bool `yaml:"read_only_pool"`
}

// Backup of the database.
type Backup struct {
	// Target is a shorthand for one repository: target: URL is
	// repositories: [{name: main, url: URL}] (defaults fill Repositories
	// from it). Give one or the other.
	Target string `yaml:"target"`
	// Repositories are where backups and the WAL archive go; the first is
	// written by the cluster, the others are copies of it (another
	// region).
	Repositories []*BackupRepository `yaml:"repositories"`
	// Archive is async (the default: the archive trails commits by at
	// most about a second) or synchronous (the archiver is a synchronous
	// standby counted in the sync quorum: an acknowledged commit is in
	// the repository).
	Archive string `yaml:"archive"`
	// BaseEvery is the time between full base backups; IncrementalEvery
	// the time between incremental ones in between (0: none). Without
	// BaseEvery no backup is scheduled: haven backup run takes one.
	BaseEvery        Duration `yaml:"base_every"`
	IncrementalEvery Duration `yaml:"incremental_every"`
	// VerifyEvery is the time between restore tests (haven backup
	// check) of the newest backup; 0: never scheduled.
	VerifyEvery Duration `yaml:"verify_every"`
	// Retain and RetainCount decide expiry (internal/backup/expire): a
	// full backup (and the incremental ones on it) is removed once it is
	// not among the newest RetainCount full backups and the next full
	// backup is older than Retain (so the last Retain stays restorable);
	// WAL is removed only before the oldest backup kept.
	Retain      Duration `yaml:"retain"`
	RetainCount int      `yaml:"retain_count"`
	// Compression of stored files: lz4 (default), zstd or none.
	Compression string `yaml:"compression"`
	// Parallel is how many files a backup or restore copies at once
	// (default 2).
	Parallel int `yaml:"parallel"`
	// From is the node a scheduled backup reads: replica (the default: a
	// healthy replica, so the primary is not loaded; the primary when
	// there is none) or primary.
	From string `yaml:"from"`
	// EncryptionKeyFile holds the key every object in the repositories is
	// encrypted with; empty: not encrypted.
	EncryptionKeyFile string `yaml:"encryption_key_file"`
}

// BackupRepository is one place backups are kept (internal/backup/repo).
type BackupRepository struct {
	// Name names it in commands and messages.
	Name string `yaml:"name"`
	// URL is file:///ABSOLUTE/PATH or s3://BUCKET[/PREFIX].
	URL string `yaml:"url"`
	// Endpoint is the S3 server's URL (default AWS,
	// https://s3.amazonaws.com); s3 only, like the keys below.
	Endpoint string `yaml:"endpoint"`
	// Region is the bucket's region (default: asked of the server).
	Region string `yaml:"region"`
	// PathStyle addresses the bucket in the path rather than the host
	// name (default: virtual hosts on AWS and Google, paths elsewhere).
	PathStyle *bool `yaml:"path_style"`
	// CredentialsFile is an AWS shared credentials file; empty: the
	// environment's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
	CredentialsFile string `yaml:"credentials_file"`
}

// Traffic is the DNS traffic manager.
type Traffic struct {
	Zone        string             `yaml:"zone"`
	Nameservers []string           `yaml:"nameservers"`
	Listen      string             `yaml:"listen"`
	Records     map[string]*Record `yaml:"records"`
	// TSIG is the key a secondary server signs zone transfers (AXFR)
	// with; without it no transfer is answered.
	TSIG *TSIG `yaml:"tsig"`
	// GeoIP is a MaxMind-format database file (GeoLite2-Country or
	// -City), required by the geo policy.
	GeoIP string `yaml:"geoip"`
	// QueryLog writes a sample of the queries each name server answers:
	// off when nil.
	QueryLog *QueryLog `yaml:"query_log"`
}

// QueryLog is a name server's sampled query log.
type QueryLog struct {
	// Path is the file lines are appended to ("-": the agent's standard
	// output). A reload reopens it.
	Path string `yaml:"path"`
	// Sample logs one query in Sample (default 100; 1: every query).
	Sample int `yaml:"sample"`
}

// TSIG is a shared-secret key (RFC 8945).
type TSIG struct {
	// Name is the key's name, such as xfr.gslb.shop.example.
	Name string `yaml:"name"`
	// SecretFile holds the base64 secret (as tsig-keygen or
	// "openssl rand -base64 32" make it).
	SecretFile string `yaml:"secret_file"`
}

// Record is a managed DNS name.
type Record struct {
	Policy  string    `yaml:"policy"`
	TTL     Duration  `yaml:"ttl"`
	Targets []*Target `yaml:"targets"`
	// FailoverDelay is how long a target must stay down before the
	// answers leave it, and FailbackDelay how long it must stay up before
	// they take it back (default 0s each: the checks' fall and rise
	// alone). They keep a flapping target from flapping the answers.
	FailoverDelay Duration `yaml:"failover_delay"`
	FailbackDelay Duration `yaml:"failback_delay"`
	// AllDown is the answer when no target is healthy: open (every
	// target, as if healthy), closed (SERVFAIL) or backup (the Backup
	// answers). Default open, or backup when Backup is set.
	AllDown string `yaml:"all_down"`
	// Backup are the answers under all_down: backup: addresses, or one
	// domain name (a CNAME), such as [sorry.shop.example.].
	Backup []string `yaml:"backup"`
	// MaxAnswers caps how many healthy targets the all policy answers
	// with, the first in order (default 8; 0: no cap).
	MaxAnswers *int `yaml:"max_answers"`
}

// Target is one answer of a managed name: an address, or a cname (a
// domain name answered as a CNAME, such as a cloud load balancer's).
type Target struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	CNAME   string `yaml:"cname"`
	Check   string `yaml:"check"`
	// Follows takes the target's health from haven's own state in etcd
	// instead of a check: a region's balancer, floating address or
	// database primary.
	Follows *Follows `yaml:"follows"`
	Weight  int      `yaml:"weight"`
	// Subnets are the clients this target serves under the cidr policy,
	// such as [10.0.0.0/8, 2001:db8::/32].
	Subnets []string `yaml:"subnets"`
	// Countries (ISO 3166-1 alpha-2, such as DE) and Continents (AF, AN,
	// AS, EU, NA, OC, SA) are the clients it serves under the geo policy.
	Countries  []string `yaml:"countries"`
	Continents []string `yaml:"continents"`
}

// Follows is haven state a traffic target follows. Exactly one of
// Balancer, VIP and Database is set.
type Follows struct {
	// Balancer: up while a node runs this balancer ready (listening, with
	// a usable backend).
	Balancer string `yaml:"balancer"`
	// VIP: up while a node holds this balancer's floating address.
	VIP string `yaml:"vip"`
	// Database: up while a node serves as the database's primary.
	Database bool `yaml:"database"`
	// Region counts only that region's nodes (default: any node).
	Region string `yaml:"region"`
}

// Objectives are the recovery objectives: the longest outage (RTO) and
// the most data lost (RPO, as time) that the service accepts, for the
// service as a whole and, where a part needs its own, per part. haven
// check says which of the guide's tiers the configuration reaches and
// which objectives it cannot promise; drills measure against them.
type Objectives struct {
	// RTO and RPO hold for every part that does not give its own (nil: not
	// given; an RPO of 0 is no loss at all).
	RTO *Duration `yaml:"rto"`
	RPO *Duration `yaml:"rpo"`
	// Web is the balancers' part: requests through the service's
	// address. Database is a failure inside the database's region; Region
	// the loss of the active region.
	Web      *Objective `yaml:"web"`
	Database *Objective `yaml:"database"`
	Region   *Objective `yaml:"region"`
}

// Drills configures the faults each agent injects on its own node when
// asked through its admin API (internal/drill/fault).
type Drills struct {
	// Enabled turns the fault API on; it is off by default: a fault is an
	// outage on purpose.
	Enabled bool `yaml:"enabled"`
	// MaxDuration bounds one fault's duration (default 10m).
	MaxDuration Duration `yaml:"max_duration"`
	// DSNFile holds the connection string a drill's database writes go
	// through (a router's primary port, as the application connects);
	// URL is what its HTTP requests ask for (the service's public name or
	// address). Scheduled drills use them; haven drill run's --dsn and
	// --url override them.
	DSNFile string `yaml:"dsn_file"`
	URL     string `yaml:"url"`
	// Schedule runs scenarios on the live deployment, one drill at a time
	// cluster-wide.
	Schedule []*DrillSchedule `yaml:"schedule"`
	// Processes are the processes besides haven's own that faults may hit
	// on the nodes that run them (an application backend), by name.
	Processes map[string]*DrillProcess `yaml:"processes"`
}

// DrillSchedule runs one scenario periodically.
type DrillSchedule struct {
	// Scenario is a built-in scenario's name or a scenario file's path.
	Scenario string `yaml:"scenario"`
	// Every is the time between two runs (at least 10m); For the fault's
	// duration (default 10s).
	Every Duration `yaml:"every"`
	For   Duration `yaml:"for"`
}

// DrillProcess finds a process faults may hit: by its pid file, or by its
// systemd unit (which a stop fault stops and starts again).
type DrillProcess struct {
	PIDFile string `yaml:"pid_file"`
	Unit    string `yaml:"unit"`
}

// Objective is one part's recovery objectives (nil: the service's).
type Objective struct {
	RTO *Duration `yaml:"rto"`
	RPO *Duration `yaml:"rpo"`
}

// The parts objectives may be given for.
const (
	PartWeb      = "web"
	PartDatabase = "database"
	PartRegion   = "region"
)

// For returns part's objectives: its own where given, else the service's
// (nil when neither is given). o may be nil.
func (o *Objectives) For(part string) (rto, rpo *time.Duration) {
	if o == nil {
		return nil, nil
	}
	rto, rpo = o.RTO.ptr(), o.RPO.ptr()
	var own *Objective
	switch part {
	case PartWeb:
		own = o.Web
	case PartDatabase:
		own = o.Database
	case PartRegion:
		own = o.Region
	}
	if own != nil {
		if own.RTO != nil {
			rto = own.RTO.ptr()
		}
		if own.RPO != nil {
			rpo = own.RPO.ptr()
		}
	}
	return rto, rpo
}

// Volume is a replicated file volume (internal/volume): GlusterFS, a brick
// on each of Servers in one replica set, mounted on the Mount nodes.
type Volume struct {
	// Engine is the engine underneath: glusterfs (the default and, for
	// now, the only one).
	Engine string `yaml:"engine"`
	// Servers are the storage nodes: each runs glusterd and one brick of
	// the volume. Three servers make a replica 3 volume.
	Servers []string `yaml:"servers"`
	// Arbiter, one of three Servers, holds only the files' names and
	// metadata (replica 2 + arbiter): the third vote of a quorum without
	// a third copy of the data.
	Arbiter string `yaml:"arbiter"`
	// Brick is the brick's directory on each server; "{node}" is
	// replaced by the node name (default
	// /var/lib/haven/{node}/bricks/VOLUME).
	Brick string `yaml:"brick"`
	// GlusterdDir is glusterd's working directory on each server, shared
	// by every volume of the node; "{node}" is replaced by the node name
	// (default /var/lib/haven/{node}/glusterd).
	GlusterdDir string `yaml:"glusterd_dir"`
	// Mount mounts the volume on application nodes.
	Mount *VolumeMount `yaml:"mount"`
	// PingTimeout is how long a client waits for a silent server before
	// it writes to the others (network.ping-timeout, whole seconds;
	// default 2s, GlusterFS's own is 42s).
	PingTimeout Duration `yaml:"ping_timeout"`
	// Settings are more `gluster volume set` options, applied after
	// haven's own; the ones haven owns are refused.
	Settings map[string]string `yaml:"settings"`
	// Copy copies the volume's files to a repository, for another
	// region to restore them from.
	Copy *VolumeCopy `yaml:"copy"`

	Name string `yaml:"-"`
}

// VolumeCopy copies a volume's files, from a node that mounts it, to a
// repository (file:// or s3://, as a backup repository), as the guide's
// sync of the files to a bucket: each pass uploads what is new or changed
// and deletes what is gone.
type VolumeCopy struct {
	// Repository is where the copy goes, under
	// CLUSTER/volumes/VOLUME/ (its name is not used).
	Repository *BackupRepository `yaml:"repository"`
	// Every is the time between the starts of two passes (default 1m):
	// the files' recovery point is at most about Every plus a pass.
	Every Duration `yaml:"every"`
}

// VolumeMount is where a volume is mounted (FUSE), and on which nodes.
type VolumeMount struct {
	Nodes []string `yaml:"nodes"`
	// Path is the mount point, the same on every node; created if
	// missing.
	Path string `yaml:"path"`
}
