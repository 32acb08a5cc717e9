package keeper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/coord"
	"github.com/haven-ha/haven/internal/pg"
)

// testKeeper is a Keeper on its own etcd client, running until stop.
type testKeeper struct {
	*Keeper
	node   *testServer
	client *clientv3.Client
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// startKeeper runs a keeper for node on a client of etcd until the test
// ends (or stop); edits change its configuration.
func startKeeper(t *testing.T, etcd string, node *testServer, nodes []string, mode Mode, edits ...func(*Config)) *testKeeper {
	t.Helper()
	cli, err := coord.NewClient(context.Background(), coord.ClientConfig{Endpoints: []string{etcd}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Server: node.Server, Client: cli, Cluster: "shop", Name: "main",
		Node: node.Name(), Nodes: nodes, Host: "127.0.0.1",
		Lease: time.Second, Mode: mode, SyncStandbys: 1, MaxLagOnFailover: 1 << 20,
		Replication: pg.Upstream{Password: testReplPassword},
		Logger:      node.logger,
	}
	for _, edit := range edits {
		edit(&cfg)
	}
	k, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tk := &testKeeper{Keeper: k, node: node, client: cli, cancel: cancel, done: make(chan error, 1)}
	go func() { tk.done <- k.Run(ctx) }()
	t.Cleanup(func() { tk.stop(t) })
	return tk
}

// stop ends the keeper (a graceful stop: it hands the primary over).
func (k *testKeeper) stop(t *testing.T) {
	k.once.Do(func() {
		k.cancel()
		select {
		case err := <-k.done:
			if err != nil {
				t.Logf("keeper %s: %v", k.cfg.Node, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("keeper %s did not stop within 30s", k.cfg.Node)
		}
		k.client.Close()
	})
}

// crash stands for the loss of the nodes of ks, all at once: their keepers
// lose etcd, so that nothing they do afterwards (their attempt to hand over
// on the way out) reaches the others, who wait out the lease, and their
// postgres is killed with SIGKILL again and again, so that the in-place
// restart never answers anyone, until the keepers have stopped.
func crash(t *testing.T, ks ...*testKeeper) {
	t.Helper()
	done := make(chan struct{})
	var killers sync.WaitGroup
	for _, k := range ks {
		k.client.Close()
		killers.Go(func() {
			for {
				if pid := k.srv.PID(); pid != 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				select {
				case <-done:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		})
	}
	var stops sync.WaitGroup
	for _, k := range ks {
		stops.Go(func() { k.stop(t) })
	}
	stops.Wait()
	close(done)
	killers.Wait()
}

// waitCluster waits until primary is the primary and every other keeper
// streams from it, as published in etcd.
func waitCluster(t *testing.T, primary *testKeeper, replicas ...*testKeeper) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s primary, %d replicas streaming", primary.cfg.Node, len(replicas)), func() (string, bool) {
		members := primary.Members()
		var seen []string
		ok := members[primary.cfg.Node].Role == RolePrimary && primary.Leader()
		for _, r := range replicas {
			m := members[r.cfg.Node]
			ok = ok && m.Role == RoleReplica && m.Streaming && m.Upstream == primary.cfg.Node
		}
		for _, m := range members {
			seen = append(seen, fmt.Sprintf("%s=%s(tl %d, lsn %s, streaming %v)", m.Node, m.Role, m.Timeline, m.LSN, m.Streaming))
		}
		return strings.Join(seen, " "), ok
	})
}

// leaderOf waits until one of ks leads and returns it and the others.
func leaderOf(t *testing.T, ks ...*testKeeper) (*testKeeper, []*testKeeper) {
	t.Helper()
	var leader *testKeeper
	waitFor(t, "a leader", func() (string, bool) {
		for _, k := range ks {
			if k.Leader() {
				leader = k
				return k.cfg.Node, true
			}
		}
		return "none", false
	})
	var rest []*testKeeper
	for _, k := range ks {
		if k != leader {
			rest = append(rest, k)
		}
	}
	return leader, rest
}

// waitSync waits until the leader's sync record makes every commit wait
// for k of n standbys.
func waitSync(t *testing.T, leader *testKeeper, k, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("sync record k=%d of %d standbys", k, n), func() (string, bool) {
		s := leader.Sync()
		return fmt.Sprintf("%+v", s), s.Leader == leader.cfg.Node && s.K == k && len(s.Standbys) == n
	})
}

func (k *testKeeper) exec(t *testing.T, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := k.srv.Connect(ctx)
	if err != nil {
		t.Fatalf("%s: %v", k.cfg.Node, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("%s: %s: %v", k.cfg.Node, sql, err)
	}
}

// TestKeeperFailover runs three keepers in sync mode: one initialises the
// cluster and the others clone it; when the primary's node dies the
// replica promoted has every acknowledged row, the other follows it, and
// the old primary rejoins as a replica when its node comes back.
func TestKeeperFailover(t *testing.T) {
	nodes := []string{"db1", "db2", "db3"}
	etcd, primary, replicas := startCluster(t, ModeSync, nodes...)

	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	for i := 1; i <= 50; i++ {
		primary.exec(t, fmt.Sprintf("INSERT INTO t VALUES (%d)", i)) // acknowledged
	}
	waitSync(t, primary, 1, 2)
	waitFor(t, "haven_pg_primary 1 on the primary only, k=1", func() (string, bool) {
		var seen []string
		ok := testutil.ToFloat64(primary.metrics.syncK) == 1
		for _, k := range append([]*testKeeper{primary}, replicas...) {
			v := testutil.ToFloat64(k.metrics.primary)
			seen = append(seen, fmt.Sprintf("%s=%v", k.cfg.Node, v))
			ok = ok && v == map[bool]float64{true: 1, false: 0}[k == primary]
		}
		return strings.Join(seen, " "), ok
	})

	old := primary
	crash(t, old)
	primary, replicas = leaderOf(t, replicas...)
	waitCluster(t, primary, replicas...)
	var n string
	waitFor(t, "all 50 acknowledged rows on the new primary", func() (string, bool) {
		v, err := primary.node.tryQuery("SELECT count(*) FROM t")
		n = v
		return fmt.Sprint(v, err), err == nil
	})
	if n != "50" {
		t.Fatalf("after failover the new primary %s has %s of 50 acknowledged rows", primary.cfg.Node, n)
	}
	primary.exec(t, "INSERT INTO t VALUES (51)")

	// The old primary's node comes back: it rejoins as a replica.
	back := startKeeper(t, etcd, old.node, nodes, ModeSync)
	waitCluster(t, primary, append(replicas, back)...)
	waitRow(t, old.node, 51)
}

// startCluster starts keepers for nodes and waits until one leads and the
// others stream from it.
func startCluster(t *testing.T, mode Mode, nodes ...string) (etcd string, primary *testKeeper, replicas []*testKeeper) {
	t.Helper()
	etcd = startEtcd(t)
	var keepers []*testKeeper
	for _, n := range nodes {
		keepers = append(keepers, startKeeper(t, etcd, newNode(t, n), nodes, mode))
	}
	primary, replicas = leaderOf(t, keepers...)
	waitCluster(t, primary, replicas...)
	return etcd, primary, replicas
}

// writer inserts rows into t through whichever node leads, one at a time,
// until stop, and records the ids whose COMMIT returned.
type writer struct {
	mu      sync.Mutex
	acked   []int
	ackedAt []time.Time
	errs    int
	stop    chan struct{}
	done    chan struct{}
}

// count returns how many writes were acknowledged so far.
func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func startWriter(t *testing.T, from int, keepers ...*testKeeper) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		id := from
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			for _, k := range keepers {
				if !k.Leader() {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				conn, err := k.srv.Connect(ctx)
				if err == nil {
					_, err = conn.Exec(ctx, fmt.Sprintf("INSERT INTO t VALUES (%d)", id))
					conn.Close(ctx)
				}
				cancel()
				w.mu.Lock()
				if err == nil {
					w.acked = append(w.acked, id)
					w.ackedAt = append(w.ackedAt, time.Now())
				} else {
					w.errs++
				}
				w.mu.Unlock()
				id++ // an unacknowledged id may or may not be there: never reused
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return w
}

func (w *writer) halt() {
	close(w.stop)
	<-w.done
}

// longestGap is the longest time between two acknowledged writes.
func (w *writer) longestGap() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var gap time.Duration
	for i := 1; i < len(w.ackedAt); i++ {
		gap = max(gap, w.ackedAt[i].Sub(w.ackedAt[i-1]))
	}
	return gap
}

// mustHaveAll fails unless every acknowledged id is on k.
func mustHaveAll(t *testing.T, k *testKeeper, acked []int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := k.srv.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, "SELECT id FROM t")
	if err != nil {
		t.Fatal(err)
	}
	have := map[int]bool{}
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		have[id] = true
	}
	var lost []int
	for _, id := range acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged rows missing on %s: %v", len(lost), len(acked), k.cfg.Node, lost)
	}
}

