package pg

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// DefaultPort is the port PostgreSQL listens on when Config.Port is zero.
const DefaultPort = 5432

// Superuser is the database superuser initdb creates and haven connects as.
const Superuser = "postgres"

// maxSocketPath is the longest unix socket path PostgreSQL accepts
// (sizeof(sun_path) - 1 on Linux).
const maxSocketPath = 107

// Config configures a Server. Only DataDir is required.
type Config struct {
	// Bindir is the PostgreSQL binary directory. Empty: FindBinaries
	// searches PATH, then `pg_config --bindir`.
	Bindir string
	// DataDir is the data directory. A relative path is made absolute.
	DataDir string
	// ListenAddresses are the TCP addresses PostgreSQL listens on
	// (listen_addresses): IP addresses, host names or "*". Empty: no TCP,
	// the unix socket only.
	ListenAddresses []string
	// Name is the node's name. A replica gives it to its primary as
	// application_name, which pg_stat_replication and
	// synchronous_standby_names use. Clone, Follow and Rewind need it.
	Name string
	// Port is the TCP port, which also names the unix socket
	// (.s.PGSQL.<port>). Zero means DefaultPort.
	Port int
	// SocketDir is the directory of the unix socket haven connects through
	// (unix_socket_directories). Empty: "run" beside the data directory. It
	// must not be the data directory, which pg_basebackup and pg_rewind
	// copy.
	SocketDir string
	// User is the operating system user postgres runs as. Empty: "postgres"
	// when haven runs as root (PostgreSQL refuses to run as root), haven's
	// own user otherwise. Only root can run postgres as another user.
	User string
	// Settings are the user's postgresql.conf settings. A name haven manages
	// (ManagedSettings) is an error that lists every such name.
	Settings map[string]string
	// HBA are pg_hba.conf lines, added after haven's own lines.
	HBA []string
	// LogFile receives postgres's and initdb's output, appended. Empty:
	// "<data dir>.log" beside the data directory (never inside it, which
	// pg_basebackup and pg_rewind copy).
	LogFile string
	// Logger receives the supervisor's events (component=pg). Default:
	// discard.
	Logger *slog.Logger
}

// ErrManagedSetting is wrapped by the error New returns when Config.Settings
// sets a name that haven manages.
var ErrManagedSetting = errors.New("managed by haven")

// managed is one setting haven controls.
type managed struct {
	name  string
	value string // empty when reserved
	// reserved names are for the keeper to set as the cluster changes
	// (later steps); the Server does not write them.
	reserved string
}

// fixedSettings are written on every start, whatever the user asks for:
// what streaming replication, pg_rewind and haven's log capture depend on.
var fixedSettings = []managed{
	{name: "wal_level", value: "replica"},
	{name: "hot_standby", value: "on"},
	{name: "wal_log_hints", value: "on"},
	{name: "max_wal_senders", value: "10"},
	{name: "max_replication_slots", value: "10"},
	{name: "logging_collector", value: "off"},
	{name: "log_destination", value: "stderr"},
}

// defaultSettings are haven's defaults for settings the user may set:
// written with the user's settings unless Config.Settings names them.
var defaultSettings = []managed{
	// A replica whose stream ended (its primary crashed and restarts in
	// place) tries again this often, not every 5 s: in sync mode commits
	// on the restarted primary wait for it.
	{name: "wal_retrieve_retry_interval", value: "250ms"},
}

// reservedSettings may not be set by the user: haven owns the files they
// name, or the keeper sets them as the cluster's roles change.
var reservedSettings = []managed{
	{name: "data_directory", reserved: "haven passes -D"},
	{name: "config_file", reserved: "haven owns postgresql.conf"},
	{name: "hba_file", reserved: "haven writes pg_hba.conf; use the HBA lines"},
	{name: "ident_file", reserved: "haven writes pg_ident.conf"},
	{name: "include", reserved: "a directive, not a setting"},
	{name: "include_if_exists", reserved: "a directive, not a setting"},
	{name: "include_dir", reserved: "a directive, not a setting"},
	{name: "synchronous_standby_names", reserved: "set by the keeper from the replication mode"},
	{name: "primary_conninfo", reserved: "set by the keeper on replicas"},
	{name: "primary_slot_name", reserved: "set by the keeper on replicas"},
	{name: "promote_trigger_file", reserved: "the keeper promotes"},
	{name: "recovery_target_timeline", reserved: "set by the keeper on replicas"},
}

// ManagedSettings returns the names of the settings haven controls, sorted:
// those it writes on every start and those reserved for the keeper. They
// cannot appear in Config.Settings.
func ManagedSettings() []string {
	names := []string{"listen_addresses", "port", "unix_socket_directories"}
	for _, m := range fixedSettings {
		names = append(names, m.name)
	}
	for _, m := range reservedSettings {
		names = append(names, m.name)
	}
	slices.Sort(names)
	return names
}

