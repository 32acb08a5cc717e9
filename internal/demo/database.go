package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/netlab"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

// The third act: the demo application keeps its orders in a three-node
// PostgreSQL cluster (synchronous replication) and reaches the primary
// through haven's database router on its own host. Clients place orders;
// the primary's node is killed; the demo counts the orders the application
// acknowledged and checks every one is on the new primary.

// DatabaseResult summarises the third act.
type DatabaseResult struct {
	// Acknowledged orders got a 200 (their COMMIT returned); Failed did
	// not (the client cannot know whether they were stored).
	Acknowledged, Failed int64
	// Lost are acknowledged orders not on the new primary (must be 0).
	Lost int
	// Primary was killed; Successor took over.
	Primary, Successor string
	// Gap is the longest time without an acknowledged order.
	Gap time.Duration
	// Restore is the last scene's: the dropped table restored.
	Restore *RestoreResult
}

// dbHosts are the third act's machines: db1-db3 198.18.1.11-13, and app
// 198.18.1.14, which runs the demo application and a router-only agent.
var dbHosts = []string{"db1", "db2", "db3", "app"}

const (
	dbAppAddr    = "198.18.1.14"
	dbRouterPort = 6432
	dbAppPass    = "demo-app"
)

// CanRunDatabase says whether this machine can run the third act: what
// the second needs, PostgreSQL's binaries, and runuser (to create the
// application's role as the postgres user).
func CanRunDatabase() error {
	if err := CanRunFloating(); err != nil {
		return err
	}
	if _, err := pg.FindBinaries(context.Background(), ""); err != nil {
		return fmt.Errorf("it needs PostgreSQL 15+: %w", err)
	}
	if _, err := exec.LookPath("runuser"); err != nil {
		return errors.New("it needs runuser (apt-get install util-linux)")
	}
	return nil
}

