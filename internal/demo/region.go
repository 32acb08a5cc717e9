package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/netlab"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

// The fifth act: the guide's disaster-recovery architecture. The orders
// database runs across two regions: east (active: its primary takes the
// writes) and west (the standby cluster, streaming from east's primary),
// with a witness in a third place; the router between the three segments
// delays every packet as a WAN would. Each region's client host runs a
// database router and a name server, whose db.gslb.demo. answers the
// active region's router. Clients write where that answer points. Then
// region east is lost (every link of its segment cut, its processes left
// running): the demo measures when the answer moved to west, when west
// acknowledged its first write (the RTO) and which acknowledged writes
// west lacks (the RPO), checks east acknowledged nothing once west had,
// and brings east's links back: east rejoins as the standby region.

// RegionResult summarises the fifth act.
type RegionResult struct {
	// AckedEast and AckedWest are the writes acknowledged through east's
	// and west's routers.
	AckedEast, AckedWest int
	// DNSMoved is from the loss of east to the answer naming west's
	// router; RTO from the loss to the first write acknowledged in west.
	DNSMoved, RTO time.Duration
	// Lost are writes acknowledged in east that west does not have (the
	// RPO); OldestLost is how long before the loss the oldest of them was
	// acknowledged (0 when none was lost).
	Lost       int
	OldestLost time.Duration
	// AfterWest are writes east acknowledged once west had acknowledged
	// one (must be 0: never two writable regions).
	AfterWest int
	// LostLater are orders west had acknowledged, or had of east's, when
	// the writers stopped, and no longer has once east rejoined (must be
	// 0).
	LostLater int
	// Rejoined is from east's links coming back to every east node having
	// replicated a row written in west after it.
	Rejoined time.Duration
}

// The fifth act's machines. Segment 1, region east: e1-e3 198.18.1.11-13
// and ec 198.18.1.14 (client, router, name server); segment 2, region
// west, the same on 198.18.2.0/24; segment 3: the witness wit
// 198.18.3.11.
var (
	regionEast = []string{"e1", "e2", "e3", "ec"}
	regionWest = []string{"w1", "w2", "w3", "wc"}
	regionWit  = []string{"wit"}
)

const (
	regionWAN    = 10 * time.Millisecond
	regionLease  = 4 * time.Second
	regionMaxLag = 5 * time.Second
	regionEastIP = "198.18.1.14" // east's router and name server
	regionWestIP = "198.18.2.14"
	regionName   = "db.gslb.demo."
)

// CanRunRegion says whether this machine can run the fifth act: what the
// third needs and a TUN device, through which the router delays the
// packets between regions.
func CanRunRegion() error {
	if err := CanRunDatabase(); err != nil {
		return err
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("it needs /dev/net/tun (the WAN delay between regions): %w", err)
	}
	f.Close()
	return nil
}

