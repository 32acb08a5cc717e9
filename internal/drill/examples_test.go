package drill

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/certs"
	"github.com/haven-ha/haven/internal/config"
)

// tierExample is what an examples/*.yaml is for: the tier its name says,
// and what it cannot promise by design.
type tierExample struct {
	tier Tier
	// short is a finding that keeps it from the next tier, by part and
	// text ("" for multi-site, which has none above it).
	shortPart, short string
	// missed are the objectives the design does not keep, by part and
	// text: each example either keeps its objectives or says in its
	// comment why it cannot.
	missed map[string]string
}

var tierExamples = map[string]tierExample{
	"production.yaml": {tier: NoTier, shortPart: "backups", short: "no backups: a lost site takes the data with it"},
	// The same tier on Galera (whose backups haven does not take yet).
	"galera.yaml": {tier: NoTier, shortPart: "backups", short: "no backups: a lost site takes the data with it"},
	// A restore is a person's work: haven bounds the loss (the archive's
	// second), not the time.
	"backup-restore.yaml": {tier: BackupRestore, shortPart: "region", short: "database.dr is not set",
		missed: map[string]string{"region": "RTO 4h: a restore from the backups, by hand"}},
	// The data fails over by itself; the service waits for someone to
	// build west.
	"light.yaml": {tier: Light, shortPart: "region", short: "no database router in region west",
		missed: map[string]string{"region": "RTO 30m: the data fails over by itself but no database router in region west"}},
	"warm-standby.yaml": {tier: WarmStandby, shortPart: "database", short: "writes are served in one region at a time"},
	// haven's regions are active and standby: multi-site is as far as
	// warm standby with dr.mode sync goes.
	"multi-site.yaml": {tier: WarmStandby, shortPart: "database", short: "fix: none in haven: warm standby with dr.mode: sync, as here, is the nearest"},
}

// TestTierExamples loads every examples/*.yaml as docs/drills.md tells a
// reader to (beside the files it names) and checks that it reaches the
// tier its name says, keeps the objectives it declares (or misses exactly
// those its comment owns up to), and schedules a drill that judges them.
func TestTierExamples(t *testing.T) {
	files, err := filepath.Glob("../../examples/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples/*.yaml: %v", err)
	}
	seen := 0
	for _, file := range files {
		name := filepath.Base(file)
		want, ok := tierExamples[name]
		if !ok {
			t.Errorf("%s: say in tierExamples which tier it is for", name)
			continue
		}
		seen++
		t.Run(name, func(t *testing.T) {
			cfg := loadExample(t, file)
			a := Assess(cfg)
			if a.Tier != want.tier {
				t.Errorf("tier %s, want %s; findings: %v", a.Tier, want.tier, a.Short)
			}
			if !has(a.Short, want.shortPart, want.short) {
				t.Errorf("no finding of %s saying %q: %v", want.shortPart, want.short, a.Short)
			}
			if len(a.Missed) != len(want.missed) {
				t.Errorf("objectives not kept: %v, want %d: %v", a.Missed, len(want.missed), want.missed)
			}
			for part, why := range want.missed {
				if !has(a.Missed, part, why) {
					t.Errorf("no missed objective of %s saying %q: %v", part, why, a.Missed)
				}
			}
			if want.tier != NoTier {
				checkDrills(t, cfg)
			}
		})
	}
	if seen != len(tierExamples) {
		t.Errorf("%d of the %d examples in tierExamples are in examples/", seen, len(tierExamples))
	}
}

// checkDrills checks that a tier example can judge its objectives: the
// fault API on, a workload, and a schedule of scenarios that exist.
func checkDrills(t *testing.T, cfg *config.Config) {
	t.Helper()
	d := cfg.Drills
	if d == nil || !d.Enabled || d.DSNFile == "" || d.URL == "" || len(d.Schedule) == 0 {
		t.Fatalf("drills = %+v, want enabled, dsn_file, url and a schedule", d)
	}
	if cfg.Objectives == nil {
		t.Errorf("no objectives: a drill judges against them")
	}
	for _, s := range d.Schedule {
		if _, err := ScenarioNamed(s.Scenario); err != nil {
			t.Errorf("schedule: %v", err)
		}
	}
}

// loadExample loads an example as haven.yaml in a directory of its own,
// beside the secret files it names and the certificates `haven certs`
// makes, as config's TestDocExamples does.
func loadExample(t *testing.T, file string) *config.Config {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "haven.yaml")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// A first parse names the files; its problems are those of the
	// missing files until they exist.
	cfg, _ := config.Parse(path, data)
	if cfg == nil {
		t.Fatalf("%s does not parse", file)
	}
	for _, f := range namedFiles(cfg) {
		if f == "" || !strings.HasPrefix(f, dir+string(filepath.Separator)) {
			continue
		}
		if err := os.WriteFile(f, []byte("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U=\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if co := cfg.Coordination; co != nil && co.TLS != nil {
		var nodes []certs.Node
		for _, name := range cfg.NodeNames() {
			n, _ := cfg.Node(name)
			nodes = append(nodes, certs.Node{Name: name, Addresses: []string{n.Address}})
		}
		if _, err := certs.Generate(filepath.Dir(co.TLS.CA), cfg.Cluster, nodes, certs.Options{}); err != nil {
			t.Fatalf("haven certs: %v", err)
		}
	}
	cfg, err = config.Load(path)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return cfg
}

// namedFiles are the secret files a configuration names: 32 bytes in
// base64 suit each of them.
func namedFiles(cfg *config.Config) []string {
	files := []string{cfg.Admin.TokenFile}
	if d := cfg.Drills; d != nil {
		files = append(files, d.DSNFile)
	}
	if tr := cfg.Traffic; tr != nil && tr.TSIG != nil {
		files = append(files, tr.TSIG.SecretFile)
	}
	db := cfg.Database
	if db == nil {
		return files
	}
	if db.Replication != nil {
		files = append(files, db.Replication.PasswordFile)
	}
	if b := db.Backup; b != nil {
		files = append(files, b.EncryptionKeyFile)
		for _, r := range b.Repositories {
			if r != nil {
				files = append(files, r.CredentialsFile)
			}
		}
	}
	return files
}
