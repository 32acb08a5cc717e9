package keeper_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/backup/backuptest"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/pg/pgtest"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// The end-to-end test runs three real haven agents, each with embedded etcd
// and a PostgreSQL keeper (sync mode, the write fence on), in network
// namespaces, and a writer on a client host that inserts numbered rows
// through the database router of a fourth agent there (database.listen),
// recording a row only once its COMMIT returned. Then it breaks the
// primary: kill -9 of its postmaster (restarted in place), kill -9 of its
// agent, SIGSTOP of it past the lease, and a partition from the other
// database nodes. After each fault every acknowledged row must be
// on the new primary, and no node may acknowledge a write after another
// node has started to: never two writable primaries, as the client sees it.
//
// Two writers go through the router, one that gives up a connect or a
// write after 1 s and one that waits 10 s: the router holds the
// connections it cannot route during a failover and moves those it was
// making to the old primary, so waiting longer must not make a client's
// pause longer. Clients that connect during the failover that follows the
// kill -9 of the primary's agent, shorter than the router's hold
// (database.router_hold, 5 s by default), must reach the new primary
// without an error.

const dbLease = time.Second

type dbCluster struct {
	t      *testing.T
	net    *testnet.Net
	bin    string
	psql   string
	dir    string
	nodes  []string
	agents map[string]*testnet.Proc
	http   *http.Client
}

// startDBCluster starts the three database nodes and the router; drills,
// when given, replaces the drills section (a dsn_file drill.dsn beside
// haven.yaml writes as the role app through the router).
func startDBCluster(t *testing.T, drills ...string) *dbCluster {
	testnet.Require(t)
	bins, err := pg.FindBinaries(context.Background(), "")
	testenv.Need(t, err == nil, "no PostgreSQL binaries: %v", err)
	dir, err := os.MkdirTemp("", "havenpge2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil { // postgres must reach its data dir
		t.Fatal(err)
	}
	c := &dbCluster{t: t, bin: testenv.Haven(t), dir: dir, psql: filepath.Join(bins.Dir, "psql"), nodes: []string{"db1", "db2", "db3"}, agents: map[string]*testnet.Proc{}}
	c.net = testnet.Start(t, testnet.Options{Hosts: []string{"db1", "db2", "db3", "client"}})
	client := c.net.Host("client")
	c.http = &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DialContext: client.DialContext, DisableKeepAlives: true}}
	cfg := fmt.Sprintf(`cluster: pgt
admin: {token_file: %[1]s/token}
regions:
  east:
    nodes:
      db1: {address: 198.18.1.11, zone: a}
      db2: {address: 198.18.1.12, zone: b}
      db3: {address: 198.18.1.13, zone: c}
      app: {address: %[4]s, zone: d}
coordination:
  members: [db1, db2, db3]
  data_dir: %[5]s/{node}/etcd
  join_timeout: 20s
database:
  nodes: [db1, db2, db3]
  data_dir: %[1]s/{node}/pg
  bindir: %[2]s
  lease: %[3]s
  replication: {mode: sync, password_file: %[1]s/replication.password}
  hba: ["host postgres app 198.18.1.0/24 scram-sha-256"]
  listen: {primary: ":6432"}
  routers: [app]
  settings: {dynamic_shared_memory_type: mmap} # killed postgres leave no segments in /dev/shm
  backup: {repositories: [{name: shared, url: "file://%[1]s/backups"}]} # one directory every node reaches, as NFS would be
%[6]s
objectives: {rto: 30s, rpo: 0s}
`, dir, bins.Dir, dbLease, client.Addr, testenv.MemoryDir(t), append(drills, "drills: {enabled: true}")[0])
	dsn := "postgres://app:e2e-app@" + client.Addr.String() + ":6432/postgres?sslmode=disable&connect_timeout=2\n"
	for name, content := range map[string]string{"haven.yaml": cfg, "replication.password": "e2e-secret\n", "token": "e2e-token\n", "drill.dsn": dsn} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.nodes {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o711); err != nil {
			t.Fatal(err)
		}
		c.startAgent(n)
	}
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o711); err != nil {
		t.Fatal(err)
	}
	c.startAgent("app") // the router, on the client host
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("HAVEN_E2E_DEBUG") != "" {
			t.Logf("agents' logs:\n%s", c.agentLogs())
		}
	})
	return c
}

