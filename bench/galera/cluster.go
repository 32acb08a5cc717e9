package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
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
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/netlab"
)

// cluster is one target running on a fresh network: each node's daemons
// and the router on the client.
type cluster struct {
	b       *bench
	t       target
	net     *netlab.Net
	dir     string
	label   string
	daemons map[string][]*netlab.Proc // each node's current processes
	history []*netlab.Proc            // every daemon ever started, for the logs
	down    map[string]bool           // nodes killed and not started again
	router  *netlab.Proc              // HAProxy or haven's router agent on the client; nil for keepalived
	checks  map[string]net.Listener   // the peer's clustercheck services
	servers map[string]*netlab.Proc   // the peer's mariadbd on each node
	dialer  string                    // the writer's mysql dialer name: the client's namespace
}

// startCluster builds the network, starts every node's daemons and the
// router, waits until the cluster is healthy and makes the writer's table
// and user. On error it closes what it made.
func (b *bench) startCluster(ctx context.Context, t target, label string) (_ *cluster, err error) {
	if t.kind == "haven" && b.havenErr != nil {
		return nil, b.havenErr
	}
	dir := filepath.Join(b.dir, label)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	c := &cluster{b: b, t: t, dir: dir, label: label, daemons: map[string][]*netlab.Proc{}, down: map[string]bool{},
		checks: map[string]net.Listener{}, servers: map[string]*netlab.Proc{}, dialer: "benchgalera-" + label}
	n, err := netlab.New(ctx, netlab.Options{Hosts: hosts})
	if err != nil {
		return nil, err
	}
	c.net = n
	b.setNet(n)
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	client := n.Host("client")
	mysql.RegisterDialContext(c.dialer, func(ctx context.Context, addr string) (net.Conn, error) {
		return client.DialContext(ctx, "tcp", addr)
	})
	if err := c.writeConfigs(ctx); err != nil {
		return nil, err
	}
	for i, node := range nodes {
		// The guide's way: the first node bootstraps, the others join it
		// once it is up (each by a full copy).
		if err := c.startNode(node, t.kind == "guide" && i == 0); err != nil {
			return nil, err
		}
		if t.kind == "guide" && i == 0 {
			if err := c.waitSynced(ctx, node, 1); err != nil {
				return nil, err
			}
		}
	}
	switch t.router {
	case "haproxy":
		c.router, err = client.Start(context.Background(), "haproxy", "-db", "-f", filepath.Join(dir, "haproxy.cfg"))
	case "":
		c.router, err = client.Start(context.Background(), b.havenBin, "agent", "-c", filepath.Join(dir, "haven.yaml"), "-n", "client")
	}
	if err != nil {
		return nil, err
	}
	if c.router != nil {
		c.history = append(c.history, c.router)
	}
	// The writer's user and table first: the router's check connects as
	// that user.
	if err := c.poll(ctx, b.opt.settle, func() string { return c.allSynced(ctx) }); err != nil {
		return nil, err
	}
	if err := c.makeTable(ctx); err != nil {
		return nil, err
	}
	if err := c.waitHealthy(ctx, b.opt.settle); err != nil {
		return nil, err
	}
	return c, nil
}

// nodeDir is node's own directory; serverDir holds its mariadbd's files
// (my.cnf, data, socket, log): haven's database.data_dir, or the peer's.
func (c *cluster) nodeDir(node string) string { return filepath.Join(c.dir, node) }

func (c *cluster) serverDir(node string) string {
	if c.t.kind == "haven" {
		return filepath.Join(c.nodeDir(node), "galera")
	}
	return filepath.Join(c.nodeDir(node), "mariadb")
}

func (c *cluster) socket(node string) string { return filepath.Join(c.serverDir(node), "mysqld.sock") }

