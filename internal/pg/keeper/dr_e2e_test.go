package keeper_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// The disaster-recovery test runs haven's agents for a database across two
// regions in network namespaces: east (segment 1) and west (segment 2),
// three database nodes and a client each, and a witness in a third place
// (segment 3); the router between the segments delays every packet by
// drWANDelay each way, as a WAN would. Each region has its own etcd quorum;
// the active-region record lives in the global scope (east's first node,
// west's first node and the witness). West is the standby cluster: its
// leader streams from east's primary, its other nodes from it.
//
// Then region east is cut off from west and the witness (netlab's CutWAN:
// inside east the network still works, its processes run and its clients
// go on writing). West must take over within the region lease and a few
// seconds, with no acknowledged write lost but those the standby's lag
// covered; the clients left in east, one through east's router and one
// writing straight to east's primary, must never see a write acknowledged
// there after west took its first: east's primary stops on its own clock.
// When east's links come back, its nodes must rejoin as west's standby
// cluster, and a planned switchover back to east loses nothing.

const (
	drWANDelay    = 10 * time.Millisecond
	drRegionLease = 4 * time.Second
	drMaxLag      = 5 * time.Second
)

var (
	drEast = []string{"e1", "e2", "e3"}
	drWest = []string{"w1", "w2", "w3"}
)

// startDRCluster starts the disaster-recovery lab; extra is appended to
// its haven.yaml (top-level sections).
func startDRCluster(t *testing.T, extra ...string) *dbCluster {
	testnet.Require(t)
	bins, err := pg.FindBinaries(context.Background(), "")
	testenv.Need(t, err == nil, "no PostgreSQL binaries: %v", err)
	dir, err := os.MkdirTemp("", "havendre2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	c := &dbCluster{t: t, bin: testenv.Haven(t), dir: dir, psql: filepath.Join(bins.Dir, "psql"),
		nodes: slices.Concat(drEast, drWest, []string{"wit", "ec", "wc"}), agents: map[string]*testnet.Proc{}}
	c.net = testnet.Start(t, testnet.Options{
		Hosts:    append(slices.Clone(drEast), "ec"),
		Segment2: append(slices.Clone(drWest), "wc"),
		Segment3: []string{"wit"},
		WANDelay: drWANDelay,
	})
	c.http = &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DialContext: c.net.Host("ec").DialContext, DisableKeepAlives: true}}
	cfg := fmt.Sprintf(`cluster: dr
admin: {token_file: %[1]s/token}
regions:
  east:
    nodes:
      e1: {address: 198.18.1.11, zone: a}
      e2: {address: 198.18.1.12, zone: b}
      e3: {address: 198.18.1.13, zone: c}
      ec: {address: 198.18.1.14, zone: d}
  west:
    nodes:
      w1: {address: 198.18.2.11, zone: a}
      w2: {address: 198.18.2.12, zone: b}
      w3: {address: 198.18.2.13, zone: c}
      wc: {address: 198.18.2.14, zone: d}
  witness:
    nodes:
      wit: {address: 198.18.3.11, zone: a}
coordination:
  members: [e1, e2, e3]
  data_dir: %[4]s/{node}/etcd
  join_timeout: 30s
  regions:
    west: {members: [w1, w2, w3]}
  global:
    members: [e1, w1, wit]
    data_dir: %[4]s/{node}/etcd-global
database:
  nodes: [e1, e2, e3]
  data_dir: %[1]s/{node}/pg
  bindir: %[2]s
  lease: 2s # the default: a loaded machine does not flap the regions' own failovers
  replication: {mode: sync, password_file: %[1]s/replication.password}
  hba: ["host postgres app 198.18.0.0/15 scram-sha-256"]
  listen: {primary: ":6432"}
  routers: [ec, wc]
  settings: {dynamic_shared_memory_type: mmap}
  dr: {nodes: [w1, w2, w3], failover: automatic, lease: %[3]s, max_lag: %[5]s}
traffic:
  zone: gslb.test.
  nameservers: [ec, wc]
  listen: ":53"
  records:
    db:
      policy: failover
      ttl: 1s
      targets:
        - {name: east, address: 198.18.1.14, follows: {database: true, region: east}}
        - {name: west, address: 198.18.2.14, follows: {database: true, region: west}}
`, dir, bins.Dir, drRegionLease, testenv.MemoryDir(t), drMaxLag) + strings.Join(extra, "")
	for name, content := range map[string]string{"haven.yaml": cfg, "replication.password": "dr-secret\n", "token": "dr-token\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range c.nodes {
		if err := os.MkdirAll(filepath.Join(dir, n), 0o711); err != nil {
			t.Fatal(err)
		}
		p, err := c.net.Host(n).Start(context.Background(), c.bin, "agent", "-c", filepath.Join(dir, "haven.yaml"), "-n", n)
		if err != nil {
			t.Fatal(err)
		}
		c.agents[n] = p
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("HAVEN_E2E_DEBUG") != "" {
			var procs []*testnet.Proc
			for _, n := range c.nodes {
				procs = append(procs, c.agents[n])
			}
			t.Logf("agents' logs:\n%s", testnet.Outputs(600000, procs...))
			// What the servers said: why a replica does not stream (a
			// slot, a timeline) is in PostgreSQL's log, not the agent's.
			for _, n := range c.nodes {
				if b, err := os.ReadFile(filepath.Join(dir, n, "pg.log")); err == nil {
					t.Logf("%s's postgres log (the last 8 KiB):\n%s", n, b[max(0, len(b)-8<<10):])
				}
			}
		}
	})
	return c
}

