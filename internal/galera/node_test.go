package galera

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord/coordtest"
	"github.com/haven-ha/haven/internal/testenv"
)

// needMariaDB ends a test on a machine without MariaDB and galera-4.
func needMariaDB(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs MariaDB")
	}
	testenv.NeedRoot(t)
	_, err := lookPath("mariadbd")
	testenv.Need(t, err == nil, "no mariadbd: apt-get install mariadb-server galera-4 mariadb-backup (scripts/prereqs.sh)")
	_, err = findProvider()
	testenv.Need(t, err == nil, "%v", err)
	_, err = exec.LookPath("mariabackup")
	testenv.Need(t, err == nil, "no mariabackup: apt-get install mariadb-backup (scripts/prereqs.sh)")
}

// lab is a cluster of Nodes on loopback addresses, with one etcd.
type lab struct {
	t       *testing.T
	cli     *clientv3.Client
	nodes   []string
	addrs   []string
	base    string
	port    int
	group   int
	cancels map[string]context.CancelFunc
	done    map[string]chan struct{}
	servers map[string]*Server
	run     map[string]*Node
	pools   map[string]*sql.DB // by node: one each, so that polling does not use up the server's connections
}

func newLab(t *testing.T, n int) *lab {
	needMariaDB(t)
	url, _ := coordtest.StartMember(t)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	l := &lab{t: t, cli: cli, base: testenv.SearchableDir(t), port: testenv.FreePort(t), group: testenv.FreePorts(t, "0.0.0.0", 5), // group, IST, an SST port per node
		cancels: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}, servers: map[string]*Server{}, run: map[string]*Node{}, pools: map[string]*sql.DB{}}
	for i := range n {
		l.nodes = append(l.nodes, fmt.Sprintf("db%d", i+1))
		l.addrs = append(l.addrs, fmt.Sprintf("127.0.%d.%d", 90+i, 21))
	}
	t.Cleanup(func() {
		for _, name := range l.nodes {
			l.stop(name)
		}
		if t.Failed() || os.Getenv("GALERA_LOG") != "" {
			for _, name := range l.nodes {
				b, _ := os.ReadFile(filepath.Join(l.base, name, "mariadb.log"))
				if d := os.Getenv("GALERA_LOG_DIR"); d != "" {
					_ = os.WriteFile(filepath.Join(d, name+".log"), b, 0o644)
					bl, _ := os.ReadFile(filepath.Join(l.base, name, "data", "mariabackup.backup.log"))
					_ = os.WriteFile(filepath.Join(d, name+".backup.log"), bl, 0o644)
				}
				var lines []string
				for _, line := range strings.Split(string(b), "\n") {
					if strings.Contains(line, "ERROR") || strings.Contains(line, "abort") || strings.Contains(line, "signal") || strings.Contains(line, "SST") || strings.Contains(line, "view(") {
						lines = append(lines, line)
					}
				}
				t.Logf("%s's mariadb.log (errors, transfers, views):\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
			}
		}
	})
	return l
}

// start runs node name's agent side (a Node) until stop.
func (l *lab) start(name string) {
	l.t.Helper()
	i := 0
	for i < len(l.nodes) && l.nodes[i] != name {
		i++
	}
	srv, err := New(Config{
		// The state transfer scripts listen on every address of the
		// machine: each node on this one needs its own SST port.
		Name: name, Address: l.addrs[i], Port: l.port, GroupPort: l.group, ISTPort: l.group + 1, SSTPort: l.group + 2 + i,
		Peers: l.addrs, ClusterName: "test", BaseDir: filepath.Join(l.base, name), User: "mysql",
		SSTMethod: "mariabackup", GCacheSize: 64 << 20, FailureDetection: 5 * time.Second,
		Settings: map[string]string{"innodb_buffer_pool_size": "32M", "performance_schema": "OFF"},
		Logger:   testLogger(name),
	})
	if err != nil {
		l.t.Fatal(err)
	}
	n, err := NewNode(NodeConfig{
		Client: l.cli, Cluster: "test", Name: "main", Node: name, Nodes: l.nodes, Server: srv,
		Host: l.addrs[i], Port: l.port, GroupAddrs: l.groupAddrs(), CheckInterval: 200 * time.Millisecond, Grace: 3 * time.Second,
		Writer: true, Lease: time.Second, Logger: testLogger(name),
	})
	if err != nil {
		l.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := n.Run(ctx); err != nil {
			l.t.Errorf("%s: %v", name, err)
		}
	}()
	l.cancels[name], l.done[name], l.servers[name], l.run[name] = cancel, done, srv, n
}

func (l *lab) groupAddrs() map[string]string {
	m := map[string]string{}
	for i, n := range l.nodes {
		m[n] = net.JoinHostPort(l.addrs[i], strconv.Itoa(l.group))
	}
	return m
}

