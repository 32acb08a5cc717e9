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

	"github.com/haven-ha/haven/internal/backup/repo"
	"github.com/haven-ha/haven/internal/backup/wal"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/testenv"
)

// requirePostgres returns PostgreSQL's binary directory, or skips the test
// saying why (fails it in CI).
func requirePostgres(t *testing.T) string {
	t.Helper()
	b, err := pg.FindBinaries(context.Background(), "")
	testenv.Need(t, err == nil, "no PostgreSQL binaries: %v", err)
	return b.Dir
}

// waitStatusCoordination waits until the agent's status API has a
// coordination section, failing the test if the agent stops first.
func (e *env) waitStatusCoordination() {
	e.t.Helper()
	testenv.Poll(e.t, 10*time.Second, "the status API has a coordination section", func() (bool, string) {
		select {
		case err := <-e.done:
			e.t.Fatalf("the agent stopped: %v", err)
		default:
		}
		r, err := try("GET", e.adminURL("/api/v1/status"))
		var st struct {
			Coordination *CoordinationStatus `json:"coordination"`
		}
		return err == nil && json.Unmarshal([]byte(r.body), &st) == nil && st.Coordination != nil, fmt.Sprint(err)
	})
}

func freePortNumber(t *testing.T) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(freeAddr(t))
	n, _ := strconv.Atoi(p)
	return n
}

// An agent whose node is haven.yaml's database node initialises the
// cluster and runs postgres as the primary; the status API and `haven pg
// status` report it, the Patroni-compatible endpoints answer on the admin
// port, and its router takes clients to the primary.
func TestAgentRunsTheDatabase(t *testing.T) {
	bindir := requirePostgres(t)
	url, _ := startExternalEtcd(t)
	dir := testenv.SearchableDir(t)
	port := freePortNumber(t)
	router := freeAddr(t)
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")},
		coordination: fmt.Sprintf("{endpoints: [%q]}", url),
		database: fmt.Sprintf("{nodes: [lb1], port: %d, data_dir: %q, bindir: %q, lease: 3s, write_fence: false, listen: {primary: %q}, hba: [\"host all postgres 127.0.0.1/32 trust\"], settings: {dynamic_shared_memory_type: mmap}}",
			port, dir+"/data", bindir, router),
	}
	e := newEnv(t, c)
	e.run()
	e.waitStatusCoordination()

	st := e.waitCoordination("lb1 is not the primary", func(s CoordinationStatus) bool {
		return s.Database != nil && s.Database.Primary == "lb1" && s.Database.Members["lb1"].Role == keeper.RolePrimary
	})
	if m := st.Database.Members["lb1"]; m.Host != "127.0.0.1" || m.Port != port || m.Timeline != 1 || m.SystemID == 0 {
		t.Errorf("lb1's published state: %+v", m)
	}
	var d DatabaseStatus
	if r := do(t, "GET", e.adminURL("/api/v1/database")); r.status != 200 || json.Unmarshal([]byte(r.body), &d) != nil || d.Primary != "lb1" || d.Members["lb1"].Role != keeper.RolePrimary {
		t.Errorf("GET /api/v1/database = %d %s, want lb1 the primary", r.status, r.body)
	}
	for path, want := range map[string]int{"/primary": 200, "/read-write": 200, "/replica": 503, "/health": 200} {
		if r := do(t, "GET", e.adminURL(path)); r.status != want {
			t.Errorf("GET %s: %d, want %d: %s", path, r.status, want, r.body)
		}
	}
	var h pg.HealthStatus
	if err := json.Unmarshal([]byte(do(t, "GET", e.adminURL("/primary")).body), &h); err != nil || h.Role != "primary" {
		t.Errorf("/primary body: %+v, %v", h, err)
	}

	// The router sends a client to the primary's postgres.
	st = e.waitCoordination("the router has no primary", func(s CoordinationStatus) bool {
		return s.Database.Routes != nil && s.Database.Routes.Primary == "lb1"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	host, rport, _ := net.SplitHostPort(router)
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=5", host, rport))
	if err != nil {
		t.Fatalf("connect through the router at %s: %v", router, err)
	}
	var serverPort int
	var standby bool
	if err := conn.QueryRow(ctx, "SELECT inet_server_port(), pg_is_in_recovery()").Scan(&serverPort, &standby); err != nil {
		t.Fatalf("query through the router: %v", err)
	}
	if serverPort != port || standby {
		t.Errorf("the router's primary pool reached port %d (in recovery: %v), want the primary on %d", serverPort, standby, port)
	}

	// postgres and the router stop with the agent, and an open client
	// connection through the router neither holds the stop nor stays
	// open. (Whether the router or postgres closed it first is not told
	// apart here: lb's TestSetBackendsShutdownSessions covers the router's part.)
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	if err := conn.Ping(ctx); err == nil {
		t.Errorf("the connection through the router is still open after the agent stopped")
	}
	conn.Close(ctx)
	if c, err := net.Dial("tcp", router); err == nil {
		c.Close()
		t.Errorf("the router still listens on %s after the agent stopped", router)
	}
	if conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		conn.Close()
		t.Errorf("postgres still accepts connections on %d after the agent stopped", port)
	}
	if !strings.Contains(e.log.String(), "initialised the database cluster") {
		t.Errorf("the agent's log does not say it initialised the cluster")
	}
}

