package pg

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestResolveErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		want    []string // substrings of the error
		managed bool     // the error wraps ErrManagedSetting
	}{
		{name: "no data dir", cfg: Config{}, want: []string{"data dir: required"}},
		{name: "port", cfg: Config{DataDir: "/d", Port: 70000}, want: []string{"port: 70000"}},
		{
			name:    "managed setting",
			cfg:     Config{DataDir: "/d", Settings: map[string]string{"wal_level": "minimal", "shared_buffers": "1GB"}},
			want:    []string{"wal_level (haven sets 'replica')"},
			managed: true,
		},
		{
			name:    "managed settings, as the user spelled them",
			cfg:     Config{DataDir: "/d", Port: 5433, Settings: map[string]string{"Port": "1", "listen_addresses": "*"}},
			want:    []string{"Port (haven sets '5433')", "listen_addresses (haven sets '')"},
			managed: true,
		},
		{
			name:    "reserved for the keeper",
			cfg:     Config{DataDir: "/d", Settings: map[string]string{"synchronous_standby_names": "*"}},
			want:    []string{"synchronous_standby_names (set by the keeper"},
			managed: true,
		},
		{
			name:    "a directive",
			cfg:     Config{DataDir: "/d", Settings: map[string]string{"include": "/etc/x.conf"}},
			want:    []string{"include (a directive"},
			managed: true,
		},
		{name: "bad name", cfg: Config{DataDir: "/d", Settings: map[string]string{"work mem": "1MB"}}, want: []string{`"work mem" is not a setting name`}},
		{name: "newline", cfg: Config{DataDir: "/d", Settings: map[string]string{"work_mem": "1MB\nfsync = off"}}, want: []string{"settings.work_mem", "newline"}},
		{name: "twice", cfg: Config{DataDir: "/d", Settings: map[string]string{"work_mem": "1MB", "WORK_MEM": "2MB"}}, want: []string{`"WORK_MEM" and "work_mem" are the same setting`}},
		{name: "hba", cfg: Config{DataDir: "/d", HBA: []string{"host all all 0/0 trust\nlocal all all trust"}}, want: []string{"hba[0]"}},
		{name: "listen", cfg: Config{DataDir: "/d", ListenAddresses: []string{"1.2.3.4,5.6.7.8"}}, want: []string{"listen addresses[0]"}},
		{name: "socket in data dir", cfg: Config{DataDir: "/d", SocketDir: "/d"}, want: []string{"must not be the data directory"}},
		{name: "log in data dir", cfg: Config{DataDir: "/d", LogFile: "/d/log/pg.log"}, want: []string{"log file /d/log/pg.log: must not be inside"}},
		{name: "socket path too long", cfg: Config{DataDir: "/d", SocketDir: "/" + strings.Repeat("s", 100)}, want: []string{"PostgreSQL accepts at most 107"}},
		{name: "node name", cfg: Config{DataDir: "/d", Name: `db"2`}, want: []string{`name: "db\"2" is not 1 to 63 letters`}},
		{
			name:    "primary_conninfo",
			cfg:     Config{DataDir: "/d", Settings: map[string]string{"primary_conninfo": "host=x"}},
			want:    []string{"primary_conninfo (set by the keeper on replicas)"},
			managed: true,
		},
		{name: "root", cfg: Config{DataDir: "/d", User: "root"}, want: []string{"user root"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := resolve(tc.cfg)
			t.Logf("resolve: %v", err)
			if err == nil {
				t.Fatalf("resolve = nil; want an error with %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("resolve = %v; want %q in it", err, w)
				}
			}
			if errors.Is(err, ErrManagedSetting) != tc.managed {
				t.Errorf("errors.Is(%v, ErrManagedSetting) = %v; want %v", err, !tc.managed, tc.managed)
			}
			if tc.managed && strings.Contains(err.Error(), "shared_buffers") {
				t.Errorf("resolve = %v; names a setting that is not managed", err)
			}
		})
	}
}

func TestResolveDefaults(t *testing.T) {
	if os.Geteuid() == 0 {
		_, err := user.Lookup("postgres")
		testenv.Need(t, err == nil, "no postgres user (apt-get install postgresql): %v", err)
	}
	s, err := resolve(Config{DataDir: "/var/lib/haven/pg/data"})
	if err != nil {
		t.Fatal(err)
	}
	if s.port != DefaultPort || s.socketDir != "/var/lib/haven/pg/run" || s.logFile != "/var/lib/haven/pg/data.log" {
		t.Errorf("defaults: port %d, socket dir %s, log file %s", s.port, s.socketDir, s.logFile)
	}
	wantUser := "postgres"
	if os.Geteuid() != 0 {
		wantUser = s.agentUser
	}
	if s.user.name != wantUser || s.user.drop != (os.Geteuid() == 0) {
		t.Errorf("user = %+v; want %s", s.user, wantUser)
	}
}