// RunRegion plays the fifth act.
func RunRegion(ctx context.Context, opt Options) (*RegionResult, error) {
	opt = opt.defaults()
	bins, err := pg.FindBinaries(ctx, "")
	if err != nil {
		return nil, err
	}
	// etcd's data in memory when the machine has /dev/shm: six members
	// and three of the global scope fsync on a small disk otherwise.
	etcdDir, err := os.MkdirTemp("/dev/shm", "haven-demo-etcd-")
	if err != nil {
		etcdDir = ""
	} else {
		defer os.RemoveAll(etcdDir)
	}
	all := slices.Concat(regionEast, regionWest, regionWit)
	st, err := newStage(ctx, "dr", netlab.Options{Hosts: regionEast, Segment2: regionWest, Segment3: regionWit, WANDelay: regionWAN},
		func(dir string) map[string]string {
			if etcdDir == "" {
				etcdDir = dir
			}
			return map[string]string{"haven.yaml": regionConfig(dir, etcdDir, bins.Dir), "token": "demo\n", "replication.password": "demo-replication\n"}
		})
	if err != nil {
		return nil, err
	}
	defer st.close()
	for _, h := range all {
		if err := os.MkdirAll(st.path(h), 0o711); err != nil { // postgres must reach its data directory
			return nil, err
		}
	}
	n, exe, cfgPath := st.net, st.exe, st.path("haven.yaml")

	w := opt.Out
	fmt.Fprintf(w, "\nhaven demo, act 5: a second region: region east is lost\n")
	fmt.Fprintf(w, "  region east, 198.18.1.0/24: e1-e3 .11-.13 (PostgreSQL, etcd), ec %s (client, database router :%d, name server)\n", regionEastIP, dbRouterPort)
	fmt.Fprintf(w, "  region west, 198.18.2.0/24: w1-w3 .11-.13, the standby cluster, and wc %s, the same as ec\n", regionWestIP)
	fmt.Fprintf(w, "  witness, 198.18.3.0/24: wit .11, the third member of the global etcd scope (with e1 and w1)\n")
	fmt.Fprintf(w, "  the router between the segments holds every packet %v each way (a WAN); dr: failover automatic, lease %v, max_lag %v\n", regionWAN, regionLease, regionMaxLag)
	fmt.Fprintf(w, "  %s answers the active region's router; config %s\n", regionName, cfgPath)

	procCtx, stopProcs := context.WithCancel(context.WithoutCancel(ctx))
	defer stopProcs()
	agents := map[string]*netlab.Proc{}
	var procs []*netlab.Proc
	for _, h := range all {
		p, err := n.Host(h).Start(procCtx, exe, "agent", "-c", cfgPath, "-n", h)
		if err != nil {
			return nil, err
		}
		agents[h], procs = p, append(procs, p)
	}
	logs := func() string { return netlab.Outputs(20000, procs...) }
	start := time.Now()
	since := func(t time.Time) string { return fmt.Sprintf("T+%5.2fs", t.Sub(start).Seconds()) }
	fmt.Fprintf(w, "\n%s  nine agents started; east creates the database, west copies it and streams\n", since(start))

	wc, ec := n.Host("wc"), n.Host("ec")
	admin := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: wc.DialContext, DisableKeepAlives: true}}
	primary, err := waitRegions(ctx, admin, 150*time.Second)
	if err != nil {
		return nil, fmt.Errorf("demo: %w\n%s", err, logs())
	}
	if got, err := waitAnswer(ctx, wc, regionEastIP, 30*time.Second); err != nil {
		return nil, fmt.Errorf("demo: wc's name server answers %s, not east's router %s: %w\n%s", got, regionEastIP, err, logs())
	}
	fmt.Fprintf(w, "%s  region east is active, %s its primary; west's standby leader streams from it:\n", since(time.Now()), primary)
	drStatus(ctx, w, st, "wc")
	if err := createAppSchema(ctx, n, st.dir, bins.Dir, primary); err != nil {
		return nil, err
	}

	res := &RegionResult{}
	east := startWriter(ec, regionEastIP, 1)
	west := startWriter(wc, regionWestIP, 1_000_000)
	writers := []*regionWriter{east, west}
	defer func() {
		for _, wr := range writers {
			wr.halt()
		}
	}()
	fmt.Fprintf(w, "%s  each client places numbered orders where %s points, asking its own region's name server: both say %s\n", since(time.Now()), regionName, regionEastIP)
	if !sleepCtx(ctx, opt.Phase) {
		return res, ctx.Err()
	}
	cut := time.Now()
	if err := n.CutSegment(1); err != nil {
		return res, err
	}
	fmt.Fprintf(w, "%s  region east is lost: every link of its segment cut, its processes left running (%d orders acknowledged so far)\n", since(cut), east.count()+west.count())
	if _, err := waitAnswer(ctx, wc, regionWestIP, regionLease+30*time.Second); err != nil {
		return res, fmt.Errorf("demo: after the loss of east, wc's name server does not answer west's router: %w\n%s", err, logs())
	}
	res.DNSMoved = time.Since(cut)
	fmt.Fprintf(w, "%s  wc's name server answers %s -> %s (west), %.2fs after the loss\n", since(time.Now()), regionName, regionWestIP, res.DNSMoved.Seconds())
	first, err := west.firstIn(ctx, regionWestIP, cut, 30*time.Second)
	if err != nil {
		return res, fmt.Errorf("demo: %w\n%s", err, logs())
	}
	res.RTO = first.Sub(cut)
	fmt.Fprintf(w, "%s  first order acknowledged in west: RTO %.2fs (the region lease is %v)\n", since(first), res.RTO.Seconds(), regionLease)
	// The client left in east keeps trying for a while: nothing it sends
	// may be acknowledged now.
	if !sleepCtx(ctx, 2*time.Second) {
		return res, ctx.Err()
	}
	ecAnswer := askFrom(ctx, ec, regionEastIP)
	var acks []regionAck
	for _, wr := range writers {
		acks = append(acks, wr.halt()...)
	}
	have, err := westOrders(ctx, wc)
	if err != nil {
		return res, fmt.Errorf("demo: read the orders in west: %w\n%s", err, logs())
	}
	var lastEast time.Time
	var oldest time.Time
	for _, a := range acks {
		if a.addr != regionEastIP {
			res.AckedWest++
			continue
		}
		res.AckedEast++
		if a.at.After(lastEast) {
			lastEast = a.at
		}
		if !a.at.Before(first) {
			res.AfterWest++
		}
		if !have[a.id] {
			res.Lost++
			if oldest.IsZero() || a.at.Before(oldest) {
				oldest = a.at
			}
		}
	}
	if res.Lost > 0 {
		res.OldestLost = cut.Sub(oldest)
	}
	fmt.Fprintf(w, "\norders acknowledged in east %d, in west %d; attempts that failed %d (the client cannot know whether those were stored)\n",
		res.AckedEast, res.AckedWest, east.failures()+west.failures())
	if res.Lost == 0 {
		fmt.Fprintf(w, "RPO: 0 of the %d orders acknowledged in east are missing in west\n", res.AckedEast)
	} else {
		fmt.Fprintf(w, "RPO: %d of the %d orders acknowledged in east are missing in west, the oldest acknowledged %.2fs before the loss (dr.max_lag %v)\n",
			res.Lost, res.AckedEast, res.OldestLost.Seconds(), regionMaxLag)
	}
	fmt.Fprintf(w, "east acknowledged %d orders after west's first (its last %.2fs before it; ec's name server, cut off with east, still answers %s)\n",
		res.AfterWest, first.Sub(lastEast).Seconds(), ecAnswer)
	if res.AfterWest > 0 {
		return res, fmt.Errorf("demo: east acknowledged %d orders after west acknowledged its first: two writable regions", res.AfterWest)
	}
	if res.Lost > 0 && res.OldestLost > regionMaxLag {
		return res, fmt.Errorf("demo: west lacks an order acknowledged %v before the loss of east, more than dr.max_lag %v", res.OldestLost, regionMaxLag)
	}

	if err := n.RestoreSegment(1); err != nil {
		return res, err
	}
	back := time.Now()
	fmt.Fprintf(w, "\n%s  east's links are back\n", since(back))
	const marker = 9_000_000
	if err := westInsert(ctx, wc, marker); err != nil {
		return res, fmt.Errorf("demo: write in west: %w\n%s", err, logs())
	}
	rejoin := back.Add(120 * time.Second)
	for _, node := range regionEast[:3] {
		if err := waitReplicated(ctx, st, bins.Dir, node, marker, rejoin); err != nil {
			return res, fmt.Errorf("demo: %w\n%s", err, logs())
		}
	}
	res.Rejoined = time.Since(back)
	fmt.Fprintf(w, "%s  e1, e2 and e3 have order %d, written in west after east came back, and none takes writes: east is the standby region (%.2fs after its links came back)\n",
		since(time.Now()), marker, res.Rejoined.Seconds())
	drStatus(ctx, w, st, "wc")

	// West kept what it acknowledged, through whatever happened inside it
	// meanwhile, and what it had of east's.
	now, err := westOrders(ctx, wc)
	if err != nil {
		return res, fmt.Errorf("demo: read the orders in west again: %w\n%s", err, logs())
	}
	for _, a := range acks {
		if (a.addr == regionWestIP || have[a.id]) && !now[a.id] {
			res.LostLater++
		}
	}
	fmt.Fprintf(w, "orders west had once east was lost (%d of east's, %d of its own) and no longer has: %d\n", res.AckedEast-res.Lost, res.AckedWest, res.LostLater)
	if res.LostLater > 0 {
		return res, fmt.Errorf("demo: west lost %d orders it had acknowledged or received\n%s", res.LostLater, logs())
	}
	return res, nil
}

