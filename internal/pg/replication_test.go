package pg

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/haven-ha/haven/internal/testenv"
)

const testReplPassword = `s3cret 'it''s' \ ok`

// newNode makes a test server named name that accepts replication and
// pg_rewind from 127.0.0.1 as DefaultReplicationUser.
func newNode(t *testing.T, name string) *testServer {
	t.Helper()
	return newTestServer(t, func(c *Config) {
		c.Name = name
		c.HBA = ReplicationHBA(DefaultReplicationUser, "127.0.0.1/32")
	})
}

// newPrimary returns a started node that has the replication user.
func newPrimary(t *testing.T, name string) *testServer {
	t.Helper()
	p := newNode(t, name)
	p.initStart(t)
	if err := p.EnsureReplicationUser(testCtx(t), "", testReplPassword); err != nil {
		t.Fatal(err)
	}
	return p
}

// upstream is how a replica reaches s, through slot.
func (s *testServer) upstream(slot string) Upstream {
	return Upstream{Host: "127.0.0.1", Port: s.Port(), Password: testReplPassword, Slot: slot}
}

// testCtx is a context bounded by testTimeout.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitFor polls cond until it returns true, failing with what it returned
// last when testTimeout passes.
func waitFor(t *testing.T, what string, cond func() (string, bool)) {
	t.Helper()
	testenv.Poll(t, testTimeout, what, func() (bool, string) {
		seen, ok := cond()
		return ok, seen
	})
}

// tryQuery runs sql on a new connection and returns the first column of
// the first row as text, or the error as text.
func (s *testServer) tryQuery(sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	conn, err := s.Connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var v string
	err = conn.QueryRow(ctx, sql).Scan(&v)
	return v, err
}

// waitRow waits until the row id of table t is on s.
func waitRow(t *testing.T, s *testServer, id int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("row %d on %s", id, s.cfg.name), func() (string, bool) {
		v, err := s.tryQuery(fmt.Sprintf("SELECT count(*)::text FROM t WHERE id = %d", id))
		return fmt.Sprintf("%q, %v", v, err), err == nil && v == "1"
	})
}

// stop stops s with a fast shutdown.
func (s *testServer) stop(t *testing.T) {
	t.Helper()
	if err := s.Stop(testCtx(t), StopFast); err != nil {
		t.Fatal(err)
	}
}

// standbyStates formats pg_stat_replication as name:state:sync_state.
func standbyStates(sts []Standby) string {
	var out []string
	for _, st := range sts {
		out = append(out, st.Name+":"+st.State+":"+st.SyncState)
	}
	return strings.Join(out, " ")
}

