package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/netlab"
)

// cluster is one target running on a fresh network: the daemons of each
// database node, and the router (HAProxy or haven's) on the client.
type cluster struct {
	b       *bench
	t       target
	net     *netlab.Net
	dir     string
	label   string
	daemons map[string][]*netlab.Proc // each node's current processes: etcd and patroni, or haven's agent
	history []*netlab.Proc            // every daemon ever started, for the logs
	down    map[string]bool           // nodes lost and not started again
	router  *netlab.Proc              // HAProxy, or haven's router agent, on the client
	http    *http.Client
	pgUID   int
	pgGID   int
	mounts  []string // the soak nodes' own file systems, unmounted by close
}

// startCluster builds the network, starts every node's daemons and
// the router, waits until the cluster is healthy, and makes the writer's
// table. On error it closes what it made.
func (b *bench) startCluster(ctx context.Context, t target, label string) (_ *cluster, err error) {
	if t.kind == "haven" && b.havenErr != nil {
		return nil, b.havenErr
	}
	dir := filepath.Join(b.dir, label)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	c := &cluster{b: b, t: t, dir: dir, label: label, daemons: map[string][]*netlab.Proc{}, down: map[string]bool{}}
	if err := c.lookupPostgres(); err != nil {
		return nil, err
	}
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
	c.http = &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}

	if err := c.writeConfigs(); err != nil {
		return nil, err
	}
	if t.kind == "patroni" {
		// The etcd members first: Patroni needs its DCS.
		for _, node := range nodes {
			if err := c.startEtcd(node); err != nil {
				return nil, err
			}
		}
	}
	for _, node := range nodes {
		if err := c.startNode(node); err != nil {
			return nil, err
		}
	}
	if t.haproxy {
		c.router, err = client.Start(context.Background(), "haproxy", "-db", "-f", filepath.Join(dir, "haproxy.cfg"))
	} else {
		c.router, err = client.Start(context.Background(), b.havenBin, "agent", "-c", filepath.Join(dir, "haven.yaml"), "-n", "client")
	}
	if err != nil {
		return nil, err
	}
	c.history = append(c.history, c.router)
	primary, err := c.waitHealthy(ctx, b.opt.settle)
	if err != nil {
		return nil, err
	}
	if err := c.makeTable(ctx, primary); err != nil {
		return nil, err
	}
	return c, nil
}

// lookupPostgres finds the postgres user, which runs Patroni and its
// postgres (haven's agent runs as root and postgres as that user).
func (c *cluster) lookupPostgres() error {
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("no postgres user (install postgresql-15): %w", err)
	}
	c.pgUID, _ = strconv.Atoi(u.Uid)
	c.pgGID, _ = strconv.Atoi(u.Gid)
	return nil
}

// nodeDir is node's own directory: its data directory, socket, etcd data
// and, for Patroni, its configuration.
func (c *cluster) nodeDir(node string) string { return filepath.Join(c.dir, node) }

// writeConfigs writes every configuration file of the target and makes
// the nodes' directories.
func (c *cluster) writeConfigs() error {
	if c.t.haproxy {
		if err := writeHAProxyConf(filepath.Join(c.dir, "haproxy.cfg"), c.t); err != nil {
			return err
		}
	} else if err := os.MkdirAll(c.nodeDir("client"), 0o711); err != nil {
		return err
	}
	for _, node := range nodes {
		d := c.nodeDir(node)
		if err := os.MkdirAll(d, 0o711); err != nil {
			return err
		}
		if c.t.kind == "haven" {
			if c.b.opt.soak > 0 {
				if err := c.mountNodeDisk(d); err != nil {
					return err
				}
			}
			continue
		}
		// Patroni runs as postgres and makes its data directory, socket
		// and pgpass in here; etcd runs as root in d/etcd.
		if err := os.MkdirAll(filepath.Join(d, "run"), 0o700); err != nil {
			return err
		}
		for _, p := range []string{d, filepath.Join(d, "run")} {
			if err := os.Chown(p, c.pgUID, c.pgGID); err != nil {
				return err
			}
		}
		conf := filepath.Join(d, "patroni.yml")
		if err := writePatroniConf(conf, d, c.b.opt.postgresBin, c.t, node); err != nil {
			return err
		}
		if err := os.Chown(conf, c.pgUID, c.pgGID); err != nil {
			return err
		}
		if err := os.Chmod(conf, 0o600); err != nil {
			return err
		}
	}
	if c.t.kind == "haven" {
		return writeHavenConf(c.dir, c.b.opt.postgresBin, c.t, c.b.opt.soak > 0)
	}
	return nil
}

