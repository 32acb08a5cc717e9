package config

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Valid values of the database's enumerated keys.
var (
	engines            = []string{"postgres", "galera"}
	sstMethods         = []string{"mariabackup", "rsync"}
	galeraWriters      = []string{"one", "all"}
	replModes          = []string{"async", "sync", "strict"}
	drModes            = []string{"async", "sync"}
	drFailovers        = []string{"manual", "automatic"}
	backupSchemes      = []string{"file", "s3"}
	archiveModes       = []string{"async", "synchronous"}
	backupCompressions = []string{"lz4", "zstd", "none"}
	backupSources      = []string{"replica", "primary"}
)

// Bounds on the database primary's lease: shorter cannot be renewed
// reliably through etcd while PostgreSQL is busy; longer makes failover
// slower than Patroni's tuned settings.
const (
	minDBLease = 500 * time.Millisecond
	maxDBLease = time.Minute
)

const maxTagPriority = 1000

// maxRouterHold bounds database.router_hold: every held connection is an
// open socket and a goroutine on the router, and a failover longer than
// this is better told to the client than hidden from it.
const maxRouterHold = time.Minute

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
	if db.Engine == "galera" {
		v.galera(db)
		return
	}
	if db.Galera != nil {
		v.errorf("database.galera", "only applies with engine galera (database.engine is %s): remove it, or set engine: galera", db.Engine)
	}
	v.nodeRefs("database.nodes", db.Nodes, "the nodes that run PostgreSQL, such as nodes: [db1, db2, db3]")
	v.dbCommon(db)
	if db.Bindir != "" && !filepath.IsAbs(db.Bindir) {
		v.errorf("database.bindir", "%q is not an absolute path: give PostgreSQL's binary directory, such as /usr/lib/postgresql/15/bin, or leave the key out to search PATH, then pg_config", db.Bindir)
	}
	v.settings(db, settingName, "a PostgreSQL parameter name: use letters, digits and '_', with one '.' after a custom class, such as pg_stat_statements.max")
	for i, line := range db.HBA {
		if f := strings.Fields(line); len(f) < 4 || strings.ContainsAny(line, "\n\r") || !slices.Contains(hbaTypes, f[0]) {
			v.errorf(index("database.hba", i), "%q is not a pg_hba.conf line: TYPE DATABASE USER [ADDRESS] METHOD, such as \"host app app 198.18.1.0/24 scram-sha-256\"", line)
		}
	}
	v.replication(db)
	if db.DR != nil {
		v.dr(db)
	}
	if db.Backup != nil {
		v.backup(db.Backup)
	}
}

// dbCommon checks the keys both engines read.
func (v *validator) dbCommon(db *Database) {
	v.zones("database.nodes", db.Nodes)
	if p := db.Port; p < 1 || p > 65535 {
		v.errorf("database.port", "%d is not a port between 1 and 65535", p)
	}
	v.nodePath("database.data_dir", db.DataDir)
	switch {
	case db.User == "root":
		v.errorf("database.user", "%q: the database server refuses to run as root; use an unprivileged user (postgres, or mysql for galera)", db.User)
	case !osUserName.MatchString(db.User):
		v.errorf("database.user", "%q is not a user name: use up to 32 letters, digits, '_', '.' and '-', starting with a letter or '_'", db.User)
	}
	if d := db.Lease.D(); d < minDBLease || d > maxDBLease {
		v.errorf("database.lease", "%s is not between %s and %s", db.Lease, Duration(minDBLease), Duration(maxDBLease))
	}
	v.tags(db)
	v.dbListen(db)
}

// Bounds on database.dr.lease, the active-region record's lease. Its
// holder renews it every quarter lease through coordination.global (an
// ownership record's default renewal period in internal/coord), so it
// keeps the record through an outage of the global scope of about three
// quarters of a lease. The outage that must not cost the active region
// its writes is a leader election of the global scope, which etcd's
// randomised timeout makes last up to two election timeouts, plus WAN
// round trips: at four election timeouts, three quarters of the lease is
// three of them, one left for the round trips. Below 2s, WAN round trips and the clock drift allowance
// eat the lease whatever the timings. Above a minute, an automatic
// region failover takes longer than a person deciding with `haven dr
// promote`.
const (
	minDRLease          = 2 * time.Second
	minDRLeaseElections = 4
	maxDRLease          = time.Minute
)