// RunDatabase plays the third act.
func RunDatabase(ctx context.Context, opt Options) (*DatabaseResult, error) {
	opt = opt.defaults()
	bins, err := pg.FindBinaries(ctx, "")
	if err != nil {
		return nil, err
	}
	st, err := newStage(ctx, "db", netlab.Options{Hosts: dbHosts}, func(dir string) map[string]string {
		return map[string]string{"haven.yaml": databaseConfig(dir, bins.Dir), "token": "demo\n", "replication.password": "demo-replication\n"}
	})
	if err != nil {
		return nil, err
	}
	defer st.close()
	for _, h := range dbHosts {
		if err := os.MkdirAll(st.path(h), 0o711); err != nil { // postgres must reach its data directory
			return nil, err
		}
	}
	n, exe, cfgPath := st.net, st.exe, st.path("haven.yaml")

	w := opt.Out
	fmt.Fprintf(w, "\nhaven demo, act 3: the application's data in a PostgreSQL cluster with automatic failover\n")
	fmt.Fprintf(w, "  db1-db3 198.18.1.11-13 (PostgreSQL, embedded etcd, synchronous replication, lease 1s);\n")
	fmt.Fprintf(w, "  app %s: the demo application and haven's database router on :%d; config %s\n", dbAppAddr, dbRouterPort, cfgPath)

	procCtx, stopProcs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProcs()
	agents := map[string]*netlab.Proc{}
	startAgent := func(node string) error {
		p, err := n.Host(node).Start(procCtx, exe, "agent", "-c", cfgPath, "-n", node)
		agents[node] = p
		return err
	}
	for _, h := range dbHosts {
		if err := startAgent(h); err != nil {
			return nil, err
		}
	}
	app := n.Host("app")
	admin := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: app.DialContext, DisableKeepAlives: true}}
	primary, err := waitPrimary(ctx, admin, "", 90*time.Second)
	if err != nil {
		return nil, fmt.Errorf("demo: %w\n%s", err, netlab.Outputs(20000, agents["db1"], agents["db2"], agents["db3"]))
	}
	if err := waitStandbys(ctx, admin, primary, 90*time.Second); err != nil {
		return nil, fmt.Errorf("demo: %w\n%s", err, netlab.Outputs(20000, agents["db1"], agents["db2"], agents["db3"]))
	}
	if err := createAppSchema(ctx, n, st.dir, bins.Dir, primary); err != nil {
		return nil, err
	}
	dsn := fmt.Sprintf("host=%s port=%d user=app password=%s dbname=postgres sslmode=disable connect_timeout=2", dbAppAddr, dbRouterPort, dbAppPass)
	if _, err := app.Start(procCtx, exe, "backend", "--listen", dbAppAddr+":8080", "--name", "app", "--database", dsn); err != nil {
		return nil, err
	}

	start := time.Now()
	since := func(t time.Time) string { return fmt.Sprintf("T+%5.2fs", t.Sub(start).Seconds()) }
	fmt.Fprintf(w, "\n%s  %s is the primary, both replicas stream from it; 4 clients place orders: POST http://%s:8080/orders\n", since(start), primary, dbAppAddr)
	fmt.Fprintf(w, "%s  %s's agent archives the WAL into file://%s as it is written\n", since(time.Now()), primary, demoRepository(st.dir))
	ord := &orders{url: "http://" + dbAppAddr + ":8080/orders", client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: app.DialContext}}}
	loadCtx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan struct{})
	go func() { ord.run(loadCtx, 4); close(loadDone) }()
	defer func() { stopLoad(); <-loadDone }()

	res := &DatabaseResult{Primary: primary, Restore: &RestoreResult{}}
	res.Restore.Source = otherDBNode(primary)
	m, err := takeBackup(ctx, st.dir, databaseCluster, res.Restore.Source)
	if err != nil {
		return res, fmt.Errorf("demo: base backup from %s: %w\n%s", res.Restore.Source, err, netlab.Outputs(20000, agents["db1"], agents["db2"], agents["db3"]))
	}
	res.Restore.Label = m.Label
	fmt.Fprintf(w, "%s  base backup %s taken from %s (a replica, so the primary is not loaded): %s\n", since(time.Now()), m.Label, res.Restore.Source, sizeString(m.Bytes))
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	killedAt := time.Now()
	_ = agents[primary].Kill()
	fmt.Fprintf(w, "%s  kill -9 the agent on %s (its PostgreSQL dies with it)\n", since(killedAt), primary)
	successor, err := waitPrimary(ctx, admin, primary, 30*time.Second)
	if err != nil {
		return res, fmt.Errorf("demo: %w\n%s", err, netlab.Outputs(30000, agents["db1"], agents["db2"], agents["db3"], agents["app"]))
	}
	res.Successor = successor
	fmt.Fprintf(w, "%s  %s is the primary; the router sends the application there\n", since(time.Now()), successor)
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	if err := startAgent(primary); err == nil {
		fmt.Fprintf(w, "%s  %s's agent restarted: its PostgreSQL rejoins as a replica (pg_rewind)\n", since(time.Now()), primary)
	}
	sleepCtx(ctx, opt.Phase)
	stopLoad()
	<-loadDone

	acked := ord.acknowledged()
	res.Acknowledged, res.Failed = int64(len(acked)), ord.failed.Load()
	res.Gap = ord.longestGap()
	stored, err := storedOrders(ctx, app)
	if err != nil {
		return res, fmt.Errorf("demo: read the orders back through the router: %w", err)
	}
	for _, a := range acked {
		if !stored[a.id] {
			res.Lost++
		}
	}
	fmt.Fprintf(w, "\norders acknowledged %d, failed %d (the client cannot know whether those were stored)\n", res.Acknowledged, res.Failed)
	fmt.Fprintf(w, "longest time without an acknowledged order: %.2fs\n", res.Gap.Seconds())
	fmt.Fprintf(w, "acknowledged orders lost: %d (every acknowledged order is on %s, the new primary)\n", res.Lost, successor)
	if res.Lost > 0 {
		return res, fmt.Errorf("demo: %d acknowledged orders are not on the new primary", res.Lost)
	}
	if err := playRestore(ctx, w, st, bins.Dir, successor, acked, res.Restore); err != nil {
		return res, fmt.Errorf("demo: %w\n%s", err, netlab.Outputs(20000, agents["db1"], agents["db2"], agents["db3"]))
	}
	return res, nil
}

