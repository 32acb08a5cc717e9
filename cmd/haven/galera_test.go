package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// galeraLab is three Galera nodes (db1-db3, each an etcd member and a
// router) and an application host (app1, a router) on namespace hosts.
type galeraLab struct {
	*nsLab
	cfg, base string
	app       *sql.DB // the application's pool, through app1's router
}

func needGalera(t *testing.T) {
	t.Helper()
	for _, p := range []string{"/usr/sbin/mariadbd", "/usr/bin/mariabackup", "/usr/lib/galera/libgalera_smm.so"} {
		_, err := os.Stat(p)
		testenv.Need(t, err == nil, "no %s: apt-get install mariadb-server galera-4 mariadb-backup (scripts/prereqs.sh)", p)
	}
}

func newGaleraLab(t *testing.T) *galeraLab {
	testnet.Require(t)
	needGalera(t)
	base := testenv.SearchableDir(t)
	cfg := fmt.Sprintf(`cluster: gal
admin: {token_file: %[1]s/admin.token}
regions:
  lab:
    nodes:
      db1: {address: 198.18.1.11, zone: a}
      db2: {address: 198.18.1.12, zone: b}
      db3: {address: 198.18.1.13, zone: c}
      app1: {address: 198.18.1.14, zone: a}
coordination:
  members: [db1, db2, db3]
  data_dir: %[1]s/{node}/etcd
database:
  engine: galera
  nodes: [db1, db2, db3]
  data_dir: %[1]s/{node}/galera
  listen: {primary: ":3307", replicas: ":3308"}
  routers: [db1, db2, db3, app1]
  settings:
    innodb_buffer_pool_size: 32M
    performance_schema: "OFF"
  galera:
    gcache_size: 64MiB
`, base)
	path := filepath.Join(base, "haven.yaml")
	for _, n := range []string{"db1", "db2", "db3"} {
		// The etcd member makes its node's directory 0700; mariadbd runs
		// as mysql below it.
		if err := os.MkdirAll(filepath.Join(base, n), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"haven.yaml": cfg, "admin.token": "galera-token\n"} {
		if err := os.WriteFile(filepath.Join(base, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l := &galeraLab{nsLab: newNSLab(t, "db1", "db2", "db3", "app1"), cfg: path, base: base}
	for _, n := range []string{"db1", "db2", "db3", "app1"} {
		l.start(n, path)
	}
	app := l.n.Host("app1")
	mysql.RegisterDialContext("app1", func(ctx context.Context, addr string) (net.Conn, error) {
		return app.DialContext(ctx, "tcp", addr)
	})
	t.Cleanup(func() {
		if d := os.Getenv("GALERA_LOG_DIR"); d != "" {
			for _, n := range []string{"db1", "db2", "db3"} {
				b, _ := os.ReadFile(filepath.Join(base, n, "galera", "mariadb.log"))
				_ = os.WriteFile(filepath.Join(d, n+".e2e.log"), b, 0o644)
			}
		}
		if t.Failed() {
			for _, n := range []string{"db1", "db2", "db3"} {
				b, _ := os.ReadFile(filepath.Join(base, n, "galera", "mariadb.log"))
				var lines []string
				for _, line := range strings.Split(string(b), "\n") {
					if strings.Contains(line, "[ERROR]") || strings.Contains(line, "[Warning] WSREP") || strings.Contains(line, "view(") ||
						strings.Contains(line, "Primary") || strings.Contains(line, "quorum") || strings.Contains(line, "State transfer") || strings.Contains(line, "Shifting") {
						lines = append(lines, line)
					}
				}
				t.Logf("%s's mariadb.log (views, states, errors):\n%s", n, strings.Join(lines[max(0, len(lines)-60):], "\n"))
			}
		}
	})
	return l
}

// status is node's /api/v1/database, asked from app1's namespace.
func (l *galeraLab) status(node string) (*agent.DatabaseStatus, error) {
	addr := map[string]string{"db1": "198.18.1.11", "db2": "198.18.1.12", "db3": "198.18.1.13", "app1": "198.18.1.14"}[node]
	app := l.n.Host("app1")
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: app.DialContext}}
	resp, err := c.Get("http://" + addr + ":9900/api/v1/database")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var st agent.DatabaseStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s: %s: %v", node, resp.Status, err)
	}
	if st.Galera == nil && st.Routes == nil {
		return nil, fmt.Errorf("%s: no galera status and no routes", node)
	}
	return &st, nil
}

// waitServing waits until every named node serves in a component of them
// all, as node from sees them, and there is a writer; it returns the
// writer. (A killed agent's state stays in etcd for its lease: serving
// alone could be the dead node's last word.)
func (l *galeraLab) waitServing(from string, timeout time.Duration, nodes ...string) string {
	l.t.Helper()
	writer := ""
	testenv.Poll(l.t, timeout, "galera nodes "+strings.Join(nodes, ", ")+" serving, with a writer", func() (bool, string) {
		l.alive()
		st, err := l.status(from)
		if err != nil {
			return false, err.Error()
		}
		var seen []string
		ok := st.Galera.Writer != ""
		for _, n := range nodes {
			m := st.Galera.Members[n]
			seen = append(seen, fmt.Sprintf("%s: %s serving=%v size=%d %s", n, m.Server, m.Serving, m.Status.ClusterSize, m.Why))
			ok = ok && m.Serving && m.Status.ClusterSize == len(nodes)
		}
		writer = st.Galera.Writer
		return ok, fmt.Sprintf("writer %q; %s; plan %s", writer, strings.Join(seen, "; "), st.Galera.Plan)
	})
	return writer
}

// root is a pool on node's server over its socket, as root.
func (l *galeraLab) root(node string) *sql.DB {
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User = "unix", filepath.Join(l.base, node, "galera", "mysqld.sock"), "root"
	c.Timeout, c.ReadTimeout, c.WriteTimeout = 10*time.Second, 30*time.Second, 30*time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		l.t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	l.t.Cleanup(func() { db.Close() })
	return db
}

// setup makes the application's database and user, and its pool through
// app1's router.
func (l *galeraLab) setup(on string) {
	l.t.Helper()
	db := l.root(on)
	for _, q := range []string{
		"CREATE DATABASE t",
		"CREATE TABLE t.acked (id BIGINT PRIMARY KEY)",
		"CREATE USER app@'%' IDENTIFIED BY 'app-password'",
		"GRANT ALL ON t.* TO app@'%'",
	} {
		if _, err := db.Exec(q); err != nil {
			l.t.Fatalf("%s: %s: %v", on, q, err)
		}
	}
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User, c.Passwd = "app1", "127.0.0.1:3307", "app", "app-password"
	c.Timeout, c.ReadTimeout, c.WriteTimeout = 10*time.Second, 10*time.Second, 10*time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		l.t.Fatal(err)
	}
	l.app = sql.OpenDB(conn)
	l.app.SetMaxOpenConns(1)
	l.t.Cleanup(func() { l.app.Close() })
}