// dr checks the standby cluster: its nodes, all in one region other than
// the database's; both regions with a quorum of their own, so that a cut
// between them stops neither region's failovers; the global scope the
// active-region record lives in; and the region failover's settings.
func (v *validator) dr(db *Database) {
	const path = "database.dr"
	dr := db.DR
	v.nodeRefs(path+".nodes", dr.Nodes, "the nodes of the standby cluster, such as nodes: [wdb1, wdb2, wdb3]")
	v.zones(path+".nodes", dr.Nodes)
	for i, n := range dr.Nodes {
		if slices.Contains(db.Nodes, n) {
			v.errorf(index(path+".nodes", i), "%s is also in database.nodes: a standby cluster needs its own nodes", n)
		}
	}
	if !slices.Contains(drModes, dr.Mode) {
		v.errorf(path+".mode", "%s", notOneOf(dr.Mode, drModes...))
	}
	if !slices.Contains(drFailovers, dr.Failover) {
		v.errorf(path+".failover", "%s", notOneOf(dr.Failover, drFailovers...))
	}
	var g *Coordination
	if c := v.cfg.Coordination; c != nil {
		g = c.Global
	}
	et := Duration(defaultGlobalElectionTimeout)
	if g != nil {
		et = g.ElectionTimeout
	}
	switch least := max(minDRLease, minDRLeaseElections*et.D()); {
	case dr.Lease.D() < least:
		v.errorf(path+".lease", "%s is shorter than %s (at least %s, and %d election timeouts of coordination.global, %s): the active region would lose its record, and its writes, at a leader election of the global scope", dr.Lease, Duration(least), Duration(minDRLease), minDRLeaseElections, et)
	case dr.Lease.D() > maxDRLease:
		v.errorf(path+".lease", "%s is longer than %s: a lost region would be replaced only that long after; promote by hand (failover: manual) if the regions' link is that unreliable", dr.Lease, Duration(maxDRLease))
	}
	if dr.ReadOnlyPool {
		v.readOnlyPool(db)
	}
	if v.cfg.Coordination == nil {
		return // database reports it
	}
	if g == nil {
		v.errorf(path, "needs coordination.global, the scope spanning both regions and a witness in a third, which holds the active-region record, such as coordination: {global: {members: [%s, %s, witness1]}} with witness1 a node of a third region", firstOr(db.Nodes, "db1"), firstOr(dr.Nodes, "wdb1"))
	}
	dbRegions, drRegions := v.regionsOf(db.Nodes), v.regionsOf(dr.Nodes)
	if len(dbRegions) > 1 {
		v.errorf("database.nodes", "with dr, the database nodes are the active region's cluster, in one region, and they are in %s: move the other region's nodes to database.dr.nodes", andList(regionsWithNodes(sortedKeys(dbRegions), dbRegions)))
	}
	if len(drRegions) > 1 {
		v.errorf(path+".nodes", "the standby cluster's nodes are in one region, and they are in %s: keep one region's nodes", andList(regionsWithNodes(sortedKeys(drRegions), drRegions)))
	}
	dbRegion, drRegion := v.drRegions()
	switch {
	case dbRegion == "" || drRegion == "":
		return
	case dbRegion == drRegion:
		v.errorf(path+".nodes", "%s %s in region %s, like database.nodes: the standby cluster must be in another region", andList(drRegions[drRegion]), isAre(len(drRegions[drRegion])), drRegion)
		return
	}
	v.ownQuorum(dbRegion, "database.nodes", db.Nodes)
	v.ownQuorum(drRegion, path+".nodes", dr.Nodes)
}

