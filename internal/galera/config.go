package galera

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Config is one node's MariaDB server with Galera, as haven runs it.
type Config struct {
	// Name is the node's name (wsrep_node_name) and Address its address,
	// which the server listens on and the group reaches it at.
	Name    string
	Address string
	// Port is the SQL port; GroupPort, ISTPort and SSTPort Galera's.
	Port, GroupPort, ISTPort, SSTPort int
	// Peers are every node's address (this one's included), for
	// wsrep_cluster_address: a joining node asks each in turn.
	Peers []string
	// ClusterName is wsrep_cluster_name.
	ClusterName string
	// BaseDir holds the data directory (BaseDir/data) and haven's files
	// for the server: my.cnf, the socket, the pid file, the log.
	BaseDir string
	// User is the operating system user mariadbd runs as when haven
	// runs as root.
	User string
	// SSTMethod is mariabackup or rsync.
	SSTMethod string
	// GCacheSize is gcache.size in bytes.
	GCacheSize int64
	// FailureDetection is evs.suspect_timeout; the group's keepalive and
	// inactivity timings are derived from it.
	FailureDetection time.Duration
	// ProviderOptions are further wsrep_provider_options.
	ProviderOptions map[string]string
	// Settings are further [mysqld] settings (after haven's defaults,
	// which they override; never haven's own).
	Settings map[string]string
	Logger   *slog.Logger
}

// Paths of haven's files for the server, under BaseDir.
func (c *Config) dataDir() string  { return filepath.Join(c.BaseDir, "data") }
func (c *Config) confFile() string { return filepath.Join(c.BaseDir, "my.cnf") }
func (c *Config) socket() string   { return filepath.Join(c.BaseDir, "mysqld.sock") }
func (c *Config) pidFile() string  { return filepath.Join(c.BaseDir, "mysqld.pid") }
func (c *Config) logFile() string  { return filepath.Join(c.BaseDir, "mariadb.log") }

func (c *Config) check() error {
	switch {
	case c.Name == "" || c.Address == "":
		return errors.New("no node name or address")
	case c.BaseDir == "" || !filepath.IsAbs(c.BaseDir):
		return fmt.Errorf("base directory %q is not an absolute path", c.BaseDir)
	case len(c.Peers) == 0:
		return errors.New("no peers (the nodes' addresses)")
	case c.FailureDetection < 500*time.Millisecond:
		return fmt.Errorf("failure detection %v is below 500ms", c.FailureDetection)
	}
	// The unix socket's path must fit sockaddr_un.
	if n := len(c.socket()); n > 107 {
		return fmt.Errorf("socket path %s is %d bytes, more than a unix socket's 107: use a shorter database.data_dir", c.socket(), n)
	}
	return nil
}

// hostPort joins the node's address and port.
func (c *Config) hostPort(port int) string { return net.JoinHostPort(c.Address, strconv.Itoa(port)) }

// providerOptions are the wsrep provider's options: haven's own, then the
// user's (which validation keeps off haven's). Galera's failure detector
// wants keepalives well within the suspect timeout (it refuses a period of
// a third or more) and an inactivity timeout above it: at the default 5s
// these are Galera's own timings.
func (c *Config) providerOptions() string {
	d := c.FailureDetection
	opts := map[string]string{
		"gmcast.listen_addr":        "tcp://" + c.hostPort(c.GroupPort),
		"ist.recv_addr":             c.hostPort(c.ISTPort),
		"gcache.size":               strconv.FormatInt(c.GCacheSize, 10),
		"evs.suspect_timeout":       isoDuration(d),
		"evs.inactive_timeout":      isoDuration(3 * d),
		"evs.keepalive_period":      isoDuration(d / 5),
		"evs.inactive_check_period": isoDuration(d / 10),
		// A node that crashed comes back with its write-set cache, and
		// rejoins by IST rather than a full copy.
		"gcache.recover": "yes",
		// haven restores a cluster after a whole-cluster crash itself
		// (decide). Galera's own restore would bring a crashed node back
		// under its old identity, which the others may have evicted
		// (evictDead): it would stay half in, half out of their view.
		"pc.recovery": "false",
	}
	maps.Copy(opts, c.ProviderOptions)
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		parts = append(parts, k+"="+opts[k])
	}
	return strings.Join(parts, ";")
}

// isoDuration writes d as Galera reads durations (ISO 8601, PT1.5S).
func isoDuration(d time.Duration) string {
	return "PT" + strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "S"
}

// defaultSettings are haven's choices that database.settings may change.
var defaultSettings = map[string]string{
	// A node without a resolver (most servers') waits for reverse DNS on
	// every client connection otherwise.
	"skip_name_resolve": "ON",
	// Galera replicates InnoDB only; a MyISAM write would not reach the
	// other nodes.
	"enforce_storage_engine": "InnoDB",
}

// render is my.cnf: haven's settings, its defaults, then the user's.
func (c *Config) render(provider string) []byte {
	var b strings.Builder
	b.WriteString("# Written by haven at every start of the server: edit haven.yaml instead\n# (database.settings, database.galera).\n[mysqld]\n")
	line := func(k, v string) { fmt.Fprintf(&b, "%s = %s\n", k, v) }
	var peers []string
	for _, p := range c.Peers {
		peers = append(peers, net.JoinHostPort(p, strconv.Itoa(c.GroupPort)))
	}
	for _, kv := range [][2]string{
		{"datadir", c.dataDir()},
		{"socket", c.socket()},
		{"pid_file", c.pidFile()},
		{"port", strconv.Itoa(c.Port)},
		{"bind_address", c.Address},
		{"binlog_format", "ROW"},
		{"default_storage_engine", "InnoDB"},
		{"innodb_autoinc_lock_mode", "2"},
		{"wsrep_on", "ON"},
		{"wsrep_provider", provider},
		{"wsrep_cluster_name", strconv.Quote(c.ClusterName)},
		{"wsrep_cluster_address", "gcomm://" + strings.Join(peers, ",")},
		{"wsrep_node_name", c.Name},
		{"wsrep_node_address", c.hostPort(c.GroupPort)},
		{"wsrep_node_incoming_address", c.hostPort(c.Port)},
		{"wsrep_sst_method", c.SSTMethod},
		// The donor's mariabackup connects over the socket as the user
		// mariadbd runs as, by unix_socket authentication: no password
		// to keep.
		{"wsrep_sst_auth", c.User + ":"},
		{"wsrep_sst_receive_address", c.hostPort(c.SSTPort)},
		{"wsrep_provider_options", strconv.Quote(c.providerOptions())},
	} {
		line(kv[0], kv[1])
	}
	settings := maps.Clone(defaultSettings)
	maps.Copy(settings, c.Settings)
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		line(k, settings[k])
	}
	return []byte(b.String())
}

// providerPaths are where Debian, Fedora and upstream's packages put the
// galera-4 provider.
var providerPaths = []string{
	"/usr/lib/galera/libgalera_smm.so",
	"/usr/lib/libgalera_smm.so",
	"/usr/lib64/galera-4/libgalera_smm.so",
	"/usr/lib64/galera/libgalera_smm.so",
}

// findProvider returns the galera provider's path.
func findProvider() (string, error) {
	for _, p := range providerPaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no galera provider (libgalera_smm.so) in %s: install galera-4 (apt-get install galera-4)", strings.Join(providerPaths, ", "))
}
