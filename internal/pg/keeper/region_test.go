package keeper

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/drill/fault"
)

// regionTestLease is the active-region record's lease in the tests: long
// enough that a busy machine does not end a holding no fault ended.
const regionTestLease = 3 * time.Second

// twoRegions is a database of two regions, each of its own etcd, and the
// global scope's etcd.
type twoRegions struct {
	t      *testing.T
	global string
	etcd   map[string]string // region: its etcd
	// globals are the keepers' clients of the global scope, by node.
	globals map[string]*clientv3.Client
}

func newTwoRegions(t *testing.T) *twoRegions {
	return &twoRegions{t: t, global: startEtcd(t), etcd: map[string]string{"east": startEtcd(t), "west": startEtcd(t)}, globals: map[string]*clientv3.Client{}}
}

// start runs node's keeper in region, one of nodes.
func (r *twoRegions) start(region string, node *testServer, nodes []string, edits ...func(*RegionConfig)) *testKeeper {
	t := r.t
	t.Helper()
	cli, err := coord.NewClient(context.Background(), coord.ClientConfig{Endpoints: []string{r.global}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	r.globals[node.Name()] = cli
	return startKeeper(t, r.etcd[region], node, nodes, ModeAsync, func(c *Config) {
		c.Region = &RegionConfig{Name: region, Regions: []string{"east", "west"}, Client: cli,
			Lease: regionTestLease, Home: region == "east", Automatic: true, MaxLag: 5 * time.Second}
		for _, edit := range edits {
			edit(c.Region)
		}
	})
}

// cut stands for the loss of a whole region: its keepers lose both etcds
// (nothing they do on the way out reaches anyone) and their postgres are
// killed.
func (r *twoRegions) cut(ks ...*testKeeper) {
	for _, k := range ks {
		r.globals[k.cfg.Node].Close()
	}
	crash(r.t, ks...)
}

// regionRole waits until k publishes role in the global scope, as the
// other keepers see it, and returns its state.
func waitRegionState(t *testing.T, k *testKeeper, what string, cond func(RegionState) bool) RegionState {
	t.Helper()
	var st RegionState
	waitFor(t, what, func() (string, bool) {
		k.region.mu.Lock()
		states := k.region.states
		k.region.mu.Unlock()
		var seen []string
		ok := false
		for _, s := range states {
			seen = append(seen, fmt.Sprintf("%s/%s leader=%v active=%v role=%s lsn=%s lag=%.1fs", s.Region, s.Node, s.Leader, s.Active, s.Member.Role, s.Member.LSN, s.LagSeconds))
			if cond(s) {
				st, ok = s, true
			}
		}
		return strings.Join(seen, "; "), ok
	})
	return st
}

func countRows(t *testing.T, s *testServer) int {
	t.Helper()
	out, err := s.tryQuery("SELECT count(*) FROM t")
	if err != nil {
		t.Fatalf("%s: %v", s.Name(), err)
	}
	n, _ := strconv.Atoi(out)
	return n
}

// TestRegionFailoverAndReturn runs two regions of two keepers: east's
// leader is the primary, west's the standby leader, streaming from it,
// and west's other node replicates from the standby leader. When east is
// lost, west takes the active-region record after its lease and promotes
// with every row; when east's nodes come back they stay replicas: east's
// leader comes back as the standby leader, rewound onto west's history,
// and never acts as the primary again.
func TestRegionFailoverAndReturn(t *testing.T) {
	r := newTwoRegions(t)
	east, west := []string{"e1", "e2"}, []string{"w1", "w2"}
	eastNodes := map[string]*testServer{}
	var ks []*testKeeper
	for _, n := range east {
		eastNodes[n] = newNode(t, n)
		ks = append(ks, r.start("east", eastNodes[n], east))
	}
	var ws []*testKeeper
	for _, n := range west {
		ws = append(ws, r.start("west", newNode(t, n), west))
	}
	primary, eastReplicas := leaderOf(t, ks...)
	waitCluster(t, primary, eastReplicas...)
	standby := waitRegionState(t, primary, "west's standby leader streaming from east's primary", func(s RegionState) bool {
		return s.Region == "west" && s.Leader && s.Member.Role == RoleStandbyLeader && s.Member.Streaming && s.Member.Upstream == primary.cfg.Node
	})
	var sl, cascade *testKeeper
	for _, w := range ws {
		if w.cfg.Node == standby.Node {
			sl = w
		} else {
			cascade = w
		}
	}
	waitFor(t, cascade.cfg.Node+" replicates from the standby leader", func() (string, bool) {
		m := cascade.State()
		return fmt.Sprintf("%+v", m), m.Role == RoleReplica && m.Streaming && m.Upstream == sl.cfg.Node
	})
	if primary.region.owner.Status().Holder != "east" {
		t.Fatalf("the active-region record: %+v, want east", primary.region.owner.Status())
	}

	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	const rows = 200
	for i := 1; i <= rows; i++ {
		primary.exec(t, fmt.Sprintf("INSERT INTO t VALUES (%d)", i))
	}
	waitRow(t, cascade.node, rows) // through the standby leader

	// Region east is lost.
	r.cut(ks...)
	waitFor(t, "west's standby leader promoted", func() (string, bool) {
		st := sl.State()
		return fmt.Sprintf("%s leader=%v region=%+v", st.Role, sl.Leader(), sl.region.owner.Status()), sl.Leader() && st.Role == RolePrimary
	})
	if n := countRows(t, sl.node); n != rows {
		t.Fatalf("west's new primary has %d rows, want all %d acknowledged", n, rows)
	}
	sl.exec(t, fmt.Sprintf("INSERT INTO t VALUES (%d)", rows+1))
	waitRow(t, cascade.node, rows+1)

	// East comes back: its nodes follow west.
	var back []*testKeeper
	for _, n := range east {
		back = append(back, r.start("east", eastNodes[n], east))
	}
	standby = waitRegionState(t, sl, "east's standby leader streaming from west's primary", func(s RegionState) bool {
		return s.Region == "east" && s.Leader && s.Member.Role == RoleStandbyLeader && s.Member.Streaming && s.Member.Upstream == sl.cfg.Node
	})
	sl.exec(t, fmt.Sprintf("INSERT INTO t VALUES (%d)", rows+2))
	for _, k := range back {
		waitRow(t, k.node, rows+2)
		if k.Leader() {
			t.Errorf("%s acts as the primary while west holds the active region", k.cfg.Node)
		}
	}
	if h := sl.region.owner.Status().Holder; h != "west" {
		t.Errorf("the active-region record names %s after east came back, want west", h)
	}
}

// TestRegionSwitchoverLosesNothing moves the active region to west and
// back under a steady writer that follows the primary: no acknowledged
// row is lost either way, and the former active region's leader comes
// back as the standby leader each time.
func TestRegionSwitchoverLosesNothing(t *testing.T) {
	r := newTwoRegions(t)
	east, west := []string{"e1", "e2"}, []string{"w1", "w2"}
	var all, ks, ws []*testKeeper
	for _, n := range east {
		ks = append(ks, r.start("east", newNode(t, n), east))
	}
	for _, n := range west {
		ws = append(ws, r.start("west", newNode(t, n), west))
	}
	all = append(append(all, ks...), ws...)
	primary, _ := leaderOf(t, ks...)
	waitRegionState(t, primary, "west's standby leader streaming", func(s RegionState) bool {
		return s.Region == "west" && s.Member.Role == RoleStandbyLeader && s.Member.Streaming
	})
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	w := startWriter(t, 1, all...)
	cli := r.globals[primary.cfg.Node]
	for i, to := range []string{"west", "east"} {
		for w.count() < 50*(i+1) {
			time.Sleep(20 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		start := time.Now()
		err := SwitchoverRegion(ctx, cli, "shop", "main", to)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var next *testKeeper
		waitFor(t, to+"'s leader is the primary", func() (string, bool) {
			for _, k := range all {
				if k.Leader() && k.region.cfg.Name == to {
					next = k
				}
			}
			return fmt.Sprint(next != nil), next != nil
		})
		t.Logf("switchover to %s: the record moved in %v", to, time.Since(start).Round(time.Millisecond))
		waitRegionState(t, next, "the former region's standby leader streaming from "+next.cfg.Node, func(s RegionState) bool {
			return s.Region != to && s.Member.Role == RoleStandbyLeader && s.Member.Streaming && s.Member.Upstream == next.cfg.Node
		})
	}
	for c := w.count(); w.count() < c+50; {
		time.Sleep(20 * time.Millisecond)
	}
	w.halt()
	final, _ := leaderOf(t, ks...)
	w.mu.Lock()
	acked := append([]int(nil), w.acked...)
	w.mu.Unlock()
	mustHaveAll(t, final, acked)
	t.Logf("%d writes acknowledged, %d failed; longest pause %v", len(acked), w.errs, w.longestGap().Round(time.Millisecond))
}

// TestStandbyLeaderTakeover freezes the standby region's leader, its
// connection to the primary left open: another node of the region takes
// its region's lead and the stream from the active primary over, through
// the region's slot there, which the primary frees for it while the
// frozen node still holds it; rows written in the active region keep
// arriving.
func TestStandbyLeaderTakeover(t *testing.T) {
	r := newTwoRegions(t)
	east, west := []string{"e1"}, []string{"w1", "w2"}
	primary := r.start("east", newNode(t, "e1"), east)
	var ws []*testKeeper
	for _, n := range west {
		ws = append(ws, r.start("west", newNode(t, n), west))
	}
	leaderOf(t, primary)
	waitRegionState(t, primary, "west's standby leader streaming", func(s RegionState) bool {
		return s.Region == "west" && s.Member.Role == RoleStandbyLeader && s.Member.Streaming
	})
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	primary.exec(t, "INSERT INTO t VALUES (1)")
	// Settled first, as each keeper sees itself: one west node the
	// standby leader streaming from the primary, the other a replica
	// streaming from it (its keeper done with the clone, whose start
	// waits for the stream: a freeze of its upstream in that wait holds
	// the keeper until the frozen postgres ends).
	var dead, next *testKeeper
	waitFor(t, "west settled: a standby leader streaming from the primary, a replica streaming from it", func() (string, bool) {
		a, b := ws[0], ws[1]
		if b.State().Role == RoleStandbyLeader {
			a, b = b, a
		}
		sa, sb := a.State(), b.State()
		dead, next = a, b
		return fmt.Sprintf("%+v / %+v", sa, sb), sa.Role == RoleStandbyLeader && sa.Streaming && sa.Upstream == primary.cfg.Node &&
			sb.Role == RoleReplica && sb.Streaming && sb.Upstream == a.cfg.Node
	})
	waitRow(t, next.node, 1)

	// The standby leader's node freezes: its postgres stops in its
	// tracks, every process of it (its backends and WAL receiver each
	// run in a session of their own), its connection to the primary open,
	// holding west's slot there; its keeper loses both etcds.
	pid := dead.srv.PID()
	frozen := fault.Tree(pid)
	for _, p := range frozen {
		if err := syscall.Kill(p, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range frozen {
			_ = syscall.Kill(p, syscall.SIGCONT)
		}
	})
	start := time.Now()
	r.globals[dead.cfg.Node].Close()
	dead.client.Close()
	waitFor(t, next.cfg.Node+" streams from the active primary as the standby leader", func() (string, bool) {
		m := next.State()
		return fmt.Sprintf("%+v", m), m.Role == RoleStandbyLeader && m.Upstream == primary.cfg.Node && m.Streaming
	})
	took := time.Since(start)
	if frozen, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); !strings.Contains(string(frozen), ") T ") {
		t.Errorf("%s streamed only once the frozen standby leader's postgres had ended (%q): the primary did not free its region's slot for it", next.cfg.Node, frozen)
	}
	t.Logf("the standby leader's stream was taken over %v after its node froze (the region's database lease %v)", took.Round(time.Millisecond), time.Second)
	primary.exec(t, "INSERT INTO t VALUES (2)")
	waitRow(t, next.node, 2)
	if out, err := primary.node.tryQuery("SELECT active::text FROM pg_replication_slots WHERE slot_name = '" + RegionSlot("west") + "'"); err != nil || out != "true" {
		t.Errorf("west's slot on the primary: active=%q %v, want true", out, err)
	}
}

// TestRegionSyncLosesNothing runs dr.mode: sync: every commit waits for
// west's standby leader too, so when east is lost under a steady writer,
// west takes over with every acknowledged row, though its max_lag (1ms)
// would not let a lagging async standby take over.
func TestRegionSyncLosesNothing(t *testing.T) {
	r := newTwoRegions(t)
	sync := func(c *RegionConfig) { c.Sync, c.MaxLag = true, time.Millisecond }
	e1 := r.start("east", newNode(t, "e1"), []string{"e1"}, sync)
	w1 := r.start("west", newNode(t, "w1"), []string{"w1"}, sync)
	leaderOf(t, e1)
	waitFor(t, "commits wait for west's standby leader", func() (string, bool) {
		s := e1.Sync()
		return fmt.Sprintf("%+v", s), s.DR == "w1"
	})
	e1.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	w := startWriter(t, 1, e1, w1)
	for w.count() < 100 {
		time.Sleep(20 * time.Millisecond)
	}
	r.cut(e1)
	waitFor(t, "west promoted", func() (string, bool) {
		return fmt.Sprint(w1.State().Role), w1.Leader() && w1.State().Role == RolePrimary
	})
	for c := w.count(); w.count() < c+20; {
		time.Sleep(20 * time.Millisecond)
	}
	w.halt()
	w.mu.Lock()
	acked := append([]int(nil), w.acked...)
	w.mu.Unlock()
	mustHaveAll(t, w1, acked)
	t.Logf("%d writes acknowledged, none lost; longest pause %v", len(acked), w.longestGap().Round(time.Millisecond))
}

// TestActivePrimaryIsOnTheNewestTimeline: after a failover inside the
// active region, the old primary's state (cut off, it cannot say it
// stopped) and the new one's both claim the region's epoch until the old
// entry expires; the standby region follows the new primary whatever the
// order the states come in.
func TestActivePrimaryIsOnTheNewestTimeline(t *testing.T) {
	old := RegionState{Node: "e1", Region: "east", Active: true, RegionEpoch: 7,
		Member: MemberState{Node: "e1", Role: RolePrimary, Timeline: 3, LSN: 900}}
	next := RegionState{Node: "e2", Region: "east", Active: true, RegionEpoch: 7,
		Member: MemberState{Node: "e2", Role: RolePrimary, Timeline: 4, LSN: 800}}
	for range 20 { // map order varies from one iteration to the next
		r := &regionPart{cfg: RegionConfig{Name: "west"}}
		r.setStates(time.Now(), map[string]RegionState{"e1": old, "e2": next})
		if a := r.activePrimary(); a.Node != "e2" {
			t.Fatalf("the active primary is %q, want e2 (timeline 4, not the old primary's 3)", a.Node)
		}
	}
	newer := old
	newer.RegionEpoch = 8
	r := &regionPart{cfg: RegionConfig{Name: "west"}}
	r.setStates(time.Now(), map[string]RegionState{"e1": newer, "e2": next})
	if a := r.activePrimary(); a.Node != "e1" {
		t.Errorf("the active primary is %q, want e1: a newer region epoch comes first", a.Node)
	}
}

// TestActivePrimaryRecreatesAMissingRegionSlot drops, on the active
// region's primary, the slot the other region's standby leader streams
// through, as a primary restored from a backup has none: the primary
// creates it again, and the standby region streams again (with no archive
// here, streaming is its only way to get the new row).
func TestActivePrimaryRecreatesAMissingRegionSlot(t *testing.T) {
	r := newTwoRegions(t)
	primary := r.start("east", newNode(t, "e1"), []string{"e1"})
	sl := r.start("west", newNode(t, "w1"), []string{"w1"})
	leaderOf(t, primary)
	waitRegionState(t, primary, "west's standby leader streaming from east's primary", func(s RegionState) bool {
		return s.Region == "west" && s.Member.Role == RoleStandbyLeader && s.Member.Streaming && s.Member.Upstream == primary.cfg.Node
	})
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	primary.exec(t, "INSERT INTO t VALUES (1)")
	waitRow(t, sl.node, 1)

	// Its walsender ended first: PostgreSQL drops no slot in use (the
	// standby reconnects within a few seconds).
	slot := RegionSlot("west")
	waitFor(t, "west's slot dropped on the primary", func() (string, bool) {
		ended, err := primary.node.tryQuery(`SELECT count(pg_terminate_backend(active_pid))::text
			FROM pg_replication_slots WHERE slot_name = '` + slot + `' AND active_pid IS NOT NULL`)
		if err != nil {
			return err.Error(), false
		}
		dropped, err := primary.node.tryQuery(`SELECT count(pg_drop_replication_slot(slot_name))::text
			FROM pg_replication_slots WHERE slot_name = '` + slot + `' AND NOT active`)
		return fmt.Sprintf("walsenders ended %s, dropped %q %v", ended, dropped, err), err == nil && dropped == "1"
	})
	primary.exec(t, "INSERT INTO t VALUES (2)")
	waitRow(t, sl.node, 2)
	if out, err := primary.node.tryQuery("SELECT active::text FROM pg_replication_slots WHERE slot_name = '" + slot + "'"); err != nil || out != "true" {
		t.Errorf("west's slot on the primary: active=%q %v, want true", out, err)
	}
}