// ownQuorum reports a database region that does not coordinate through
// members of its own: cut off from the other regions, it could not fail
// over inside itself. Its own coordination.regions entry has members of
// the region only (regionScope checks them); the top-level scope serves
// it when every top-level member is in it; external endpoints are
// trusted.
func (v *validator) ownQuorum(region, path string, nodes []string) {
	c := v.cfg.Coordination
	if c.Regions[region] != nil || (len(c.Endpoints) > 0 && len(c.Members) == 0) {
		return
	}
	byRegion := v.regionsOf(c.Members)
	if len(byRegion) == 0 || (len(byRegion) == 1 && byRegion[region] != nil) {
		return
	}
	fix := fmt.Sprintf("give it a quorum of its own with coordination.regions.%s.members: [%s]", region, strings.Join(nodes[:min(len(nodes), 3)], ", "))
	if byRegion[region] != nil {
		fix = fmt.Sprintf("keep coordination.members to nodes of %s, or %s", region, fix)
	}
	v.errorf(path, "region %s coordinates through coordination.members, which are in %s: cut off from the other regions, %s could not fail over; %s", region, andList(regionsWithNodes(sortedKeys(byRegion), byRegion)), region, fix)
}

// readOnlyPool checks what dr.read_only_pool needs: the replicas
// listener, and routers in the standby region to serve it.
func (v *validator) readOnlyPool(db *Database) {
	const path = "database.dr.read_only_pool"
	if db.Listen == nil || db.Listen.Replicas == "" {
		v.errorf(path, "the standby region's routers serve database.listen.replicas, which is not set: add it, such as listen: {primary: \":6432\", replicas: \":6433\"}")
		return
	}
	_, drRegion := v.drRegions()
	if drRegion == "" {
		return
	}
	for _, r := range db.Routers {
		if n, ok := v.nodes[r]; ok && n.Region == drRegion {
			return
		}
	}
	v.errorf(path, "no router is in the standby region %s (database.routers: %s): add nodes of %s to routers, such as its dr nodes", drRegion, strings.Join(db.Routers, ", "), drRegion)
}

func firstOr(names []string, def string) string {
	if len(names) > 0 {
		return names[0]
	}
	return def
}

func isAre(n int) string {
	if n == 1 {
		return "is"
	}
	return "are"
}

var (
	// repoName names a backup repository.
	repoName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	// bucketName is an S3 bucket name, as AWS allows them to be made now
	// (lowercase; dots only between labels).
	bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
)

// archiverName is the WAL archiver's application_name
// (wal.DefaultApplicationName), which a synchronous archive puts into
// synchronous_standby_names beside the replicas' node names.
const archiverName = "haven_archive"

// minBackupEvery bounds how often a scheduled backup or restore test may
// run: each reads the whole database.
const minBackupEvery = time.Minute

// backup checks database.backup: where backups go, then when and how.
func (v *validator) backup(b *Backup) {
	const path = "database.backup"
	v.backupPolicy(b)
	switch {
	case v.given(path+".target") && v.given(path+".repositories"):
		v.errorf(path+".target", "give target (one repository) or repositories, not both: target: URL is repositories: [{name: %s, url: URL}]", defaultRepository)
	case v.given(path + ".target"):
		// The repository defaults made of it, checked at target's place.
		v.repository(path+".target", b.Repositories[0], path+".target")
		return
	case len(b.Repositories) == 0:
		v.errorf(path+".repositories", "required: where backups go, such as repositories: [{name: main, url: \"file:///var/lib/haven/backups\"}], or url: \"s3://bucket/prefix\"")
		return
	}
	names := map[string]int{}
	urls := map[string]int{}
	for i, r := range b.Repositories {
		p := index(path+".repositories", i)
		if r == nil {
			v.errorf(p, "empty: give name and url")
			continue
		}
		switch j, dup := names[r.Name]; {
		case r.Name == "":
			v.errorf(p+".name", "required: name the repository, such as name: main")
		case !repoName.MatchString(r.Name):
			v.errorf(p+".name", "%q is not a repository name: use up to 63 lowercase letters, digits, '-' and '_', starting with a letter or digit", r.Name)
		case dup:
			v.errorf(p+".name", "%s is also the name of repositories[%d]", r.Name, j)
		default:
			names[r.Name] = i
		}
		if j, dup := urls[strings.TrimRight(r.URL, "/")]; dup && r.URL != "" {
			v.errorf(p+".url", "%q is also the url of repositories[%d]: a copy in the same place is no copy", r.URL, j)
		} else {
			urls[strings.TrimRight(r.URL, "/")] = i
		}
		v.repository(p, r, p+".url")
	}
}

