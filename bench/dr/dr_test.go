package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
	"github.com/haven-ha/haven/internal/testenv"
)

const ms = time.Millisecond

func TestTopology(t *testing.T) {
	for host, want := range map[string]string{
		"east1": "198.18.1.11", "east3": "198.18.1.13", "east-client": "198.18.1.14",
		"west1": "198.18.2.11", "west3": "198.18.2.13", "west-client": "198.18.2.14",
	} {
		if got := hostAddr(host).String(); got != want {
			t.Errorf("hostAddr(%s) = %s, want %s", host, got, want)
		}
	}
	// netlab numbers each segment's hosts in the order Options lists them.
	o := netOptions(20*ms, false)
	for i, h := range o.Hosts {
		if got := hostAddr(h).As4(); got[2] != 1 || int(got[3]) != 11+i || regionOf(h) != east {
			t.Errorf("segment 1 host %d %s: %s in %s", i, h, hostAddr(h), regionOf(h))
		}
	}
	for i, h := range o.Segment2 {
		if got := hostAddr(h).As4(); got[2] != 2 || int(got[3]) != 11+i || regionOf(h) != west {
			t.Errorf("segment 2 host %d %s: %s in %s", i, h, hostAddr(h), regionOf(h))
		}
	}
	if o.WANDelay != 20*ms {
		t.Errorf("WANDelay = %v", o.WANDelay)
	}
	if other(east) != west || other(west) != east {
		t.Error("other does not swap the regions")
	}
	// Patroni's network has no third segment; haven's has the witness,
	// netlab's first host of segment 3.
	if len(o.Segment3) != 0 {
		t.Errorf("without a witness, segment 3 is %v", o.Segment3)
	}
	o = netOptions(20*ms, true)
	if len(o.Segment3) != 1 || o.Segment3[0] != witness || hostAddr(witness).String() != "198.18.3.11" || regionOf(witness) != "" {
		t.Errorf("with a witness, segment 3 is %v, %s at %s", o.Segment3, witness, hostAddr(witness))
	}
	for _, k := range targetKinds {
		wt, ok := k.make().(witnessed)
		if got, want := ok && wt.Witness(), isHaven(k.name); got != want {
			t.Errorf("%s: witness %v, want %v", k.name, got, want)
		}
	}
}

func TestPatroniConf(t *testing.T) {
	dir := t.TempDir()
	for _, k := range targetKinds {
		p, ok := k.make().(*patroni)
		if !ok {
			continue
		}
		if p.loopWait+2*p.retryTimeout > p.ttl {
			t.Errorf("%s: loop_wait %d + 2 × retry_timeout %d > ttl %d (Patroni's rule)", p.name, p.loopWait, p.retryTimeout, p.ttl)
		}
		for _, node := range []string{"east2", "west2"} {
			region := regionOf(node)
			path := filepath.Join(dir, p.name+"-"+node+".yml")
			if err := writePatroniConf(path, "/data/"+node, "/usr/lib/postgresql/15/bin", p, region, node); err != nil {
				t.Fatal(err)
			}
			data, _ := os.ReadFile(path)
			var conf struct {
				Scope   string
				Name    string
				Restapi struct{ Listen string }
				Etcd3   struct{ Hosts []string }
				Boot    struct {
					DCS struct {
						TTL          int                       `yaml:"ttl"`
						LoopWait     int                       `yaml:"loop_wait"`
						RetryTimeout int                       `yaml:"retry_timeout"`
						Synchronous  bool                      `yaml:"synchronous_mode"`
						Slots        map[string]map[string]any `yaml:"slots"`
						Standby      *struct {
							Host    string   `yaml:"host"`
							Port    int      `yaml:"port"`
							Slot    string   `yaml:"primary_slot_name"`
							Methods []string `yaml:"create_replica_methods"`
						} `yaml:"standby_cluster"`
					} `yaml:"dcs"`
				} `yaml:"bootstrap"`
				PostgreSQL struct {
					Listen string
					HBA    []string `yaml:"pg_hba"`
				} `yaml:"postgresql"`
			}
			if err := yaml.Unmarshal(data, &conf); err != nil {
				t.Fatalf("%s %s: %v\n%s", p.name, node, err, data)
			}
			dcs := conf.Boot.DCS
			if conf.Name != node || conf.Scope != "benchdr-"+region || conf.PostgreSQL.Listen != hostAddr(node).String()+":5432" {
				t.Errorf("%s %s: name %q, scope %q, listen %q", p.name, node, conf.Name, conf.Scope, conf.PostgreSQL.Listen)
			}
			var etcd []string
			for _, a := range nodeAddrs(region) {
				etcd = append(etcd, a+":2379")
			}
			if !slices.Equal(conf.Etcd3.Hosts, etcd) {
				t.Errorf("%s %s: etcd3 hosts %q, want its own region's %q", p.name, node, conf.Etcd3.Hosts, etcd)
			}
			if dcs.TTL != p.ttl || dcs.LoopWait != p.loopWait || dcs.RetryTimeout != p.retryTimeout || !dcs.Synchronous {
				t.Errorf("%s %s: dcs %+v", p.name, node, dcs)
			}
			if _, ok := dcs.Slots[slotFor(other(region))]; !ok || len(dcs.Slots) != 1 {
				t.Errorf("%s %s: permanent slots %v, want %s for the other region", p.name, node, dcs.Slots, slotFor(other(region)))
			}
			if !slices.Contains(conf.PostgreSQL.HBA, "host replication replicator 198.18.0.0/15 scram-sha-256") {
				t.Errorf("%s %s: pg_hba %q does not let the other region replicate", p.name, node, conf.PostgreSQL.HBA)
			}
			switch region {
			case east:
				if dcs.Standby != nil {
					t.Errorf("%s %s: east has standby_cluster %+v", p.name, node, dcs.Standby)
				}
			case west:
				sc := dcs.Standby
				if sc == nil || sc.Host != "198.18.1.11,198.18.1.12,198.18.1.13" || sc.Port != 5432 || sc.Slot != "west_region" || !slices.Equal(sc.Methods, []string{"basebackup"}) {
					t.Errorf("%s %s: standby_cluster %+v, want east's three nodes, port 5432, slot west_region, basebackup", p.name, node, sc)
				}
			}
		}
	}
}