// stop ends node name's Node (its server stops cleanly).
func (l *lab) stop(name string) {
	if c := l.cancels[name]; c != nil {
		c()
		<-l.done[name]
		delete(l.cancels, name)
	}
}

// crash kills node name's server with SIGKILL and ends its Node at once,
// before the Node can notice the death and start the server again (which
// it would then stop cleanly): what a machine's crash leaves.
func (l *lab) crash(name string) {
	l.t.Helper()
	srv := l.servers[name]
	done := srv.Done()
	if pid := srv.PID(); pid != 0 {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	l.stop(name)
	if done != nil {
		<-done
	}
}

// waitServing waits until every named node serves, and returns the
// writer record's holder.
func (l *lab) waitServing(timeout time.Duration, names ...string) {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var not []string
		for _, n := range names {
			if st := l.run[n].State(); !st.Serving {
				not = append(not, fmt.Sprintf("%s (%s: %s; plan %s)", n, st.Server, st.Why, l.run[n].Decision().Reason))
			}
		}
		if len(not) == 0 {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("not serving after %v: %s", timeout, strings.Join(not, "; "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// db is a client's connection pool to node name's server, over its
// socket as root, with timeouts a commit waiting out a dead node's
// eviction keeps: the same pool at every call, so that a test polling
// through it does not use up the server's connections (a restart of the
// server only breaks the pool's idle connections, which it replaces).
func (l *lab) db(name string) *sql.DB {
	l.t.Helper()
	if db, ok := l.pools[name]; ok {
		return db
	}
	c := mysql.NewConfig()
	c.Net, c.Addr, c.User = "unix", l.servers[name].cfg.socket(), "root"
	c.Timeout, c.ReadTimeout, c.WriteTimeout = 30*time.Second, 30*time.Second, 30*time.Second
	conn, err := mysql.NewConnector(c)
	if err != nil {
		l.t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	l.t.Cleanup(func() { db.Close() })
	l.pools[name] = db
	return db
}

func (l *lab) exec(name, q string, args ...any) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := l.db(name).ExecContext(ctx, q, args...); err != nil {
		l.t.Fatalf("%s: %s: %v", name, q, err)
	}
}

func (l *lab) count(name string) int {
	l.t.Helper()
	var n int
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.db(name).QueryRowContext(ctx, "SELECT COUNT(*) FROM t.acked").Scan(&n); err != nil {
		l.t.Fatalf("%s: count: %v", name, err)
	}
	return n
}

// TestClusterRecoversFromEveryCrash runs three real MariaDB Galera nodes
// under their Nodes: the first bootstraps a new cluster, the others join
// it; then the nodes crash one by one while writes go on, so that their
// positions differ, and all come back: the cluster bootstraps itself from
// the most advanced node, with every acknowledged write.
func TestClusterRecoversFromEveryCrash(t *testing.T) {
	l := newLab(t, 3)
	for _, n := range l.nodes {
		l.start(n)
	}
	l.waitServing(3*time.Minute, l.nodes...)
	if b := l.run["db1"].State(); b.Status.ClusterSize != 3 {
		t.Fatalf("db1 sees a cluster of %d nodes, want 3", b.Status.ClusterSize)
	}
	l.claimReleased()
	l.exec("db1", "CREATE DATABASE t")
	l.exec("db1", "CREATE TABLE t.acked (id INT PRIMARY KEY)")
	// Every node has the table before the writes: on a loaded machine a
	// node was seen rejoining (a state transfer) after waitServing, and
	// answered an INSERT without it (CI).
	for _, n := range l.nodes {
		testenv.Poll(t, time.Minute, n+" has the table", func() (bool, string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var c int
			err := l.db(n).QueryRowContext(ctx, "SELECT COUNT(*) FROM t.acked").Scan(&c)
			return err == nil, fmt.Sprint(err)
		})
	}
	acked := 0
	write := func(on string, n int) {
		for range n {
			acked++
			l.exec(on, "INSERT INTO t.acked VALUES (?)", acked)
		}
	}
	write("db2", 20)
	// db3 crashes; db1 and db2 keep a primary component and commit on.
	l.crash("db3")
	l.waitServing(time.Minute, "db1") // evicted db3 after failure detection
	write("db1", 20)
	// db2 crashes: db1 alone is half of the last component, no quorum.
	l.crash("db2")
	l.crash("db1")
	for _, n := range []string{"db3", "db1", "db2"} { // any order
		l.start(n)
	}
	l.waitServing(3*time.Minute, l.nodes...)
	l.claimReleased()
	if got, ok := l.bootstrapper(); !ok || got != "db1" && got != "db2" {
		t.Errorf("bootstrapped from %q, want db1 or db2 (db3 had crashed before the last 20 writes)", got)
	}
	for _, n := range l.nodes {
		if got := l.count(n); got != acked {
			t.Errorf("%s has %d acknowledged writes, want %d", n, got, acked)
		}
	}
}

// TestNodeThatLeftTheGroupIsRestarted: a server that left the group for
// good (after an incremental state transfer that missed write sets,
// Galera logs "node restart required" and mariadbd runs on, outside the
// group, joining for ever: TestDemoGalera failed so in CI) is restarted
// by its agent once the grace has passed, and joins again. An empty
// cluster address leaves the server in the same state: replication
// stopped, wsrep_connected OFF, mariadbd running.
func TestNodeThatLeftTheGroupIsRestarted(t *testing.T) {
	l := newLab(t, 3)
	for _, n := range l.nodes {
		l.start(n)
	}
	l.waitServing(3*time.Minute, l.nodes...)
	l.claimReleased()
	pid := l.servers["db2"].PID()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The statement's own connection may be closed under it.
	_, _ = l.db("db2").ExecContext(ctx, "SET GLOBAL wsrep_cluster_address = ''")
	testenv.Poll(t, time.Minute, "db2 seen outside the group", func() (bool, string) {
		st := l.run["db2"].State()
		return st.Server == ServerRunning && !st.Status.Connected, fmt.Sprintf("%+v", st)
	})
	l.waitServing(3*time.Minute, l.nodes...)
	if now := l.servers["db2"].PID(); now == pid {
		t.Errorf("db2 serves again on the same mariadbd (pid %d): it was not restarted", pid)
	}
	if got := testutil.ToFloat64(l.run["db2"].metrics.restarts); got != 1 {
		t.Errorf("haven_galera_rejoin_restarts_total on db2 = %v, want 1", got)
	}
	if st := l.run["db1"].State(); st.Status.ClusterSize != 3 {
		t.Errorf("db1 sees a component of %d nodes after db2's restart, want 3", st.Status.ClusterSize)
	}
}

// claimReleased waits until the bootstrap claim is gone from etcd: the
// node that bootstrapped released it once primary.
func (l *lab) claimReleased() {
	l.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := l.cli.Get(context.Background(), BootstrapKey("test", "main"))
		if err == nil && len(resp.Kvs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("the bootstrap claim is still in etcd 30s after the cluster served: %v %v", resp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// bootstrapper is the node whose Node (since its last start) started
// the cluster.
func (l *lab) bootstrapper() (string, bool) {
	for _, n := range l.nodes {
		if testutil.ToFloat64(l.run[n].metrics.bootstraps) > 0 {
			return n, true
		}
	}
	return "", false
}

// testLogger logs a Node's lines to stderr with -v and GALERA_LOG set.
func testLogger(node string) *slog.Logger {
	if os.Getenv("GALERA_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("node", node)
}

// TestLearnedEvictionIsCleared: a server keeps the evictions its peers'
// join messages carry as well as its agent's own, for a day; a writer
// that rejoined so kept its killed predecessor's UUID after the others
// had dropped theirs, and at the next view change a peer's group layer
// failed on it (TestGalera in CI). The agent empties its server's list,
// whoever put a UUID there, once no node in it is in the view.
func TestLearnedEvictionIsCleared(t *testing.T) {
	l := newLab(t, 2)
	for _, n := range l.nodes {
		l.start(n)
	}
	l.waitServing(3*time.Minute, l.nodes...)
	const gone = "0b5e55ed-0000-4000-8000-000000000001" // no server's
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := l.db("db2")
	if _, err := db.ExecContext(ctx, "SET GLOBAL wsrep_provider_options='evs.evict="+gone+"'"); err != nil {
		t.Fatal(err)
	}
	evictList := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var list string
		if err := db.QueryRowContext(ctx, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_EVS_EVICT_LIST'").Scan(&list); err != nil {
			t.Fatal(err)
		}
		return list
	}
	if list := evictList(); list != "" && list != gone {
		t.Fatalf("db2's eviction list is %q, want %q or empty (its agent cleared it already)", list, gone)
	}
	testenv.Poll(t, 30*time.Second, "db2's eviction list empty again", func() (bool, string) {
		list := evictList()
		return list == "", list
	})
	testenv.Poll(t, 30*time.Second, "db2's agent seeing the list empty", func() (bool, string) {
		st := l.run["db2"].State()
		return len(st.Status.EvictList) == 0 && st.Status.Primary(), fmt.Sprintf("%v, %s", st.Status.EvictList, st.Status.ClusterStatus)
	})
	if st := l.run["db1"].State(); st.Status.ClusterSize != 2 {
		t.Errorf("db1 sees a component of %d nodes after db2's list was cleared, want 2", st.Status.ClusterSize)
	}
}
