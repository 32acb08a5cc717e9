package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
	"github.com/haven-ha/haven/internal/pg/keeper"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestDay2UnderAWriter runs the database's day-2 commands and the rolling
// upgrade of a whole cluster while a writer commits through the primary:
// three nodes, each an etcd member and a database node in sync mode, run
// from a binary that is later replaced (by rename, as dpkg does).
//   - Settings changed by reload (SIGHUP): work_mem applies at once,
//     max_connections is pending a restart on every node, in haven pg
//     status; haven pg restart --pending restarts PostgreSQL on each node,
//     the primary last after a switchover, and applies it.
//   - haven pg pause shows in haven pg status and refuses a switchover;
//     haven pg resume ends it. haven pg failover is refused while a
//     primary leads (TestForcedFailover forces one when none may).
//   - haven pg reinit rebuilds a replica from nothing.
//   - haven restart restarts every agent in turn, the primary's last after
//     a switchover; each runs the new binary in the process it had.
//
// Every acknowledged write is on the primary at the end, and the primary
// changed exactly twice (the two switchovers: no failover).
func TestDay2UnderAWriter(t *testing.T) {
	bindir := needDatabase(t)
	base := testenv.SearchableDir(t)
	root := filepath.Join(testenv.MemoryDir(t), "lib")
	if err := os.Chmod(filepath.Dir(root), 0o711); err != nil { // the postgres user passes through
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, "replication.password"), []byte("test-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	admins := map[string]string{"db1": freeAddr(t), "db2": freeAddr(t), "db3": freeAddr(t)}
	path := filepath.Join(base, "haven.yaml")
	cfg := fmt.Sprintf(`cluster: shop
regions:
  local:
    nodes:
      db1: {address: 127.0.0.1, zone: a, admin: %q}
      db2: {address: 127.0.0.2, zone: b, admin: %q}
      db3: {address: 127.0.0.3, zone: c, admin: %q}
coordination:
  members: [db1, db2, db3]
  client_port: %d
  peer_port: %d
  data_dir: %s/{node}/etcd
database:
  nodes: [db1, db2, db3]
  port: %d
  data_dir: %s/{node}/pg
  bindir: %s
  write_fence: false
  replication: {mode: sync, password_file: replication.password}
  hba: ["host all postgres 127.0.0.0/8 trust"]
  settings: {dynamic_shared_memory_type: mmap}
`, admins["db1"], admins["db2"], admins["db3"], freePort(t), freePort(t), root, port, root, bindir)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The agents run a copy of the binary, which the "upgrade" replaces.
	bin := filepath.Join(base, "bin", "haven")
	installBinary(t, bin)
	agents := map[string]*proc{}
	for _, n := range []string{"db1", "db2", "db3"} {
		agents[n] = startBinary(t, bin, "agent", "-c", path, "-n", n)
	}
	dbOf := func(node string) (*agent.DatabaseStatus, error) {
		var d agent.DatabaseStatus
		return &d, getJSON("http://"+admins[node]+"/api/v1/database", &d)
	}
	var before *agent.DatabaseStatus
	testenv.Poll(t, 120*time.Second, "a primary and two replicas streaming, both synchronous standbys", func() (bool, string) {
		for n, a := range agents {
			select {
			case <-a.done:
				t.Fatalf("%s's agent exited: %v\n%s", n, a.err, a.stderr.String())
			default:
			}
		}
		d, err := dbOf("db1")
		if err != nil {
			return false, err.Error()
		}
		before = d
		streaming := 0
		for _, m := range d.Members {
			if m.Role == "replica" && m.Streaming && m.Upstream == d.Primary {
				streaming++
			}
		}
		return d.Primary != "" && streaming == 2 && len(d.Sync.Standbys) == 2, fmt.Sprintf("%+v", d)
	})

	dsn := fmt.Sprintf("postgres://postgres@127.0.0.1:%d,127.0.0.2:%d,127.0.0.3:%d/postgres?sslmode=disable&connect_timeout=2&target_session_attrs=read-write", port, port, port)
	connect := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	conn, err := connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = conn.Exec(ctx, "CREATE TABLE writes (run int, seq int, PRIMARY KEY (run, seq))")
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	w, done := pgwrite.Run(wctx, 1, 20*time.Millisecond, 2*time.Second, 5*time.Second, connect)
	testenv.Poll(t, 30*time.Second, "the writer commits", func() (bool, string) {
		n := w.AckedSince(0)
		return n >= 20, fmt.Sprint(n, " acknowledged")
	})

	// Every lead the nodes report from now on, in order: a
	// failover would add one (a new epoch), even back to the same node.
	var leads []string
	watchDone := make(chan struct{})
	watchCtx, stopWatch := context.WithCancel(ctx)
	go func() {
		defer close(watchDone)
		for watchCtx.Err() == nil {
			for _, n := range []string{"db1", "db2", "db3"} {
				if d, err := dbOf(n); err == nil && d.Primary != "" {
					lead := fmt.Sprintf("%s@%d", d.Primary, d.Epoch)
					if !slices.Contains(leads, lead) {
						leads = append(leads, lead)
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()

	show := func(node, setting string) string {
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres@127.0.0.%s:%d/postgres?sslmode=disable&connect_timeout=2", node[2:], port))
		if err != nil {
			return err.Error()
		}
		defer c.Close(ctx)
		var v string
		if err := c.QueryRow(ctx, "SHOW "+setting).Scan(&v); err != nil {
			return err.Error()
		}
		return v
	}
	// everyNode polls until cond holds for every node, with its state as
	// db1 sees it.
	everyNode := func(what string, cond func(node string, m keeper.MemberState) (string, bool)) {
		t.Helper()
		testenv.Poll(t, 60*time.Second, what, func() (bool, string) {
			d, err := dbOf("db1")
			if err != nil {
				return false, err.Error()
			}
			var seen []string
			ok := true
			for _, n := range []string{"db1", "db2", "db3"} {
				s, good := cond(n, d.Members[n])
				seen = append(seen, n+": "+s)
				ok = ok && good
			}
			return ok, strings.Join(seen, "; ")
		})
	}
	// Settings by reload (SIGHUP): work_mem applies at once,
	// max_connections waits for a restart, and every node says so; then
	// haven pg restart --pending applies it. Lowered, max_connections
	// would keep a replica that restarted first from starting (a standby
	// needs at least its primary's value): haven restart refuses, haven
	// pg restart restarts the primary first, in place. Raised, the
	// replicas go first and the primary last, after a switchover.
	for _, step := range []struct{ workMem, maxConns string }{{"8MB", "57"}, {"6MB", "110"}} {
		newCfg := strings.Replace(cfg, "settings: {dynamic_shared_memory_type: mmap}",
			fmt.Sprintf(`settings: {dynamic_shared_memory_type: mmap, work_mem: %s, max_connections: "%s"}`, step.workMem, step.maxConns), 1)
		if err := os.WriteFile(path, []byte(newCfg), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, a := range agents {
			if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		lowered := step.maxConns == "57"
		everyNode("work_mem "+step.workMem+" on every node, max_connections pending a restart on every node", func(n string, m keeper.MemberState) (string, bool) {
			wm := show(n, "work_mem")
			return fmt.Sprintf("work_mem %s, pending %v, lowered %v", wm, m.PendingRestart, m.PendingLowered),
				wm == step.workMem && slices.Equal(m.PendingRestart, []string{"max_connections"}) && (len(m.PendingLowered) > 0) == lowered
		})
		if r := haven(t, time.Minute, "pg", "status", "-c", path); !strings.Contains(r.stdout, "db2: pending restart: max_connections (haven pg restart --pending applies them)") {
			t.Errorf("haven pg status does not show the setting pending a restart:\n%s", r)
		}
		primary := databasePrimaryOf(t, dbOf)
		if lowered {
			if r := haven(t, time.Minute, "restart", "-c", path); r.code == 0 || !strings.Contains(r.stderr, "run haven pg restart --pending first") {
				t.Errorf("haven restart with max_connections lowered and pending: %s\nwant it refused", r)
			}
		}
		r := haven(t, 8*time.Minute, "pg", "restart", "--pending", "-c", path)
		t.Logf("haven pg restart --pending (max_connections %s):\n%s", step.maxConns, r)
		want := primary + ": the database's primary: switching over first"
		if lowered {
			want = "max_connections lowered: the primary " + primary + " restarts first, in place"
		}
		if r.code != 0 || !strings.Contains(r.stdout, "restarted PostgreSQL on 3 nodes") || !strings.Contains(r.stdout, want) {
			t.Fatalf("haven pg restart --pending: %s\nwant PostgreSQL restarted on 3 nodes, and %q", r, want)
		}
		everyNode("max_connections "+step.maxConns+" on every node, nothing pending", func(n string, m keeper.MemberState) (string, bool) {
			mc := show(n, "max_connections")
			return fmt.Sprintf("max_connections %s, pending %v", mc, m.PendingRestart), mc == step.maxConns && len(m.PendingRestart) == 0
		})
	}
	if r := haven(t, time.Minute, "pg", "restart", "--pending", "-c", path); r.code != 0 || !strings.Contains(r.stdout, "no node has settings pending a restart") {
		t.Errorf("haven pg restart --pending with nothing pending: %s", r)
	}

	// Maintenance mode through the CLI: shown, and a switchover refused.
	if r := haven(t, time.Minute, "pg", "pause", "--reason", "storage firmware", "-c", path); r.code != 0 || !strings.Contains(r.stdout, "the database is paused") {
		t.Fatalf("haven pg pause: %s", r)
	}
	if r := haven(t, time.Minute, "pg", "status", "-c", path); !strings.Contains(r.stdout, "PAUSED: no automatic failover; paused by ") || !strings.Contains(r.stdout, "storage firmware") {
		t.Errorf("haven pg status while paused:\n%s", r)
	}
	if r := haven(t, time.Minute, "pg", "switchover", "-c", path); r.code == 0 || !strings.Contains(r.stderr, "haven pg resume first") {
		t.Errorf("haven pg switchover while paused: %s\nwant it refused", r)
	}
	// A forced failover is for when no node leads: refused while one does.
	if r := haven(t, time.Minute, "pg", "failover", "--to", "db3", "--yes", "-c", path); r.code == 0 || !strings.Contains(r.stderr, "use haven pg switchover --to db3") {
		t.Errorf("haven pg failover while a primary leads: %s\nwant it refused", r)
	}
	if r := haven(t, time.Minute, "pg", "resume", "-c", path); r.code != 0 || !strings.Contains(r.stdout, "the database is resumed") {
		t.Fatalf("haven pg resume: %s", r)
	}
	middle, err := dbOf("db1")
	if err != nil {
		t.Fatal(err)
	}
	// A replica rebuilt from nothing while the writer writes.
	replica := "db1"
	if middle.Primary == "db1" {
		replica = "db2"
	}
	if r := haven(t, 5*time.Minute, "pg", "reinit", replica, "-c", path); r.code != 0 || !strings.Contains(r.stdout, replica+" is a replica again, rebuilt from") {
		t.Fatalf("haven pg reinit %s: %s", replica, r)
	}
	testenv.Poll(t, time.Minute, replica+" streaming again after its rebuild", func() (bool, string) {
		d, err := dbOf(replica)
		if err != nil {
			return false, err.Error()
		}
		why := databaseBack(d, replica)
		return why == "", why
	})

	// The upgrade: a new binary at the path, by rename.
	installBinary(t, bin)
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	newIno := fi.Sys().(*syscall.Stat_t).Ino
	r := haven(t, 8*time.Minute, "restart", "-c", path)
	stopWatch()
	<-watchDone
	t.Logf("haven restart:\n%s", r)
	if r.code != 0 || !strings.Contains(r.stdout, "restarted 3 agents") ||
		strings.Count(r.stdout, "switching over first") != 1 || !strings.Contains(r.stdout, middle.Primary+": the database's primary: switching over first") {
		t.Fatalf("haven restart: %s\nwant every agent restarted, the primary %s last after one switchover", r, middle.Primary)
	}
	acked := w.AckedSince(0)
	testenv.Poll(t, 60*time.Second, "the writer commits after the restarts", func() (bool, string) {
		n := w.AckedSince(0)
		return n >= acked+20, fmt.Sprint(n, " acknowledged")
	})
	stopWriter()
	<-done
	writes := w.Snapshot()
	rows, err := pgwrite.ReadRows(ctx, connect, 1)
	if err != nil {
		t.Fatal(err)
	}
	loss := pgwrite.Compare(writes, rows)
	ack, fail, indet := pgwrite.Tally(writes)
	t.Logf("writer: %d acknowledged, %d failed, %d indeterminate; longest gap %s; errors: %v",
		ack, fail, indet, pgwrite.LongestGap(writes, 0, writes[len(writes)-1].End), pgwrite.ErrorKinds(writes, 5))
	if len(loss.Lost) > 0 || len(loss.FailedFound) > 0 {
		t.Errorf("after the rolling restart: %d acknowledged writes lost %v, %d writes taken as failed are there %v",
			len(loss.Lost), loss.Lost, len(loss.FailedFound), loss.FailedFound)
	}

	after, err := dbOf("db1")
	if err != nil {
		t.Fatal(err)
	}
	// Two switchovers (pg restart's, raising max_connections, and
	// restart's), no failover: exactly two promotions, and no holder
	// that lost the record by missing its deadline. A handover may pass
	// through a successor that finds another replica has the old
	// primary's shutdown checkpoint and hands the record on before it
	// promotes (the leads seen then list it): not a failover.
	promotions, missed := 0, 0
	for _, a := range agents {
		promotions += strings.Count(a.stderr.String(), `msg="promoted to primary"`)
		missed += strings.Count(a.stderr.String(), "lease not renewed before its deadline")
	}
	t.Logf("leads seen: %v; %d promotions", leads, promotions)
	if before.Primary == middle.Primary || middle.Primary == after.Primary || promotions != 2 || missed != 0 {
		t.Errorf("the primary was %s, then %s, then %s (leads seen %v); %d promotions, %d leases lost; want a switchover for each command (2 promotions), no failover",
			before.Primary, middle.Primary, after.Primary, leads, promotions, missed)
	}
	for n, a := range agents {
		select {
		case <-a.done:
			t.Fatalf("%s's agent exited instead of executing itself again: %v\n%s", n, a.err, a.stderr.String())
		default:
		}
		exe, err := os.Stat(fmt.Sprintf("/proc/%d/exe", a.cmd.Process.Pid))
		if err != nil || exe.Sys().(*syscall.Stat_t).Ino != newIno {
			t.Errorf("%s's agent (pid %d) does not run the new binary: %v", n, a.cmd.Process.Pid, err)
		}
		if !strings.Contains(a.stderr.String(), "restart: executing the agent again") {
			t.Errorf("%s's agent's log does not say it executed itself again", n)
		}
	}

	// The primary's agent: it renews the ownership record, so its write
	// latency family has series (a replica's agent, restarted, may not
	// have written the record yet).
	lintMetrics(t, admins[databasePrimaryOf(t, dbOf)], "haven_owner_write_duration_seconds", "haven_pg_paused", "haven_pg_primary")

	// A new binary that rejects the file restarts nothing: the agent
	// asks it first (haven check -n), and says why.
	script := "#!/bin/sh\nif [ \"$1\" = check ]; then echo 'haven.yaml:3:1: unknown key \"frobnicate\"' >&2; exit 1; fi\nexit 0\n"
	if err := os.WriteFile(bin+".bad", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".bad", bin); err != nil {
		t.Fatal(err)
	}
	var st nodeStatus
	if err := getJSON("http://"+admins["db3"]+"/api/v1/status", &st); err != nil {
		t.Fatal(err)
	}
	r = haven(t, time.Minute, "restart", "db3", "-c", path)
	var again nodeStatus
	if err := getJSON("http://"+admins["db3"]+"/api/v1/status", &again); err != nil {
		t.Fatal(err)
	}
	if r.code == 0 || !strings.Contains(r.stderr, "nothing was restarted") || !strings.Contains(r.stderr, `unknown key "frobnicate"`) || !again.Started.Equal(st.Started) {
		t.Errorf("haven restart db3 with a binary that rejects the file: %s\nstarted %s, then %s; want it refused, saying why, and the agent not restarted", r, st.Started, again.Started)
	}
}

// databasePrimaryOf is the primary db1's agent names.
func databasePrimaryOf(t *testing.T, dbOf func(string) (*agent.DatabaseStatus, error)) string {
	t.Helper()
	d, err := dbOf("db1")
	if err != nil {
		t.Fatal(err)
	}
	return d.Primary
}

// installBinary puts a copy of the haven binary the tests built at path,
// by rename, as a package upgrade does: a running process keeps the file
// it started from.
func installBinary(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(testenv.HavenRace(t))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tmp := path + ".new"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// getJSON decodes url's JSON answer into out; any status but 200 fails.
func getJSON(url string, out any) error {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