// TestKeeperRestartAndSwitchover: a primary whose postmaster is killed is
// restarted in place and keeps the lead; a switchover under a steady
// writer loses no acknowledged row and the old primary follows the new.
// (TestPrimaryKeepsTheLeadThroughARestartInPlace drives the decision.)
func TestKeeperRestartAndSwitchover(t *testing.T) {
	etcd, primary, replicas := startCluster(t, ModeSync, "db1", "db2", "db3")
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")

	lead := primary.Owner().Status()
	pid := primary.srv.PID()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the killed primary back, same node", func() (string, bool) {
		_, err := primary.node.tryQuery("SELECT 1")
		return fmt.Sprint(err), err == nil && primary.srv.PID() != pid
	})
	// The same lead throughout: a failover, even one that came back, would
	// have taken a new fencing epoch.
	if after := primary.Owner().Status(); !primary.Leader() || after.Holder != primary.cfg.Node || after.Epoch != lead.Epoch {
		t.Fatalf("after an in-place restart of %s's postgres the record names %s at epoch %d (leader %v); want %s still, at epoch %d",
			primary.cfg.Node, after.Holder, after.Epoch, primary.Leader(), primary.cfg.Node, lead.Epoch)
	}

	all := append([]*testKeeper{primary}, replicas...)
	w := startWriter(t, 1, all...)
	waitFor(t, "writes going", func() (string, bool) { return fmt.Sprint(w.count()), w.count() >= 20 })
	to := replicas[1]
	cli := replicas[0].client
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// On a loaded machine a holder starved of CPU for a lease loses the
	// record to a failover before it hands over; ask again until the
	// target leads (no acknowledged row may be lost either way).
	var asked time.Time
	waitFor(t, to.cfg.Node+" leads", func() (string, bool) {
		if to.Leader() {
			return "", true
		}
		if time.Since(asked) > 5*time.Second {
			if !asked.IsZero() {
				t.Logf("%s does not lead 5s after the switchover request; asking again", to.cfg.Node)
			}
			asked = time.Now()
			if err := Switchover(ctx, cli, "shop", "main", to.cfg.Node); err != nil {
				t.Fatal(err)
			}
		}
		return "", false
	})
	before := w.count()
	waitFor(t, "writes going on the new primary", func() (string, bool) {
		return fmt.Sprint(w.count()), w.count() >= before+10
	})
	w.halt()
	mustHaveAll(t, to, w.acked)
	waitCluster(t, to, primary, replicas[0])
	t.Logf("switchover with a writer: %d rows acknowledged, %d writes failed", len(w.acked), w.errs)

	// The old primary, now a replica, drops the slots it kept for the
	// others while it led (a replica keeps its WAL for them: its disk
	// would fill); the new primary keeps one for each other node.
	slotsOf := func(k *testKeeper) []string {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		slots, err := k.srv.Slots(sctx)
		if err != nil {
			return []string{err.Error()}
		}
		var names []string
		for _, sl := range slots {
			names = append(names, sl.Name)
		}
		return names
	}
	waitFor(t, primary.cfg.Node+" drops the slots it kept as the primary", func() (string, bool) {
		names := slotsOf(primary)
		return fmt.Sprint(names), len(names) == 0
	})
	if names := slotsOf(to); !slices.Contains(names, pg.SlotName(primary.cfg.Node)) || !slices.Contains(names, pg.SlotName(replicas[0].cfg.Node)) {
		t.Errorf("the new primary %s has slots %v; want one for %s and one for %s", to.cfg.Node, names, primary.cfg.Node, replicas[0].cfg.Node)
	}
	_ = etcd
}