// TestMain lets the test binary serve as restore_command and as a WAL
// archiver process that a test kills (backuptest.Commands).
func TestMain(m *testing.M) {
	pgtest.RunCommand(backuptest.Commands)
	testenv.Main(m)
}

// sql runs query on node's postgres as its superuser, over the unix
// socket, and returns the output, unaligned and without headers.
func (c *dbCluster) sql(node, query string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", c.net.Host(node).Namespace,
		"runuser", "-u", "postgres", "--", c.psql, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", filepath.Join(c.dir, node, "run"), "-p", "5432", "-d", "postgres",
		"-c", query).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s: %s: %v: %s", node, query, err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// checkArchive checks what the WAL archive made of the faults: the
// primary's agent archives into the shared repository, every timeline the
// failovers made has its history file there, the newest WAL is there, and
// no replica keeps the archive's slot (which would keep its WAL forever).
func (c *dbCluster) checkArchive(primary string) {
	c.t.Helper()
	tli, err := c.sql(primary, "SELECT timeline_id FROM pg_control_checkpoint()")
	if err != nil {
		c.t.Fatal(err)
	}
	n, err := strconv.Atoi(tli)
	if err != nil {
		c.t.Fatalf("timeline %q: %v", tli, err)
	}
	for i := 2; i <= n; i++ {
		name := filepath.Join(c.dir, "backups", "pgt", "wal", fmt.Sprintf("%08X.history", i))
		if _, err := os.Stat(name); err != nil {
			c.t.Errorf("the archive lacks timeline %d's history file: %v", i, err)
		}
	}
	testenv.Poll(c.t, 30*time.Second, "no replica keeps the archive's slot", func() (bool, string) {
		var keep []string
		for _, node := range c.nodes {
			if node == primary {
				continue
			}
			out, err := c.sql(node, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'haven_archive'")
			if err != nil || out != "0" {
				keep = append(keep, fmt.Sprintf("%s: %s %v", node, out, err))
			}
		}
		return len(keep) == 0, strings.Join(keep, "; ")
	})
	entries, _ := os.ReadDir(filepath.Join(c.dir, "backups", "pgt", "wal"))
	c.t.Logf("the archive holds %d objects, timelines 1 to %d", len(entries), n)
}

func (c *dbCluster) startAgent(name string) {
	c.t.Helper()
	host := name
	if name == "app" {
		host = "client"
	}
	p, err := c.net.Host(host).Start(context.Background(), c.bin, "agent", "-c", filepath.Join(c.dir, "haven.yaml"), "-n", name)
	if err != nil {
		c.t.Fatal(err)
	}
	c.agents[name] = p
}

func (c *dbCluster) agentLogs() string {
	var procs []*testnet.Proc
	for _, n := range append(slices.Clone(c.nodes), "app") {
		procs = append(procs, c.agents[n])
	}
	return testnet.Outputs(200000, procs...)
}

// primary returns the node whose /primary answers 200, or "" when none or
// more than one does.
func (c *dbCluster) primary() string {
	var found []string
	for _, n := range c.nodes {
		resp, err := c.http.Get("http://" + c.net.Host(n).Addr.String() + ":9900/primary")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			found = append(found, n)
		}
	}
	if len(found) != 1 {
		return ""
	}
	return found[0]
}

