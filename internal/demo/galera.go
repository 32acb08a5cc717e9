package demo

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/galera"
	"github.com/haven-ha/haven/internal/netlab"
)

// The third act on Galera (haven demo --engine galera): the demo
// application keeps its orders in a three-node MariaDB Galera cluster and
// reaches its writer through haven's router on its own host. Clients place
// orders; the writer's node crashes (its server and agent, kill -9); then
// every node crashes at once and the agents bring the cluster back by
// themselves from the most advanced node. Every acknowledged order must be
// on every node.

// GaleraResult summarises the Galera act.
type GaleraResult struct {
	// Acknowledged orders got a 200; Failed did not.
	Acknowledged, Failed int64
	// Lost are acknowledged orders missing on any node (must be 0).
	Lost int
	// Writer was killed; Successor took the writes.
	Writer, Successor string
	// Gap is the longest time without an acknowledged order around the
	// writer's loss; Writable how long the cluster took, after every node
	// crashed and the agents started again, to take an order.
	Gap, Writable time.Duration
}

// galeraSocket is a Galera demo node's server's unix socket.
func galeraSocket(dir, node string) string { return filepath.Join(dir, node, "galera", "mysqld.sock") }

// CanRunGalera says whether this machine can run the Galera act: what
// the second act needs, and MariaDB with the galera-4 provider.
func CanRunGalera() error {
	if err := CanRunFloating(); err != nil {
		return err
	}
	for _, p := range []string{"/usr/sbin/mariadbd", "/usr/lib/galera/libgalera_smm.so", "/usr/bin/mariabackup"} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("it needs MariaDB and Galera (apt-get install mariadb-server galera-4 mariadb-backup): %w", err)
		}
	}
	return nil
}