// writeConfigs writes the target's configuration files and, for the
// peer, makes each node's data directory as a person would
// (mariadb-install-db).
func (c *cluster) writeConfigs(ctx context.Context) error {
	for _, node := range nodes {
		// The etcd member makes its own directory 0700: mariadbd, as
		// mysql, needs to pass through the node's.
		if err := os.MkdirAll(c.nodeDir(node), 0o755); err != nil {
			return err
		}
	}
	switch c.t.kind {
	case "haven":
		return writeHavenConf(c.dir)
	}
	if c.t.router == "haproxy" {
		if err := writeHAProxyConf(filepath.Join(c.dir, "haproxy.cfg")); err != nil {
			return err
		}
	}
	tl := c.b.tools
	for _, node := range nodes {
		d := c.serverDir(node)
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
		if err := os.Chown(d, tl.mysqlUID, tl.mysqlGID); err != nil {
			return err
		}
		if err := writePeerConf(filepath.Join(d, "my.cnf"), d, node, tl.provider); err != nil {
			return err
		}
		if c.t.router == "keepalived" {
			if err := writeKeepalived(c.nodeDir(node), node, tl.client, c.socket(node)); err != nil {
				return err
			}
		}
		out, err := harness.Run(ctx, 2*time.Minute, nil, tl.installDB, "--no-defaults", "--datadir="+filepath.Join(d, "data"),
			"--auth-root-authentication-method=socket", "--skip-test-db", "--user=mysql")
		if err != nil {
			return fmt.Errorf("mariadb-install-db on %s: %w: %s", node, err, harness.LastLines(out, 3))
		}
	}
	return nil
}

// startNode starts node's daemons: haven's agent; or mariadbd (with
// --wsrep-new-cluster when bootstrap), the check service and keepalived.
func (c *cluster) startNode(node string, bootstrap bool) error {
	h := c.net.Host(node)
	if c.t.kind == "haven" {
		return c.started(node)(h.Start(context.Background(), c.b.havenBin, "agent", "-c", filepath.Join(c.dir, "haven.yaml"), "-n", node))
	}
	if err := c.startServer(node, bootstrap, ""); err != nil {
		return err
	}
	if err := c.startClustercheck(node); err != nil {
		return err
	}
	if c.t.router == "keepalived" {
		d := c.nodeDir(node)
		pid, vpid := filepath.Join(d, "keepalived.pid"), filepath.Join(d, "vrrp.pid")
		os.Remove(pid)
		os.Remove(vpid)
		return c.started(node)(h.Start(context.Background(), "keepalived", "-n", "-l", "-D", "-G", "-P",
			"-f", filepath.Join(d, "keepalived.conf"), "-p", pid, "-r", vpid))
	}
	return nil
}

// startServer starts the peer's mariadbd on node, as the mysql user;
// from a recovered position when from is not "".
func (c *cluster) startServer(node string, bootstrap bool, from string) error {
	args := []string{"--defaults-file=" + filepath.Join(c.serverDir(node), "my.cnf"), "--user=mysql"}
	if bootstrap {
		args = append(args, "--wsrep-new-cluster")
	}
	if from != "" {
		args = append(args, "--wsrep-start-position="+from)
	}
	p, err := c.net.Host(node).Start(context.Background(), c.b.tools.mariadbd, args...)
	if err != nil {
		return err
	}
	c.servers[node] = p
	return c.started(node)(p, nil)
}

// started records a daemon of node.
func (c *cluster) started(node string) func(*netlab.Proc, error) error {
	return func(p *netlab.Proc, err error) error {
		if err != nil {
			return err
		}
		c.daemons[node] = append(c.daemons[node], p)
		c.history = append(c.history, p)
		return nil
	}
}

// startClustercheck serves Percona's clustercheck on node's port 9200,
// from node's namespace: 200 when the server's wsrep_local_state is 4,
// 503 otherwise (its defaults: not when donor, also when read-only). It
// runs in the bench's process, and stops when the node is killed.
func (c *cluster) startClustercheck(node string) error {
	ln, err := c.net.Host(node).Listen("tcp", fmt.Sprintf(":%d", checkPort))
	if err != nil {
		return err
	}
	c.checks[node] = ln
	sock := c.socket(node)
	srv := &http.Server{ReadHeaderTimeout: 2 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := serverStatus(r.Context(), sock)
		if err != nil || st["wsrep_local_state"] != "4" {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "Percona XtraDB Cluster Node is not synced or non-PRIM.\r\n")
			return
		}
		io.WriteString(w, "Percona XtraDB Cluster Node is synced.\r\n")
	})}
	go srv.Serve(ln)
	return nil
}