// waitRegions waits until region east is active with a primary whose
// replicas stream, and every node of west streams, its standby leader
// from east's primary; it returns east's primary.
func waitRegions(ctx context.Context, c *http.Client, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	last := "no answer from w1-w3"
	for i := 0; time.Now().Before(deadline); i++ {
		var st keeper.RegionStatus
		url := fmt.Sprintf("http://198.18.2.%d:9900/api/v1/dr", 11+i%3)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		if resp, err := c.Do(req); err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil {
				primary, ok, why := regionsReady(st)
				if ok {
					return primary, nil
				}
				last = why
			}
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return "", ctx.Err()
		}
	}
	return "", fmt.Errorf("the regions were not ready within %v: %s", within, last)
}

// regionsReady says whether st shows east active with its primary and
// replicas streaming, and west's three nodes streaming.
func regionsReady(st keeper.RegionStatus) (primary string, ok bool, why string) {
	if st.Record.Holder != "east" {
		return "", false, fmt.Sprintf("the active region is %q", st.Record.Holder)
	}
	streaming := map[string]int{}
	var seen []string
	var timeline uint32
	for _, s := range st.States {
		seen = append(seen, fmt.Sprintf("%s %s timeline %d streaming %v", s.Node, s.Member.Role, s.Member.Timeline, s.Member.Streaming))
		switch {
		case s.Region == "east" && s.Leader && s.Member.Role == keeper.RolePrimary:
			primary, timeline = s.Node, s.Member.Timeline
		case s.Member.Streaming:
			streaming[s.Region]++
		}
	}
	leader := false // west's standby leader streams on the primary's timeline
	for _, s := range st.States {
		leader = leader || s.Member.Role == keeper.RoleStandbyLeader && s.Member.Streaming && s.Member.Timeline == timeline
	}
	slices.Sort(seen)
	if primary == "" || !leader || streaming["east"] < 2 || streaming["west"] < 3 {
		return "", false, fmt.Sprintf("east's primary %q, streaming in east %d, in west %d (%s)", primary, streaming["east"], streaming["west"], strings.Join(seen, "; "))
	}
	return primary, true, ""
}