// playRestore is the act's last scene: the orders table dropped by
// mistake on primary, and restored from the backup and the archive to the
// moment before the drop.
func playRestore(ctx context.Context, w io.Writer, st *stage, bindir, primary string, acked []placed, res *RestoreResult) error {
	fmt.Fprintf(w, "\na mistake: DROP TABLE orders on %s\n", primary)
	xid, end, tli, err := dropOrders(ctx, st.dir, primary)
	if err != nil {
		return fmt.Errorf("drop the orders table: %w", err)
	}
	res.XID = xid
	if err := waitArchived(ctx, st.dir, databaseCluster, tli, end); err != nil {
		return fmt.Errorf("the archive does not hold the drop's WAL (timeline %d, up to %s): %w", tli, end, err)
	}
	fmt.Fprintf(w, "  the drop was transaction %s; the archive holds the WAL up to it (timeline %d, %s)\n", xid, tli, end)
	got, err := restoreBefore(ctx, st, databaseCluster, bindir, xid, w)
	if err != nil {
		return fmt.Errorf("restore to just before transaction %s: %w", xid, err)
	}
	res.Recovered = len(got)
	for _, a := range acked {
		if !got[a.id] {
			res.Missing++
		}
	}
	fmt.Fprintf(w, "  restored backup %s into %s and recovered from the archive to just before transaction %s\n", res.Label, filepath.Join(st.dir, "restored", "pg"), xid)
	fmt.Fprintf(w, "orders recovered: %d; acknowledged orders missing: %d (the drop is undone, across the failover's new timeline)\n", res.Recovered, res.Missing)
	if res.Missing > 0 {
		return fmt.Errorf("%d acknowledged orders are not in the restored copy", res.Missing)
	}
	return nil
}

// otherDBNode returns a database node other than primary: a replica.
func otherDBNode(primary string) string {
	for _, n := range dbHosts[:3] {
		if n != primary {
			return n
		}
	}
	return ""
}

// sizeString writes a byte count for people.
func sizeString(n int64) string {
	if n < 1<<20 {
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// databaseCluster is the third act's cluster name.
const databaseCluster = "demo-db"

func databaseConfig(dir, bindir string) string {
	return fmt.Sprintf(`cluster: demo-db
admin: {token_file: %[1]s/token}
regions:
  east:
    nodes:
      db1: {address: 198.18.1.11, zone: a}
      db2: {address: 198.18.1.12, zone: b}
      db3: {address: 198.18.1.13, zone: c}
      app: {address: %[3]s, zone: d}
coordination:
  members: [db1, db2, db3]
  data_dir: %[1]s/{node}/etcd
database:
  nodes: [db1, db2, db3]
  data_dir: %[1]s/{node}/pg
  bindir: %[2]s
  lease: 1s
  replication: {mode: sync, password_file: %[1]s/replication.password}
  hba: ["host postgres app 198.18.1.0/24 scram-sha-256"]
  listen: {primary: ":%[4]d"}
  routers: [app]
  backup: {target: "file://%[1]s/backups"}
`, dir, bindir, dbAppAddr, dbRouterPort)
}

// waitPrimary polls the database nodes' /primary endpoints until one other
// than not answers 200.
func waitPrimary(ctx context.Context, c *http.Client, not string, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		for i, node := range dbHosts[:3] {
			if node == not {
				continue
			}
			req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://198.18.1.%d:9900/primary", 11+i), nil)
			resp, err := c.Do(req)
			if err != nil {
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return node, nil
			}
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return "", ctx.Err()
		}
	}
	return "", fmt.Errorf("no database node became the primary within %v", within)
}

// waitStandbys waits until the other database nodes stream from primary
// and its synchronous standbys are named: a primary lost before that
// leaves no replica that may be promoted without risking a commit.
func waitStandbys(ctx context.Context, c *http.Client, primary string, within time.Duration) error {
	deadline := time.Now().Add(within)
	url := fmt.Sprintf("http://198.18.1.%d:9900/api/v1/status", 11+slices.Index(dbHosts, primary))
	last := "no answer"
	for time.Now().Before(deadline) {
		var st struct {
			Coordination *struct {
				Database *agent.DatabaseStatus `json:"database"`
			} `json:"coordination"`
		}
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := c.Do(req); err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil && st.Coordination != nil && st.Coordination.Database != nil {
				db := st.Coordination.Database
				streaming := 0
				for _, m := range db.Members {
					if m.Role == keeper.RoleReplica && m.Streaming && m.Upstream == primary {
						streaming++
					}
				}
				if streaming == 2 && len(db.Sync.Standbys) == 2 {
					return nil
				}
				last = fmt.Sprintf("%d replicas stream, synchronous standbys %v", streaming, db.Sync.Standbys)
			}
		}
		if !sleepCtx(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("the replicas did not stream from %s within %v (%s)", primary, within, last)
}

// createAppSchema makes the application's role and table as the
// superuser, over the primary's unix socket (haven's own way in).
func createAppSchema(ctx context.Context, n *netlab.Net, dir, bindir, primary string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.Host(primary).Namespace,
		"runuser", "-u", "postgres", "--", filepath.Join(bindir, "psql"), "-v", "ON_ERROR_STOP=1", "-q",
		"-h", filepath.Join(dir, primary, "run"), "-p", "5432", "-d", "postgres",
		"-c", "CREATE ROLE app LOGIN PASSWORD '"+dbAppPass+"'",
		"-c", "CREATE TABLE orders (id bigint PRIMARY KEY, server text)",
		"-c", "GRANT SELECT, INSERT, UPDATE ON orders TO app")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("demo: create the application's table on %s: %v\n%s", primary, err, out)
	}
	return nil
}