// history is a writer's record: the ids whose insert was acknowledged,
// and the longest time without an acknowledgement between two.
type history struct {
	mu      sync.Mutex
	acked   []int64
	failed  int
	gap     time.Duration
	lastOK  time.Time
	lastErr error
}

// write inserts ids through the router until stop, one at a time, each
// acknowledged one recorded; a failed one (its outcome unknown) is not.
func (l *galeraLab) write(h *history, next *int64, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		*next++
		id := *next
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		_, err := l.app.ExecContext(ctx, "INSERT INTO t.acked VALUES (?)", id)
		cancel()
		now := time.Now()
		h.mu.Lock()
		if err != nil {
			h.failed++
			h.lastErr = err
		} else {
			if !h.lastOK.IsZero() {
				h.gap = max(h.gap, now.Sub(h.lastOK))
			}
			h.lastOK = now
			h.acked = append(h.acked, id)
		}
		h.mu.Unlock()
		if err != nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// missing are the acknowledged ids that node's server does not have.
func (l *galeraLab) missing(node string, acked []int64) []int64 {
	l.t.Helper()
	rows, err := l.root(node).Query("SELECT id FROM t.acked")
	if err != nil {
		l.t.Fatalf("%s: %v", node, err)
	}
	defer rows.Close()
	have := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			l.t.Fatal(err)
		}
		have[id] = true
	}
	var lost []int64
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	return lost
}