// drStatus prints `haven dr status` as run on host, indented.
func drStatus(ctx context.Context, w io.Writer, st *stage, host string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := st.net.Host(host).Command(ctx, st.exe, "dr", "status", "-c", st.path("haven.yaml")).CombinedOutput()
	fmt.Fprintf(w, "  $ haven dr status   (on %s)\n", host)
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		fmt.Fprintf(w, "  %s\n", line)
	}
	if err != nil {
		fmt.Fprintf(w, "  (haven dr status: %v)\n", err)
	}
}

// askFrom asks the name server at ns, from host, for the act's record.
func askFrom(ctx context.Context, h *netlab.Host, ns string) string {
	conn, err := h.DialContext(ctx, "udp", ns+":53")
	if err != nil {
		return "no answer (" + err.Error() + ")"
	}
	defer conn.Close()
	return askA(conn, regionName)
}

// waitAnswer waits until h's own name server answers want.
func waitAnswer(ctx context.Context, h *netlab.Host, want string, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	got := ""
	for time.Now().Before(deadline) {
		if got = askFrom(ctx, h, h.Addr.String()); got == want {
			return got, nil
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return got, ctx.Err()
		}
	}
	return got, fmt.Errorf("no answer %s within %v", want, within)
}

// regionWriter is a client of the fifth act: it inserts numbered orders
// through the router that its region's name server names, asking again
// whenever a write fails, and records each acknowledged one.
type regionWriter struct {
	host       *netlab.Host
	ns         string
	mu         sync.Mutex
	acks       []regionAck
	failed     int
	stop, done chan struct{}
	once       sync.Once
}