// TestReplication runs a primary and two replicas cloned through slots:
// streaming, quorum commit, promotion, following the new primary, and the
// rewind of the old primary.
func TestReplication(t *testing.T) {
	t.Parallel()
	p := newPrimary(t, "p")
	r1 := newNode(t, "r1")
	r2 := newNode(t, "r2")
	ctx := testCtx(t)

	if err := p.EnsureReplicationUser(ctx, "", testReplPassword); err != nil {
		t.Fatalf("EnsureReplicationUser again: %v", err)
	}
	for _, slot := range []string{"r1", "r2", "r2"} {
		if err := p.CreateSlot(ctx, slot); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.CreateSlot(ctx, "Bad-Name"); err == nil {
		t.Error("CreateSlot(Bad-Name) succeeded")
	}
	p.exec(t, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")

	// Clone both replicas through their slots.
	if err := r1.Clone(ctx, p.upstream("r1")); err != nil {
		t.Fatal(err)
	}
	if err := r2.Clone(ctx, p.upstream("r2")); err != nil {
		t.Fatal(err)
	}
	if err := r2.Clone(ctx, p.upstream("r2")); err == nil {
		t.Error("Clone on a running replica succeeded")
	}
	waitRow(t, r1, 1)
	waitRow(t, r2, 1)
	p.exec(t, "INSERT INTO t VALUES (2)")
	waitRow(t, r1, 2)
	waitRow(t, r2, 2)

	// Lag in seconds: r1 receives WAL it does not replay while replay is
	// paused; the delay is the age of its last replayed transaction, and
	// goes back to 0 once replay catches up.
	r1.exec(t, "SELECT pg_wal_replay_pause()")
	p.exec(t, "INSERT INTO t VALUES (1000)")
	waitFor(t, "r1 reports a replay delay while paused", func() (string, bool) {
		pos, err := r1.Position(ctx)
		return fmt.Sprintf("%+v %v", pos, err), err == nil && pos.Received > pos.Replayed && pos.ReplayDelay > 0
	})
	r1.exec(t, "SELECT pg_wal_replay_resume()")
	waitRow(t, r1, 1000)
	waitFor(t, "r1's replay delay back to 0", func() (string, bool) {
		pos, err := r1.Position(ctx)
		return fmt.Sprintf("%+v %v", pos, err), err == nil && pos.ReplayDelay == 0
	})
	if pos, err := p.Position(ctx); err != nil || pos.ReplayDelay != 0 {
		t.Errorf("the primary's Position = %+v, %v; want no replay delay", pos, err)
	}

	slots, err := p.Slots(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(slots) != 2 || slots[0].Name != "r1" || !slots[0].Active || slots[1].Name != "r2" || !slots[1].Active ||
		slots[0].RestartLSN == 0 || slots[0].WALStatus != "reserved" {
		t.Errorf("Slots = %+v; want r1 and r2, active, reserved", slots)
	}
	waitFor(t, "pg_stat_replication lists r1 and r2 streaming", func() (string, bool) {
		sts, err := p.Replication(ctx)
		if err != nil {
			return err.Error(), false
		}
		ok := len(sts) == 2 && sts[0].Name == "r1" && sts[1].Name == "r2"
		for _, st := range sts {
			ok = ok && st.State == "streaming" && st.ClientAddr == "127.0.0.1" && st.SyncState == "async" &&
				st.Sent != 0 && st.Replay != 0
		}
		return fmt.Sprintf("%+v", sts), ok
	})
	if recv, err := r1.WALReceiver(ctx); err != nil || recv.Slot != "r1" || recv.Timeline != 1 || recv.SenderPort != p.Port() {
		t.Errorf("r1 WALReceiver = %+v, %v", recv, err)
	}

	// Quorum commit: ANY 1 of r1, r2.
	sts, err := p.SetSynchronousStandbys(ctx, 1, []string{"r1", "r2"})
	if err != nil {
		t.Fatal(err)
	}
	if got := standbyStates(sts); got != "r1:streaming:quorum r2:streaming:quorum" {
		t.Errorf("SetSynchronousStandbys(1, r1 r2) reports %s; want both quorum", got)
	}
	if got := p.queryString(t, "SHOW synchronous_standby_names"); got != `ANY 1 ("r1", "r2")` {
		t.Errorf("synchronous_standby_names = %s", got)
	}
	r2.stop(t)
	p.exec(t, "INSERT INTO t VALUES (3)") // r1 acknowledges
	waitRow(t, r1, 3)
	r1.stop(t)

	// Neither replica runs: the commit waits for one.
	committed := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		conn, err := p.Connect(cctx)
		if err != nil {
			committed <- err
			return
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(cctx, "INSERT INTO t VALUES (4)")
		committed <- err
	}()
	waitFor(t, "the commit of row 4 waits for a synchronous standby", func() (string, bool) {
		v, err := p.tryQuery(`SELECT COALESCE(string_agg(wait_event, ','), '') FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t VALUES (4)%'`)
		return fmt.Sprintf("wait events %q, %v", v, err), err == nil && v == "SyncRep"
	})
	select {
	case err := <-committed:
		t.Fatalf("the commit of row 4 returned (%v) with no synchronous standby running", err)
	default:
	}
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-committed; err != nil {
		t.Fatalf("the commit of row 4, once r1 is back: %v", err)
	}
	waitRow(t, p, 4)
	waitRow(t, r1, 4)
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := r2.WaitStreaming(ctx, p.upstream("r2"), 1); err != nil {
		t.Fatal(err)
	}
	waitRow(t, r2, 4)
	sts, err = p.SetSynchronousStandbys(ctx, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := standbyStates(sts); got != "r1:streaming:async r2:streaming:async" {
		t.Errorf("SetSynchronousStandbys(0) reports %s; want both async", got)
	}

	// Promote r1; r2 follows it on timeline 2.
	tli, err := r1.Promote(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tli != 2 {
		t.Errorf("Promote: timeline %d; want 2", tli)
	}
	if _, err := r1.Promote(ctx); err == nil {
		t.Error("Promote on a primary succeeded")
	}
	if err := r1.CreateSlot(ctx, "r2"); err != nil {
		t.Fatal(err)
	}
	if err := r2.Follow(ctx, r1.upstream("r2"), tli); err != nil {
		t.Fatal(err)
	}
	r1.exec(t, "INSERT INTO t VALUES (5)")
	waitRow(t, r2, 5)
	if pos, err := r2.Position(ctx); err != nil || pos.Timeline != 2 || !pos.InRecovery {
		t.Errorf("r2 Position = %+v, %v; want in recovery on timeline 2", pos, err)
	}
	if err := p.DropSlot(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if err := p.DropSlot(ctx, "r1"); err != nil {
		t.Errorf("DropSlot again: %v", err)
	}
	if slots, err := p.Slots(ctx); err != nil || len(slots) != 1 || slots[0].Name != "r2" {
		t.Errorf("Slots after dropping r1 = %+v, %v", slots, err)
	}

	testRewind(t, p, r1)
}

// testRewind: the old primary p writes a row nobody receives, crashes, is
// rewound and follows r1; the diverged row is gone.
func testRewind(t *testing.T, p, r1 *testServer) {
	ctx := testCtx(t)
	p.exec(t, "INSERT INTO t VALUES (100)")
	before, err := p.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Stop(ctx, StopImmediate); err != nil {
		t.Fatal(err)
	}
	if err := r1.CreateSlot(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	res, err := p.Rewind(ctx, r1.upstream("p"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rewind: %+v", res)
	if !res.Rewound || res.DivergedAt == 0 || res.DivergedTimeline != 1 || res.TargetTimeline != 1 ||
		res.TargetEnd < before.Current || res.DivergedAt > res.TargetEnd {
		t.Errorf("Rewind = %+v; want rewound, diverged on timeline 1 before the end %v", res, before.Current)
	}
	// Row 100's commit is among what was discarded.
	if d := res.Discarded; res.DiscardedErr != nil || d.Transactions < 1 || d.Kinds["Transaction/COMMIT"] < 1 || d.From != res.DivergedAt || d.To <= res.TargetEnd {
		t.Errorf("Rewind discarded %+v (%v); want the commit of row 100 among it, up to past %s", d, res.DiscardedErr, res.TargetEnd)
	}
	waitRow(t, p, 5)
	if v := p.queryString(t, "SELECT count(*)::text FROM t WHERE id = 100"); v != "0" {
		t.Errorf("the diverged row is still on the rewound primary (%s rows)", v)
	}
	r1.exec(t, "INSERT INTO t VALUES (6)")
	waitRow(t, p, 6)
	waitFor(t, "r1 lists p and r2 streaming", func() (string, bool) {
		sts, err := r1.Replication(ctx)
		got := standbyStates(sts)
		return fmt.Sprintf("%s %v", got, err), got == "p:streaming:async r2:streaming:async"
	})
}

// TestRewindImpossible: a data directory of another cluster cannot be
// rewound onto a primary; the error says to clone again.
func TestRewindImpossible(t *testing.T) {
	t.Parallel()
	p := newPrimary(t, "p")
	other := newNode(t, "other")
	ctx := testCtx(t)
	other.initStart(t)
	other.stop(t)
	_, err := other.Rewind(ctx, p.upstream(""))
	if !errors.Is(err, ErrRewindImpossible) || !strings.Contains(err.Error(), "different systems") {
		t.Fatalf("Rewind from another cluster = %v; want ErrRewindImpossible, naming different systems", err)
	}
	if other.PID() != 0 {
		t.Errorf("Rewind failed but started postgres (pid %d)", other.PID())
	}
	// It can only start as a replica of p now, never as a primary.
	if _, err := os.Stat(filepath.Join(other.DataDir(), standbySignal)); err != nil {
		t.Errorf("after a failed rewind: %v; want standby.signal", err)
	}
	if _, err := other.Rewind(ctx, p.upstream("")); err == nil {
		t.Error("a second Rewind succeeded")
	}

	unnamed := newTestServer(t, nil)
	if err := unnamed.Clone(ctx, p.upstream("")); !errors.Is(err, ErrNoName) {
		t.Errorf("Clone without a name = %v; want ErrNoName", err)
	}
}

// TestRewindInterrupted: a pg_rewind killed half way leaves a data
// directory that may hold pages of two histories. It never starts and is
// not rewound again; a new copy (Clone, after the caller sets it aside)
// clears the mark, and the node comes back on the new primary's history.
func TestRewindInterrupted(t *testing.T) {
	t.Parallel()
	p := newPrimary(t, "p")
	r1 := newNode(t, "r1")
	ctx := testCtx(t)
	if err := p.CreateSlot(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	p.exec(t, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	if err := r1.Clone(ctx, p.upstream("r1")); err != nil {
		t.Fatal(err)
	}
	waitRow(t, r1, 1)
	if _, err := r1.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	r1.exec(t, "INSERT INTO t VALUES (2)")
	p.exec(t, "INSERT INTO t VALUES (100)") // diverges: only p has it
	if err := p.Stop(ctx, StopImmediate); err != nil {
		t.Fatal(err)
	}
	if err := r1.CreateSlot(ctx, "p"); err != nil {
		t.Fatal(err)
	}

	// The same data directory, with a pg_rewind that is killed a moment
	// after it starts for real (its dry run goes through).
	real := requirePostgres(t)
	bindir := testenv.WrapDir(t, real.Dir, "pg_rewind", func(string) string {
		return fmt.Sprintf(`#!/bin/sh
case " $* " in *" --dry-run "*) exec %[1]s "$@";; esac
%[1]s "$@" & sleep 0.1; kill -9 $!
echo "pg_rewind killed half way by the test" >&2
exit 137
`, real.Path("pg_rewind"))
	})
	q := newTestServer(t, func(c *Config) {
		*c = p.conf
		c.Bindir = bindir
	})
	if _, err := q.Rewind(ctx, r1.upstream("p")); err == nil || errors.Is(err, ErrRewindImpossible) {
		t.Fatalf("Rewind with pg_rewind killed = %v; want an error that is not ErrRewindImpossible", err)
	}
	if !q.RewindIncomplete() || !p.RewindIncomplete() {
		t.Fatalf("RewindIncomplete after pg_rewind was killed = %v; want true", q.RewindIncomplete())
	}
	if err := p.Start(ctx); err == nil || !strings.Contains(err.Error(), "pg_rewind stopped before it finished") {
		t.Errorf("Start after an interrupted rewind = %v; want a refusal naming it", err)
	}
	if p.PID() != 0 {
		t.Fatalf("postgres started on a half-rewound data directory (pid %d)", p.PID())
	}
	if _, err := p.Rewind(ctx, r1.upstream("p")); !errors.Is(err, ErrRewindImpossible) {
		t.Errorf("Rewind after an interrupted one = %v; want ErrRewindImpossible (clone again)", err)
	}

	// Set aside and cloned, as the keeper does: the mark is gone.
	if err := os.Rename(p.DataDir(), p.DataDir()+".diverged"); err != nil {
		t.Fatal(err)
	}
	if err := p.Clone(ctx, r1.upstream("p")); err != nil {
		t.Fatal(err)
	}
	if p.RewindIncomplete() {
		t.Error("RewindIncomplete after a new copy = true")
	}
	waitRow(t, p, 2)
	if v := p.queryString(t, "SELECT count(*)::text FROM t WHERE id = 100"); v != "0" {
		t.Errorf("the diverged row is on the cloned node (%s rows)", v)
	}
}

// TestCloneInterrupted: a pg_basebackup killed half way (its source
// stopped leading) leaves half a copy, which the clone removes: the
// directory is empty, never a data directory that could start.
func TestCloneInterrupted(t *testing.T) {
	t.Parallel()
	p := newPrimary(t, "p")
	ctx := testCtx(t)
	if err := p.CreateSlot(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	real := requirePostgres(t)
	bindir := testenv.WrapDir(t, real.Dir, "pg_basebackup", func(string) string {
		return fmt.Sprintf(`#!/bin/sh
%[1]s "$@" & pid=$!
while [ ! -e "$2/PG_VERSION" ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done
kill -9 $pid
echo "pg_basebackup killed half way by the test" >&2
exit 137
`, real.Path("pg_basebackup"))
	})
	r1 := newTestServer(t, func(c *Config) {
		c.Name = "r1"
		c.Bindir = bindir
	})
	if err := r1.Clone(ctx, p.upstream("r1")); err == nil {
		t.Fatal("Clone with pg_basebackup killed succeeded")
	}
	entries, err := os.ReadDir(r1.DataDir())
	if err != nil || len(entries) != 0 || r1.HasData() {
		t.Errorf("the data directory after an interrupted clone holds %d entries (%v); want none", len(entries), err)
	}
	if err := r1.Start(ctx); err == nil {
		t.Error("a postgres started on what an interrupted clone left")
	}
}

func TestUpstreamConninfo(t *testing.T) {
	u, err := Upstream{Host: "198.18.1.21", Password: `a b'c\d`, Slot: "db2"}.check()
	if err != nil {
		t.Fatal(err)
	}
	want := `host='198.18.1.21' port='5432' user='replicator' password='a b\'c\\d' application_name='db2' connect_timeout='2'`
	if got := u.conninfo("db2", "", true); got != want {
		t.Errorf("conninfo = %s; want %s", got, want)
	}
	if got := u.String(); got != "replicator@198.18.1.21:5432" {
		t.Errorf("String() = %s; want replicator@198.18.1.21:5432", got)
	}
	for _, bad := range []Upstream{{}, {Host: "a b"}, {Host: "h", Port: 70000}, {Host: "h", Slot: "DB2"}, {Host: "h", Slot: "a-b"}} {
		if _, err := bad.check(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if got := ReplicationHBA("", "198.18.1.0/24"); len(got) != 2 || got[0] != "host replication replicator 198.18.1.0/24 scram-sha-256" ||
		got[1] != "host postgres replicator 198.18.1.0/24 scram-sha-256" {
		t.Errorf("ReplicationHBA = %q", got)
	}
}

func TestSynchronousStandbyNames(t *testing.T) {
	for _, tc := range []struct {
		k     int
		names []string
		want  string
		err   bool
	}{
		{k: 0, want: ""},
		{k: 0, names: []string{"a"}, want: ""},
		{k: 1, names: []string{"db2", "db3"}, want: `ANY 1 ("db2", "db3")`},
		{k: 2, names: []string{"db2", "db3"}, want: `ANY 2 ("db2", "db3")`},
		{k: 3, names: []string{"db2", "db3"}, err: true},
		{k: -1, names: []string{"db2"}, err: true},
		{k: 1, names: []string{`a"b`}, err: true},
		{k: 1, names: []string{""}, err: true},
	} {
		got, err := SynchronousStandbyNames(tc.k, tc.names)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("SynchronousStandbyNames(%d, %q) = %q, %v; want %q, error %v", tc.k, tc.names, got, err, tc.want, tc.err)
		}
	}
}

func TestParseRewind(t *testing.T) {
	var res RewindResult
	out := "pg_rewind: servers diverged at WAL location 0/4006318 on timeline 1\n" +
		"pg_rewind: rewinding from last common checkpoint at 0/3000060 on timeline 1\npg_rewind: Done!\n"
	if err := parseRewind(out, &res); err != nil || !res.Rewound || res.DivergedAt != 0x4006318 ||
		res.DivergedTimeline != 1 || res.CommonCheckpoint != 0x3000060 {
		t.Errorf("parseRewind = %+v, %v", res, err)
	}
	res = RewindResult{}
	if err := parseRewind("pg_rewind: source and target cluster are on the same timeline\npg_rewind: no rewind required\n", &res); err != nil || res.Rewound {
		t.Errorf("parseRewind(no rewind required) = %+v, %v", res, err)
	}
	if err := parseRewind("pg_rewind: Done!\n", &res); err == nil {
		t.Error("parseRewind without the divergence succeeded")
	}
}

// TestKeeperSettings: the keeper's section of haven.conf survives a
// restart of haven (a new Server that has not set it) and reads back.
func TestKeeperSettings(t *testing.T) {
	dir := t.TempDir()
	s := goldenSettings(t, dir)
	if err := s.setKeeper(func(m map[string]string) {
		m["primary_conninfo"] = `host='h' password='a\'b\\c'`
		m["primary_slot_name"] = "db2"
		m["synchronous_standby_names"] = ""
	}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, HavenConf))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(b), keeperMarker+`primary_conninfo = 'host=''h'' password=''a\\''b\\\\c'''`+"\nprimary_slot_name = 'db2'\n") {
		t.Errorf("haven.conf ends:\n%s", b)
	}

	again := goldenSettings(t, dir) // haven restarted
	if err := again.writeConfig(); err != nil {
		t.Fatal(err)
	}
	if b2, _ := os.ReadFile(filepath.Join(dir, HavenConf)); string(b2) != string(b) {
		t.Errorf("a new Server's writeConfig changed haven.conf:\n%s", b2)
	}
	got := again.readKeeper()
	if len(got) != 2 || got["primary_conninfo"] != `host='h' password='a\'b\\c'` || got["primary_slot_name"] != "db2" {
		t.Errorf("readKeeper = %q", got)
	}
	if err := again.setKeeper(func(m map[string]string) { clear(m) }); err != nil {
		t.Fatal(err)
	}
	if b3, _ := os.ReadFile(filepath.Join(dir, HavenConf)); strings.Contains(string(b3), "keeper") {
		t.Errorf("after clearing, haven.conf still has the keeper's section:\n%s", b3)
	}
}

func TestSlotName(t *testing.T) {
	for in, want := range map[string]string{
		"db1":                   "db1",
		"DB-2.east":             "db_2_east",
		strings.Repeat("x", 70): strings.Repeat("x", 63),
		"node_3":                "node_3",
	} {
		if got := SlotName(in); got != want || !slotNameRE.MatchString(got) {
			t.Errorf("SlotName(%q) = %q, want %q (and a valid slot name)", in, got, want)
		}
	}
}

// TestPastFork: the start failure of a replica that replayed past its new
// timeline's fork is told apart from other start failures.
func TestPastFork(t *testing.T) {
	soak := []string{
		"2026-12-05 05:05:08.530 UTC [28118] LOG:  entering standby mode",
		"2026-12-05 05:05:08.531 UTC [28118] FATAL:  requested timeline 101 does not contain minimum recovery point 0/F377448 on timeline 100",
		"2026-12-05 05:05:08.544 UTC [28113] LOG:  startup process (PID 28118) exited with exit code 1",
	}
	if !pastFork(soak) {
		t.Error("the soak's start failure is not told as past the fork")
	}
	if !pastFork([]string{`FATAL:  requested timeline 2 is not a child of this server's history`,
		`DETAIL:  Latest checkpoint is at 0/5000060 on timeline 1, but in the history of the requested timeline, the server forked off from that timeline at 0/4000A38.`}) {
		t.Error("a checkpoint past the fork is not told as past the fork")
	}
	if pastFork([]string{"FATAL:  could not create any TCP/IP sockets", "LOG:  database system is shut down"}) {
		t.Error("a port in use is told as past the fork")
	}
}

// TestStartPastFork: a replica that replayed its timeline past the point
// where the timeline it must now follow forked cannot start again (the
// soak's third run stopped on one that failed to start for minutes): Start
// says so with ErrPastFork, and a rewind against the new timeline's
// primary brings it back on that history.
func TestStartPastFork(t *testing.T) {
	t.Parallel()
	// Past the fork are its minimum recovery point (pages it flushed), or
	// with a checkpoint after the fork, also its latest checkpoint: two
	// messages from postgres.
	for _, checkpoint := range []bool{false, true} {
		t.Run(fmt.Sprintf("checkpoint=%v", checkpoint), func(t *testing.T) {
			t.Parallel()
			testStartPastFork(t, checkpoint)
		})
	}
}

func testStartPastFork(t *testing.T, checkpoint bool) {
	p := newPrimary(t, "p")
	ahead, behind := newNode(t, "ahead"), newNode(t, "behind")
	ctx := testCtx(t)
	p.exec(t, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
	for _, r := range []*testServer{ahead, behind} {
		if err := p.CreateSlot(ctx, r.cfg.name); err != nil {
			t.Fatal(err)
		}
		if err := r.Clone(ctx, p.upstream(r.cfg.name)); err != nil {
			t.Fatal(err)
		}
		waitRow(t, r, 1)
	}
	behind.stop(t)
	// Only ahead replays these; its stop flushes their pages, which moves
	// its minimum recovery point past where behind forks.
	p.exec(t, "INSERT INTO t VALUES (2)")
	if checkpoint {
		p.exec(t, "CHECKPOINT")
	}
	p.exec(t, "INSERT INTO t VALUES (3)")
	waitRow(t, ahead, 3)
	ahead.stop(t)
	if err := p.Stop(ctx, StopImmediate); err != nil {
		t.Fatal(err)
	}

	// behind leads now, on timeline 2, which forked before row 2.
	if err := behind.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := behind.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	behind.exec(t, "INSERT INTO t VALUES (10)")
	if err := behind.CreateSlot(ctx, "ahead"); err != nil {
		t.Fatal(err)
	}
	// ahead follows it: its first start goes through, and its walreceiver
	// fetches timeline 2's history, but cannot stream from past the fork.
	if err := ahead.SetStandby(behind.upstream("ahead")); err != nil {
		t.Fatal(err)
	}
	if err := ahead.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ahead to fetch timeline 2's history", func() (string, bool) {
		_, err := os.Stat(filepath.Join(ahead.DataDir(), "pg_wal", "00000002.history"))
		return fmt.Sprint(err), err == nil
	})
	ahead.stop(t)
	err := ahead.Start(ctx)
	t.Logf("the second start: %v", err)
	if !errors.Is(err, ErrPastFork) {
		t.Fatalf("Start of a replica past its new timeline's fork = %v; want ErrPastFork", err)
	}
	if ahead.PID() != 0 {
		t.Fatalf("Start failed but postgres runs (pid %d)", ahead.PID())
	}
	// A rewind brings it back, or, when the WAL back to the last common
	// checkpoint is gone (recycled at a restartpoint past the fork), says
	// to copy it again, which the keeper does.
	_, err = ahead.Rewind(ctx, behind.upstream("ahead"))
	if errors.Is(err, ErrRewindImpossible) && checkpoint {
		t.Logf("rewind impossible, cloning: %v", err)
		if err := os.Rename(ahead.DataDir(), ahead.DataDir()+".diverged"); err != nil {
			t.Fatal(err)
		}
		err = ahead.Clone(ctx, behind.upstream("ahead"))
	}
	if err != nil {
		t.Fatalf("rejoin after ErrPastFork: %v", err)
	}
	waitRow(t, ahead, 10)
	if v := ahead.queryString(t, "SELECT count(*)::text FROM t WHERE id IN (2, 3)"); v != "0" {
		t.Errorf("rows only the old timeline had are on the rewound replica (%s of 2)", v)
	}
}