func TestEtcdArgs(t *testing.T) {
	got := strings.Join(etcdArgs("/data/west3", west, "west3"), " ")
	for _, want := range []string{
		"--name west3", "--data-dir /data/west3/etcd", "--listen-client-urls http://198.18.2.13:2379",
		"--initial-cluster west1=http://198.18.2.11:2380,west2=http://198.18.2.12:2380,west3=http://198.18.2.13:2380 ",
		"--initial-cluster-token benchdr-west",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("etcd args %q lack %q", got, want)
		}
	}
}

func TestHAProxyConf(t *testing.T) {
	dir := t.TempDir()
	for _, r := range regions {
		path := filepath.Join(dir, r+".cfg")
		if err := writeHAProxyConf(path, "patroni", r); err != nil {
			t.Fatal(err)
		}
		data, _ := os.ReadFile(path)
		conf := string(data)
		rh := regionHosts[r]
		for _, want := range []string{
			"bind " + hostAddr(rh.client).String() + ":5000",
			"option httpchk GET /primary",
			"on-marked-down shutdown-sessions",
			"server " + rh.nodes[0] + " " + hostAddr(rh.nodes[0]).String() + ":5432 maxconn 100 check port 8008",
			"server " + rh.nodes[2] + " " + hostAddr(rh.nodes[2]).String() + ":5432 maxconn 100 check port 8008",
		} {
			if !strings.Contains(conf, want) {
				t.Errorf("%s: no %q in\n%s", r, want, conf)
			}
		}
		t.Run(r+"/haproxy-c", func(t *testing.T) {
			testenv.NeedCommand(t, "haproxy", "haproxy")
			if out, err := exec.Command("haproxy", "-c", "-q", "-f", path).CombinedOutput(); err != nil {
				t.Errorf("haproxy -c -f %s: %v\n%s", path, err, out)
			}
		})
	}
}