// goldenSettings is a fixed configuration for the golden files.
func goldenSettings(t *testing.T, dataDir string) *settings {
	t.Helper()
	s, err := check(Config{
		DataDir:         dataDir,
		ListenAddresses: []string{"127.0.0.1", "::1"},
		Port:            5433,
		Settings:        map[string]string{"shared_buffers": "256MB", "Log_Line_Prefix": `%m [%p] it's \ `},
		HBA:             []string{"host replication replicator 198.18.1.0/24 scram-sha-256", "  host all all 198.18.1.0/24 scram-sha-256  "},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.user = runAs{name: "postgres"}
	s.agentUser = "root"
	return s
}

func TestRenderGolden(t *testing.T) {
	s := goldenSettings(t, "/var/lib/haven/pg/data")
	for name, got := range map[string][]byte{
		"haven.conf":    s.renderHavenConf(),
		"pg_hba.conf":   s.renderHBA(),
		"pg_ident.conf": s.renderIdent(),
		"cmdline.txt":   []byte(strings.Join(s.commandLine(), "\n") + "\n"),
	} {
		path := filepath.Join("testdata", name+".golden")
		if *update {
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -update to create it)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s:\n%s", name, path, got)
		}
	}
}

func TestWriteConfigIdempotent(t *testing.T) {
	dir := t.TempDir()
	s := goldenSettings(t, dir)
	conf := filepath.Join(dir, "postgresql.conf")
	if err := os.WriteFile(conf, []byte("max_connections = 100\n# include 'haven.conf' (a comment is not an include)"), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := s.writeConfig(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(includeRE.FindAll(b, -1)); n != 1 || !strings.HasSuffix(string(b), "include 'haven.conf'\n") {
		t.Errorf("postgresql.conf has %d include lines, or not last:\n%s", n, b)
	}
	if !strings.HasPrefix(string(b), "max_connections = 100\n") {
		t.Errorf("postgresql.conf lost its content:\n%s", b)
	}
	for name, want := range map[string][]byte{HavenConf: s.renderHavenConf(), hbaConf: s.renderHBA(), identConf: s.renderIdent()} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s = %q, %v", name, got, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 4 {
		t.Errorf("the data directory holds %d files; want 4 (no temporary file left)", len(entries))
	}
}

func TestQuoteConf(t *testing.T) {
	for in, want := range map[string]string{
		"":         "''",
		"on":       "'on'",
		"it's":     "'it''s'",
		`C:\x`:     `'C:\\x'`,
		"%m [%p] ": "'%m [%p] '",
	} {
		if got := quoteConf(in); got != want {
			t.Errorf("quoteConf(%q) = %s; want %s", in, got, want)
		}
	}
}

// haven's defaults apply unless the user sets the setting, which then
// wins and is written once.
func TestDefaultSettings(t *testing.T) {
	for user, want := range map[string]string{"": "'250ms'", "1s": "'1s'"} {
		cfg := Config{DataDir: t.TempDir() + "/data", Port: 5433, Settings: map[string]string{}}
		if user != "" {
			cfg.Settings["WAL_retrieve_retry_interval"] = user
		}
		s, err := check(cfg)
		if err != nil {
			t.Fatal(err)
		}
		conf := string(s.renderHavenConf())
		if n := strings.Count(conf, "wal_retrieve_retry_interval = "); n != 1 || !strings.Contains(conf, "wal_retrieve_retry_interval = "+want) {
			t.Errorf("settings %v: haven.conf has wal_retrieve_retry_interval %d times, want once = %s:\n%s", cfg.Settings, n, want, conf)
		}
		if slices.Contains(ManagedSettings(), "wal_retrieve_retry_interval") {
			t.Error("ManagedSettings lists a setting the user may set")
		}
	}
}

func TestManagedSettings(t *testing.T) {
	names := ManagedSettings()
	for _, want := range []string{"listen_addresses", "port", "unix_socket_directories", "wal_level", "hot_standby",
		"wal_log_hints", "max_wal_senders", "max_replication_slots", "synchronous_standby_names", "hba_file"} {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			t.Errorf("ManagedSettings() lacks %s: %v", want, names)
		}
	}
}