// drWriter inserts numbered rows from client host through addr (a router,
// or a node's postgres) until stop, recording when each COMMIT returned.
type drWriter struct {
	c          *dbCluster
	host       string
	addrs      []string // tried in turn: the next one after a failure
	from       int
	mu         sync.Mutex
	acks       []ack
	failed     int
	stop, done chan struct{}
}

func (c *dbCluster) startDRWriter(host string, from int, addrs ...string) *drWriter {
	w := &drWriter{c: c, host: host, addrs: addrs, from: from, stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *drWriter) run() {
	defer close(w.done)
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	next := 0
	for seq := w.from; ; seq++ {
		select {
		case <-w.stop:
			return
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		var err error
		if conn == nil {
			addr := w.addrs[next%len(w.addrs)]
			next++
			cfg, perr := pgx.ParseConfig("postgres://app:dr-app@" + addr + "/postgres?sslmode=disable&connect_timeout=1")
			if perr != nil {
				panic(perr)
			}
			cfg.DialFunc = w.c.net.Host(w.host).DialContext
			conn, err = pgx.ConnectConfig(ctx, cfg)
		}
		if err == nil {
			_, err = conn.Exec(ctx, "INSERT INTO orders (id) VALUES ($1)", seq)
		}
		cancel()
		if err != nil {
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
			w.mu.Lock()
			w.failed++
			w.mu.Unlock()
			select {
			case <-w.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			continue
		}
		w.mu.Lock()
		w.acks = append(w.acks, ack{seq: seq, at: time.Now()})
		w.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *drWriter) halt() []ack {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acks)
}

func (w *drWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acks)
}

// regionPrimary returns the node of nodes whose postgres runs as a
// primary and takes writes, or "".
func (c *dbCluster) regionPrimary(nodes []string) string {
	for _, n := range nodes {
		if out, err := c.sql(n, "SELECT pg_is_in_recovery()"); err == nil && out == "f" {
			return n
		}
	}
	return ""
}

// streaming counts the nodes of nodes whose WAL receiver streams, and says
// from where.
func (c *dbCluster) streaming(nodes []string) (int, string) {
	n := 0
	var seen []string
	for _, node := range nodes {
		out, err := c.sql(node, "SELECT status || ' from ' || sender_host FROM pg_stat_wal_receiver")
		seen = append(seen, fmt.Sprintf("%s: %s %v", node, out, err))
		if err == nil && strings.HasPrefix(out, "streaming") {
			n++
		}
	}
	return n, strings.Join(seen, "; ")
}

// writingInEast waits until east's primary streams to west's standby
// cluster and the traffic manager answers east, creates the orders table,
// and starts east's two clients: one writes through east's router, one
// straight to east's postgres (whichever node takes its writes: it tries
// each in turn).
func (c *dbCluster) writingInEast(t *testing.T) (routed, stuck *drWriter) {
	var primary string
	testenv.Poll(t, 3*time.Minute, "east's primary and west's standby cluster streaming", func() (bool, string) {
		primary = c.regionPrimary(drEast)
		n, seen := c.streaming(drWest)
		return primary != "" && n == len(drWest), "east primary " + primary + "; west: " + seen
	})
	testenv.Poll(t, 30*time.Second, "the traffic manager answers east", func() (bool, string) {
		a := c.resolve("wc")
		return a == "198.18.1.14", a
	})
	if _, err := c.sql(primary, "CREATE TABLE orders (id int PRIMARY KEY); CREATE ROLE app LOGIN PASSWORD 'dr-app'; GRANT ALL ON orders TO app"); err != nil {
		t.Fatal(err)
	}
	routed = c.startDRWriter("ec", 1, "198.18.1.14:6432")
	var direct []string
	for _, n := range drEast {
		direct = append(direct, c.net.Host(n).Addr.String()+":5432")
	}
	stuck = c.startDRWriter("ec", 1_000_000, direct...)
	testenv.Poll(t, time.Minute, "writes acknowledged in east", func() (bool, string) {
		return routed.count() > 50 && stuck.count() > 50, fmt.Sprint(routed.count(), stuck.count())
	})
	return routed, stuck
}

func TestRegionLossAndReturn(t *testing.T) {
	c := startDRCluster(t)
	routed, stuck := c.writingInEast(t)

	// East is cut off from west and the witness; inside east the
	// network still works, and its clients go on writing.
	cut := time.Now()
	if err := c.net.CutWAN(1); err != nil {
		t.Fatal(err)
	}
	// West's client writes where the traffic manager's answer says.
	var answered string
	testenv.Poll(t, drRegionLease+30*time.Second, "the traffic manager answers west", func() (bool, string) {
		answered = c.resolve("wc")
		return answered == "198.18.2.14", answered
	})
	dnsMoved := time.Since(cut)
	west := c.startDRWriter("wc", 2_000_000, answered+":6432")
	testenv.Poll(t, 30*time.Second, "writes acknowledged in west", func() (bool, string) {
		return west.count() > 0, c.regionPrimary(drWest)
	})
	westAcks := west.halt()
	rto := westAcks[0].at.Sub(cut)
	t.Logf("the traffic manager answered west %v after the loss of east", dnsMoved.Round(time.Millisecond))
	routedAcks, stuckAcks := routed.halt(), stuck.halt()
	t.Logf("region east lost: first write acknowledged in west %v later (region lease %v, WAN delay %v each way)", rto.Round(time.Millisecond), drRegionLease, drWANDelay)

	noneAfter(t, westAcks[0], routedAcks, stuckAcks)
	// What west lacks was acknowledged within the standby's lag of the
	// cut, which max_lag bounds.
	wp := c.regionPrimary(drWest)
	have := c.ids(t, wp)
	lost := 0
	var oldest time.Time
	for _, a := range slices.Concat(routedAcks, stuckAcks) {
		if !have[a.seq] {
			lost++
			if oldest.IsZero() || a.at.Before(oldest) {
				oldest = a.at
			}
		}
	}
	t.Logf("acknowledged in east: %d; lost: %d", len(routedAcks)+len(stuckAcks), lost)
	if lost > 0 && cut.Sub(oldest) > drMaxLag {
		t.Errorf("lost a row acknowledged %v before the loss of east, more than dr.max_lag %v", cut.Sub(oldest), drMaxLag)
	}

	// East comes back as west's standby cluster.
	if err := c.net.RestoreWAN(1); err != nil {
		t.Fatal(err)
	}
	c.rejoinsAsStandby(t, wp)

	// haven dr status says so; a planned failback to east loses nothing.
	out := c.haven(t, "wc", "dr", "status")
	if !strings.Contains(out, "active region: west") || !strings.Contains(out, "standby_leader") {
		t.Errorf("haven dr status after the failover:\n%s", out)
	}
	fb := c.startDRWriter("wc", 4_000_000, "198.18.2.14:6432", "198.18.1.14:6432")
	testenv.Poll(t, time.Minute, "writes before the failback", func() (bool, string) { return fb.count() > 50, fmt.Sprint(fb.count()) })
	t.Logf("haven dr switchover --to east: %s", strings.TrimSpace(c.haven(t, "wc", "dr", "switchover", "--to", "east")))
	testenv.Poll(t, time.Minute, "writes through east after the failback", func() (bool, string) {
		fb.mu.Lock()
		defer fb.mu.Unlock()
		n := len(fb.acks)
		return n > 0 && c.regionPrimary(drEast) != "" && time.Since(fb.acks[n-1].at) < time.Second, fmt.Sprint(n)
	})
	acks := fb.halt()
	ep := c.regionPrimary(drEast)
	have = c.ids(t, ep)
	var missing []int
	var pause time.Duration
	for i, a := range acks {
		if !have[a.seq] {
			missing = append(missing, a.seq)
		}
		if i > 0 {
			pause = max(pause, a.at.Sub(acks[i-1].at))
		}
	}
	t.Logf("failback to east: %d writes acknowledged, %d attempts failed, longest pause %v", len(acks), fb.failed, pause.Round(time.Millisecond))
	if len(missing) > 0 {
		t.Errorf("the planned failback lost %d acknowledged rows: %v", len(missing), missing)
	}
}

// TestRegionForcedPromotion loses region east and the witness together
// (each cut off, its processes left running): the global scope has no
// quorum, so west must not take over by itself, and a forced promotion must
// be refused while the quorum is there. haven dr promote --force west
// makes west's member the global scope alone and west writable; east's
// clients never see a write acknowledged after west's first. When east and
// the witness come back, at once, their global members stop as removed
// members instead of forming the old scope's quorum again, and east
// rejoins as west's standby cluster.
func TestRegionForcedPromotion(t *testing.T) {
	c := startDRCluster(t)
	routed, stuck := c.writingInEast(t)
	if out, err := c.tryHaven("wc", "dr", "promote", "--force", "west"); err == nil || !strings.Contains(out, "not forced") {
		t.Fatalf("haven dr promote --force west with the global scope whole: %v\n%s", err, out)
	}

	cut := time.Now()
	for _, seg := range []int{1, 3} {
		if err := c.net.CutWAN(seg); err != nil {
			t.Fatal(err)
		}
	}
	// West waits: without the global scope it cannot tell a lost region
	// from its own isolation.
	time.Sleep(drRegionLease + 5*time.Second)
	if p := c.regionPrimary(drWest); p != "" {
		t.Fatalf("%s promoted in west by itself without the global scope's quorum", p)
	}
	west := c.startDRWriter("wc", 2_000_000, "198.18.2.14:6432")
	asked := time.Now()
	out := c.haven(t, "wc", "dr", "promote", "--force", "west")
	t.Logf("haven dr promote --force west (%v):\n%s", time.Since(asked).Round(time.Millisecond), out)
	if !strings.Contains(out, "removed: e1, wit") {
		t.Errorf("the forced promotion does not name the removed members e1 and wit:\n%s", out)
	}
	testenv.Poll(t, time.Minute, "writes acknowledged in west", func() (bool, string) {
		return west.count() > 0, c.regionPrimary(drWest)
	})
	westAcks := west.halt()
	t.Logf("forced promotion: first write acknowledged in west %v after the command, %v after the loss", westAcks[0].at.Sub(asked).Round(time.Millisecond), westAcks[0].at.Sub(cut).Round(time.Millisecond))
	noneAfter(t, westAcks[0], routed.halt(), stuck.halt())

	// East and the witness come back together, on their old data.
	for _, seg := range []int{1, 3} {
		if err := c.net.RestoreWAN(seg); err != nil {
			t.Fatal(err)
		}
	}
	c.rejoinsAsStandby(t, c.regionPrimary(drWest))
	for _, n := range []string{"e1", "wit"} {
		testenv.Poll(t, 30*time.Second, n+"'s global member stops as removed", func() (bool, string) {
			return strings.Contains(c.agents[n].Output(), "was removed from its cluster: w1 lists only w1"), ""
		})
	}
	out = c.haven(t, "wc", "dr", "status")
	if !strings.Contains(out, "active region: west") {
		t.Errorf("haven dr status after the forced promotion:\n%s", out)
	}

	// e1's agent restarted: its member stays out, the node follows west
	// as a client of the global scope.
	if err := c.agents["e1"].Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := c.agents["e1"].Wait(); err != nil {
		t.Logf("e1's agent: %v", err)
	}
	c.startAgent("e1")
	if _, err := c.sql(c.regionPrimary(drWest), "INSERT INTO orders (id) VALUES (3000001)"); err != nil {
		t.Fatal(err)
	}
	testenv.Poll(t, 2*time.Minute, "e1, restarted, replicates west's row", func() (bool, string) {
		out, err := c.sql("e1", "SELECT count(*) FROM orders WHERE id = 3000001")
		return err == nil && out == "1", fmt.Sprint(out, err)
	})
	if !strings.Contains(c.agents["e1"].Output(), "this node's etcd member was removed from its cluster; the node runs without it") {
		t.Error("e1's agent, restarted, does not say that its member of the global scope stays out")
	}
}

// noneAfter fails the test for any write east's clients saw acknowledged
// at or after west's first: never two writable regions.
func noneAfter(t *testing.T, west ack, east ...[]ack) {
	t.Helper()
	for _, a := range slices.Concat(east...) {
		if !a.at.Before(west.at) {
			t.Errorf("east acknowledged row %d at %s, after west's first at %s", a.seq, a.at.Format("15:04:05.000"), west.at.Format("15:04:05.000"))
		}
	}
}

// rejoinsAsStandby checks that east, whose links just came back, rejoins
// as west's standby cluster: every node has what west's primary wp
// writes, and none takes writes.
func (c *dbCluster) rejoinsAsStandby(t *testing.T, wp string) {
	t.Helper()
	back := time.Now()
	if _, err := c.sql(wp, "INSERT INTO orders (id) VALUES (3000000)"); err != nil {
		t.Fatal(err)
	}
	for _, n := range drEast {
		testenv.Poll(t, 3*time.Minute, n+" replicates west's row", func() (bool, string) {
			out, err := c.sql(n, "SELECT count(*) FROM orders WHERE id = 3000000")
			return err == nil && out == "1", fmt.Sprint(out, err)
		})
	}
	t.Logf("east rejoined as the standby cluster %v after its links came back", time.Since(back).Round(time.Millisecond))
	if p := c.regionPrimary(drEast); p != "" {
		t.Errorf("%s runs as a primary in east while west is active", p)
	}
	for _, n := range drEast {
		if out := c.agents[n].Output(); strings.Contains(out, "rewind impossible") {
			t.Logf("%s could not be rewound and was copied again", n)
		}
	}
}

// resolve asks host's name server for db.gslb.test and returns the
// address it answers.
func (c *dbCluster) resolve(host string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := c.net.Host(host).Command(ctx, "dig", "@"+c.net.Host(host).Addr.String(), "+short", "+time=1", "+tries=1", "db.gslb.test.", "A").CombinedOutput()
	return strings.TrimSpace(string(out))
}

// ids returns the ids of the orders on node.
func (c *dbCluster) ids(t *testing.T, node string) map[int]bool {
	t.Helper()
	out, err := c.sql(node, "SELECT string_agg(id::text, ',') FROM orders")
	if err != nil {
		t.Fatal(err)
	}
	have := map[int]bool{}
	for _, f := range strings.Split(out, ",") {
		var id int
		fmt.Sscan(f, &id)
		have[id] = true
	}
	return have
}

// haven runs the haven command on host with the cluster's configuration
// and returns its output; the test fails if it fails.
func (c *dbCluster) haven(t *testing.T, host string, args ...string) string {
	t.Helper()
	out, err := c.tryHaven(host, args...)
	if err != nil {
		t.Fatalf("haven %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// tryHaven runs the haven command on host with the cluster's
// configuration and returns its output and how it ended.
func (c *dbCluster) tryHaven(host string, args ...string) (string, error) {
	return c.tryHavenWith(host, filepath.Join(c.dir, "haven.yaml"), args...)
}

// tryHavenWith is tryHaven with the configuration file cfg.
func (c *dbCluster) tryHavenWith(host, cfg string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args = append(args, "-c", cfg)
	out, err := c.net.Host(host).Command(ctx, c.bin, args...).CombinedOutput()
	return string(out), err
}