func (c *cluster) startEtcd(node string) error {
	args := etcdArgs(c.nodeDir(node), node)
	p, err := c.net.Host(node).Start(context.Background(), args[0], args[1:]...)
	if err != nil {
		return err
	}
	c.daemons[node] = append(c.daemons[node], p)
	c.history = append(c.history, p)
	return nil
}

// startNode starts node's database daemon: Patroni as the postgres user,
// or haven's agent.
func (c *cluster) startNode(node string) error {
	h := c.net.Host(node)
	var p *netlab.Proc
	var err error
	if c.t.kind == "patroni" {
		p, err = h.Start(context.Background(), "runuser", "-u", "postgres", "--", "patroni", filepath.Join(c.nodeDir(node), "patroni.yml"))
	} else {
		p, err = h.Start(context.Background(), c.b.havenBin, "agent", "-c", filepath.Join(c.dir, "haven.yaml"), "-n", node)
	}
	if err != nil {
		return err
	}
	c.daemons[node] = append(c.daemons[node], p)
	c.history = append(c.history, p)
	return nil
}

// close stops everything the cluster started and removes its network.
func (c *cluster) close() {
	c.saveLogs()
	if err := c.net.Close(); err != nil {
		harness.Logf("warning: %v", err)
	}
	c.b.setNet(nil)
	for _, d := range c.mounts {
		if err := unix.Unmount(d, unix.MNT_DETACH); err != nil {
			harness.Logf("warning: unmount %s: %v", d, err)
		}
	}
}

// soakDiskSize is each soak node's own file system: room for its
// postgres, its etcd member and their logs for an hour, and for a fill
// fault's file (the soak fills it to 80-95 %). Every timeline switch
// leaves a 16 MB copy of the current segment in pg_wal until the redo
// point passes it, and the soak switches timelines about twice a minute:
// a node's pg_wal held 550-700 MB after 14 minutes of it.
const soakDiskSize = "4g"

// mountNodeDisk gives a soak node's directory a file system of its own (a
// tmpfs), so that the soak's fills fill that node's disk, not the
// machine's.
func (c *cluster) mountNodeDisk(d string) error {
	if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size="+soakDiskSize+",mode=0711"); err != nil {
		return fmt.Errorf("mount a tmpfs on %s for the soak's fills: %w", d, err)
	}
	c.mounts = append(c.mounts, d)
	return nil
}

// saveLogs writes the output of each daemon to the raw directory, as
// SCENARIO-TARGET-HOST-N.log (N counts the host's daemons in the order
// they started; the client's is the router), and haven's postgres logs.
func (c *cluster) saveLogs() {
	count := map[string]int{}
	for _, p := range c.history {
		node := p.Host.Name
		count[node]++
		path := filepath.Join(c.b.rawDir, fmt.Sprintf("%s-%s-%d.log", c.label, node, count[node]))
		_ = os.WriteFile(path, []byte(p.String()+"\n"+p.Output()), 0o644)
	}
	for _, node := range nodes {
		// haven's postgres log (database.data_dir + ".log").
		if data, err := os.ReadFile(filepath.Join(c.nodeDir(node), "pg.log")); err == nil {
			_ = os.WriteFile(filepath.Join(c.b.rawDir, fmt.Sprintf("%s-%s-postgres.log", c.label, node)), data, 0o644)
		}
	}
}

// logTail is the last lines of every node's daemons, for an error message.
func (c *cluster) logTail(lines int) string {
	var parts []string
	for _, node := range nodes {
		ds := c.daemons[node]
		if len(ds) > 0 {
			p := ds[len(ds)-1]
			parts = append(parts, node+": "+harness.LastLines(p.Output(), lines))
		}
	}
	return strings.Join(parts, " ‖ ")
}

// nodeStatus is what one node's Patroni-style GET /primary says: its
// role and, on the primary, pg_stat_replication.
type nodeStatus struct {
	code        int
	Role        string `json:"role"`
	State       string `json:"state"`
	Replication []struct {
		Name      string `json:"application_name"`
		State     string `json:"state"`
		SyncState string `json:"sync_state"`
	} `json:"replication"`
}