// storedOrders reads every order id back through the router.
func storedOrders(ctx context.Context, app *netlab.Host) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=app password=%s dbname=postgres sslmode=disable connect_timeout=2", dbAppAddr, dbRouterPort, dbAppPass))
	if err != nil {
		return nil, err
	}
	cfg.DialFunc = app.DialContext
	var conn *pgx.Conn
	for conn == nil { // the restarted node may be mid-rewind; the router may be between primaries
		if conn, err = pgx.ConnectConfig(ctx, cfg); err != nil && !sleepCtx(ctx, 200*time.Millisecond) {
			return nil, err
		}
	}
	defer conn.Close(context.Background())
	return orderIDs(ctx, conn)
}

// orderIDs reads every order id in the orders table conn reaches.
func orderIDs(ctx context.Context, conn *pgx.Conn) (map[int64]bool, error) {
	rows, err := conn.Query(ctx, "SELECT id FROM orders")
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, err
	}
	stored := make(map[int64]bool, len(ids))
	for _, id := range ids {
		stored[id] = true
	}
	return stored, nil
}

// orders is the third act's load: workers place numbered orders and
// record those the application acknowledged.
type orders struct {
	url    string
	client *http.Client
	next   atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	acked  []placed
}

type placed struct {
	id int64
	at time.Time
}

func (o *orders) run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				o.place(ctx)
				sleepCtx(ctx, 10*time.Millisecond)
			}
		})
	}
	wg.Wait()
}

func (o *orders) place(ctx context.Context) {
	id := o.next.Add(1)
	req, _ := http.NewRequestWithContext(ctx, "POST", o.url+"?id="+strconv.FormatInt(id, 10), nil)
	resp, err := o.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			o.failed.Add(1)
		}
		return
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		o.failed.Add(1)
		return
	}
	o.mu.Lock()
	o.acked = append(o.acked, placed{id, time.Now()})
	o.mu.Unlock()
}

func (o *orders) acknowledged() []placed {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.acked)
}

// firstAckedAfter is when the first order acknowledged after t was, or
// the zero time.
func (o *orders) firstAckedAfter(t time.Time) time.Time {
	var first time.Time
	for _, a := range o.acknowledged() {
		if a.at.After(t) && (first.IsZero() || a.at.Before(first)) {
			first = a.at
		}
	}
	return first
}

// longestGap is the longest time between two acknowledged orders.
func (o *orders) longestGap() time.Duration {
	acked := o.acknowledged()
	slices.SortFunc(acked, func(a, b placed) int { return a.at.Compare(b.at) })
	var gap time.Duration
	for i := 1; i < len(acked); i++ {
		gap = max(gap, acked[i].at.Sub(acked[i-1].at))
	}
	return gap
}