// replicasStreaming reports whether every node but primary says, in the
// status API, that it streams from primary.
func (c *dbCluster) replicasStreaming(primary string) bool {
	resp, err := c.http.Get("http://" + c.net.Host(primary).Addr.String() + ":9900/api/v1/status")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var st struct {
		Coordination *struct {
			Database *struct {
				Members map[string]keeper.MemberState `json:"members"`
			} `json:"database"`
		} `json:"coordination"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Coordination == nil || st.Coordination.Database == nil {
		return false
	}
	for _, n := range c.nodes {
		m := st.Coordination.Database.Members[n]
		if n != primary && (m.Role != keeper.RoleReplica || !m.Streaming || m.Upstream != primary) {
			return false
		}
	}
	return true
}

// waitHealthy waits until one node is the primary and the others serve as
// replicas, and returns the primary.
func (c *dbCluster) waitHealthy(what string) string {
	c.t.Helper()
	var p string
	testenv.Poll(c.t, 90*time.Second, what+": a healthy cluster", func() (bool, string) {
		p = c.primary()
		return p != "" && c.replicasStreaming(p), "primary " + p
	})
	return p
}

// connect connects the client to node's postgres, or to the router's
// primary pool for node "", giving up after timeout (whole seconds).
func (c *dbCluster) connect(ctx context.Context, node string, timeout time.Duration) (*pgx.Conn, error) {
	host, port := c.net.Host("client").Addr.String(), 6432
	if node != "" {
		host, port = c.net.Host(node).Addr.String(), 5432
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=app password=e2e-app dbname=postgres sslmode=disable connect_timeout=%d",
		host, port, int(timeout/time.Second)))
	if err != nil {
		return nil, err
	}
	cfg.DialFunc = c.net.Host("client").DialContext
	return pgx.ConnectConfig(ctx, cfg)
}

// ack is one row whose COMMIT returned OK, and the node that said so.
type ack struct {
	seq  int
	node string
	at   time.Time
}

// writer inserts rows through the router until stop; it records every
// acknowledged row, and the node that acknowledged it (the server's
// address, as the server says), and counts outcomes it cannot know (a
// timeout, a connection lost mid-commit). A sticky writer keeps writing to the node
// that was the primary when it started, as a client whose connection
// outlives a failover does: if that node still took writes after another
// had been promoted, its acknowledgements would show it.
type writer struct {
	c             *dbCluster
	sticky        string
	timeout       time.Duration // for a connect, and for a write
	seq           int           // the first row's number
	mu            sync.Mutex
	acks          []ack
	indeterminate int
	stop, done    chan struct{}
}

func (c *dbCluster) startWriter(sticky string, timeout time.Duration, firstSeq int) *writer {
	w := &writer{c: c, sticky: sticky, timeout: timeout, seq: firstSeq, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *writer) run() {
	defer close(w.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for seq := w.seq; ; seq++ {
		select {
		case <-w.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), w.timeout)
		var err error
		if conn == nil {
			conn, err = w.c.connect(ctx, w.sticky, w.timeout)
		}
		var node string
		if err == nil {
			node, err = w.c.insert(ctx, conn, seq)
		}
		cancel()
		w.mu.Lock()
		if err == nil {
			w.acks = append(w.acks, ack{seq, node, time.Now()})
		} else {
			w.indeterminate++ // it may or may not have committed
		}
		w.mu.Unlock()
		if err != nil {
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
			time.Sleep(5 * time.Millisecond) // the router may have no primary yet
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// insert writes row seq over conn and returns the node that acknowledged
// it, as the server names its own address.
func (c *dbCluster) insert(ctx context.Context, conn *pgx.Conn, seq int) (string, error) {
	var server string
	err := conn.QueryRow(ctx, "INSERT INTO history (seq, node) VALUES ($1, host(inet_server_addr())) RETURNING node", seq).Scan(&server)
	for _, n := range c.nodes {
		if c.net.Host(n).Addr.String() == server {
			return n, err
		}
	}
	return server, err
}

// gap is the longest time between two of acks.
func gap(acks []ack) time.Duration {
	var g time.Duration
	for i := 1; i < len(acks); i++ {
		g = max(g, acks[i].at.Sub(acks[i-1].at))
	}
	return g
}

func (w *writer) halt() []ack {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acks)
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// check verifies the history after a fault: every acknowledged row is on
// primary, and the nodes that acknowledged rows did so one after another,
// never interleaved.
func (c *dbCluster) check(what, primary string, acks []ack, gaps string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.connect(ctx, primary, 10*time.Second)
	if err != nil {
		c.t.Fatalf("%s: connect to %s: %v", what, primary, err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT seq FROM history")
	if err != nil {
		c.t.Fatal(err)
	}
	have := map[int]bool{}
	for rows.Next() {
		var seq int
		if err := rows.Scan(&seq); err != nil {
			c.t.Fatal(err)
		}
		have[seq] = true
	}
	var lost []int
	for _, a := range acks {
		if !have[a.seq] {
			lost = append(lost, a.seq)
		}
	}
	if len(lost) > 0 {
		c.t.Errorf("%s: %d of %d acknowledged rows are not on the new primary %s, such as %v", what, len(lost), len(acks), primary, lost[:min(len(lost), 10)])
	}
	var runs []string
	seen := map[string]bool{}
	for i, a := range acks {
		if i > 0 && acks[i-1].node == a.node {
			continue
		}
		if seen[a.node] {
			c.t.Errorf("%s: %s acknowledged row %d at %s after another node had taken writes: two writable primaries", what, a.node, a.seq, a.at.Format("15:04:05.000"))
			return
		}
		seen[a.node] = true
		runs = append(runs, fmt.Sprintf("%s from row %d at %s", a.node, a.seq, a.at.Format("15:04:05.000")))
	}
	c.t.Logf("%s: %d rows acknowledged; longest gap between the failing-over clients' writes %s; writers: %s", what, len(acks), gaps, strings.Join(runs, ", "))
}

// patienceMargin is how much longer the pause of the writer that waits
// 10 s may be than the 1 s writer's after the kill -9 of the primary's
// agent: both wait for the same new primary, so the difference is
// scheduling on a loaded machine. A connection left to wait on the fenced
// former primary costs the patient writer up to the router's connect
// timeout (2 s) where the other gives up after 1 s: about 1 s more. The
// other faults log both pauses without comparing them: under heavy load
// a renewal that misses the new primary's fence deadline costs whichever
// client connects at that moment a SYN retransmission (1 s).
const patienceMargin = 500 * time.Millisecond

// routerHolds reads, from the router's /metrics, how the holds of its
// primary pool have ended so far: served, expired, gone, refused.
func (c *dbCluster) routerHolds() map[string]int {
	c.t.Helper()
	cl := &http.Client{Timeout: 10 * time.Second, Transport: c.http.Transport}
	resp, err := cl.Get("http://" + c.net.Host("client").Addr.String() + ":9900/metrics")
	if err != nil {
		c.t.Fatalf("the router's metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("the router's metrics: %v", err)
	}
	holds := map[string]int{}
	for line := range strings.Lines(string(body)) {
		rest, ok := strings.CutPrefix(line, `haven_lb_held_connections_total{balancer="database-primary",outcome="`)
		if !ok {
			continue
		}
		outcome, v, _ := strings.Cut(strings.TrimSpace(rest), `"} `)
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			c.t.Fatalf("the router's metrics: %q: %v", line, err)
		}
		holds[outcome] = int(n)
	}
	if len(holds) == 0 {
		c.t.Fatalf("the router exports no haven_lb_held_connections_total for database-primary:\n%s", body)
	}
	return holds
}