// An agent whose database has a backup repository archives the primary's
// WAL into it: rows committed through the router reach the repository
// within about a second (the archiver's flush interval), and the agent's
// metrics say how far the archive holds.
func TestAgentArchivesWAL(t *testing.T) {
	bindir := requirePostgres(t)
	url, _ := startExternalEtcd(t)
	dir := testenv.SearchableDir(t)
	store := t.TempDir()
	port := freePortNumber(t)
	router := freeAddr(t)
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")},
		coordination: fmt.Sprintf("{endpoints: [%q]}", url),
		database: fmt.Sprintf("{nodes: [lb1], port: %d, data_dir: %q, bindir: %q, lease: 3s, write_fence: false, listen: {primary: %q}, hba: [\"host all postgres 127.0.0.1/32 trust\"], settings: {dynamic_shared_memory_type: mmap}, backup: {repositories: [{name: local, url: \"file://%s\"}]}}",
			port, dir+"/data", bindir, router, store),
	}
	e := newEnv(t, c)
	e.run()
	e.waitStatusCoordination()
	e.waitCoordination("the router has no primary", func(s CoordinationStatus) bool {
		return s.Database != nil && s.Database.Routes != nil && s.Database.Routes.Primary == "lb1"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host, rport, _ := net.SplitHostPort(router)
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%s user=postgres dbname=postgres sslmode=disable connect_timeout=5", host, rport))
	if err != nil {
		t.Fatalf("connect through the router at %s: %v", router, err)
	}
	defer conn.Close(ctx)
	var committed pg.LSN
	var lsn string
	if _, err := conn.Exec(ctx, "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
		t.Fatal(err)
	}
	if committed, err = pg.ParseLSN(lsn); err != nil {
		t.Fatal(err)
	}

	// The repository holds the WAL up to the commit: its metric says so,
	// and the objects are there under the cluster's name.
	testenv.Poll(t, 30*time.Second, "the archive holds the WAL up to the commit at "+lsn, func() (bool, string) {
		r, err := try("GET", e.adminURL("/metrics"))
		if err != nil {
			return false, err.Error()
		}
		for _, line := range strings.Split(r.body, "\n") {
			if v, ok := strings.CutPrefix(line, "haven_backup_wal_archived_position_bytes "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				return uint64(f) >= uint64(committed), line
			}
		}
		return false, "no haven_backup_wal_archived_position_bytes in the agent's metrics"
	})
	r, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	if err := r.List(ctx, "test/wal/", func(i repo.Info) error { names = append(names, i.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("the repository at %s holds nothing under test/wal/", store)
	}
	if !strings.Contains(e.log.String(), "archiving WAL: this node serves the primary") {
		t.Errorf("the agent's log does not say it archives")
	}
	t.Logf("archived up to %s: %d objects, the first %s", lsn, len(names), names[0])
}

// With archive: synchronous the agent makes every commit wait for its
// archiver, in async replication mode too: a commit acknowledged is in
// the repository at once (no waiting for a flush interval), and the
// keeper says so in synchronous_standby_names and its metrics.
func TestAgentSynchronousArchive(t *testing.T) {
	bindir := requirePostgres(t)
	url, _ := startExternalEtcd(t)
	dir := testenv.SearchableDir(t)
	store := t.TempDir()
	port := freePortNumber(t)
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1")},
		coordination: fmt.Sprintf("{endpoints: [%q]}", url),
		database: fmt.Sprintf("{nodes: [lb1], port: %d, data_dir: %q, bindir: %q, lease: 3s, write_fence: false, hba: [\"host all postgres 127.0.0.1/32 trust\"], settings: {dynamic_shared_memory_type: mmap}, backup: {archive: synchronous, repositories: [{name: local, url: \"file://%s\"}]}}",
			port, dir+"/data", bindir, store),
	}
	e := newEnv(t, c)
	e.run()
	e.waitStatusCoordination()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var conn *pgx.Conn
	testenv.Poll(t, 30*time.Second, "commits wait for the archiver", func() (bool, string) {
		if conn == nil {
			var err error
			if conn, err = pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=5", port)); err != nil {
				conn = nil
				return false, err.Error()
			}
		}
		var names, state string
		err := conn.QueryRow(ctx, `SELECT current_setting('synchronous_standby_names'),
			coalesce((SELECT sync_state FROM pg_stat_replication WHERE application_name = 'haven_archive'), '')`).Scan(&names, &state)
		return err == nil && names == `ANY 1 ("haven_archive")` && state == "quorum", fmt.Sprintf("%q, %q, %v", names, state, err)
	})
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	r, err := repo.OpenFile(store)
	if err != nil {
		t.Fatal(err)
	}
	// Each commit's WAL (up to the insert position read before its
	// commit record) is in the repository when the commit returns.
	for id := 1; id <= 20; id++ {
		var l string
		if err := conn.QueryRow(ctx, "INSERT INTO t VALUES ($1) RETURNING pg_current_wal_insert_lsn()::text", id).Scan(&l); err != nil {
			t.Fatal(err)
		}
		lsn, err := pg.ParseLSN(l)
		if err != nil {
			t.Fatal(err)
		}
		if err := wal.Holds(ctx, r, "test", 1, lsn, lsn+1); err != nil {
			t.Fatalf("commit %d acknowledged before the archive held it: %v", id, err)
		}
	}
	m, err := try("GET", e.adminURL("/metrics"))
	if err != nil || !strings.Contains(m.body, "\nhaven_pg_sync_archive 1\n") {
		t.Errorf("the metrics do not say commits wait for the archive (haven_pg_sync_archive 1): %v", err)
	}

	// The repository goes away (a file where its directory was): a
	// commit stalls, waiting for the archiver (SyncRep), and the agent
	// logs it; the repository back, the commit returns, archived.
	if err := os.Rename(store, store+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(store, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	type result struct {
		lsn pg.LSN
		err error
	}
	done := make(chan result, 1)
	began := time.Now()
	go func() {
		var l string
		err := conn.QueryRow(ctx, "INSERT INTO t VALUES (21) RETURNING pg_current_wal_insert_lsn()::text").Scan(&l)
		lsn, _ := pg.ParseLSN(l)
		done <- result{lsn, err}
	}()
	testenv.Poll(t, 30*time.Second, "the agent logs that commits wait for the archive", func() (bool, string) {
		return strings.Contains(e.log.String(), "commits are waiting for the WAL archive"), "not logged"
	})
	select {
	case r := <-done:
		t.Fatalf("a commit returned while the repository was away: %+v", r)
	default:
	}
	probe, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", port))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close(ctx)
	var waiting int
	if err := probe.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'").Scan(&waiting); err != nil || waiting != 1 {
		t.Errorf("sessions waiting for a synchronous standby: %d (%v), want the one committing", waiting, err)
	}
	if err := os.Remove(store); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(store+".away", store); err != nil {
		t.Fatal(err)
	}
	r21 := <-done
	if r21.err != nil {
		t.Fatalf("the commit waiting for the repository: %v", r21.err)
	}
	if err := wal.Holds(ctx, r, "test", 1, r21.lsn, r21.lsn+1); err != nil {
		t.Fatalf("the commit that waited returned before the archive held it: %v", err)
	}
	testenv.Poll(t, 30*time.Second, "the agent logs that the archive stores again", func() (bool, string) {
		return strings.Contains(e.log.String(), "the WAL archive stores again"), "not logged"
	})
	t.Logf("a commit waited %v for the repository to come back", time.Since(began).Round(time.Millisecond))
}