// RunGalera plays the Galera act.
func RunGalera(ctx context.Context, opt Options) (*GaleraResult, error) {
	opt = opt.defaults()
	st, err := newStage(ctx, "galera", netlab.Options{Hosts: dbHosts}, func(dir string) map[string]string {
		return map[string]string{"haven.yaml": galeraConfig(dir), "token": "demo\n"}
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	for _, h := range dbHosts {
		// The etcd member makes its own directory 0700; mariadbd, as the
		// mysql user, must pass through the node's.
		if err := os.MkdirAll(st.path(h), 0o755); err != nil {
			return nil, err
		}
	}
	n, exe, cfgPath := st.net, st.exe, st.path("haven.yaml")
	w := opt.Out
	fmt.Fprintf(w, "\nhaven demo, act 3: the application's data in a MariaDB Galera cluster\n")
	fmt.Fprintf(w, "  db1-db3 198.18.1.11-13 (MariaDB with galera-4, embedded etcd; haven bootstraps, routes to one writer, evicts the dead);\n")
	fmt.Fprintf(w, "  app %s: the demo application and haven's database router on :%d; config %s\n", dbAppAddr, galeraRouterPort, cfgPath)

	procCtx, stopProcs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProcs()
	agents := map[string]*netlab.Proc{}
	startAgent := func(node string) error {
		p, err := n.Host(node).Start(procCtx, exe, "agent", "-c", cfgPath, "-n", node)
		agents[node] = p
		return err
	}
	logs := func() string {
		return netlab.Outputs(20000, agents["db1"], agents["db2"], agents["db3"]) + serverLogs(st.dir, 8000)
	}
	for _, h := range dbHosts {
		if err := startAgent(h); err != nil {
			return nil, err
		}
	}
	app := n.Host("app")
	admin := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: app.DialContext, DisableKeepAlives: true}}
	start := time.Now()
	since := func(t time.Time) string { return fmt.Sprintf("T+%5.2fs", t.Sub(start).Seconds()) }
	writer, epoch, err := waitGalera(ctx, admin, "", 0, 3*time.Minute)
	if err != nil {
		return nil, fmt.Errorf("demo: %w\n%s", err, logs())
	}
	fmt.Fprintf(w, "\n%s  the cluster is up: one node bootstrapped it, the others joined by a full copy; %s is the writer\n", since(time.Now()), writer)
	if err := createGaleraSchema(ctx, st.dir, writer); err != nil {
		return nil, err
	}
	dsn := fmt.Sprintf("mysql://app:%s@%s:%d/demo", dbAppPass, dbAppAddr, galeraRouterPort)
	if _, err := app.Start(procCtx, exe, "backend", "--listen", dbAppAddr+":8080", "--name", "app", "--database", dsn); err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "%s  4 clients place orders: POST http://%s:8080/orders\n", since(time.Now()), dbAppAddr)
	ord := &orders{url: "http://" + dbAppAddr + ":8080/orders", client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: app.DialContext}}}
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() { ord.run(loadCtx, 4); close(loadDone) }()
	defer func() { stopLoad(); <-loadDone }()

	res := &GaleraResult{Writer: writer}
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	killedAt := time.Now()
	crashGaleraNode(st.dir, writer, agents[writer])
	fmt.Fprintf(w, "%s  kill -9 of %s's server and agent\n", since(killedAt), writer)
	if res.Successor, epoch, err = waitGalera(ctx, admin, writer, epoch, time.Minute); err != nil {
		return res, fmt.Errorf("demo: %w\n%s", err, logs())
	}
	fmt.Fprintf(w, "%s  %s is the writer: the others evicted %s from the group and the router follows the writer record\n", since(time.Now()), res.Successor, writer)
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	res.Gap = ord.longestGap()
	if err := startAgent(writer); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "%s  %s's agent restarted: its server rejoins from its position (IST, the write sets it missed)\n", since(time.Now()), writer)
	if _, epoch, err = waitGalera(ctx, admin, "", epoch-1, 2*time.Minute); err != nil {
		return res, fmt.Errorf("demo: %w\n%s", err, logs())
	}
	fmt.Fprintf(w, "%s  all three nodes synced again\n", since(time.Now()))

	crashedAt := time.Now()
	for _, node := range dbHosts[:3] {
		crashGaleraNode(st.dir, node, agents[node])
	}
	fmt.Fprintf(w, "%s  every node crashes at once (kill -9 of the three servers and agents)\n", since(crashedAt))
	for _, node := range galeraRestartOrder() {
		if err := waitGone(ctx, agents[node]); err != nil {
			return res, err
		}
		if err := startAgent(node); err != nil {
			return res, err
		}
	}
	restartedAt := time.Now()
	fmt.Fprintf(w, "%s  the agents start again, in random order: each reads its node's position and publishes it\n", since(restartedAt))
	after, _, err := waitGalera(ctx, admin, "", epoch, 3*time.Minute)
	if err != nil {
		return res, fmt.Errorf("demo: %w\n%s", err, logs())
	}
	if first := ord.firstAckedAfter(restartedAt); !first.IsZero() {
		res.Writable = first.Sub(restartedAt)
	}
	fmt.Fprintf(w, "%s  the cluster is back by itself, bootstrapped from the most advanced node; %s is the writer; first order taken %.2fs after the restart\n",
		since(time.Now()), after, res.Writable.Seconds())
	sleepCtx(ctx, opt.Phase)
	stopLoad()
	<-loadDone

	acked := ord.acknowledged()
	res.Acknowledged, res.Failed = int64(len(acked)), ord.failed.Load()
	for _, node := range dbHosts[:3] {
		stored, err := galeraOrders(ctx, st.dir, node)
		if err != nil {
			return res, fmt.Errorf("demo: read the orders on %s: %w", node, err)
		}
		for _, a := range acked {
			if !stored[a.id] {
				res.Lost++
			}
		}
	}
	fmt.Fprintf(w, "\norders acknowledged %d, failed %d (the client cannot know whether those were stored)\n", res.Acknowledged, res.Failed)
	fmt.Fprintf(w, "longest time without an acknowledged order when the writer died: %.2fs\n", res.Gap.Seconds())
	fmt.Fprintf(w, "acknowledged orders missing on any node: %d (Galera certifies every commit on every node before it answers)\n", res.Lost)
	if res.Lost > 0 {
		return res, fmt.Errorf("demo: %d acknowledged orders are missing on a node", res.Lost)
	}
	return res, nil
}

const galeraRouterPort = 3306

func galeraConfig(dir string) string {
	return fmt.Sprintf(`cluster: demo-galera
admin: {token_file: %[1]s/token}
regions:
  east:
    nodes:
      db1: {address: 198.18.1.11, zone: a}
      db2: {address: 198.18.1.12, zone: b}
      db3: {address: 198.18.1.13, zone: c}
      app: {address: %[2]s, zone: d}
coordination:
  members: [db1, db2, db3]
  data_dir: %[1]s/{node}/etcd
database:
  engine: galera
  nodes: [db1, db2, db3]
  data_dir: %[1]s/{node}/galera
  listen: {primary: ":%[3]d"}
  routers: [app]
  settings:
    innodb_buffer_pool_size: 32M
    performance_schema: "OFF"
  galera:
    gcache_size: 64MiB
`, dir, dbAppAddr, galeraRouterPort)
}