// serverStatus reads the wsrep status of the server on sock, as root.
func serverStatus(ctx context.Context, sock string) (map[string]string, error) {
	db, err := rootDB(sock)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	rows, err := db.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', 'wsrep_cluster_status', 'wsrep_cluster_size', 'wsrep_ready', 'wsrep_last_committed')")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	st := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		st[k] = v
	}
	return st, rows.Err()
}

// rootDB is one connection to the server on sock, as root by unix socket.
func rootDB(sock string) (*sql.DB, error) {
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User = "unix", sock, "root"
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 2*time.Second, 10*time.Second, 10*time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(1)
	return db, nil
}

// synced reports whether node's server is synced in a primary component
// of all three nodes, or why not.
func (c *cluster) synced(ctx context.Context, node string, size int) string {
	st, err := serverStatus(ctx, c.socket(node))
	switch {
	case err != nil:
		return node + ": " + harness.Truncate(err.Error(), 80)
	case st["wsrep_ready"] != "ON" || st["wsrep_cluster_status"] != "Primary" || st["wsrep_local_state"] != "4" || st["wsrep_cluster_size"] != strconv.Itoa(size):
		return fmt.Sprintf("%s: ready %s, %s, state %s, size %s", node, st["wsrep_ready"], st["wsrep_cluster_status"], st["wsrep_local_state"], st["wsrep_cluster_size"])
	}
	return ""
}

// waitSynced waits until node serves in a primary component of size.
func (c *cluster) waitSynced(ctx context.Context, node string, size int) error {
	return c.poll(ctx, 2*time.Minute, func() string { return c.synced(ctx, node, size) })
}

// health says why the cluster is not healthy: every node synced in one
// primary component of three, and a connection through the router
// reaches one of them. "" when it is.
func (c *cluster) health(ctx context.Context) string {
	if why := c.allSynced(ctx); why != "" {
		return why
	}
	if _, err := c.writerNode(ctx); err != nil {
		return "through the router: " + harness.Truncate(err.Error(), 120)
	}
	return ""
}

// allSynced says why not every node is synced in one primary component
// of three; "" when they are.
func (c *cluster) allSynced(ctx context.Context) string {
	for _, node := range nodes {
		if why := c.synced(ctx, node, len(nodes)); why != "" {
			return why
		}
	}
	return ""
}

// waitHealthy waits until the cluster is healthy.
func (c *cluster) waitHealthy(ctx context.Context, timeout time.Duration) error {
	return c.poll(ctx, timeout, func() string { return c.health(ctx) })
}

