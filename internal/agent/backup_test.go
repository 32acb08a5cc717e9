package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/haven-ha/haven/internal/backup/base"
	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/testenv"
)

// backupCluster is a one-node database cluster whose backups go to the
// file repository store; backup is more of database.backup's keys.
func backupCluster(t *testing.T, store, backup string) *cluster {
	t.Helper()
	bindir := requirePostgres(t)
	url, _ := startExternalEtcd(t)
	dir := testenv.SearchableDir(t)
	return &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")},
		coordination: fmt.Sprintf("{endpoints: [%q]}", url),
		database: fmt.Sprintf("{nodes: [lb1], port: %d, data_dir: %q, bindir: %q, lease: 3s, write_fence: false, listen: {primary: %q}, hba: [\"host all postgres 127.0.0.1/32 trust\"], settings: {dynamic_shared_memory_type: mmap}, backup: {repositories: [{name: local, url: \"file://%s\"}]%s}}",
			freePortNumber(t), dir+"/data", bindir, freeAddr(t), store, backup),
	}
}

// backups lists the complete backups in the file repository store.
func backups(t *testing.T, store string) []*base.Manifest {
	t.Helper()
	r, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := base.List(context.Background(), r, "test")
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// objects lists the names in the file repository store under prefix.
func objects(t *testing.T, store, prefix string) []string {
	t.Helper()
	r, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := r.List(context.Background(), prefix, func(i repo.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	return names
}

func (e *env) backupStatus() (*BackupStatus, string) {
	e.t.Helper()
	r, err := try("GET", e.adminURL("/api/v1/backup"))
	if err != nil {
		return nil, err.Error()
	}
	var st BackupStatus
	if r.status != 200 || json.Unmarshal([]byte(r.body), &st) != nil {
		return nil, fmt.Sprintf("%d %s", r.status, r.body)
	}
	return &st, r.body
}

// requestBackup asks the agent for a backup of kind now, as `haven backup
// run` does.
func (e *env) requestBackup(kind string) BackupRequest {
	e.t.Helper()
	r := do(e.t, "POST", e.adminURL("/api/v1/backup/run?kind="+kind))
	var req BackupRequest
	if r.status != 202 || json.Unmarshal([]byte(r.body), &req) != nil || req.Kind != kind {
		e.t.Fatalf("POST /api/v1/backup/run?kind=%s = %d %s", kind, r.status, r.body)
	}
	return req
}

// waitResult waits until the outcome of req is recorded.
func (e *env) waitResult(req BackupRequest, within time.Duration) BackupResult {
	e.t.Helper()
	var res BackupResult
	testenv.Poll(e.t, within, "the outcome of the backup requested at "+req.Requested.String(), func() (bool, string) {
		st, seen := e.backupStatus()
		if st == nil || st.Last == nil || !st.Last.Requested.Equal(req.Requested) {
			return false, seen
		}
		res = *st.Last
		return true, seen
	})
	return res
}

// With base_every, the agent of a database node takes a full backup as
// soon as the repository has none (the schedule is read from the
// repository); the backup is listed, the metrics and the status API say
// so. A requested incremental backup follows it, on the full one.
func TestAgentTakesScheduledBackups(t *testing.T) {
	store := t.TempDir()
	e := newEnv(t, backupCluster(t, store, ", base_every: 1h, compression: zstd, retain_count: 1"))
	e.run()
	e.waitStatusCoordination()

	var full *base.Manifest
	testenv.Poll(t, 90*time.Second, "a scheduled full backup in the repository", func() (bool, string) {
		ms := backups(t, store)
		if len(ms) == 0 {
			st, seen := e.backupStatus()
			if st != nil && st.Last != nil && st.Last.Error != "" {
				t.Fatalf("the backup failed: %s", st.Last.Error)
			}
			return false, seen
		}
		full = ms[0]
		return true, ""
	})
	if full.Kind != "full" || full.Compression != base.Zstd || full.FromReplica || full.Cluster != "test" {
		t.Errorf("the scheduled backup: kind %s, compression %s, from a replica %v, cluster %s; want a full zstd backup of the primary of test",
			full.Kind, full.Compression, full.FromReplica, full.Cluster)
	}
	// The manifest is written before the agent records the outcome.
	var st *BackupStatus
	testenv.Poll(t, 10*time.Second, "GET /api/v1/backup shows "+full.Label+", taken on lb1", func() (bool, string) {
		var seen string
		st, seen = e.backupStatus()
		return st != nil && st.Newest != nil && st.Newest.Label == full.Label && st.Last != nil && st.Last.Label == full.Label && st.Last.Node == "lb1" && st.Running == nil, seen
	})
	_, seen := e.backupStatus()
	if st != nil && (st.Next.IsZero() || !st.Next.Equal(full.StartTime.Add(time.Hour))) {
		t.Errorf("next scheduled backup at %v, want an hour after the full one started (%v)", st.Next, full.StartTime)
	}
	if st != nil && (st.Archive == nil || !st.Archive.Archiving || st.Archive.Position == "") {
		t.Errorf("the status shows no archive: %s", seen)
	}
	if got := objects(t, store, "test/cluster.json"); len(got) != 1 {
		t.Errorf("the repository was not claimed: %v", got)
	}

	// A requested incremental backup, on the full one.
	req := e.requestBackup("incremental")
	res := e.waitResult(req, 90*time.Second)
	if res.Error != "" || res.Kind != "incremental" {
		t.Fatalf("the requested backup: %+v", res)
	}
	ms := backups(t, store)
	if len(ms) != 2 || ms[1].Label != res.Label || ms[1].Kind != "incremental" || ms[1].Prior != full.Label {
		t.Fatalf("after the request the repository lists %d backups; want the full one and an incremental one on it (%s)", len(ms), res.Label)
	}
	if st, _ := e.backupStatus(); st == nil || st.Request != nil {
		t.Errorf("the request is still pending after it was served: %+v", st)
	}

	// A second full backup: with retain_count 1 the first one, and the
	// incremental one on it, expire.
	req = e.requestBackup("full")
	res = e.waitResult(req, 90*time.Second)
	if res.Error != "" || res.Kind != "full" {
		t.Fatalf("the second full backup: %+v", res)
	}
	rp, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, 30*time.Second, "only "+res.Label+" listed after expiry", func() (bool, string) {
		ms, err := base.List(context.Background(), rp, "test")
		if err != nil {
			return false, err.Error() // a manifest removed between listing and reading it
		}
		var labels []string
		for _, m := range ms {
			labels = append(labels, m.Label)
		}
		var left []string
		if err := rp.List(context.Background(), "test/base/"+full.Label+"/", func(i repo.Info) error { left = append(left, i.Name); return nil }); err != nil {
			return false, err.Error() // removed while listed
		}
		return len(ms) == 1 && ms[0].Label == res.Label && len(left) == 0, fmt.Sprintf("listed %v; %d objects of %s left", labels, len(left), full.Label)
	})

	r := do(t, "GET", e.adminURL("/metrics"))
	for _, want := range []string{
		`haven_backup_last_success_timestamp_seconds{kind="full"} `,
		`haven_backup_last_success_timestamp_seconds{kind="incremental"} `,
		`haven_backup_last_size_bytes{kind="full"} `,
		`haven_backup_last_duration_seconds{kind="incremental"} `,
		`haven_backup_failures_total{reason="postgres"} 0`,
		`haven_backup_expire_failures_total 0`,
		`haven_backup_wal_lag_bytes `,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if got := metricValue(r.body, `haven_backup_last_size_bytes{kind="full"}`); got != float64(full.Bytes) {
		t.Errorf("haven_backup_last_size_bytes{kind=\"full\"} = %v, want the full backup's %d bytes", got, full.Bytes)
	}
	problems, err := promlint.New(strings.NewReader(r.body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "haven_backup") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	doc, err := os.ReadFile("../../docs/backup.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(r.body, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE haven_backup"); ok {
			name = "haven_backup" + strings.Fields(name)[0]
			if !strings.Contains(string(doc), "`"+name) {
				t.Errorf("docs/backup.md does not list the metric %s", name)
			}
		}
	}
}

// A backup stopped half way (the agent stops during the copy) is not
// listed as complete; the request that asked for it stays, and the next
// agent takes the backup, which is listed.
func TestAgentBackupStoppedAndRetaken(t *testing.T) {
	store := t.TempDir()
	c := backupCluster(t, store, ", parallel: 1, compression: zstd")
	e := newEnv(t, c)
	e.run()
	e.waitStatusCoordination()
	st := e.waitCoordination("the router has no primary", func(s CoordinationStatus) bool {
		return s.Database != nil && s.Database.Routes != nil && s.Database.Routes.Primary == "lb1"
	})
	// Enough data that the copy takes a while: about 200 MiB.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	host, port, _ := net.SplitHostPort(st.Database.Routes.PrimaryAddr)
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=5", host, port))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE big AS SELECT g, repeat(md5(g::text), 8) AS pad FROM generate_series(1, 700000) g"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)

	req := e.requestBackup("full")
	testenv.Poll(t, 90*time.Second, "the backup copies files", func() (bool, string) {
		names := objects(t, store, "test/base/")
		return len(names) > 0, fmt.Sprint(names)
	})
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if ms := backups(t, store); len(ms) != 0 {
		t.Fatalf("a backup stopped half way is listed as complete: %s", ms[0].Label)
	}
	stopped := objects(t, store, "test/base/")
	t.Logf("the stopped backup left %d objects, no manifest", len(stopped))
	if !strings.Contains(e.log.String(), "backup stopped: the agent stops") {
		t.Errorf("the agent's log does not say the backup stopped")
	}

	// The next agent serves the same request.
	e = newEnv(t, c)
	e.run()
	e.waitStatusCoordination()
	res := e.waitResult(req, 2*time.Minute)
	if res.Error != "" {
		t.Fatalf("the backup after the restart failed: %s", res.Error)
	}
	ms := backups(t, store)
	if len(ms) != 1 || ms[0].Label != res.Label || ms[0].Kind != "full" {
		t.Fatalf("after the restart the repository lists %d backups, want the full one %s", len(ms), res.Label)
	}
	if strings.HasPrefix(stopped[0], "test/base/"+res.Label+"/") {
		t.Errorf("the new backup has the stopped one's label %s", res.Label)
	}
}

// A repository that another cluster of the same name claimed (another
// system identifier) is refused: the archiver writes nothing to it, a
// backup fails, and the error names the other cluster.
func TestAgentRefusesAnotherClustersRepository(t *testing.T) {
	store := t.TempDir()
	r, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	other := repo.Owner{Cluster: "test", SystemID: 1234567890123456789}
	if err := repo.Claim(context.Background(), r, "test", other); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, backupCluster(t, store, ""))
	e.run()
	e.waitStatusCoordination()
	e.waitCoordination("lb1 is not the primary", func(s CoordinationStatus) bool {
		return s.Database != nil && s.Database.Primary == "lb1" && s.Database.Members["lb1"].SystemID != 0
	})
	req := e.requestBackup("full")
	res := e.waitResult(req, time.Minute)
	want := "belongs to cluster test (system identifier 1234567890123456789"
	if !strings.Contains(res.Error, want) {
		t.Errorf("the backup's error is %q, want it to say %q", res.Error, want)
	}
	if st, seen := e.backupStatus(); st == nil || !strings.Contains(st.Error, want) {
		t.Errorf("GET /api/v1/backup does not say whose the repository is: %s", seen)
	}
	if !strings.Contains(e.log.String(), want) {
		t.Errorf("the agent's log does not say whose the repository is")
	}
	if names := objects(t, store, "test/"); len(names) != 1 || names[0] != "test/cluster.json" {
		t.Errorf("the repository holds more than the other cluster's claim: %v", names)
	}
	if o, err := repo.ReadOwner(context.Background(), r, "test"); err != nil || o.SystemID != other.SystemID {
		t.Errorf("the claim was changed: %+v, %v", o, err)
	}
	m := do(t, "GET", e.adminURL("/metrics"))
	if !strings.Contains(m.body, `haven_backup_failures_total{reason="claim"} 1`) {
		t.Errorf("/metrics does not count the refused backup")
	}
}

// metricValue is the value of the series named (with its labels) in an
// exposition, or -1.
func metricValue(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}