// settingNameRE matches a setting name, including a custom one with a
// prefix ("pg_stat_statements.max").
var settingNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$`)

// runAs is the operating system user postgres runs as.
type runAs struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32 // supplementary groups, for Credential
	// drop is set when haven runs as root: child processes switch to the
	// user.
	drop bool
}

// settings is the resolved configuration of a Server.
type settings struct {
	dataDir   string
	socketDir string
	logFile   string
	port      int
	listen    []string
	user      runAs
	agentUser string // haven's own user, mapped to Superuser in pg_ident.conf
	userConf  map[string]string
	managed   []managed // written on every start, in this order
	hba       []string
	name      string // Config.Name

	// kmu guards keeper and serialises writeConfig.
	kmu sync.Mutex
	// keeper holds the settings the keeper sets as the node's role
	// changes (keeperSettings), written at the end of haven.conf. nil until
	// the keeper first sets them: writeConfig then keeps the section
	// haven.conf already has, so that a restarted haven does not forget
	// that the node is a replica.
	keeper map[string]string
}

// keeperSettings are the reserved settings the keeper writes in haven.conf
// as the node's role changes. They are not on the command line: a reload
// applies them.
var keeperSettings = []string{"primary_conninfo", "primary_slot_name", "recovery_target_timeline", "synchronous_standby_names"}

// nodeNameRE matches a node name: it goes into application_name and, double
// quoted, into synchronous_standby_names.
var nodeNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,63}$`)

// resolve checks cfg, fills its defaults and looks up the users. It starts
// nothing and writes nothing.
func resolve(cfg Config) (*settings, error) {
	s, err := check(cfg)
	if err != nil {
		return nil, err
	}
	if s.user, s.agentUser, err = resolveUser(cfg.User); err != nil {
		return nil, err
	}
	return s, nil
}

// check checks cfg and fills its defaults, except the users.
func check(cfg Config) (*settings, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("pg: data dir: required: set Config.DataDir to the directory of the cluster")
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("pg: data dir %q: %w", cfg.DataDir, err)
	}
	s := &settings{dataDir: dataDir, port: cfg.Port, socketDir: cfg.SocketDir, logFile: cfg.LogFile}
	if s.port == 0 {
		s.port = DefaultPort
	}
	if s.port < 1 || s.port > 65535 {
		return nil, fmt.Errorf("pg: port: %d is not between 1 and 65535", cfg.Port)
	}
	if s.socketDir == "" {
		s.socketDir = filepath.Join(filepath.Dir(dataDir), "run")
	}
	if s.socketDir, err = filepath.Abs(s.socketDir); err != nil {
		return nil, fmt.Errorf("pg: socket dir %q: %w", cfg.SocketDir, err)
	}
	if s.socketDir == dataDir {
		return nil, fmt.Errorf("pg: socket dir %s: must not be the data directory, which pg_basebackup and pg_rewind copy", s.socketDir)
	}
	if strings.ContainsAny(s.socketDir, ",\"'\n") {
		return nil, fmt.Errorf("pg: socket dir %q: must not contain commas, quotes or newlines", s.socketDir)
	}
	if sock := socketPath(s.socketDir, s.port); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("pg: socket dir %s: the socket path %s is %d bytes; PostgreSQL accepts at most %d",
			s.socketDir, sock, len(sock), maxSocketPath)
	}
	if s.logFile == "" {
		s.logFile = dataDir + ".log"
	}
	if s.logFile, err = filepath.Abs(s.logFile); err != nil {
		return nil, fmt.Errorf("pg: log file %q: %w", cfg.LogFile, err)
	}
	if rel, err := filepath.Rel(dataDir, s.logFile); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") {
		return nil, fmt.Errorf("pg: log file %s: must not be inside the data directory, which pg_basebackup and pg_rewind copy", s.logFile)
	}
	for i, a := range cfg.ListenAddresses {
		if a == "" || strings.ContainsAny(a, ", \t\n'\"") {
			return nil, fmt.Errorf("pg: listen addresses[%d]: %q is not an address, a host name or *", i, a)
		}
	}
	s.listen = slices.Clone(cfg.ListenAddresses)
	if err := checkHBA(cfg.HBA); err != nil {
		return nil, err
	}
	s.hba = slices.Clone(cfg.HBA)
	if cfg.Name != "" && !nodeNameRE.MatchString(cfg.Name) {
		return nil, fmt.Errorf("pg: name: %q is not 1 to 63 letters, digits, '_', '.' or '-'", cfg.Name)
	}
	s.name = cfg.Name
	s.managed = append([]managed{
		{name: "listen_addresses", value: strings.Join(s.listen, ",")},
		{name: "port", value: strconv.Itoa(s.port)},
		{name: "unix_socket_directories", value: s.socketDir},
	}, fixedSettings...)
	if s.userConf, err = userSettings(cfg.Settings, s.managed); err != nil {
		return nil, err
	}
	return s, nil
}

