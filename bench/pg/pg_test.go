package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/testenv"
)

const ms = time.Millisecond

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
		if err := writeHavenConf(dir, bindir, tg, false); err != nil {
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