// waitGalera waits until the Galera nodes serve (three; two when not, the
// lost writer, is named) and there is a writer other than not whose
// record is newer than epoch, as the first database node that answers
// sees it; it returns the writer and its record's epoch. (A crashed node's last state
// stays in etcd for its lease: the epoch tells a new writer from it.)
func waitGalera(ctx context.Context, c *http.Client, not string, epoch int64, within time.Duration) (string, int64, error) {
	deadline := time.Now().Add(within)
	last := "no answer"
	for time.Now().Before(deadline) {
		for i, node := range dbHosts[:3] {
			if node == not {
				continue
			}
			var st agent.DatabaseStatus
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://198.18.1.%d:9900/api/v1/database", 11+i), nil)
			resp, err := c.Do(req)
			if err != nil {
				continue
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil && st.Galera != nil {
				g := st.Galera
				// After the writer's loss two nodes serve; otherwise
				// three. Each must be in a component of that size: a
				// killed node's last state, still in etcd for its lease,
				// says it served in the old one.
				want := 3
				if not != "" {
					want = 2
				}
				serving := 0
				for name, m := range g.Members {
					if name != not && m.Serving && m.Status.ClusterSize == want {
						serving++
					}
				}
				if g.Writer != "" && g.Writer != not && g.Epoch > epoch && serving == want {
					return g.Writer, g.Epoch, nil
				}
				last = fmt.Sprintf("writer %q, %d nodes serving; %s; %s", g.Writer, serving, g.Plan, describeMembers(g.Members))
			}
			break // one database node's view is enough
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return "", 0, ctx.Err()
		}
	}
	return "", 0, fmt.Errorf("no Galera writer within %v (%s)", within, last)
}

// describeMembers says, member by member, what a wait saw: whether each
// server ran, in which component and of what size, and why it did not
// serve. A wait that times out says which node stayed out.
func describeMembers(members map[string]galera.MemberState) string {
	names := slices.Sorted(maps.Keys(members))
	parts := make([]string, 0, len(names))
	for _, name := range names {
		m := members[name]
		d := fmt.Sprintf("%s: %s", name, m.Server)
		if m.Server == galera.ServerRunning {
			d += fmt.Sprintf(" %s size %d %s", m.Status.ClusterStatus, m.Status.ClusterSize, m.Status.LocalStateComment)
		}
		if m.Serving {
			d += ", serving"
		} else if m.Why != "" {
			d += ", not serving: " + m.Why
		}
		parts = append(parts, d)
	}
	return strings.Join(parts, "; ")
}

// serverLogs returns the last limit bytes of each node's MariaDB error log:
// why a server stayed outside the component is in its log, not its
// agent's.
func serverLogs(dir string, limit int) string {
	var b strings.Builder
	for _, node := range dbHosts[:3] {
		path := filepath.Join(dir, node, "galera", "mariadb.log")
		out, err := os.ReadFile(path)
		if err != nil {
			fmt.Fprintf(&b, "--- %s: %v ---\n", node, err)
			continue
		}
		fmt.Fprintf(&b, "--- %s: %s (last %d bytes at most) ---\n%s\n", node, path, limit, out[max(0, len(out)-limit):])
	}
	return b.String()
}

// crashGaleraNode is a machine's crash: kill -9 of node's server, then of
// its agent (the agent's death would stop the server cleanly otherwise).
func crashGaleraNode(dir, node string, agentProc *netlab.Proc) {
	if b, err := os.ReadFile(filepath.Join(dir, node, "galera", "mysqld.pid")); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if agentProc != nil {
		_ = agentProc.Kill()
	}
}

// waitGone waits until a killed agent has been reaped.
func waitGone(ctx context.Context, p *netlab.Proc) error {
	if p == nil {
		return nil
	}
	select {
	case <-p.Done():
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("demo: %s did not exit 10s after kill -9", p)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func galeraRestartOrder() []string {
	order := []string{"db1", "db2", "db3"}
	rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	return order
}

// galeraRoot is a pool on node's server over its socket, as root (haven's
// own way in: unix socket authentication, no password).
func galeraRoot(dir, node string) (*sql.DB, error) {
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User = "unix", galeraSocket(dir, node), "root"
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 5*time.Second, 30*time.Second, 30*time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(conn), nil
}

// createGaleraSchema makes the application's database, table and user on
// the writer; Galera replicates them.
func createGaleraSchema(ctx context.Context, dir, writer string) error {
	db, err := galeraRoot(dir, writer)
	if err != nil {
		return err
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE DATABASE demo",
		"CREATE TABLE demo.orders (id BIGINT PRIMARY KEY, server VARCHAR(64))",
		"CREATE USER app@'%' IDENTIFIED BY '" + dbAppPass + "'",
		"GRANT SELECT, INSERT, UPDATE ON demo.orders TO app@'%'",
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("demo: %s on %s: %w", q, writer, err)
		}
	}
	return nil
}

// galeraOrders reads every order id on node, after it applied what the
// cluster committed before (wsrep_sync_wait).
func galeraOrders(ctx context.Context, dir, node string) (map[int64]bool, error) {
	db, err := galeraRoot(dir, node)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET SESSION wsrep_sync_wait = 1"); err != nil {
		return nil, err
	}
	rows, err := conn.QueryContext(ctx, "SELECT id FROM demo.orders")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	stored := map[int64]bool{}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		stored[id] = true
	}
	return stored, rows.Err()
}