// backupPolicy checks database.backup's schedule, retention and how
// backups are made.
func (v *validator) backupPolicy(b *Backup) {
	const path = "database.backup"
	for _, e := range []struct {
		key, got string
		valid    []string
	}{{"archive", b.Archive, archiveModes}, {"compression", b.Compression, backupCompressions}, {"from", b.From, backupSources}} {
		if !slices.Contains(e.valid, e.got) {
			v.errorf(path+"."+e.key, "%s", notOneOf(e.got, e.valid...))
		}
	}
	for _, e := range []struct {
		key string
		d   Duration
	}{{"base_every", b.BaseEvery}, {"incremental_every", b.IncrementalEvery}, {"verify_every", b.VerifyEvery}} {
		if e.d != 0 && e.d.D() < minBackupEvery {
			v.errorf(path+"."+e.key, "%s is too often: each run reads the whole database; give %s or more, or leave it out", e.d, Duration(minBackupEvery))
		}
	}
	if b.Archive == "synchronous" && v.cfg.Database != nil && slices.Contains(v.cfg.Database.Nodes, archiverName) {
		v.errorf(path+".archive", "synchronous: a database node is named %s, the WAL archiver's name in synchronous_standby_names, so its replica would count as the archive: rename the node", archiverName)
	}
	switch {
	case b.IncrementalEvery != 0 && b.BaseEvery == 0:
		v.errorf(path+".incremental_every", "needs base_every: an incremental backup builds on a full one, such as base_every: 24h")
	case b.IncrementalEvery != 0 && b.IncrementalEvery >= b.BaseEvery:
		v.errorf(path+".incremental_every", "%s is not shorter than base_every (%s): no incremental backup would run between full ones", b.IncrementalEvery, b.BaseEvery)
	}
	if b.Retain < 0 {
		v.errorf(path+".retain", "%s is negative: give how long backups are kept, such as retain: 7d", b.Retain)
	}
	if b.Retain != 0 && b.BaseEvery != 0 && b.Retain < b.BaseEvery {
		v.warnf(path+".retain", "%s is shorter than base_every (%s): only the newest retain_count (%d) full backups are kept between runs", b.Retain, b.BaseEvery, b.RetainCount)
	}
	if b.RetainCount < 1 {
		v.errorf(path+".retain_count", "%d: keep at least one full backup, such as retain_count: 2", b.RetainCount)
	}
	if b.Parallel < 1 || b.Parallel > 64 {
		v.errorf(path+".parallel", "%d: give how many files are copied at once, 1 to 64", b.Parallel)
	}
	if b.EncryptionKeyFile != "" {
		v.encryptionKey(path+".encryption_key_file", b.EncryptionKeyFile)
	}
}

// encryptionKey checks a backup encryption key file: readable, and
// holding 32 bytes in base64, as internal/backup/repo reads it.
func (v *validator) encryptionKey(path, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		v.readable(path, file)
		return
	}
	if key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data))); err != nil || len(key) != 32 {
		v.errorf(path, "%q does not hold a key: it must hold 32 random bytes in base64 (44 characters), such as `head -c 32 /dev/urandom | base64 > %s` writes", file, file)
	}
}