// checkHBA checks that each of lines is one pg_hba.conf line.
func checkHBA(lines []string) error {
	for i, line := range lines {
		if strings.TrimSpace(line) == "" || strings.ContainsAny(line, "\n\r") {
			return fmt.Errorf("pg: hba[%d]: %q is not one pg_hba.conf line", i, line)
		}
	}
	return nil
}

// userSettings are the user's settings, checked (checkSettings), with
// haven's defaults for those they do not set.
func userSettings(user map[string]string, managed []managed) (map[string]string, error) {
	conf, err := checkSettings(user, managed)
	if err != nil {
		return nil, err
	}
	for _, d := range defaultSettings {
		if _, set := conf[d.name]; !set {
			conf[d.name] = d.value
		}
	}
	return conf, nil
}

// checkSettings validates the user's settings and rejects every name haven
// manages, naming each as the user wrote it.
func checkSettings(user map[string]string, written []managed) (map[string]string, error) {
	reason := make(map[string]string)
	for _, m := range written {
		reason[m.name] = fmt.Sprintf("haven sets %s", quoteConf(m.value))
	}
	for _, m := range reservedSettings {
		reason[m.name] = m.reserved
	}
	names := make([]string, 0, len(user))
	for name := range user {
		names = append(names, name)
	}
	slices.Sort(names)
	var conflicts []string
	seen := make(map[string]string)
	for _, name := range names {
		if !settingNameRE.MatchString(name) {
			return nil, fmt.Errorf("pg: settings: %q is not a setting name", name)
		}
		if v := user[name]; strings.ContainsAny(v, "\n\r\x00") {
			return nil, fmt.Errorf("pg: settings.%s: %q: a value cannot contain a newline or NUL", name, v)
		}
		low := strings.ToLower(name)
		if other, dup := seen[low]; dup {
			return nil, fmt.Errorf("pg: settings: %q and %q are the same setting", other, name)
		}
		seen[low] = name
		if r, ok := reason[low]; ok {
			conflicts = append(conflicts, fmt.Sprintf("%s (%s)", name, r))
		}
	}
	if len(conflicts) > 0 {
		return nil, fmt.Errorf("pg: settings: %w, remove: %s", ErrManagedSetting, strings.Join(conflicts, ", "))
	}
	out := make(map[string]string, len(user))
	for name, v := range user {
		out[strings.ToLower(name)] = v
	}
	return out, nil
}

// resolveUser finds the user postgres runs as, and haven's own user name.
func resolveUser(name string) (runAs, string, error) {
	self, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	agent := strconv.Itoa(os.Geteuid())
	if err == nil {
		agent = self.Username
	}
	root := os.Geteuid() == 0
	if name == "" {
		if root {
			name = "postgres"
		} else {
			if err != nil {
				return runAs{}, "", fmt.Errorf("pg: user: haven's own user (uid %d): %w", os.Geteuid(), err)
			}
			name = self.Username
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return runAs{}, "", fmt.Errorf("pg: user %s: %w", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return runAs{}, "", fmt.Errorf("pg: user %s: %w", name, err)
	}
	if uid == 0 {
		return runAs{}, "", fmt.Errorf("pg: user %s: PostgreSQL refuses to run as root; choose an unprivileged user such as postgres", name)
	}
	if !root && uid != uint64(os.Geteuid()) {
		return runAs{}, "", fmt.Errorf("pg: user %s: haven runs as %s (uid %d) and can run postgres only as itself; running it as another user needs root",
			name, agent, os.Geteuid())
	}
	r := runAs{name: name, uid: uint32(uid), gid: uint32(gid), drop: root}
	if root {
		ids, err := u.GroupIds()
		if err != nil {
			return runAs{}, "", fmt.Errorf("pg: user %s: groups: %w", name, err)
		}
		for _, id := range ids {
			g, err := strconv.ParseUint(id, 10, 32)
			if err != nil {
				return runAs{}, "", fmt.Errorf("pg: user %s: group %q: %w", name, id, err)
			}
			r.groups = append(r.groups, uint32(g))
		}
	}
	return r, agent, nil
}

// socketPath is the path of the unix socket for port in dir.
func socketPath(dir string, port int) string {
	return filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))
}