// crash kills node's mariadbd and then its agent with SIGKILL: what a
// machine's crash leaves (the agent's death signal must not get to stop
// the server cleanly first).
func (l *galeraLab) crash(node string) {
	l.t.Helper()
	pid, err := os.ReadFile(filepath.Join(l.base, node, "galera", "mysqld.pid"))
	if err == nil {
		var p int
		if _, err := fmt.Sscan(string(pid), &p); err == nil {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
	if err := l.agents[node].Kill(); err != nil {
		l.t.Fatal(err)
	}
	l.lost(node)
}

// TestGalera runs three Galera nodes under haven agents, clients through
// a router: the first bootstraps, the others join; the writer is killed
// (its server and agent, kill -9) under a writer, twice, and no
// acknowledged write is lost; a partition isolates a node, which leaves
// the pools while the others serve, and rejoins; every node crashes at
// once and the agents, restarted in random order, bring the cluster back
// by themselves with every acknowledged write.
func TestGalera(t *testing.T) {
	l := newGaleraLab(t)
	all := []string{"db1", "db2", "db3"}
	began := time.Now()
	l.waitServing("db1", 4*time.Minute, all...)
	t.Logf("a new cluster of three served %v after the agents started", time.Since(began).Round(time.Second))
	l.setup("db1")

	var next int64
	h := &history{}
	// Two writer losses in CI; HAVEN_GALERA_ROUNDS=10 for the issue's
	// measurement (docs/galera.md).
	rounds := 2
	if v, err := strconv.Atoi(os.Getenv("HAVEN_GALERA_ROUNDS")); err == nil && v > 0 {
		rounds = v
	}
	var gaps []time.Duration
	for round := range rounds {
		writer := l.waitServing("db1", 3*time.Minute, all...)
		stop := make(chan struct{})
		done := make(chan struct{})
		h.mu.Lock()
		h.lastOK = time.Time{} // the gap is this round's
		h.mu.Unlock()
		go func() { defer close(done); l.write(h, &next, stop) }()
		time.Sleep(time.Duration(500+rand.IntN(1500)) * time.Millisecond)
		h.mu.Lock()
		before := len(h.acked)
		h.gap = 0
		h.mu.Unlock()
		l.crash(writer)
		killed := time.Now()
		testenv.Poll(t, time.Minute, "writes acknowledged again after the writer's loss", func() (bool, string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			return h.lastOK.After(killed), fmt.Sprintf("%d failed, last error %v", h.failed, h.lastErr)
		})
		time.Sleep(time.Second)
		close(stop)
		<-done
		h.mu.Lock()
		t.Logf("round %d: killed writer %s at %s; write gap %v (%d writes before)", round, writer, killed.Format("15:04:05.000"), h.gap.Round(time.Millisecond), before)
		gaps = append(gaps, h.gap)
		for _, line := range strings.Split(l.agents["app1"].Output(), "\n") {
			if strings.Contains(line, "primary changed") && line > "time="+killed.UTC().Format("2006-01-02T15:04:05") {
				t.Logf("app1: %s", line)
			}
		}
		h.mu.Unlock()
		l.start(writer, l.cfg)
	}
	l.waitServing("db1", 3*time.Minute, all...)
	for _, n := range all {
		if lost := l.missing(n, h.acked); len(lost) > 0 {
			t.Errorf("%s lacks %d acknowledged writes: %v", n, len(lost), lost[:min(len(lost), 10)])
		}
	}
	slices.Sort(gaps)
	t.Logf("writer losses: %d; write gaps %v (median %v, max %v); acknowledged writes %d, lost 0 (checked on every node)",
		len(gaps), gaps, gaps[len(gaps)/2].Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond), len(h.acked))
	evictions := 0
	for _, p := range l.n.Procs() {
		for _, line := range strings.Split(p.Output(), "\n") {
			if strings.Contains(line, "evicting a node whose server is gone") {
				evictions++
			}
		}
	}
	if evictions == 0 {
		t.Errorf("no agent evicted a killed writer's server: the others waited out failure_detection")
	}

	// A partition isolates db3: it leaves the pools; db1 and db2 serve.
	writer := l.waitServing("db1", time.Minute, all...)
	// First every server's eviction list is empty again. A server learns
	// its peers' evictions when it joins; one that kept a killed writer's
	// identity after the others had dropped it took the group layer of
	// another node down at the partition's view change (Galera's "node
	// ... not found from known map", CI 2026-12-07), and no majority was
	// left to serve.
	testenv.Poll(t, time.Minute, "every server's eviction list empty", func() (bool, string) {
		st, err := l.status(writer)
		if err != nil {
			return false, err.Error()
		}
		var lists []string
		for _, n := range all {
			if m := st.Galera.Members[n]; len(m.Status.EvictList) > 0 {
				lists = append(lists, fmt.Sprintf("%s evicts %v", n, m.Status.EvictList))
			}
		}
		return len(lists) == 0, strings.Join(lists, "; ")
	})
	isolated := "db3"
	if writer == "db3" {
		isolated = "db2"
	}
	others := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == isolated })
	isolatedLog := filepath.Join(l.base, isolated, "galera", "mariadb.log")
	transfers := func() (sst, ist int) {
		b, _ := os.ReadFile(isolatedLog)
		return strings.Count(string(b), "--role 'joiner'"), strings.Count(string(b), "IST received")
	}
	sstBefore, istBefore := transfers()
	if err := l.n.CutLink(l.n.Host(isolated)); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	testenv.Poll(t, time.Minute, isolated+" out of app1's router's pools", func() (bool, string) {
		st, err := l.status("app1")
		if err != nil || st.Routes == nil {
			return false, fmt.Sprint(err)
		}
		rt := st.Routes
		seen := fmt.Sprintf("primary %s, replicas %v", rt.Primary, rt.Replicas)
		if d, err := l.status(others[0]); err == nil {
			for n, m := range d.Galera.Members {
				seen += fmt.Sprintf("; %s: serving=%v %s in %v", n, m.Serving, m.Status.ClusterStatus, m.Status.IncomingAddresses)
			}
		}
		return !slices.Contains(rt.Replicas, isolated) && rt.Primary != isolated && len(rt.Replicas) == 2, seen
	})
	t.Logf("%s left app1's router's pools %v after its link was cut", isolated, time.Since(cut).Round(100*time.Millisecond))
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); l.write(h, &next, stop) }()
	time.Sleep(2 * time.Second)
	close(stop)
	<-done
	if err := l.n.RestoreLink(l.n.Host(isolated)); err != nil {
		t.Fatal(err)
	}
	l.waitServing(others[0], 2*time.Minute, all...)
	if sst, ist := transfers(); sst != sstBefore || ist <= istBefore {
		t.Errorf("%s rejoined after the partition with %d full state transfers and %d incremental ones; want none and at least one", isolated, sst-sstBefore, ist-istBefore)
	} else {
		t.Logf("%s rejoined by IST, no full copy", isolated)
	}

	// Every node crashes; the agents come back in random order.
	stop = make(chan struct{})
	done = make(chan struct{})
	go func() { defer close(done); l.write(h, &next, stop) }()
	time.Sleep(time.Second)
	for _, n := range all {
		l.crash(n)
	}
	close(stop)
	<-done
	order := slices.Clone(all)
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	restarted := time.Now()
	for _, n := range order {
		l.start(n, l.cfg)
	}
	var writable time.Duration
	testenv.Poll(t, 4*time.Minute, "a write acknowledged through the router after the whole cluster's crash", func() (bool, string) {
		next++
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := l.app.ExecContext(ctx, "INSERT INTO t.acked VALUES (?)", next)
		if err != nil {
			return false, err.Error()
		}
		writable = time.Since(restarted)
		h.acked = append(h.acked, next)
		return true, ""
	})
	t.Logf("whole-cluster crash: agents restarted in order %v; writable through the router %v later", order, writable.Round(100*time.Millisecond))
	l.waitServing("db1", 3*time.Minute, all...)
	for _, n := range all {
		if lost := l.missing(n, h.acked); len(lost) > 0 {
			t.Errorf("after the whole cluster's crash %s lacks %d acknowledged writes: %v", n, len(lost), lost[:min(len(lost), 10)])
		}
	}
	// The operator's view: haven db status and haven status name the
	// writer and every node serving.
	for _, args := range [][]string{{"db", "status"}, {"status"}} {
		out, err := l.cli(l.cfg, args...)
		if err != nil || !strings.Contains(out, "writer: db") || len(regexp.MustCompile(`(?m)^db[123]\s+running\s+yes\s`).FindAllString(out, -1)) != 3 {
			t.Errorf("haven %s: %v; want the writer and three nodes serving:\n%s", strings.Join(args, " "), err, out)
		}
	}
	if len(h.acked) < 50 {
		t.Errorf("only %d writes were acknowledged in all: the workload did not run", len(h.acked))
	}
}
