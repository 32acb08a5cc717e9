package config

import (
	"regexp"
	"slices"
	"strings"
	"time"
)

// Bounds on database.galera.failure_detection (evs.suspect_timeout). Below
// half a second a busy node's late keepalive evicts it; above a minute a
// dead node stops every commit for longer than anyone waits.
const (
	minFailureDetection = 500 * time.Millisecond
	maxFailureDetection = time.Minute
	minGaleraCheck      = 100 * time.Millisecond
	maxGaleraCheck      = 10 * time.Second
	minGCacheSize       = 16 << 20
)

// mysqlSettingName is a MariaDB system variable as my.cnf takes it ('-'
// and '_' alike, any case).
var mysqlSettingName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// galeraOwnedSettings are the server settings haven writes for a Galera
// node, and the key that sets each instead (empty: haven decides alone).
var galeraOwnedSettings = map[string]string{
	"datadir":                     "database.data_dir",
	"port":                        "database.port",
	"bind_address":                "",
	"socket":                      "",
	"pid_file":                    "",
	"user":                        "database.user",
	"log_error":                   "",
	"binlog_format":               "",
	"default_storage_engine":      "",
	"innodb_autoinc_lock_mode":    "",
	"wsrep_on":                    "",
	"wsrep_provider":              "",
	"wsrep_provider_options":      "database.galera.provider_options",
	"wsrep_cluster_address":       "",
	"wsrep_cluster_name":          "database.galera.cluster_name",
	"wsrep_node_address":          "",
	"wsrep_node_name":             "",
	"wsrep_node_incoming_address": "",
	"wsrep_sst_method":            "database.galera.sst_method",
	"wsrep_sst_auth":              "",
	"wsrep_sst_receive_address":   "database.galera.sst_port",
	"wsrep_notify_cmd":            "",
}

// galeraOwnedOptions are the wsrep provider options haven derives, and the
// key each comes from.
var galeraOwnedOptions = map[string]string{
	"base_port":                 "database.galera.group_port",
	"gmcast.listen_addr":        "database.galera.group_port",
	"ist.recv_addr":             "database.galera.ist_port",
	"gcache.size":               "database.galera.gcache_size",
	"evs.suspect_timeout":       "database.galera.failure_detection",
	"evs.inactive_timeout":      "database.galera.failure_detection",
	"evs.keepalive_period":      "database.galera.failure_detection",
	"evs.inactive_check_period": "database.galera.failure_detection",
	"pc.recovery":               "",
}

// galera checks a database of engine galera: what both engines read, the
// galera section, and none of PostgreSQL's own keys.
func (v *validator) galera(db *Database) {
	const path = "database.galera"
	v.nodeRefs("database.nodes", db.Nodes, "the nodes that run MariaDB with Galera, such as nodes: [db1, db2, db3]")
	if len(db.Nodes) == 2 {
		v.errorf("database.nodes", "a Galera cluster of two nodes loses its quorum with either one (each is half): use three nodes, or one")
	}
	v.dbCommon(db)
	for key, why := range map[string]bool{
		"database.bindir":      db.Bindir != "",
		"database.hba":         len(db.HBA) > 0,
		"database.replication": v.given("database.replication"),
		"database.write_fence": db.WriteFence != nil,
		"database.dr":          db.DR != nil,
		"database.backup":      db.Backup != nil,
	} {
		if why {
			v.errorf(key, "is PostgreSQL's (engine postgres); a Galera cluster does not read it: remove it")
		}
	}
	v.settings(db, mysqlSettingName, "a MariaDB variable name: use letters, digits, '_' and '-', such as innodb_buffer_pool_size")
	for _, name := range sortedKeys(db.Settings) {
		if key, owned := galeraOwnedSettings[name]; owned {
			v.keyErrorf(db.SettingPath(name), "%s", ownedBy(name, key))
		}
	}
	g := db.Galera
	for _, p := range []struct {
		key  string
		port int
	}{{"group_port", g.GroupPort}, {"ist_port", g.ISTPort}, {"sst_port", g.SSTPort}} {
		switch {
		case p.port < 1 || p.port > 65535:
			v.errorf(path+"."+p.key, "%d is not a port between 1 and 65535", p.port)
		case p.port == db.Port:
			v.errorf(path+"."+p.key, "%d is database.port too: each of the server's ports needs its own number", p.port)
		}
	}
	if g.GroupPort == g.ISTPort || g.GroupPort == g.SSTPort || g.ISTPort == g.SSTPort {
		v.errorf(path, "group_port %d, ist_port %d and sst_port %d must differ", g.GroupPort, g.ISTPort, g.SSTPort)
	}
	if !slices.Contains(sstMethods, g.SSTMethod) {
		v.errorf(path+".sst_method", "%s", notOneOf(g.SSTMethod, sstMethods...))
	}
	if !slices.Contains(galeraWriters, g.Writers) {
		v.errorf(path+".writers", "%s", notOneOf(g.Writers, galeraWriters...))
	}
	if g.GCacheSize < minGCacheSize {
		v.errorf(path+".gcache_size", "%s is below %s: a node away for a moment would need a full state transfer", g.GCacheSize, Size(minGCacheSize))
	}
	if d := g.FailureDetection.D(); d < minFailureDetection || d > maxFailureDetection {
		v.errorf(path+".failure_detection", "%s is not between %s and %s", g.FailureDetection, Duration(minFailureDetection), Duration(maxFailureDetection))
	}
	if d := g.CheckInterval.D(); d < minGaleraCheck || d > maxGaleraCheck {
		v.errorf(path+".check_interval", "%s is not between %s and %s", g.CheckInterval, Duration(minGaleraCheck), Duration(maxGaleraCheck))
	}
	for _, name := range sortedKeys(g.ProviderOptions) {
		key := path + ".provider_options." + name
		val := g.ProviderOptions[name]
		switch by, owned := galeraOwnedOptions[name]; {
		case owned:
			v.keyErrorf(key, "%s", ownedBy(name, by))
		case !mysqlOptionName.MatchString(name):
			v.keyErrorf(key, "%q is not a wsrep provider option name, such as gcs.fc_limit", name)
		case strings.ContainsAny(val, ";\n\r\x00"):
			v.errorf(key, "%q: a provider option's value cannot contain ';', a newline or NUL", val)
		}
	}
}

// mysqlOptionName is a wsrep provider option: dotted words.
var mysqlOptionName = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$`)

// ownedBy says that haven writes setting name itself, and which key sets
// it instead, if any.
func ownedBy(name, key string) string {
	if key == "" {
		return name + " is haven's to set (from the nodes and their addresses): remove it"
	}
	return name + " is haven's to set: use " + key
}