// postmasterPID reads node's postmaster.pid.
func (c *dbCluster) postmasterPID(node string) int {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, node, "pg", "postmaster.pid"))
	if err != nil {
		c.t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if err != nil {
		c.t.Fatalf("%s's postmaster.pid: %v", node, err)
	}
	return pid
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// joinDuring starts clients through the router, one every 25 ms, until
// the nodes name a primary other than old; each connects with a 10 s
// timeout and writes one row. The function it returns stops them, waits
// for them, fails the test for any error or a row old acknowledged, and
// returns their rows.
func (c *dbCluster) joinDuring(what, old string, firstSeq int) func() []ack {
	type result struct {
		seq     int
		started time.Time
		a       ack
		err     error
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results []result
		stop    = make(chan struct{})
		stopped = make(chan struct{})
	)
	go func() {
		defer close(stopped)
		for seq := firstSeq; ; seq++ {
			wg.Go(func() {
				r := result{seq: seq, started: time.Now()}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				conn, err := c.connect(ctx, "", 10*time.Second)
				if err == nil {
					r.a.node, err = c.insert(ctx, conn, seq)
					r.a.seq, r.a.at = seq, time.Now()
					conn.Close(ctx)
				}
				r.err = err
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			})
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond): // the pace of arrivals
			}
		}
	}()
	return func() []ack {
		c.t.Helper()
		close(stop)
		<-stopped
		wg.Wait()
		slices.SortFunc(results, func(a, b result) int { return a.seq - b.seq })
		var acks []ack
		var waits []string
		for _, r := range results {
			switch {
			case r.err != nil:
				c.t.Errorf("%s: a client that connected during the failover at %s failed: %v", what, r.started.Format("15:04:05.000"), r.err)
			case r.a.node == old:
				c.t.Errorf("%s: a client that connected during the failover at %s wrote to the former primary %s", what, r.started.Format("15:04:05.000"), old)
			default:
				acks = append(acks, r.a)
				waits = append(waits, r.a.at.Sub(r.started).Round(10*time.Millisecond).String())
			}
		}
		c.t.Logf("%s: %d clients connected during the failover, %d wrote to the new primary without an error, after %s", what, len(results), len(acks), strings.Join(waits, " "))
		return acks
	}
}