type regionAck struct {
	id   int64
	at   time.Time
	addr string // the router that acknowledged it
}

func startWriter(h *netlab.Host, ns string, from int64) *regionWriter {
	wr := &regionWriter{host: h, ns: ns, stop: make(chan struct{}), done: make(chan struct{})}
	go wr.run(from)
	return wr
}

func (wr *regionWriter) run(from int64) {
	defer close(wr.done)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-wr.stop; cancel() }()
	var conn *pgx.Conn
	addr := ""
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	// Bounded: at most 100000 orders, and the act halts it.
	for id := from; id < from+100_000 && ctx.Err() == nil; id++ {
		var err error
		if conn == nil {
			if a := askFrom(ctx, wr.host, wr.ns); isAddr(a) {
				addr = a
			}
			conn, err = wr.connect(ctx, addr)
		}
		if err == nil {
			octx, ocancel := context.WithTimeout(ctx, time.Second)
			_, err = conn.Exec(octx, "INSERT INTO orders (id) VALUES ($1)", id)
			ocancel()
		}
		if err != nil {
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
			if ctx.Err() != nil {
				return
			}
			wr.mu.Lock()
			wr.failed++
			wr.mu.Unlock()
			sleepCtx(ctx, 20*time.Millisecond)
			continue
		}
		wr.mu.Lock()
		wr.acks = append(wr.acks, regionAck{id, time.Now(), addr})
		wr.mu.Unlock()
		sleepCtx(ctx, 5*time.Millisecond)
	}
}

func isAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func (wr *regionWriter) connect(ctx context.Context, addr string) (*pgx.Conn, error) {
	if addr == "" {
		return nil, errors.New("no router named yet")
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=app password=%s dbname=postgres sslmode=disable connect_timeout=1", addr, dbRouterPort, dbAppPass))
	if err != nil {
		return nil, err
	}
	cfg.DialFunc = wr.host.DialContext
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return pgx.ConnectConfig(ctx, cfg)
}

// halt stops the writer and returns what it got acknowledged.
func (wr *regionWriter) halt() []regionAck {
	wr.once.Do(func() { close(wr.stop) })
	<-wr.done
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return slices.Clone(wr.acks)
}

func (wr *regionWriter) count() int {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return len(wr.acks)
}

func (wr *regionWriter) failures() int {
	wr.mu.Lock()
	defer wr.mu.Unlock()
	return wr.failed
}

// firstIn waits until the writer has an order acknowledged by the router
// at addr after t, and returns when.
func (wr *regionWriter) firstIn(ctx context.Context, addr string, t time.Time, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		wr.mu.Lock()
		for _, a := range wr.acks {
			if a.addr == addr && a.at.After(t) {
				wr.mu.Unlock()
				return a.at, nil
			}
		}
		wr.mu.Unlock()
		if !sleepCtx(ctx, 20*time.Millisecond) {
			return time.Time{}, ctx.Err()
		}
	}
	return time.Time{}, fmt.Errorf("no order acknowledged through %s within %v", addr, within)
}