func (c *cluster) status(node string) (nodeStatus, error) {
	resp, err := c.http.Get(fmt.Sprintf("http://%s:%d/primary", hostAddr(node), c.t.checkPort()))
	if err != nil {
		return nodeStatus{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var st nodeStatus
	if err := json.Unmarshal(body, &st); err != nil {
		return nodeStatus{code: resp.StatusCode}, fmt.Errorf("GET /primary: %d, %q", resp.StatusCode, harness.Truncate(string(body), 100))
	}
	st.code = resp.StatusCode
	return st, nil
}

// health says whether the cluster is healthy: exactly one node answers
// /primary with 200, both others stream from it and one of them is a
// synchronous (or quorum) standby. It returns the primary, or why not.
func (c *cluster) health() (primary, why string) {
	var primaries, seen []string
	var st nodeStatus
	for _, node := range nodes {
		s, err := c.status(node)
		if err != nil {
			seen = append(seen, node+": "+err.Error())
			continue
		}
		seen = append(seen, fmt.Sprintf("%s: %d %s %s", node, s.code, s.Role, s.State))
		if s.code == http.StatusOK {
			primaries = append(primaries, node)
			st = s
		}
	}
	if len(primaries) != 1 {
		return "", fmt.Sprintf("%d primaries (%s)", len(primaries), strings.Join(seen, "; "))
	}
	p := primaries[0]
	var streaming []string
	sync := false
	for _, r := range st.Replication {
		if r.State == "streaming" && slices.Contains(nodes, r.Name) && r.Name != p {
			streaming = append(streaming, r.Name)
			sync = sync || r.SyncState == "sync" || r.SyncState == "quorum"
		}
	}
	slices.Sort(streaming)
	streaming = slices.Compact(streaming)
	switch {
	case len(streaming) != len(nodes)-1:
		return "", fmt.Sprintf("primary %s, streaming to %v", p, streaming)
	case !sync:
		return "", fmt.Sprintf("primary %s, no synchronous standby yet", p)
	}
	return p, ""
}

// waitHealthy waits until the cluster is healthy and returns the primary.
func (c *cluster) waitHealthy(ctx context.Context, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	last := "nothing yet"
	for {
		p, why := c.health()
		if why == "" {
			return p, nil
		}
		last = why
		if err := c.daemonsAlive(); err != nil {
			return "", err
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded && c.b.ctx.Err() == nil {
				return "", fmt.Errorf("not healthy after %s: %s; logs: %s", timeout, last, c.logTail(3))
			}
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// daemonsAlive returns an error when a daemon of a node that is up exited.
func (c *cluster) daemonsAlive() error {
	for _, node := range nodes {
		if c.down[node] {
			continue
		}
		for _, p := range c.daemons[node] {
			select {
			case <-p.Done():
				return fmt.Errorf("%s exited: %s", p, harness.LastLines(p.Output(), 5))
			default:
			}
		}
	}
	select {
	case <-c.router.Done():
		return fmt.Errorf("%s exited: %s", c.router, harness.LastLines(c.router.Output(), 5))
	default:
	}
	return nil
}

// makeTable makes the writer's role and table on the primary, as the
// superuser over its unix socket.
func (c *cluster) makeTable(ctx context.Context, primary string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := c.net.Host(primary).Command(ctx, "runuser", "-u", "postgres", "--", filepath.Join(c.b.opt.postgresBin, "psql"),
		"-v", "ON_ERROR_STOP=1", "-h", filepath.Join(c.nodeDir(primary), "run"), "-p", strconv.Itoa(pgPort), "-d", "postgres",
		"-c", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", appUser, appPassword),
		"-c", "CREATE TABLE writes (run int, seq int, PRIMARY KEY (run, seq))",
		"-c", "GRANT SELECT, INSERT ON writes TO "+appUser,
		// haven drill soak's table, made here: the app user may not create.
		"-c", "CREATE TABLE haven_drill_writes (run int, seq int, PRIMARY KEY (run, seq))",
		"-c", "GRANT SELECT, INSERT ON haven_drill_writes TO "+appUser)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make the writer's table on %s: %w: %s", primary, err, harness.LastLines(string(out), 3))
	}
	return nil
}

// connect opens a connection to the primary through the router, from the
// client.
func (c *cluster) connect(ctx context.Context) (*pgx.Conn, error) {
	host, port, _ := strings.Cut(c.t.routerAddr(), ":")
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable", host, port, appUser, appPassword))
	if err != nil {
		return nil, err
	}
	cfg.DialFunc = c.net.Host("client").DialContext
	return pgx.ConnectConfig(ctx, cfg)
}

// routerReady reports whether a connection through the router reaches
// primary, writable.
func (c *cluster) routerReady(ctx context.Context, primary string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var recovery bool
	var addr string
	if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery(), host(inet_server_addr())").Scan(&recovery, &addr); err != nil {
		return err
	}
	if recovery || addr != hostAddr(primary).String() {
		return fmt.Errorf("the router reaches %s (in recovery: %v), not the primary %s", addr, recovery, primary)
	}
	return nil
}

// settle waits until the cluster is healthy and the router reaches the
// primary, and returns the primary.
func (c *cluster) settle(ctx context.Context) (string, error) {
	deadline := time.Now().Add(c.b.opt.settle)
	for {
		p, err := c.waitHealthy(ctx, time.Until(deadline))
		if err != nil {
			return "", err
		}
		err = c.routerReady(ctx, p)
		if err == nil {
			return p, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("the router never reached the primary %s: %w", p, err)
		}
		if !harness.Sleep(ctx, 250*time.Millisecond) {
			return "", ctx.Err()
		}
	}
}

// etcdLeader is the node whose etcd member leads the etcd cluster, as the
// members' status says (etcd's JSON gateway: Debian's etcd 3.4 for
// Patroni, haven's embedded etcd), or "" when they do not agree or do not
// answer. When the lost node led etcd, the others elect a new leader
// first, and etcd's new leader extends every lease by its TTL.
func (c *cluster) etcdLeader() string {
	ids := map[string]string{} // member id → node
	leaders := map[string]bool{}
	for _, node := range nodes {
		resp, err := c.http.Post(fmt.Sprintf("http://%s:%d/v3/maintenance/status", hostAddr(node), etcdClient), "application/json", strings.NewReader("{}"))
		if err != nil {
			continue
		}
		var st struct {
			Header struct {
				MemberID string `json:"member_id"`
			} `json:"header"`
			Leader string `json:"leader"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st)
		resp.Body.Close()
		if err != nil || st.Header.MemberID == "" {
			continue
		}
		ids[st.Header.MemberID] = node
		leaders[st.Leader] = true
	}
	if len(leaders) != 1 {
		return ""
	}
	for l := range leaders {
		return ids[l]
	}
	return ""
}

// postmasterPID is the pid in the first line of node's postmaster.pid.
func (c *cluster) postmasterPID(node string) (int, error) {
	data, err := os.ReadFile(filepath.Join(c.nodeDir(node), "pg", "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || pid <= 1 {
		return 0, fmt.Errorf("postmaster.pid of %s: bad pid %q", node, line)
	}
	return pid, nil
}

// killPostmaster is kill -9 of node's postmaster.
func (c *cluster) killPostmaster(node string) error {
	pid, err := c.postmasterPID(node)
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill -9 %d (postmaster of %s): %w", pid, node, err)
	}
	return nil
}

// loseNode takes node off the network and kills every process in its
// namespace at once: the daemons, postgres and its children, etcd.
func (c *cluster) loseNode(node string) error {
	h := c.net.Host(node)
	c.down[node] = true
	err := c.net.CutLink(h)
	pids, perr := h.PIDs()
	if perr != nil {
		return errors.Join(err, fmt.Errorf("the processes of %s: %w", h.Namespace, perr))
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return err
}

// restoreNode waits until everything in node's namespace is gone, puts it
// back on the network and starts its daemons again.
func (c *cluster) restoreNode(ctx context.Context, node string) error {
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
	if err := c.net.RestoreLink(h); err != nil {
		return err
	}
	if c.t.kind == "patroni" {
		if err := c.startEtcd(node); err != nil {
			return err
		}
	}
	if err := c.startNode(node); err != nil {
		return err
	}
	delete(c.down, node)
	return nil
}

// switchover asks for a planned switchover, from the client:
// `haven pg switchover` or `patronictl switchover --force`. It returns how
// long the command took and what it printed.
func (c *cluster) switchover(ctx context.Context) (time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var argv []string
	if c.t.kind == "haven" {
		argv = []string{c.b.havenBin, "pg", "switchover", "-c", filepath.Join(c.dir, "haven.yaml")}
	} else {
		argv = []string{"patronictl", "-c", filepath.Join(c.nodeDir(nodes[0]), "patroni.yml"), "switchover", "--force"}
	}
	start := time.Now()
	out, err := c.net.Host("client").Command(ctx, argv[0], argv[1:]...).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return took, "", fmt.Errorf("%s: %w: %s", strings.Join(argv[:3], " "), err, harness.LastLines(string(out), 3))
	}
	return took, harness.LastLines(string(out), 2), nil
}