// TestKeeperStrictWaitsForTheLostStandby: in strict mode, when the primary
// and a synchronous standby are lost together, the remaining standby
// cannot know it has every acknowledged commit: it says why it is not
// promoted; once the lost standby is back, one of them is, with every
// acknowledged row. That it is never promoted meanwhile is the machine's
// decision, driven through a minute of simulated time by
// TestStrictStandbyAloneIsNeverPromoted.
func TestKeeperStrictWaitsForTheLostStandby(t *testing.T) {
	etcd, primary, replicas := startCluster(t, ModeStrict, "db1", "db2", "db3")
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	primary.exec(t, "INSERT INTO t VALUES (1)")
	waitSync(t, primary, 1, 2)
	lostStandby, left := replicas[0], replicas[1]
	crash(t, primary, lostStandby)

	waitFor(t, left.cfg.Node+" says why it is not promoted", func() (string, bool) {
		st := left.State()
		if strings.Contains(st.NotPromotable, "synchronous standbys") {
			return st.NotPromotable, true
		}
		// The kills are not simultaneous: a primary that saw the lost
		// standby's replication end before its own death narrowed its
		// synchronous standbys to left alone (seen in CI), and left then
		// leads by the record's rule. Whether it has every commit
		// acknowledged before the narrowing is the row check's below:
		// syncTarget narrows without waiting for the remaining standby
		// to catch up (a gap noted for the keeper, not this test's).
		// The record is read from etcd's history: the primary's own
		// copy misses a write that etcd applied while the crash closed
		// its client (CI, 2026-12-07: left promoted under a record the
		// primary's copy did not show).
		last := lastSyncRecordOf(t, etcd, primary.cfg.Node)
		narrowed := slices.Equal(last.Standbys, []string{left.cfg.Node})
		return fmt.Sprintf("not promotable %q; role %s; the primary's last sync record %+v", st.NotPromotable, st.Role, last), narrowed
	})

	back := startKeeper(t, etcd, lostStandby.node, []string{"db1", "db2", "db3"}, ModeStrict)
	leader, _ := leaderOf(t, left, back)
	waitRow(t, leader.node, 1)
}