// westConn connects from h to west's router.
func westConn(ctx context.Context, h *netlab.Host) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%d user=app password=%s dbname=postgres sslmode=disable connect_timeout=2", regionWestIP, dbRouterPort, dbAppPass))
	if err != nil {
		return nil, err
	}
	cfg.DialFunc = h.DialContext
	for {
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			return conn, nil
		}
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return nil, err
		}
	}
}

// westOrders reads every order id in west, through its router.
func westOrders(ctx context.Context, h *netlab.Host) (map[int64]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := westConn(ctx, h)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	return orderIDs(ctx, conn)
}

// westInsert writes order id in west, through its router.
func westInsert(ctx context.Context, h *netlab.Host, id int64) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := westConn(ctx, h)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "INSERT INTO orders (id) VALUES ($1)", id)
	return err
}

// waitReplicated waits until node, a replica, has order id, or deadline.
func waitReplicated(ctx context.Context, st *stage, bindir, node string, id int64, deadline time.Time) error {
	q := fmt.Sprintf("SELECT pg_is_in_recovery()::text || ' ' || count(*) FROM orders WHERE id = %d", id)
	last := ""
	for time.Now().Before(deadline) {
		out, err := localSQL(ctx, st, bindir, node, q)
		if err == nil && out == "true 1" {
			return nil
		}
		last = fmt.Sprint(out, err)
		if !sleepCtx(ctx, 250*time.Millisecond) {
			return ctx.Err()
		}
	}
	return fmt.Errorf("%s did not replicate order %d from west within 120s of east's return (in recovery, count: %s)", node, id, last)
}

// localSQL runs query as the postgres user over node's unix socket and
// returns its output.
func localSQL(ctx context.Context, st *stage, bindir, node, query string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", st.net.Host(node).Namespace,
		"runuser", "-u", "postgres", "--", filepath.Join(bindir, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1",
		"-h", filepath.Join(st.dir, node, "run"), "-p", "5432", "-d", "postgres", "-c", query).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

func regionConfig(dir, etcdDir, bindir string) string {
	return fmt.Sprintf(`cluster: demo-dr
admin: {token_file: %[1]s/token}
regions:
  east:
    nodes:
      e1: {address: 198.18.1.11, zone: a}
      e2: {address: 198.18.1.12, zone: b}
      e3: {address: 198.18.1.13, zone: c}
      ec: {address: %[4]s, zone: d}
  west:
    nodes:
      w1: {address: 198.18.2.11, zone: a}
      w2: {address: 198.18.2.12, zone: b}
      w3: {address: 198.18.2.13, zone: c}
      wc: {address: %[5]s, zone: d}
  witness:
    nodes:
      wit: {address: 198.18.3.11, zone: a}
coordination:
  members: [e1, e2, e3]
  data_dir: %[3]s/{node}/etcd
  join_timeout: 30s
  regions:
    west: {members: [w1, w2, w3]}
  global:
    members: [e1, w1, wit]
    data_dir: %[3]s/{node}/etcd-global
database:
  nodes: [e1, e2, e3]
  data_dir: %[1]s/{node}/pg
  bindir: %[2]s
  lease: 1s
  replication: {mode: sync, password_file: %[1]s/replication.password}
  hba: ["host postgres app 198.18.0.0/15 scram-sha-256"]
  listen: {primary: ":%[6]d"}
  routers: [ec, wc]
  settings: {dynamic_shared_memory_type: mmap}
  dr: {nodes: [w1, w2, w3], failover: automatic, lease: %[7]s, max_lag: %[8]s}
traffic:
  zone: gslb.demo.
  nameservers: [ec, wc]
  listen: ":53"
  records:
    db:
      policy: failover
      ttl: 1s
      targets:
        - {name: east, address: %[4]s, follows: {database: true, region: east}}
        - {name: west, address: %[5]s, follows: {database: true, region: west}}
`, dir, bindir, etcdDir, regionEastIP, regionWestIP, dbRouterPort, regionLease, regionMaxLag)
}