// repository checks one repository; urlPath is where its URL was written.
func (v *validator) repository(path string, r *BackupRepository, urlPath string) {
	s3Only := map[string]bool{"endpoint": r.Endpoint != "", "region": r.Region != "", "path_style": r.PathStyle != nil, "credentials_file": r.CredentialsFile != ""}
	u, err := url.Parse(r.URL)
	if err == nil && u.Scheme == "file" {
		for _, key := range sortedKeys(s3Only) {
			if s3Only[key] {
				v.errorf(path+"."+key, "applies to s3:// repositories, and this one is %s: remove %s", r.URL, key)
			}
		}
	}
	switch {
	case r.URL == "":
		v.errorf(urlPath, "required: where the repository is, such as url: \"file:///var/lib/haven/backups\" or \"s3://bucket/prefix\"")
		return
	case err != nil || !slices.Contains(backupSchemes, u.Scheme) || u.Opaque != "":
		v.errorf(urlPath, "%q is not a URL with scheme file or s3: give file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX", r.URL)
		return
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		v.errorf(urlPath, "%q: a repository URL has no query, fragment or user: give the S3 keys beside url (endpoint, region, path_style, credentials_file)", r.URL)
		return
	case u.Scheme == "file" && u.Host != "":
		v.errorf(urlPath, "%q names host %s: a file URL is file:// and an absolute path, such as file:///var/lib/haven/backups (three slashes)", r.URL, u.Host)
		return
	case u.Scheme == "file" && (u.Path == "" || u.Path == "/"):
		v.errorf(urlPath, "%q has no directory: give an absolute path, such as file:///var/lib/haven/backups", r.URL)
		return
	case u.Scheme == "file":
		return
	case !bucketName.MatchString(u.Host) || strings.Contains(u.Host, ".."):
		v.errorf(urlPath, "%q: %q is not an S3 bucket name: 3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit", r.URL, u.Host)
	}
	if r.Endpoint != "" {
		e, err := url.Parse(r.Endpoint)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || (e.Path != "" && e.Path != "/") || e.RawQuery != "" {
			v.errorf(path+".endpoint", "%q is not a server URL: give scheme and host only, such as https://s3.eu-central-1.amazonaws.com or http://198.18.1.30:7070", r.Endpoint)
		}
	}
	if r.CredentialsFile != "" {
		v.secret(path+".credentials_file", r.CredentialsFile)
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
		if v.given("database.router_hold") {
			v.errorf("database.router_hold", "applies to the routers of database.listen, which is not set: add listen: {primary: \":6432\"} or remove router_hold")
		}
		return
	}
	if d := db.RouterHold.D(); d > maxRouterHold {
		v.errorf("database.router_hold", "%s is longer than %s: clients would wait that long on an empty pool; use 0s to close their connections at once", db.RouterHold, Duration(maxRouterHold))
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
// settings checks database.settings' names and values; notName says what a
// valid name is.
func (v *validator) settings(db *Database, valid *regexp.Regexp, notName string) {
	for _, low := range sortedKeys(db.settingKeys) {
		names := db.settingKeys[low]
		for i, name := range names {
			path := "database.settings." + name
			if !valid.MatchString(name) {
				v.keyErrorf(path, "%q is not %s", name, notName)
				continue
			}
			if i > 0 {
				v.keyErrorf(path, "%q and %q are the same setting (%s): the server ignores case in names; keep one", names[0], name, low)
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
	tagged, lists := db.Nodes, "database.nodes"
	if db.DR != nil {
		tagged, lists = append(slices.Clone(db.Nodes), db.DR.Nodes...), "database.nodes or database.dr.nodes"
	}
	for _, name := range sortedKeys(db.Tags) {
		path := "database.tags." + name
		if !slices.Contains(tagged, name) {
			v.keyErrorf(path, "%s is not one of %s (%s)", name, lists, strings.Join(tagged, ", "))
		}
		if p := *db.Tags[name].Priority; p < 0 || p > maxTagPriority {
			v.errorf(path+".priority", "%d is not a priority between 0 and %d", p, maxTagPriority)
		}
	}
	if all {
		v.warnf("database.tags", "every database node has nofailover: a lost primary is never replaced; clear it on at least one node")
	}
}
