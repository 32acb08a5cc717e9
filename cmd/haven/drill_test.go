package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestDrillRestore plays the backup and restore tier's drill against two
// agents with a file repository: writes go on while the newest backup
// and the archive are restored into a scratch server, which must hold
// the writes up to about the moment the restore began (the archive
// streams), within the region's objectives; the result says how long the
// restore took and which write it restored to.
func TestDrillRestore(t *testing.T) {
	store := t.TempDir()
	path, _, _, _ := backupCluster(t, `{target: "file://`+store+`"}
  hba: ["host all all 127.0.0.0/8 trust"]
objectives: {region: {rto: 10m, rpo: 1m}}`)
	if r := haven(t, 3*time.Minute, "backup", "run", "--wait", "-c", path); r.code != 0 {
		t.Fatalf("haven backup run --wait: %s", r)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", cfg.Database.Port)
	r := haven(t, 5*time.Minute, "drill", "run", "restore", "-c", path, "--dsn", dsn, "--scratch", testenv.SearchableDir(t), "-o", "json")
	if r.code != 0 {
		t.Fatalf("haven drill run restore: %s", r)
	}
	var res drill.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("the drill's JSON: %v\n%s", err, r)
	}
	if len(res.Parts) != 1 {
		t.Fatalf("the drill: %+v; want one part", res)
	}
	p := res.Parts[0]
	t.Logf("restore: took %v, %d of %d acknowledged writes missing, RPO %v; events %v", p.RTO, len(p.Lost), p.OK, p.RPO, res.Events)
	if !res.Met || p.Part != "region" || p.RTO <= 0 || p.RPO >= time.Minute || p.OK == 0 {
		t.Errorf("the restore drill: %+v", p)
	}
	m := regexp.MustCompile(`restored: the newest row there is write (\d+)`).FindStringSubmatch(fmt.Sprint(res.Events))
	if m == nil || m[1] == "0" {
		t.Errorf("the restored server has none of the drill's writes: events %v", res.Events)
	}
	if !strings.Contains(r.stderr, "restoring the newest backup and the archive") {
		t.Errorf("the drill's progress: %s", r.stderr)
	}
}
