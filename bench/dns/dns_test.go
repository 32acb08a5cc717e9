package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/config"
)

// dnsperf 2.10.0's output, as Debian bookworm's package prints it.
const perfOut = `DNS Performance Testing Tool
Version 2.10.0

[Status] Command line: dnsperf -s 127.0.0.1 -p 15353 -d q1 -l 3
[Status] Sending queries (to 127.0.0.1:15353)
[Status] Started at: Mon Nov 30 00:15:13 2026
[Status] Stopping after 3.000000 seconds
[Status] Testing complete (time limit)

Statistics:

  Queries sent:         241016
  Queries completed:    241010 (100.00%)
  Queries lost:         6 (0.00%)

  Response codes:       NOERROR 241010 (100.00%)
  Average packet size:  request 38, response 54
  Run time (s):         3.000953
  Queries per second:   80313.153855

  Average Latency (s):  0.001018 (min 0.000018, max 0.022265)
  Latency StdDev (s):   0.000866
`

func TestParsePerf(t *testing.T) {
	r, err := parsePerf(perfOut)
	if err != nil {
		t.Fatal(err)
	}
	want := perfResult{Sent: 241016, Completed: 241010, Lost: 6, QPS: 80313.153855, AvgLatency: 1018 * time.Microsecond, Rcodes: "NOERROR 241010 (100.00%)"}
	if r != want {
		t.Errorf("parsePerf = %+v, want %+v", r, want)
	}
	if got := r.lostPct(); got < 0.0024 || got > 0.0025 {
		t.Errorf("lostPct = %v, want 6/241016 %%", got)
	}
	for _, bad := range []string{
		"",
		"[Status] Sending queries\nError: could not open file\n",
		strings.Replace(perfOut, "80313.153855", "fast", 1),
	} {
		if _, err := parsePerf(bad); err == nil {
			t.Errorf("parsePerf(%q) = nil error, want one", bad)
		}
	}
}

func TestDnsperfArgs(t *testing.T) {
	got := strings.Join(dnsperfArgs(5300, "/q", 10*time.Second, false, false), " ")
	want := "taskset -c 1 dnsperf -s 127.0.0.1 -p 5300 -d /q -l 10 -c 1 -T 1 -q 100 -t 1"
	if got != want {
		t.Errorf("dnsperfArgs = %q, want %q", got, want)
	}
	ecs := dnsperfArgs(5300, "/q", 2500*time.Millisecond, true, false)
	if !slices.Contains(ecs, "2.5") || ecs[len(ecs)-2] != "-E" || ecs[len(ecs)-1] != "8:000118000a0000" {
		t.Errorf("dnsperfArgs with ECS = %v, want -l 2.5 and -E 8:000118000a0000", ecs)
	}
	if edns := dnsperfArgs(5300, "/q", time.Second, false, true); edns[len(edns)-1] != "-e" || slices.Contains(edns, "-E") {
		t.Errorf("dnsperfArgs with EDNS = %v, want -e and no -E", edns)
	}
}