// TestKeeperNarrowsTheSyncRecordOnceTheRestCaughtUp: with ANY 1 (db2,
// db3), a commit acknowledged by db2 alone is on db2 alone. When db2 is
// lost, postgres stops waiting for it at once, but the sync record names
// db2 until db3 has received the WAL written before: a record naming db3
// alone would let db3 be promoted by itself without that commit.
func TestKeeperNarrowsTheSyncRecordOnceTheRestCaughtUp(t *testing.T) {
	etcd, primary, replicas := startCluster(t, ModeSync, "db1", "db2", "db3")
	primary.exec(t, "CREATE TABLE t (id int PRIMARY KEY)")
	waitSync(t, primary, 1, 2)
	var lost, kept *testKeeper
	for _, r := range replicas {
		switch r.cfg.Node {
		case "db2":
			lost = r
		case "db3":
			kept = r
		}
	}
	// db3 stops receiving: its WAL receiver is stopped, and the primary
	// still counts it as streaming (wal_sender_timeout is a minute).
	pid, err := kept.node.tryQuery("SELECT pid::text FROM pg_stat_wal_receiver")
	if err != nil {
		t.Fatal(err)
	}
	receiver, _ := strconv.Atoi(pid)
	if err := syscall.Kill(receiver, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(receiver, syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	primary.exec(t, "INSERT INTO t VALUES (1)") // acknowledged by db2 alone
	crash(t, lost)

	waitFor(t, "the primary's commits wait for db3 alone", func() (string, bool) {
		v, err := primary.node.tryQuery("SHOW synchronous_standby_names")
		return fmt.Sprint(v, err), err == nil && v == `ANY 1 ("db3")`
	})
	for range 20 {
		if rec := lastSyncRecordOf(t, etcd, primary.cfg.Node); !slices.Contains(rec.Standbys, "db2") {
			t.Fatalf("the sync record %+v no longer names db2 while db3, stopped, lacks the row only db2 acknowledged", rec)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resume()
	waitFor(t, "the sync record narrowed to db3 once it caught up", func() (string, bool) {
		rec := lastSyncRecordOf(t, etcd, primary.cfg.Node)
		return fmt.Sprintf("%+v", rec), slices.Equal(rec.Standbys, []string{"db3"})
	})
	waitRow(t, kept.node, 1)
}

// lastSyncRecordOf returns the last sync record leader wrote to etcd,
// walking back the record's history past later leaders' records (zero
// when it wrote none).
func lastSyncRecordOf(t *testing.T, etcd, leader string) SyncState {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var opts []clientv3.OpOption
	for {
		resp, err := cli.Get(ctx, SyncKey("shop", "main"), opts...)
		if err != nil {
			t.Fatalf("read the sync record's history: %v", err)
		}
		if len(resp.Kvs) == 0 {
			return SyncState{}
		}
		kv := resp.Kvs[0]
		var s SyncState
		if err := json.Unmarshal(kv.Value, &s); err == nil && s.Leader == leader {
			return s
		}
		if kv.Version == 1 {
			return SyncState{}
		}
		opts = []clientv3.OpOption{clientv3.WithRev(kv.ModRevision - 1)}
	}
}

// TestWaitRunning: bootstrap's wait for postgres ends when the supervisor
// reports it running, and at once when the session ends (Release stopped
// it), instead of waiting, until the keeper stops, for a state no session
// will reach.
func TestWaitRunning(t *testing.T) {
	s := newNode(t, "db1")
	sup, err := pg.NewSupervisor(s.Server, pg.RestartPolicy{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	k := &Keeper{srv: s.Server, sup: sup, changed: make(chan struct{}), wake: make(chan struct{}, 1)}
	sup.OnChange(k.onSupervisorChange)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()

	if err := k.waitRunning(ctx); !errors.Is(err, errStoppedWhileInitialising) {
		t.Fatalf("waitRunning without a session = %v, want %v", err, errStoppedWhileInitialising)
	}
	ended := &supSession{done: make(chan struct{})}
	close(ended.done)
	k.session = ended // Release ended it; stopPostgres has not cleared it yet
	if err := k.waitRunning(ctx); !errors.Is(err, errStoppedWhileInitialising) {
		t.Fatalf("waitRunning with an ended session = %v, want %v", err, errStoppedWhileInitialising)
	}

	k.session = nil
	if err := s.Init(ctx); err != nil {
		t.Fatal(err)
	}
	k.startSupervisor(ctx)
	defer k.stopPostgres()
	if err := k.waitRunning(ctx); err != nil {
		t.Fatalf("waitRunning while postgres starts = %v (supervisor: %v), want nil once it runs", err, sup.Status().State)
	}
	if st := sup.Status().State; st != pg.StateRunning {
		t.Fatalf("waitRunning returned with the supervisor %v", st)
	}
}

// A write of the sync record that is carried out late (it timed out against
// a frozen etcd member, which reads it when it wakes) does nothing: a late
// record naming fewer standbys than postgres waits for would let a node
// outside the real set be promoted. A newer record of another leader's is
// overwritten by the next write.
func TestSyncRecordLateWriteUndoesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd")
	}
	cli, err := coord.NewClient(context.Background(), coord.ClientConfig{Endpoints: []string{startEtcd(t)}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	k := &Keeper{cfg: Config{Client: cli, Cluster: "shop", Name: "main"}}
	stored := func() SyncState {
		t.Helper()
		resp, err := cli.Get(ctx, SyncKey("shop", "main"))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get the sync record: %v, %d keys", err, len(resp.Kvs))
		}
		var s SyncState
		if err := json.Unmarshal(resp.Kvs[0].Value, &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	narrow := SyncState{Leader: "db1", K: 1, Standbys: []string{"db2"}}
	wide := SyncState{Leader: "db1", K: 1, Standbys: []string{"db2", "db3"}}
	if err := k.putSync(ctx, narrow); err != nil {
		t.Fatal(err)
	}
	before := k.syncRev
	if err := k.putSync(ctx, wide); err != nil {
		t.Fatal(err)
	}
	key := SyncKey("shop", "main")
	if got, err := cli.Get(ctx, key); err != nil || got.Kvs[0].ModRevision != k.syncRev || before == 0 || before >= k.syncRev {
		t.Fatalf("putSync's revisions %d then %d, the record's %v (%v): the writes are not fenced by the revision they made", before, k.syncRev, got, err)
	}
	// The narrow write, as putSync sent it then, carried out now.
	data, _ := json.Marshal(narrow)
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", before)).Then(clientv3.OpPut(key, string(data))).Commit()
	if err != nil || resp.Succeeded {
		t.Errorf("the late write: succeeded %v, %v; want it refused", resp != nil && resp.Succeeded, err)
	}
	if s := stored(); len(s.Standbys) != 2 {
		t.Fatalf("after a late write the record names %v; want db2 and db3", s.Standbys)
	}
	// Another leader's record: the next write finds it and writes over it.
	other, _ := json.Marshal(SyncState{Leader: "db3"})
	if _, err := cli.Put(ctx, key, string(other)); err != nil {
		t.Fatal(err)
	}
	if err := k.putSync(ctx, narrow); err != nil {
		t.Fatalf("putSync over another leader's record: %v", err)
	}
	if s := stored(); s.Leader != "db1" || len(s.Standbys) != 1 {
		t.Errorf("the record is %+v; want db1's, naming db2", s)
	}
}