// poll calls check every 250ms until it returns "", a daemon exits, or
// timeout passes.
func (c *cluster) poll(ctx context.Context, timeout time.Duration, check func() string) error {
	deadline := time.Now().Add(timeout)
	for {
		why := check()
		if why == "" {
			return nil
		}
		if err := c.daemonsAlive(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after %s: %s; logs: %s", timeout, why, c.logTail(3))
		}
		if !harness.Sleep(ctx, 250*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// daemonsAlive returns an error when a daemon of a node that is up, or the
// router, exited.
func (c *cluster) daemonsAlive() error {
	procs := []*netlab.Proc{}
	for _, node := range nodes {
		if !c.down[node] {
			procs = append(procs, c.daemons[node]...)
		}
	}
	if c.router != nil {
		procs = append(procs, c.router)
	}
	for _, p := range procs {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited: %s %s", p, harness.LastLines(p.Output(), 5), c.serverLogTail(p.Host.Name, 5))
		default:
		}
	}
	return nil
}

// serverLogTail is the last lines of node's mariadb log.
func (c *cluster) serverLogTail(node string, n int) string {
	data, err := os.ReadFile(filepath.Join(c.serverDir(node), "mariadb.log"))
	if err != nil {
		return ""
	}
	return harness.LastLines(string(data), n)
}

// logTail is the last lines of every node's daemons, for an error.
func (c *cluster) logTail(lines int) string {
	var parts []string
	for _, node := range nodes {
		for _, p := range c.daemons[node] {
			parts = append(parts, p.String()+": "+harness.LastLines(p.Output(), lines))
		}
		parts = append(parts, node+" mariadb.log: "+c.serverLogTail(node, lines))
	}
	return strings.Join(parts, " ‖ ")
}

// makeTable makes the writer's database, table and user, as root on a
// synced node: Galera replicates them to the others.
func (c *cluster) makeTable(ctx context.Context) error {
	db, err := rootDB(c.socket(nodes[0]))
	if err != nil {
		return err
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE DATABASE " + database,
		"CREATE TABLE " + database + ".writes (run INT NOT NULL, seq INT NOT NULL, PRIMARY KEY (run, seq))",
		fmt.Sprintf("CREATE USER %s@'%%' IDENTIFIED BY '%s'", appUser, appPassword),
		fmt.Sprintf("GRANT SELECT, INSERT ON %s.* TO %s@'%%'", database, appUser),
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s on %s: %w", q, nodes[0], err)
		}
	}
	return nil
}

// writerNode is the node a connection through the router reaches.
func (c *cluster) writerNode(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	cfg := mysql.NewConfig()
	cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName = c.dialer, c.t.routerAddr(), appUser, appPassword, database
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = time.Second, 2*time.Second, 2*time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return "", err
	}
	db := sql.OpenDB(conn)
	defer db.Close()
	var name string
	if err := db.QueryRowContext(ctx, "SELECT @@wsrep_node_name").Scan(&name); err != nil {
		return "", err
	}
	return name, nil
}

// rows reads run's rows on every node, as root over its socket, after
// waiting for the node to apply what the cluster committed before
// (wsrep_sync_wait). It returns the rows every node has, and the nodes
// whose rows differ from the others'.
func (c *cluster) rows(ctx context.Context, run int) ([]int, []string, error) {
	count := map[int]int{}
	var seen [][]int
	for _, node := range nodes {
		db, err := rootDB(c.socket(node))
		if err != nil {
			return nil, nil, err
		}
		seqs, err := func() ([]int, error) {
			defer db.Close()
			qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			conn, err := db.Conn(qctx)
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			if _, err := conn.ExecContext(qctx, "SET SESSION wsrep_sync_wait = 1"); err != nil {
				return nil, err
			}
			rs, err := conn.QueryContext(qctx, "SELECT seq FROM "+database+".writes WHERE run = ? ORDER BY seq", run)
			if err != nil {
				return nil, err
			}
			defer rs.Close()
			var out []int
			for rs.Next() {
				var s int
				if err := rs.Scan(&s); err != nil {
					return nil, err
				}
				out = append(out, s)
			}
			return out, rs.Err()
		}()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", node, err)
		}
		for _, s := range seqs {
			count[s]++
		}
		seen = append(seen, seqs)
	}
	var all []int
	for s, n := range count {
		if n == len(nodes) {
			all = append(all, s)
		}
	}
	slices.Sort(all)
	var differ []string
	for i, seqs := range seen {
		if len(seqs) != len(all) {
			differ = append(differ, nodes[i])
		}
	}
	return all, differ, nil
}

// kill is kill -9 of everything in node's namespace: the server and its
// SST helpers, keepalived, haven's agent and its etcd. The servers go
// first: an agent's death would signal its server to stop cleanly.
// The peer's clustercheck stops with them.
func (c *cluster) kill(node string) error {
	h := c.net.Host(node)
	c.down[node] = true
	if ln := c.checks[node]; ln != nil {
		ln.Close()
		delete(c.checks, node)
	}
	pids, err := h.PIDs()
	if err != nil {
		return fmt.Errorf("the processes of %s: %w", h.Namespace, err)
	}
	daemon := map[int]bool{}
	for _, p := range c.daemons[node] {
		daemon[p.PID] = true
	}
	slices.SortStableFunc(pids, func(a, b int) int {
		switch {
		case daemon[a] == daemon[b]:
			return 0
		case daemon[a]:
			return 1
		}
		return -1
	})
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return nil
}