func TestDatabaseUnderFaults(t *testing.T) {
	c := startDBCluster(t)
	primary := c.waitHealthy("bootstrap")
	// The application's role and table, made as the superuser over the
	// primary's unix socket (haven's own way in).
	setup := exec.Command("ip", "netns", "exec", c.net.Host(primary).Namespace,
		"runuser", "-u", "postgres", "--", c.psql, "-v", "ON_ERROR_STOP=1", "-h", filepath.Join(c.dir, primary, "run"), "-p", "5432", "-d", "postgres",
		"-c", "CREATE ROLE app LOGIN PASSWORD 'e2e-app'",
		"-c", "CREATE TABLE history (seq int PRIMARY KEY, node text)",
		"-c", "GRANT SELECT, INSERT ON history TO app")
	if out, err := setup.CombinedOutput(); err != nil {
		t.Fatalf("set up the application's table on %s: %v\n%s", primary, err, out)
	}

	round := 0
	// fault breaks the primary with do, waits for the writes to go on
	// (on another primary when failover is set), repairs with undo and
	// checks the history. With joiners, clients also connect while the
	// failover is under way (the former primary must be dead at once, so
	// that none of them can reach it).
	faultThen := func(name string, failover, joiners bool, do, undo func(p *testnet.Proc)) {
		t.Helper()
		old := c.waitHealthy(name + ": before")
		round++
		w := c.startWriter("", time.Second, round*1_000_000)
		patient := c.startWriter("", 10*time.Second, round*1_000_000+200_000)
		stale := c.startWriter(old, time.Second, round*1_000_000+500_000)
		waitWrites := func(n int) {
			start, pstart := w.count(), patient.count()
			testenv.Poll(t, 30*time.Second, fmt.Sprintf("%s: %d writes by each writer", name, n), func() (bool, string) {
				return w.count() >= start+n && patient.count() >= pstart+n, fmt.Sprintf("%d and %d writes", w.count()-start, patient.count()-pstart)
			})
		}
		waitWrites(50)
		pid := c.postmasterPID(old)
		holdsBefore := c.routerHolds()
		do(c.agents[old])
		var joined func() []ack
		if joiners {
			testenv.Poll(t, 10*time.Second, name+": the former primary's postmaster gone", func() (bool, string) {
				return !processAlive(pid), fmt.Sprintf("pid %d alive", pid)
			})
			joined = c.joinDuring(name, old, round*1_000_000+800_000)
		}
		if failover {
			testenv.Poll(t, 30*time.Second, name+": a new primary", func() (bool, string) {
				p := c.primary()
				return p != "" && p != old, "primary " + p
			})
		}
		var joinAcks []ack
		if joined != nil {
			joinAcks = joined()
		}
		waitWrites(50)
		if p := c.primary(); !failover && p != old {
			t.Errorf("%s: the primary moved from %s to %q; want it restarted in place", name, old, p)
		}
		undo(c.agents[old])
		mainAcks, patientAcks, staleAcks := w.halt(), patient.halt(), stale.halt()
		last := "none"
		if len(staleAcks) > 0 {
			last = staleAcks[len(staleAcks)-1].at.Format("15:04:05.000")
		}
		t.Logf("%s: the client stuck to %s had %d writes acknowledged, the last at %s, and %d it cannot know", name, old, len(staleAcks), last, stale.indeterminate)
		quick, slow := gap(mainAcks), gap(patientAcks)
		if joiners && slow > quick+patienceMargin {
			t.Errorf("%s: the client that waits 10 s to connect paused %s, the one that waits 1 s %s: a connection the router took during the fault waited on the former primary",
				name, slow.Round(time.Millisecond), quick.Round(time.Millisecond))
		}
		holds := c.routerHolds()
		var ended []string
		for _, o := range []string{"served", "expired", "gone", "refused"} {
			holds[o] -= holdsBefore[o]
			ended = append(ended, fmt.Sprintf("%s %d", o, holds[o]))
		}
		t.Logf("%s: the router's holds: %s", name, strings.Join(ended, ", "))
		if joiners && holds["expired"] > 0 {
			t.Errorf("%s: %d connections waited out the router's hold, in a failover shorter than the hold", name, holds["expired"])
		}
		acks := slices.Concat(mainAcks, patientAcks, staleAcks, joinAcks)
		slices.SortFunc(acks, func(a, b ack) int { return a.at.Compare(b.at) })
		c.check(name, c.waitHealthy(name+": after"), acks, fmt.Sprintf("%s with 1 s timeouts, %s with 10 s", quick.Round(time.Millisecond), slow.Round(time.Millisecond)))
	}
	fault := func(name string, do, undo func(p *testnet.Proc)) { faultThen(name, true, false, do, undo) }
	// PostgreSQL crashes under its agent: restarted in place, no failover;
	// the replicas reconnect (commits wait for the sync standby).
	faultThen("kill -9 of the primary's postmaster", false, false,
		func(p *testnet.Proc) {
			if err := syscall.Kill(c.postmasterPID(p.Host.Name), syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
		},
		func(*testnet.Proc) {})
	faultThen("kill -9 of the primary's agent", true, true,
		func(p *testnet.Proc) { _ = p.Kill() },
		func(p *testnet.Proc) { c.startAgent(p.Host.Name) })
	fault("SIGSTOP of the primary's agent",
		func(p *testnet.Proc) { _ = p.Freeze() },
		func(p *testnet.Proc) { _ = p.Thaw() })
	// A planned switchover with `haven pg switchover`, run on the client.
	fault("haven pg switchover",
		func(p *testnet.Proc) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			out, err := c.net.Host("client").Command(ctx, c.bin, "pg", "switchover", "-c", filepath.Join(c.dir, "haven.yaml")).CombinedOutput()
			if err != nil {
				t.Fatalf("haven pg switchover: %v\n%s", err, out)
			}
			t.Logf("haven pg switchover: %s, after %s", strings.TrimSpace(string(out)), time.Since(start).Round(time.Millisecond))
		},
		func(*testnet.Proc) {})
	// The primary cut off from the other database nodes (its etcd member
	// in the minority), while the clients still reach it.
	fault("the primary partitioned from the other nodes",
		func(p *testnet.Proc) {
			for _, n := range c.nodes {
				if n != p.Host.Name {
					if err := c.net.Partition(p.Host, c.net.Host(n)); err != nil {
						t.Fatal(err)
					}
				}
			}
		},
		func(*testnet.Proc) {
			if err := c.net.HealAll(); err != nil {
				t.Fatal(err)
			}
		})
	c.checkArchive(c.waitHealthy("the archive"))
}