func TestChangeTime(t *testing.T) {
	s := func(ms int, dead bool) sample { return sample{At: time.Duration(ms) * time.Millisecond, Dead: dead} }
	var flip []sample // a random selector: the dead target in every other answer, then never
	for ms := 0; ms < 1000; ms += 10 {
		flip = append(flip, s(ms, ms%20 == 0))
	}
	for ms := 1000; ms <= 4200; ms += 10 {
		flip = append(flip, s(ms, false))
	}
	for _, tc := range []struct {
		name string
		in   []sample
		want time.Duration
	}{
		{"none", nil, -1},
		{"still dead", []sample{s(0, true), s(5000, true)}, -1},
		{"changed, not yet stable", []sample{s(0, true), s(100, false), s(2000, false)}, -1},
		{"changed at once", []sample{s(0, false), s(3000, false)}, 0},
		{"random selector", flip, 990 * time.Millisecond},
		{"came back and changed again", []sample{s(0, true), s(100, false), s(200, true), s(300, false), s(3300, false)}, 300 * time.Millisecond},
	} {
		if got := changeTime(tc.in); got != tc.want {
			t.Errorf("%s: changeTime = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSummarizeAndGoals(t *testing.T) {
	rs := []perfResult{{QPS: 300, Sent: 100, Lost: 2, AvgLatency: 3}, {Err: "boom"}, {QPS: 100, Sent: 100, AvgLatency: 1}, {QPS: 200, Sent: 100, AvgLatency: 2}}
	s := summarize(rs)
	if s.Runs != 3 || s.Median != 200 || s.Min != 100 || s.Max != 300 || s.Latency != 2 || s.MaxLostPct != 2 || len(s.Errs) != 1 {
		t.Errorf("summarize = %+v", s)
	}
	if r, ok := ratio(45000, 2250); !ok || r != 20 {
		t.Errorf("ratio(45000, 2250) = %v, %v; want 20, true", r, ok)
	}
	if _, ok := ratio(1, 0); ok {
		t.Error("ratio(1, 0) is ok, want false: a missing cell")
	}
	md := goalTable(map[string][]perfResult{"haven-failover": {{QPS: 30000}}, "pdns-lua": {{QPS: 2000}}})
	if !strings.Contains(md, "| haven-failover ÷ pdns-lua | 15.00× | ≥ 20.0× | **no** |") {
		t.Errorf("goalTable does not say the goal is missed:\n%s", md)
	}
	if strings.Contains(md, "pdns-static") {
		t.Errorf("goalTable has a row for a cell that did not run:\n%s", md)
	}
	for _, g := range goals {
		for _, c := range []string{g.num, g.den} {
			if _, ok := findCell(c); !ok {
				t.Errorf("goal %q names cell %q, which does not exist", g.what, c)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	ok := options{runs: 5, duration: 10 * time.Second, cells: strings.Split(defaultCells, ","), changeRuns: 5, install: "auto"}
	if err := validate(ok); err != nil {
		t.Errorf("validate(defaults) = %v", err)
	}
	bad := ok
	bad.cells = []string{"pdns-lua", "bind"}
	if err := validate(bad); err == nil || !strings.Contains(err.Error(), `-targets: "bind" is not one of pdns-static`) {
		t.Errorf("validate(unknown cell) = %v", err)
	}
	bad = ok
	bad.duration = 0
	if err := validate(bad); err == nil {
		t.Error("validate(-d 0) = nil, want an error")
	}
}

// TestHavenConf renders haven.yaml and loads it with haven's own config
// package, so that the benchmark follows the contract.
func TestHavenConf(t *testing.T) {
	p := ports{dns: map[string]int{"haven": 5310, "haven-qlog": 5311}, admin: map[string]int{"haven": 9911, "haven-qlog": 9912}, backend: 8081}
	dir := t.TempDir()
	path := filepath.Join(dir, "haven.yaml")
	haven, _ := findServer("haven")
	if err := os.WriteFile(path, []byte(havenConf(p, haven, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("haven.yaml does not load: %v", err)
	}
	tr := cfg.Traffic
	if tr == nil || tr.Zone != zone || tr.Listen != "127.0.0.1:5310" || !slices.Equal(tr.Nameservers, []string{"ns1"}) || tr.QueryLog != nil {
		t.Fatalf("traffic = %+v", tr)
	}
	qlog, _ := findServer("haven-qlog")
	if err := os.WriteFile(path, []byte(havenConf(p, qlog, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg, err := config.Load(path); err != nil || cfg.Traffic.QueryLog == nil || cfg.Traffic.QueryLog.Sample != 100 || cfg.Traffic.Listen != "127.0.0.1:5311" {
		t.Fatalf("haven-qlog's haven.yaml: %v, %+v", err, cfg)
	}
	for name, policy := range map[string]string{"static": "all", "www": "failover", "hashed": "hashed"} {
		r := tr.Records[name]
		if r == nil || string(r.Policy) != policy {
			t.Errorf("records.%s = %+v, want policy %s", name, r, policy)
		}
	}
	for _, c := range allCells {
		if tr.Records[c.qname] == nil {
			t.Errorf("cell %s asks %s, which haven.yaml does not have", c.name, c.qname)
		}
	}
}

func TestPdnsConf(t *testing.T) {
	s, _ := findServer("pdns-shared")
	conf := pdnsConf(s, "/d", 5301)
	for _, want := range []string{"launch=bind\n", "bind-config=/d/named.conf\n", "local-address=127.0.0.1\n", "local-port=5301\n", "enable-lua-records=shared\n"} {
		if !strings.Contains(conf, want) {
			t.Errorf("pdns.conf lacks %q:\n%s", want, conf)
		}
	}
	if strings.Contains(conf, "lua-health-checks-interval") {
		t.Errorf("pdns-shared sets the check interval:\n%s", conf)
	}
	fast, _ := findServer("pdns-fast")
	if conf := pdnsConf(fast, "/d", 5303); !strings.Contains(conf, "lua-health-checks-interval=1\n") || !strings.Contains(conf, "enable-lua-records=yes\n") {
		t.Errorf("pdns-fast's pdns.conf:\n%s", conf)
	}
	z := zoneFile(8081)
	if !strings.Contains(z, `www    20   IN LUA A "ifportup(8081, {'127.0.0.21', '127.0.0.22'})"`) || !strings.Contains(z, "static 20   IN A   127.0.0.21") {
		t.Errorf("zone file:\n%s", z)
	}
	if got := namedConf("/d"); got != "zone \"bench.example\" { type master; file \"/d/bench.zone\"; };\n" {
		t.Errorf("named.conf = %q", got)
	}
	for _, c := range allCells {
		if _, ok := findServer(c.server); !ok {
			t.Errorf("cell %s: no server %s", c.name, c.server)
		}
	}
}
