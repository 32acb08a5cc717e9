package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.yaml.in/yaml/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

const ms = time.Millisecond

// writes builds a writer's record from "seq:end_ms:outcome" items, where
// outcome is a (acked), f (failed) or i (indeterminate).
func writes(t *testing.T, items ...string) []write {
	t.Helper()
	var out []write
	for _, it := range items {
		var seq, end int
		var o string
		if _, err := fmt.Sscanf(strings.ReplaceAll(it, ":", " "), "%d %d %s", &seq, &end, &o); err != nil {
			t.Fatalf("bad item %q: %v", it, err)
		}
		w := write{Seq: seq, Start: time.Duration(end-5) * ms, End: time.Duration(end) * ms}
		switch o {
		case "a":
			w.Outcome = acked
		case "f":
			w.Outcome, w.Err = failed, "connect: refused"
		case "i":
			w.Outcome, w.Err = indeterminate, "unexpected EOF"
		default:
			t.Fatalf("bad outcome in %q", it)
		}
		out = append(out, w)
	}
	return out
}

func TestGapAround(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		fault  time.Duration
		want   time.Duration
	}{
		{"the gap spans the fault", []string{"1:20:a", "2:40:a", "3:60:f", "4:80:f", "5:1040:a", "6:1060:a"}, 50 * ms, 1000 * ms},
		{"a longer gap later counts", []string{"1:20:a", "2:40:a", "3:300:a", "4:2300:a"}, 50 * ms, 2000 * ms},
		{"gaps before the fault do not", []string{"1:20:a", "2:5020:a", "3:5040:a", "4:5300:a"}, 5030 * ms, 260 * ms},
		{"failed and indeterminate writes do not end a gap", []string{"1:20:a", "2:500:i", "3:900:f", "4:1500:a"}, 30 * ms, 1480 * ms},
		{"no write back after the fault", []string{"1:20:a", "2:40:a", "3:60:f"}, 50 * ms, never},
		{"nothing acknowledged at all", []string{"1:20:f"}, 10 * ms, never},
		{"out of order completions are sorted", []string{"2:60:a", "1:20:a", "3:1060:a"}, 30 * ms, 1000 * ms},
		{"the first write after the fault is the first acknowledged", []string{"1:1000:a", "2:1020:a"}, 10 * ms, 20 * ms},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gapAround(writes(t, tc.writes...), tc.fault); got != tc.want {
				t.Errorf("gapAround = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLongestGap(t *testing.T) {
	w := writes(t, "1:20:a", "2:40:a", "3:300:a", "4:310:f", "5:2000:a")
	for _, tc := range []struct{ t0, t1, want time.Duration }{
		{0, 1000 * ms, 260 * ms},
		{0, 3000 * ms, 1700 * ms},
		{30 * ms, 100 * ms, 0}, // one write: no gap
	} {
		if got := longestGap(w, tc.t0, tc.t1); got != tc.want {
			t.Errorf("longestGap(%v, %v) = %v, want %v", tc.t0, tc.t1, got, tc.want)
		}
	}
}

func TestCompare(t *testing.T) {
	w := writes(t, "1:20:a", "2:40:a", "3:60:i", "4:80:i", "5:100:f", "6:120:f", "7:140:a")
	// Row 2 is lost, the indeterminate row 3 made it, failed row 6 is
	// there (a misclassification), 99 was never tried.
	r := compare(w, []int{1, 3, 6, 7, 99})
	want := lossReport{Lost: []int{2}, IndeterminateFound: 1, FailedFound: []int{6}, Unknown: []int{99}}
	if !slices.Equal(r.Lost, want.Lost) || r.IndeterminateFound != want.IndeterminateFound ||
		!slices.Equal(r.FailedFound, want.FailedFound) || !slices.Equal(r.Unknown, want.Unknown) {
		t.Errorf("compare = %+v, want %+v", r, want)
	}
	if r := compare(w, []int{1, 2, 7}); len(r.Lost) != 0 || r.IndeterminateFound != 0 {
		t.Errorf("compare with every acknowledged row = %+v, want nothing lost", r)
	}
	if a, f, i := tally(w); a != 3 || f != 2 || i != 2 {
		t.Errorf("tally = %d, %d, %d; want 3 acked, 2 failed, 2 indeterminate", a, f, i)
	}
	if got := errorKinds(w, 1); !slices.Equal(got, []string{"connect: refused ×2"}) {
		// Two of each: the tie goes to the message that sorts first.
		t.Errorf("errorKinds = %q", got)
	}
}

// notSent is an error that says nothing reached the server, as pgconn's
// errors before a write do.
type notSent struct{}

func (notSent) Error() string     { return "dial: connection refused" }
func (notSent) SafeToRetry() bool { return true }

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want outcome
	}{
		{nil, acked},
		{&pgconn.PgError{Code: "25006", Message: "cannot execute INSERT in a read-only transaction"}, failed},
		{&pgconn.PgError{Code: "42P01", Message: "relation does not exist"}, failed},
		{&pgconn.PgError{Code: "28P01", Message: "password authentication failed"}, failed},
		{fmt.Errorf("exec: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}), indeterminate},
		{&pgconn.PgError{Code: "XX000", Message: "internal error"}, indeterminate},
		{notSent{}, failed},
		{context.DeadlineExceeded, indeterminate},
		{errors.New("unexpected EOF"), indeterminate},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("classify(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	runs := []runResult{
		{Primary: "db1", After: "db2", Gap: 2 * time.Second, Acked: 100, Indeterminate: 1},
		{Primary: "db2", After: "db2", Gap: 1 * time.Second, Acked: 90, lossReport: lossReport{Lost: []int{5, 6}}},
		{Primary: "db2", After: "db3", Gap: 3 * time.Second, Acked: 80, Failed: 7},
		{Err: "before the fault: not healthy"}, // never wrote: not a run
	}
	s := summarize(runs)
	if s.Runs != 3 || s.Errors != 1 || s.Median != 2*time.Second || s.Worst != 3*time.Second ||
		s.Lost != 2 || s.RunsLost != 1 || s.PrimaryMoved != 2 || s.Failed != 7 || s.Indeterminate != 1 {
		t.Errorf("summarize = %+v", s)
	}
	runs[0].Gap = never
	if s := summarize(runs); s.Median != 3*time.Second || s.Worst != never || s.Unrecovered != 1 {
		t.Errorf("with a gap not over: median %v, worst %v, unrecovered %d; want 3s, never, 1", s.Median, s.Worst, s.Unrecovered)
	}
	runs[1].Gap = never
	if s := summarize(runs); s.Median != never {
		t.Errorf("two of three not over: median %v, want never", s.Median)
	}
	if got := ratio(10*time.Second, 2*time.Second); got != "5.0×" {
		t.Errorf("ratio = %q", got)
	}
	if got := ratio(never, time.Second); got != "–" {
		t.Errorf("ratio of never = %q", got)
	}
}

func TestHAProxyConf(t *testing.T) {
	dir := t.TempDir()
	for _, tg := range allTargets {
		if !tg.haproxy {
			continue
		}
		path := filepath.Join(dir, tg.name+".cfg")
		if err := writeHAProxyConf(path, tg); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		conf := string(data)
		port := 8008
		if tg.kind == "haven" {
			port = 9900
		}
		for _, want := range []string{
			"bind 198.18.1.14:5000",
			"option httpchk GET /primary",
			"http-check expect status 200",
			"on-marked-down shutdown-sessions",
			fmt.Sprintf("server db1 198.18.1.11:5432 maxconn 100 check port %d", port),
			fmt.Sprintf("server db3 198.18.1.13:5432 maxconn 100 check port %d", port),
		} {
			if !strings.Contains(conf, want) {
				t.Errorf("%s: no %q in\n%s", tg.name, want, conf)
			}
		}
		t.Run(tg.name+"/haproxy-c", func(t *testing.T) {
			testenv.NeedCommand(t, "haproxy", "haproxy")
			if out, err := exec.Command("haproxy", "-c", "-q", "-f", path).CombinedOutput(); err != nil {
				t.Errorf("haproxy -c -f %s: %v\n%s", path, err, out)
			}
		})
	}
}

func TestPatroniConf(t *testing.T) {
	dir := t.TempDir()
	for _, tg := range allTargets {
		if tg.kind != "patroni" {
			continue
		}
		// Patroni's documented rule for its timing.
		if tg.loopWait+2*tg.retryTimeout > tg.ttl {
			t.Errorf("%s: loop_wait %d + 2 × retry_timeout %d > ttl %d", tg.name, tg.loopWait, tg.retryTimeout, tg.ttl)
		}
		if tg.period != time.Duration(tg.loopWait)*time.Second {
			t.Errorf("%s: period %v, want loop_wait %ds", tg.name, tg.period, tg.loopWait)
		}
		path := filepath.Join(dir, tg.name+".yml")
		if err := writePatroniConf(path, "/data/db2", "/usr/lib/postgresql/15/bin", tg, "db2"); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		var conf struct {
			Name    string
			Restapi struct{ Listen string }
			Etcd3   struct{ Hosts []string }
			Boot    struct {
				DCS struct {
					TTL           int  `yaml:"ttl"`
					LoopWait      int  `yaml:"loop_wait"`
					RetryTimeout  int  `yaml:"retry_timeout"`
					Synchronous   bool `yaml:"synchronous_mode"`
					PostgreSQLDCS struct {
						UseRewind bool `yaml:"use_pg_rewind"`
					} `yaml:"postgresql"`
				} `yaml:"dcs"`
			} `yaml:"bootstrap"`
			PostgreSQL struct {
				Listen     string
				DataDir    string            `yaml:"data_dir"`
				Parameters map[string]string `yaml:"parameters"`
			} `yaml:"postgresql"`
			Watchdog struct{ Mode string }
		}
		if err := yaml.Unmarshal(data, &conf); err != nil {
			t.Fatalf("%s: %v\n%s", tg.name, err, data)
		}
		dcs := conf.Boot.DCS
		if conf.Name != "db2" || conf.Restapi.Listen != "198.18.1.12:8008" || conf.PostgreSQL.Listen != "198.18.1.12:5432" ||
			conf.PostgreSQL.DataDir != "/data/db2/pg" || conf.PostgreSQL.Parameters["unix_socket_directories"] != "/data/db2/run" {
			t.Errorf("%s: node settings %+v", tg.name, conf)
		}
		if want := []string{"198.18.1.11:2379", "198.18.1.12:2379", "198.18.1.13:2379"}; !slices.Equal(conf.Etcd3.Hosts, want) {
			t.Errorf("%s: etcd3 hosts %q, want %q", tg.name, conf.Etcd3.Hosts, want)
		}
		if dcs.TTL != tg.ttl || dcs.LoopWait != tg.loopWait || dcs.RetryTimeout != tg.retryTimeout || !dcs.Synchronous || !dcs.PostgreSQLDCS.UseRewind {
			t.Errorf("%s: dcs %+v, want ttl %d, loop_wait %d, retry_timeout %d, synchronous_mode, use_pg_rewind", tg.name, dcs, tg.ttl, tg.loopWait, tg.retryTimeout)
		}
		if conf.Watchdog.Mode != "off" {
			t.Errorf("%s: watchdog mode %q, want off", tg.name, conf.Watchdog.Mode)
		}
	}
}

func TestEtcdArgs(t *testing.T) {
	got := strings.Join(etcdArgs("/data/db3", "db3"), " ")
	for _, want := range []string{
		"--name db3", "--data-dir /data/db3/etcd",
		"--listen-client-urls http://198.18.1.13:2379", "--listen-peer-urls http://198.18.1.13:2380",
		"--initial-cluster db1=http://198.18.1.11:2380,db2=http://198.18.1.12:2380,db3=http://198.18.1.13:2380",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("etcd args %q lack %q", got, want)
		}
	}
}

func TestHavenConf(t *testing.T) {
	for _, tg := range allTargets {
		if tg.kind != "haven" {
			continue
		}
		dir := t.TempDir()
		bindir := t.TempDir()
		if err := writeHavenConf(dir, bindir, tg); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(filepath.Join(dir, "haven.yaml"))
		if err != nil {
			t.Fatalf("%s: haven.yaml does not load: %v", tg.name, err)
		}
		db := cfg.Database
		if db == nil || db.Replication == nil {
			t.Fatalf("%s: database %+v", tg.name, db)
		}
		if !slices.Equal(db.Nodes, nodes) || db.Lease.D() != tg.lease || db.Replication.Mode != "sync" || db.Replication.SyncStandbys != 1 {
			t.Errorf("%s: database nodes %v, lease %v, mode %s, sync_standbys %d; want %v, %v, sync, 1",
				tg.name, db.Nodes, db.Lease, db.Replication.Mode, db.Replication.SyncStandbys, nodes, tg.lease)
		}
		if tg.period != tg.lease {
			t.Errorf("%s: period %v, want the lease %v", tg.name, tg.period, tg.lease)
		}
		for _, n := range nodes {
			if node, ok := cfg.Node(n); !ok || node.Address != hostAddr(n).String() {
				t.Errorf("%s: node %s = %+v, want address %s", tg.name, n, node, hostAddr(n))
			}
		}
		// haven's own router: an agent on the client, nothing else there.
		_, client := cfg.Node("client")
		if tg.haproxy {
			if client || db.Listen != nil {
				t.Errorf("%s: a client node (%v) or database.listen (%+v) with HAProxy as the router", tg.name, client, db.Listen)
			}
			continue
		}
		if !client || db.Listen == nil || db.Listen.Primary != ":6432" || !slices.Equal(db.Routers, []string{"client"}) {
			t.Errorf("%s: client node %v, database.listen %+v, routers %v; want the client routing :6432", tg.name, client, db.Listen, db.Routers)
		}
		if got, want := tg.routerAddr(), "198.18.1.14:6432"; got != want {
			t.Errorf("%s: the writer connects to %s, want %s", tg.name, got, want)
		}
	}
}

func TestFlags(t *testing.T) {
	ok := options{runs: 5, targets: []string{"patroni", "haven-haproxy"}, scenarios: []string{"node"}, every: 20 * ms,
		connTimeout: 500 * ms, opTimeout: time.Second, pre: 2 * time.Second, post: 3 * time.Second, maxOutage: 2 * time.Minute, settle: 3 * time.Minute,
		install: "auto", postgresBin: "/usr/lib/postgresql/15/bin"}
	if err := validate(ok); err != nil {
		t.Fatalf("validate(%+v) = %v", ok, err)
	}
	for _, bad := range []func(*options){
		func(o *options) { o.targets = []string{"stolon"} },
		func(o *options) { o.scenarios = []string{"reboot"} },
		func(o *options) { o.runs = 0 },
		func(o *options) { o.every = time.Millisecond },
		func(o *options) { o.install = "sometimes" },
		func(o *options) { o.postgresBin = "bin" },
	} {
		o := ok
		bad(&o)
		if err := validate(o); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", o)
		}
	}
	for _, name := range strings.Split(defaultTargets, ",") {
		if _, found := findTarget(name); !found {
			t.Errorf("default target %q is not defined", name)
		}
	}
}