func TestParseLSN(t *testing.T) {
	for in, want := range map[string]int64{"0/0": 0, "0/3000060": 0x3000060, "1/0": 1 << 32, "A/FF": 0xA<<32 | 0xFF} {
		if got, err := parseLSN(in); err != nil || got != want {
			t.Errorf("parseLSN(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "12", "x/1", "1/-1"} {
		if _, err := parseLSN(bad); err == nil {
			t.Errorf("parseLSN(%q) = nil error", bad)
		}
	}
}

func TestLagStats(t *testing.T) {
	var samples []lagSample
	for i := 1; i <= 200; i++ {
		samples = append(samples, lagSample{ReplayedBytes: int64(i), ReceivedBytes: int64(i / 2), ReplayDelay: time.Duration(i) * ms})
	}
	// harness.Percentile's nearest rank from below: the 100th and the
	// 198th smallest of 200, counting from 0.
	s := lagStats(samples)
	if s.n != 200 || s.bytes[0] != 101 || s.bytes[1] != 199 || s.bytes[2] != 200 || s.received[2] != 100 || s.delay[1] != 199*ms || s.delay[2] != 200*ms {
		t.Errorf("lagStats = %+v", s)
	}
	if s := lagStats(nil); s.n != 0 || s.bytes[2] != 0 {
		t.Errorf("lagStats(nil) = %+v", s)
	}
}

func TestFirstAck(t *testing.T) {
	w := []pgwrite.Write{
		{Seq: 1, Start: 0, End: 5 * ms, Outcome: pgwrite.Acked},
		{Seq: 2, Start: 20 * ms, End: 520 * ms, Outcome: pgwrite.Failed},
		{Seq: 3, Start: 540 * ms, End: 560 * ms, Outcome: pgwrite.Acked},
		{Seq: 4, Start: 560 * ms, End: 580 * ms, Outcome: pgwrite.Acked},
	}
	if got, ok := firstAck(w, 10*ms); !ok || got != 560*ms {
		t.Errorf("firstAck after 10ms = %v, %v; want 560ms", got, ok)
	}
	if _, ok := firstAck(w, time.Second); ok {
		t.Error("firstAck after the last write found one")
	}
}

func TestSummarize(t *testing.T) {
	loss := cell{sc: scenario{name: "loss"}, runs: []runResult{
		{Acked: 100, Writable: 2 * time.Second, Command: time.Second, LossReport: pgwrite.LossReport{Lost: []int{99}}, LagAtLoss: &lagSample{ReplayedBytes: 500}},
		{Acked: 90, Writable: 4 * time.Second, Command: 3 * time.Second, SelfPromoted: true},
		{Acked: 80, Writable: never},
		{Err: "failed to start"}, // never wrote: not a run
	}}
	s := summarize(loss)
	if s.Runs != 3 || s.Errors != 1 || s.Lost != 1 || s.RunsLost != 1 || s.SelfPromoted != 1 || s.Writable != [2]time.Duration{4 * time.Second, never} || s.WritableP90 != never ||
		s.Command != 2*time.Second || !slices.Equal(s.LagAtLoss, []int64{500}) {
		t.Errorf("summarize(loss) = %+v", s)
	}
	// Commit latencies: every acknowledged write of every run, together.
	var r1, r2 []time.Duration
	for i := 1; i <= 100; i++ {
		r1 = append(r1, time.Duration(i)*ms)
		r2 = append(r2, time.Duration(100+i)*ms)
	}
	lag := cell{target: "haven-sync", sc: scenario{name: "lag", title: "lag"}, runs: []runResult{{Acked: 100, Commits: r1}, {Acked: 100, Commits: r2}}}
	if s := summarize(lag); s.Commit != [3]time.Duration{101 * ms, 199 * ms, 200 * ms} {
		t.Errorf("summarize(lag) commit latency p50/p99/max = %v, want [101ms 199ms 200ms]", s.Commit)
	}
	if got := lagTable(lag.sc, []cell{lag}); !strings.Contains(got, "| 200 | 101 ms / 199 ms / 200 ms |") {
		t.Errorf("lag table without the commit latency:\n%s", got)
	}
	slow := cell{target: "haven", sc: lag.sc, runs: []runResult{{Acked: 2, Commits: []time.Duration{2500 * time.Microsecond, 2600 * time.Microsecond}}}}
	if got := lagTable(slow.sc, []cell{slow}); !strings.Contains(got, "| 2 | 2.6 ms / 2.6 ms / 2.6 ms |") {
		t.Errorf("lag table, sub-millisecond digits:\n%s", got)
	}
	sw := cell{sc: scenario{name: "switchover"}, runs: []runResult{{Acked: 10, Gap: 3 * time.Second}, {Acked: 10, Gap: time.Second}}}
	if s := summarize(sw); s.Gap != [2]time.Duration{2 * time.Second, 3 * time.Second} {
		t.Errorf("summarize(switchover) gap = %v", s.Gap)
	}
}

func TestRatioTable(t *testing.T) {
	sw := func(target string, gap time.Duration) cell {
		return cell{target: target, sc: scenario{name: "switchover"}, runs: []runResult{{Acked: 10, Gap: gap}}}
	}
	// Without a haven target the table is left out.
	if got := ratioTable([]cell{sw("patroni", 6*time.Second)}, []string{"patroni"}); got != "" {
		t.Errorf("ratio table without haven:\n%s", got)
	}
	got := ratioTable([]cell{sw("patroni", 6*time.Second), sw("haven", 2*time.Second)}, []string{"patroni", "haven"})
	if !strings.Contains(got, "| switchover: write pause (median / worst) | haven | 3.0× / 3.0× |") {
		t.Errorf("ratio table:\n%s", got)
	}
}

func TestTargets(t *testing.T) {
	for _, name := range strings.Split(defaultTargets, ",") {
		mk, ok := findTarget(name)
		if !ok {
			t.Fatalf("default target %q is not defined", name)
		}
		tg := mk()
		// haven needs only PostgreSQL (checked by setup); Patroni its packages.
		if tg.Name() != name || tg.Describe() == "" || (len(tg.Packages()) == 0) != isHaven(name) {
			t.Errorf("target %q: name %q, description %q, packages %v", name, tg.Name(), tg.Describe(), tg.Packages())
		}
		if _, ok := tg.(*haven); ok != isHaven(name) {
			t.Errorf("%q: haven's target %v, counts as haven's %v", name, ok, isHaven(name))
		}
		tg.Close() // safe before Start
	}
}

func TestFlags(t *testing.T) {
	ok := options{runs: 5, targets: []string{"patroni"}, scenarios: []string{"lag", "loss", "switchover"}, every: 20 * ms,
		connTimeout: 500 * ms, opTimeout: time.Second, lagFor: 30 * time.Second, sampleEvery: 100 * ms, pre: 3 * time.Second, post: 3 * time.Second,
		observe: 30 * time.Second, maxOutage: 2 * time.Minute, settle: 4 * time.Minute, wanDelay: 20 * ms, install: "auto", postgresBin: "/usr/lib/postgresql/15/bin"}
	if err := validate(ok); err != nil {
		t.Fatalf("validate(%+v) = %v", ok, err)
	}
	for _, bad := range []func(*options){
		func(o *options) { o.targets = []string{"stolon"} },
		func(o *options) { o.scenarios = []string{"flood"} },
		func(o *options) { o.runs = 0 },
		func(o *options) { o.sampleEvery = time.Millisecond },
		func(o *options) { o.observe = 0 },
		func(o *options) { o.wanDelay = -ms },
		func(o *options) { o.install = "sometimes" },
		func(o *options) { o.postgresBin = "bin" },
	} {
		o := ok
		bad(&o)
		if err := validate(o); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", o)
		}
	}
}

// TestHavenConf checks haven's haven.yaml with haven's own validation
// (config.Parse, what `haven check` runs), in both modes.
func TestHavenConf(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"replication.password": "x\n", "token": "y\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, mode := range []string{"async", "sync"} {
		text := havenConf(dir, "/usr/lib/postgresql/15/bin", "/dev/shm/x", mode, 10*time.Second)
		cfg, err := config.Parse("haven.yaml", []byte(text))
		if err != nil {
			t.Fatalf("mode %s: %v\n%s", mode, err, text)
		}
		db := cfg.Database
		if db == nil || db.DR == nil || db.DR.Mode != mode || db.DR.Failover != "automatic" || db.DR.Lease.D() != 10*time.Second ||
			!slices.Equal(db.DR.Nodes, regionHosts[west].nodes) || !slices.Equal(db.Nodes, regionHosts[east].nodes) || db.RouterHold.D() != 0 {
			t.Errorf("mode %s: database %+v", mode, db)
		}
		for _, want := range []string{"members: [east1, west1, witness]", "witness: {address: 198.18.3.11", "routers: [east-client, west-client]", `primary: ":6432"`} {
			if !strings.Contains(text, want) {
				t.Errorf("mode %s: no %q in\n%s", mode, want, text)
			}
		}
	}
}