// stop stops node cleanly, as systemctl stop of its services would:
// SIGTERM to each of its daemons (haven's agent stops its server and its
// etcd member), SIGKILL to what is left after a minute.
func (c *cluster) stop(ctx context.Context, node string) error {
	c.down[node] = true
	if ln := c.checks[node]; ln != nil {
		ln.Close()
		delete(c.checks, node)
	}
	for _, p := range c.daemons[node] {
		_ = p.Signal(syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var errs []error
	for _, p := range c.daemons[node] {
		errs = append(errs, waitOrKill(ctx, p))
	}
	delete(c.servers, node)
	return errors.Join(errs...)
}

// restart waits until node's namespace is empty, then starts its daemons
// again, as after a reboot: the address keepalived held is gone with it.
func (c *cluster) restart(ctx context.Context, node string) error {
	if err := c.waitGone(ctx, node); err != nil {
		return err
	}
	if c.t.router == "keepalived" {
		_ = c.net.Host(node).Command(ctx, "ip", "addr", "del", vip.String()+"/24", "dev", "eth0").Run()
	}
	if err := c.startNode(node, false); err != nil {
		return err
	}
	delete(c.down, node)
	return nil
}

// waitGone waits until every process of node's namespace has exited and
// been reaped.
func (c *cluster) waitGone(ctx context.Context, node string) error {
	h := c.net.Host(node)
	deadline := time.Now().Add(15 * time.Second)
	for {
		pids, err := h.PIDs()
		if err != nil {
			return fmt.Errorf("the processes of %s: %w", h.Namespace, err)
		}
		if len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still in %s 15s after kill -9: %v", h.Namespace, pids)
		}
		// What a killed node left: a server its agent started again
		// between the two kills, an SST helper. The node is down.
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if !harness.Sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
	for _, p := range c.daemons[node] {
		select {
		case <-p.Done():
		case <-time.After(5 * time.Second):
			return fmt.Errorf("%s not reaped 5s after its namespace was empty", p)
		}
	}
	c.daemons[node] = nil
	return nil
}

// recoveredPosition is mariadbd --wsrep-recover's line in its log.
var recoveredPosition = regexp.MustCompile(`WSREP: Recovered position: ([0-9a-f-]{36}):(-?\d+)`)

// recoverByHand is what a person does when a Galera cluster does not come
// back by itself, by Galera's and MariaDB's documentation: stop the
// servers, find each node's last committed position (mariadbd
// --wsrep-recover), mark the most advanced node safe_to_bootstrap, start
// it with galera_new_cluster from that position, as MariaDB's
// galera_recovery passes it (--wsrep-new-cluster --wsrep-start-position),
// then the others one at a time, each from its own position so that it
// rejoins by IST.
func (c *cluster) recoverByHand(ctx context.Context) (string, error) {
	if err := c.stopServers(ctx); err != nil {
		return "", err
	}
	pos := make([]position, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Go(func() { pos[i], errs[i] = c.recoverPosition(ctx, node) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	best := 0
	for i := range nodes {
		if pos[i].seqno > pos[best].seqno {
			best = i
		}
	}
	grastate := filepath.Join(c.serverDir(nodes[best]), "data", "grastate.dat")
	data, err := os.ReadFile(grastate)
	if err != nil {
		return "", err
	}
	data = regexp.MustCompile(`(?m)^safe_to_bootstrap:.*$`).ReplaceAll(data, []byte("safe_to_bootstrap: 1"))
	if err := os.WriteFile(grastate, data, 0o660); err != nil {
		return "", err
	}
	if err := c.startServer(nodes[best], true, pos[best].String()); err != nil {
		return "", err
	}
	if err := c.waitSynced(ctx, nodes[best], 1); err != nil {
		return "", err
	}
	size := 1
	for i, n := range nodes {
		if i == best {
			continue
		}
		if err := c.startServer(n, false, pos[i].String()); err != nil {
			return "", err
		}
		size++
		if err := c.waitSynced(ctx, n, size); err != nil {
			return "", err
		}
	}
	return fmt.Sprintf("%s bootstrapped by hand (positions %v)", nodes[best], pos), nil
}

// position is a node's place in its cluster's history.
type position struct {
	uuid  string
	seqno int64
}

func (p position) String() string { return fmt.Sprintf("%s:%d", p.uuid, p.seqno) }

// stopServers stops every peer mariadbd as systemctl stop would: SIGTERM,
// and SIGKILL to what is left after 30 s.
func (c *cluster) stopServers(ctx context.Context) error {
	for _, p := range c.servers {
		_ = p.Signal(syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for node, p := range c.servers {
		if err := waitOrKill(ctx, p); err != nil {
			return err
		}
		c.daemons[node] = slices.DeleteFunc(c.daemons[node], func(d *netlab.Proc) bool { return d == p })
		delete(c.servers, node)
	}
	return nil
}

// waitOrKill waits until p exits, or kills it when ctx ends and waits 10 s
// more for that.
func waitOrKill(ctx context.Context, p *netlab.Proc) error {
	select {
	case <-p.Done():
		return nil
	case <-ctx.Done():
	}
	_ = p.Kill()
	select {
	case <-p.Done():
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s did not exit 10s after SIGKILL", p)
	}
}

// recoverPosition runs mariadbd --wsrep-recover on node and returns the
// position it found.
func (c *cluster) recoverPosition(ctx context.Context, node string) (position, error) {
	logFile := filepath.Join(c.serverDir(node), "mariadb.log")
	before, _ := os.ReadFile(logFile)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := c.net.Host(node).Command(ctx, c.b.tools.mariadbd,
		"--defaults-file="+filepath.Join(c.serverDir(node), "my.cnf"), "--user=mysql", "--wsrep-recover").CombinedOutput()
	if err != nil {
		return position{}, fmt.Errorf("%s: mariadbd --wsrep-recover: %w: %s", node, err, harness.LastLines(string(out), 3))
	}
	after, _ := os.ReadFile(logFile)
	m := recoveredPosition.FindAllStringSubmatch(string(after[min(len(before), len(after)):]), -1)
	if len(m) == 0 {
		return position{}, fmt.Errorf("%s: mariadbd --wsrep-recover printed no position: %s", node, harness.LastLines(string(after), 3))
	}
	last := m[len(m)-1]
	seqno, err := strconv.ParseInt(last[2], 10, 64)
	return position{uuid: last[1], seqno: seqno}, err
}

// close stops everything the cluster started and removes its network.
func (c *cluster) close() {
	for _, ln := range c.checks {
		ln.Close()
	}
	c.saveLogs()
	if err := c.net.Close(); err != nil {
		harness.Logf("warning: %v", err)
	}
	c.b.setNet(nil)
}

// saveLogs writes each daemon's output to the raw directory, as
// SCENARIO-TARGET-HOST-N.log, and each node's mariadb log.
func (c *cluster) saveLogs() {
	count := map[string]int{}
	for _, p := range c.history {
		node := p.Host.Name
		count[node]++
		path := filepath.Join(c.b.rawDir, fmt.Sprintf("%s-%s-%d.log", c.label, node, count[node]))
		_ = os.WriteFile(path, []byte(p.String()+"\n"+p.Output()), 0o644)
	}
	for _, node := range nodes {
		if data, err := os.ReadFile(filepath.Join(c.serverDir(node), "mariadb.log")); err == nil {
			_ = os.WriteFile(filepath.Join(c.b.rawDir, fmt.Sprintf("%s-%s-mariadb.log", c.label, node)), data, 0o644)
		}
	}
}
