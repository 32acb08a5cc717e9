package config

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// expectations are the leading comment lines of a testdata file:
//
//	# want: SUBSTRING    an error must contain it (bad files)
//	# warn: SUBSTRING    a warning must contain it; warnings not listed fail
//	# problems: N        exactly N errors
type expectations struct {
	wants, warns []string
	problems     int // -1: not checked
}

func readExpectations(t *testing.T, file string) expectations {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	exp := expectations{problems: -1}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			break
		}
		key, val, ok := strings.Cut(strings.TrimSpace(strings.TrimPrefix(line, "#")), ":")
		val = strings.TrimSpace(val)
		switch {
		case !ok:
		case key == "want":
			exp.wants = append(exp.wants, val)
		case key == "warn":
			exp.warns = append(exp.warns, val)
		case key == "problems":
			if exp.problems, err = strconv.Atoi(val); err != nil {
				t.Fatalf("%s: bad problems line: %v", file, err)
			}
		}
	}
	return exp
}

func TestGoodFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.good.yaml")
	if len(files) < 3 {
		t.Fatalf("found %d good files, want at least 3", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			exp := readExpectations(t, file)
			cfg, err := Load(file)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			checkWarnings(t, cfg.Warnings, exp.warns)
		})
	}
}

func TestBadFiles(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.bad.yaml")
	if len(files) < 25 {
		t.Fatalf("found %d bad files, want at least 25", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			exp := readExpectations(t, file)
			if len(exp.wants) == 0 {
				t.Fatal("a bad file needs at least one '# want:' line")
			}
			cfg, err := Load(file)
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("Load: got %v, want Problems", err)
			}
			missing := false
			for _, want := range exp.wants {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("no problem contains %q", want)
					missing = true
				}
			}
			if missing {
				t.Logf("got:\n%v", err)
			}
			if exp.problems >= 0 && len(ps) != exp.problems {
				t.Errorf("got %d problems, want %d:\n%v", len(ps), exp.problems, err)
			}
			for _, p := range ps {
				if !strings.HasPrefix(p.Error(), file+":") {
					t.Errorf("problem %q does not start with the file name", p.Error())
				}
			}
			if exp.warns != nil {
				checkWarnings(t, cfg.Warnings, exp.warns)
			}
		})
	}
}

// checkWarnings requires a one-to-one match between warnings and wants.
func checkWarnings(t *testing.T, got, want []string) {
	t.Helper()
	left := append([]string(nil), got...)
	for _, w := range want {
		i := indexContaining(left, w)
		if i < 0 {
			t.Errorf("no warning contains %q; got:\n%s", w, strings.Join(got, "\n"))
			continue
		}
		left = append(left[:i], left[i+1:]...)
	}
	for _, w := range left {
		t.Errorf("unexpected warning: %s", w)
	}
}

func indexContaining(list []string, sub string) int {
	for i, s := range list {
		if strings.Contains(s, sub) {
			return i
		}
	}
	return -1
}

func TestEmptyInput(t *testing.T) {
	for _, data := range []string{"", "\n\n", "# only a comment\n", "---\n", "~\n"} {
		_, err := Parse("haven.yaml", []byte(data))
		want := "haven.yaml:1:1: the file is empty: want a mapping with at least cluster, regions and balancers"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%q) = %v, want %q", data, err, want)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/no-such-file.yaml")
	var ps Problems
	if err == nil || errors.As(err, &ps) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load: got %v, want a wrapped os.ErrNotExist", err)
	}
}

func TestProblemFormat(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{"haven.yaml", 14, 7, "balancers.web.algorithm", `"round-robin" is not one of roundrobin, leastconn, source, random2`},
			`haven.yaml:14:7: balancers.web.algorithm: "round-robin" is not one of roundrobin, leastconn, source, random2`},
		{Problem{"/etc/haven/haven.yaml", 3, 0, "", "invalid YAML: x"}, "/etc/haven/haven.yaml:3: invalid YAML: x"},
		{Problem{"", 1, 1, "cluster", "required"}, "1:1: cluster: required"},
		{Problem{"haven.yaml", 0, 0, "", "invalid YAML: x"}, "haven.yaml: invalid YAML: x"},
	}
	for _, tt := range tests {
		if got := tt.p.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
	ps := Problems{tests[0].p, tests[1].p}
	if got, want := ps.Error(), tests[0].want+"\n"+tests[1].want; got != want {
		t.Errorf("Problems.Error() = %q, want %q", got, want)
	}
}

func TestDefaults(t *testing.T) {
	cfg := mustLoad(t, "testdata/loopback.good.yaml")
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %q", cfg.Warnings)
	}
	n, ok := cfg.Node("lb1")
	if !ok || n.Name != "lb1" || n.Region != "local" || n.Admin != "127.0.0.1:9900" {
		t.Errorf("node lb1 = %+v, %v", n, ok)
	}
	b := cfg.Balancers["web"]
	want := &Balancer{
		Name:      "web",
		Nodes:     []string{"lb1"},
		Listen:    "127.0.0.1:8080",
		Mode:      "http",
		Algorithm: "roundrobin",
		Backends: []*Backend{
			{Address: "127.0.0.1:9001", Name: "127.0.0.1:9001", Weight: new(1)},
			{Address: "127.0.0.1:9002", Name: "127.0.0.1:9002", Weight: new(1)},
		},
		Timeouts: Timeouts{
			Connect:      Duration(2 * time.Second),
			ClientHeader: Duration(10 * time.Second),
			Client:       Duration(60 * time.Second),
			Server:       Duration(60 * time.Second),
			Queue:        Duration(5 * time.Second),
			Tunnel:       Duration(time.Hour),
		},
		Limits:  Limits{MaxHeaderBytes: 16 << 10, MaxHeaders: 100, QueueSize: 1024},
		Retries: Retries{Count: new(2)},
		Passive: Passive{ConsecutiveFailures: new(5), MaxEjectedPercent: new(50), EjectFor: Duration(10 * time.Second)},
	}
	if !reflect.DeepEqual(b, want) {
		t.Errorf("balancer web =\n%+v\nwant\n%+v", b, want)
	}
	if cfg.Admin.Port != 9900 {
		t.Errorf("admin.port = %d, want 9900", cfg.Admin.Port)
	}
}

func TestCheckDefaults(t *testing.T) {
	tests := []struct {
		interval                    string // "" leaves it out
		timeout, fast, down, wantIv time.Duration
	}{
		{"", time.Second, 500 * time.Millisecond, 2 * time.Second, 2 * time.Second},
		{"10s", time.Second, 2500 * time.Millisecond, 10 * time.Second, 10 * time.Second},
		{"1s", time.Second, 250 * time.Millisecond, time.Second, time.Second},
		{"200ms", 200 * time.Millisecond, 100 * time.Millisecond, 200 * time.Millisecond, 200 * time.Millisecond},
		{"50ms", 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond, 50 * time.Millisecond},
	}
	for _, tt := range tests {
		doc := minimal + "checks:\n  c:\n    http: {}\n"
		if tt.interval != "" {
			doc += "    interval: " + tt.interval + "\n"
		}
		cfg, err := Parse("haven.yaml", []byte(doc))
		if err != nil {
			t.Fatalf("interval %q: %v", tt.interval, err)
		}
		c, _ := cfg.Check("c")
		got := []time.Duration{c.Interval.D(), c.Timeout.D(), c.FastInterval.D(), c.DownInterval.D()}
		want := []time.Duration{tt.wantIv, tt.timeout, tt.fast, tt.down}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("interval %q: interval, timeout, fast, down = %v, want %v", tt.interval, got, want)
		}
		if c.Name != "c" || c.Rise != 2 || c.Fall != 3 || *c.Jitter != 0.1 {
			t.Errorf("interval %q: name, rise, fall, jitter = %q %d %d %v", tt.interval, c.Name, c.Rise, c.Fall, *c.Jitter)
		}
		p := c.HTTP
		if p.Method != "GET" || p.Path != "/" || p.BodyLimit != 64<<10 || !*p.TLSVerify || p.ExpectStatus != nil {
			t.Errorf("http probe defaults = %+v", p)
		}
	}
}

// minimal is the smallest valid document, for tests that add to it.
const minimal = `cluster: t
regions: {r: {nodes: {n1: {address: 127.0.0.1}}}}
balancers:
  b: {nodes: [n1], listen: "127.0.0.1:8080", backends: [{address: "127.0.0.1:9001"}]}
`

func TestFullFile(t *testing.T) {
	cfg := mustLoad(t, "testdata/full.good.yaml")
	web := cfg.Balancers["web"]
	if got, want := web.Timeouts.Connect.D(), time.Second; got != want {
		t.Errorf("merged timeouts.connect = %v, want %v", got, want)
	}
	if got, want := web.Timeouts.Server.D(), 45*time.Second; got != want {
		t.Errorf("overridden timeouts.server = %v, want %v", got, want)
	}
	if got := cfg.Balancers["pg"].Timeouts.Server.D(); got != 30*time.Second {
		t.Errorf("aliased timeouts.server = %v, want 30s", got)
	}
	if got := web.Retries.Methods; !reflect.DeepEqual(got, []string{"POST"}) {
		t.Errorf("retries.methods = %q, want upper-cased [POST]", got)
	}
	if got := cfg.Checks["web"].HTTPS.Method; got != "HEAD" {
		t.Errorf("probe method = %q, want HEAD", got)
	}
	if got, want := web.TLS.Cert, filepath.Join("testdata", "tls", "cert.pem"); got != want {
		t.Errorf("tls.cert = %q, want %q (relative to the file)", got, want)
	}
	if got := *web.Backends[1].Weight; got != 0 {
		t.Errorf("explicit weight 0 = %d", got)
	}
	if got := *web.Passive.ConsecutiveFailures; got != 0 {
		t.Errorf("explicit consecutive_failures 0 = %d", got)
	}
	if got := *cfg.Checks["web"].Jitter; got != 0 {
		t.Errorf("explicit jitter 0 = %v", got)
	}
	if n, _ := cfg.Node("lb2"); n.Admin != "[2001:db8::12]:9901" {
		t.Errorf("IPv6 node admin = %q, want [2001:db8::12]:9901", n.Admin)
	}
	if cfg.Checks["ping"].ICMP == nil {
		t.Errorf("icmp: with no value should declare an icmp probe")
	}
}

func TestAccessors(t *testing.T) {
	cfg := mustLoad(t, "testdata/full.good.yaml")
	if got, want := cfg.NodeNames(), []string{"app1", "lb1", "lb2"}; !reflect.DeepEqual(got, want) {
		t.Errorf("NodeNames() = %q, want %q", got, want)
	}
	var names []string
	for _, b := range cfg.BalancersOn("lb1") {
		names = append(names, b.Name)
	}
	if want := []string{"pg", "web", "web-redirect"}; !reflect.DeepEqual(names, want) {
		t.Errorf("BalancersOn(lb1) = %q, want %q", names, want)
	}
	if got := cfg.BalancersOn("app1"); len(got) != 0 {
		t.Errorf("BalancersOn(app1) = %v, want none", got)
	}
	if _, ok := cfg.Node("nope"); ok {
		t.Error("Node(nope) found a node")
	}
	if c, ok := cfg.Check("db"); !ok || c.TCP.Port != 5432 {
		t.Errorf("Check(db) = %+v, %v", c, ok)
	}
	if _, ok := cfg.Check("nope"); ok {
		t.Error("Check(nope) found a check")
	}
	if got := cfg.Balancers["web"].RetryCount(); got != 1 {
		t.Errorf("RetryCount() = %d, want 1", got)
	}
	if got := (&Balancer{}).RetryCount(); got != 2 {
		t.Errorf("RetryCount() of a hand-built balancer = %d, want the default 2", got)
	}
}

func TestPosition(t *testing.T) {
	cfg := mustLoad(t, "testdata/loopback.good.yaml")
	tests := []struct {
		path      string
		line, col int
		ok        bool
	}{
		{"cluster", 2, 10, true},
		{"balancers.web.listen", 10, 13, true},
		{"balancers.web.nodes", 9, 12, true},
		{"balancers.web.backends", 11, 5, true}, // a block list: its key
		{"balancers.web.backends[1].address", 13, 19, true},
		{"regions.local.nodes.lb1.address", 6, 22, true},
		{"balancers.web.mode", 0, 0, false}, // defaulted
		{"nope", 0, 0, false},
	}
	for _, tt := range tests {
		line, col, ok := cfg.Position(tt.path)
		if line != tt.line || col != tt.col || ok != tt.ok {
			t.Errorf("Position(%q) = %d, %d, %v; want %d, %d, %v", tt.path, line, col, ok, tt.line, tt.col, tt.ok)
		}
	}
	if _, _, ok := (&Config{}).Position("cluster"); ok {
		t.Error("Position on a hand-built Config reported ok")
	}
}

func TestProblemsAsError(t *testing.T) {
	cfg, err := Parse("haven.yaml", []byte("cluster: x\nbalancers: {b: {mode: udp}}\n"))
	var ps Problems
	if !errors.As(err, &ps) || len(ps) < 2 {
		t.Fatalf("got %v, want several Problems", err)
	}
	if cfg == nil {
		t.Fatal("the partial Config is returned with its problems, for its warnings")
	}
	for i := 1; i < len(ps); i++ {
		if ps[i].Line < ps[i-1].Line {
			t.Errorf("problems out of file order:\n%v", err)
		}
	}
}

func TestDurationAndSize(t *testing.T) {
	durations := map[string]time.Duration{"500ms": 500 * time.Millisecond, "7d": 7 * day, "1d12h": 36 * time.Hour, "0": 0}
	for s, want := range durations {
		got, err := parseDuration(s)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"d", "1.5d", "1d-1h", "2", "99999999999d"} {
		if _, err := parseDuration(s); err == nil {
			t.Errorf("parseDuration(%q) succeeded", s)
		}
	}
	strs := map[time.Duration]string{time.Minute: "1m", time.Hour: "1h", 90 * time.Minute: "1h30m", 0: "0s", 1500 * time.Millisecond: "1.5s"}
	for d, want := range strs {
		if got := Duration(d).String(); got != want {
			t.Errorf("Duration(%v).String() = %q, want %q", time.Duration(d), got, want)
		}
	}
	if s, err := ParseSize("64KiB"); err != nil || s != 64<<10 || s.String() != "64KiB" {
		t.Errorf("ParseSize(64KiB) = %v, %v", s, err)
	}
}

func TestClosest(t *testing.T) {
	valid := []string{"connect", "client_header", "client", "server", "queue", "tunnel"}
	tests := map[string]string{"conect": "connect", "sever": "server", "tunel": "tunnel", "clinet": "client", "x": "", "timeout": ""}
	for in, want := range tests {
		if got := closest(in, valid); got != want {
			t.Errorf("closest(%q) = %q, want %q", in, got, want)
		}
	}
}

func mustLoad(t *testing.T, file string) *Config {
	t.Helper()
	cfg, err := Load(file)
	if err != nil {
		t.Fatalf("Load(%s): %v", file, err)
	}
	return cfg
}

// TestAliasBomb checks that aliases and merge keys cannot make a small
// document expand without bound ("billion laughs"): 2 KiB that expand to
// 50^8 nodes are refused, and the work done before (counted in heap
// allocations, which do not depend on how busy the machine is) stays
// within the decoding budget: about 30,000 for 100,000 nodes; ten times
// the budget would take about 170,000.
func TestAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("cluster: t\nregions: {r: {nodes: {n1: {address: 127.0.0.1}}}}\nbalancers:\n")
	b.WriteString("  m0: &m0 {")
	for i := range 50 {
		fmt.Fprintf(&b, "k%d: x, ", i)
	}
	b.WriteString("}\n")
	for level := 1; level < 8; level++ {
		fmt.Fprintf(&b, "  m%d: &m%d {<<: [", level, level)
		for range 50 {
			fmt.Fprintf(&b, "*m%d, ", level-1)
		}
		b.WriteString("]}\n")
	}
	doc := []byte(b.String())
	_, err := Parse("bomb.yaml", doc)
	if err == nil || !strings.Contains(err.Error(), "expands to more than") {
		t.Errorf("got %v, want an expansion problem", err)
	}
	if n := testing.AllocsPerRun(1, func() { _, _ = Parse("bomb.yaml", doc) }); n > maxNodes {
		t.Errorf("Parse made %.0f allocations, more than the %d nodes it may decode", n, maxNodes)
	}
}

// TestDocCoversEveryKey keeps docs/configuration.md in step with the
// types: every key haven accepts must be documented.
func TestDocCoversEveryKey(t *testing.T) {
	data, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, key := range allKeys(reflect.TypeFor[Config](), map[reflect.Type]bool{}) {
		if !strings.Contains(doc, "`"+key+"`") && !strings.Contains(doc, "."+key+"`") && !strings.Contains(doc, "`"+key+".") {
			t.Errorf("key %q is not documented in docs/configuration.md", key)
		}
	}
}

// allKeys lists the keys of t and of every struct type under it.
func allKeys(t reflect.Type, seen map[reflect.Type]bool) []string {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return nil
	}
	seen[t] = true
	var keys []string
	for f := range t.Fields() {
		if k := yamlKey(f); k != "" {
			keys = append(keys, k)
			keys = append(keys, allKeys(f.Type, seen)...)
		}
	}
	return keys
}

func TestVIPAndCoordinationDefaults(t *testing.T) {
	cfg := mustLoad(t, "testdata/vip.good.yaml")
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %q", cfg.Warnings)
	}
	web := cfg.Balancers["web"].VIP
	if web == nil || web.Address != "198.18.1.100/24" {
		t.Fatalf("short form vip = %+v, want address 198.18.1.100/24", web)
	}
	if web.Lease.D() != 500*time.Millisecond || !*web.Preempt || web.Priority["lb1"] != 100 || web.Priority["lb2"] != 100 || web.Notify.Timeout.D() != 10*time.Second {
		t.Errorf("short form defaults: %+v", web)
	}
	api := cfg.Balancers["api"].VIP
	if api.Priority["lb3"] != 150 || api.Priority["lb2"] != 100 || *api.Preempt || api.Lease.D() != time.Second || api.Interface != "eth0" {
		t.Errorf("api vip: %+v", api)
	}
	if got := api.Notify.Fault; len(got) != 2 || got[1] != "vip fault" {
		t.Errorf("notify.fault = %q", got)
	}
	c := cfg.Coordination
	dir := "testdata"
	if c.ClientPort != 12379 || c.PeerPort != 12380 || c.Heartbeat.D() != 100*time.Millisecond || c.ElectionTimeout.D() != time.Second || c.JoinTimeout.D() != time.Minute {
		t.Errorf("coordination: %+v", c)
	}
	if c.DataDir != filepath.Join(dir, "data/{node}/etcd") || c.TLS.Cert != filepath.Join(dir, "certs/{node}.pem") {
		t.Errorf("paths not resolved against the file's directory: data_dir %q, cert %q", c.DataDir, c.TLS.Cert)
	}
}

// TestDatabaseDefaults checks every default of the database section, in
// each replication mode.
func TestDatabaseDefaults(t *testing.T) {
	const nodes = `cluster: t
regions: {r: {nodes: {db1: {address: 127.0.0.1}, db2: {address: 127.0.0.2}, db3: {address: 127.0.0.3}}}}
coordination: {members: [db1]}
`
	tests := []struct {
		name, database string
		want           *Database
	}{
		{"single node, all defaults", "database: {nodes: [db1]}", &Database{
			Engine: "postgres", Nodes: []string{"db1"}, Port: 5432, DataDir: "/var/lib/haven/pg",
			User: "postgres", Lease: Duration(2 * time.Second),
			Replication: &Replication{Mode: "async", MaxLagOnFailover: 1 << 20, User: "replicator"},
			Tags:        map[string]*DBTag{"db1": {Priority: new(100)}},
		}},
		{"sync", "database: {nodes: [db1, db2, db3], replication: {mode: sync, password_file: pg-replication.password}}", &Database{
			Engine: "postgres", Nodes: []string{"db1", "db2", "db3"}, Port: 5432, DataDir: "/var/lib/haven/pg",
			User: "postgres", Lease: Duration(2 * time.Second),
			Replication: &Replication{Mode: "sync", SyncStandbys: 1, User: "replicator", PasswordFile: filepath.Join("testdata", "pg-replication.password")},
			Tags:        map[string]*DBTag{"db1": {Priority: new(100)}, "db2": {Priority: new(100)}, "db3": {Priority: new(100)}},
		}},
		{"strict, tags and relative data_dir", `database:
  nodes: [db1, db2]
  data_dir: pg/{node}
  replication: {mode: strict, password_file: pg-replication.password}
  tags: {db2: {nofailover: true}}`, &Database{
			Engine: "postgres", Nodes: []string{"db1", "db2"}, Port: 5432, DataDir: filepath.Join("testdata", "pg", "{node}"),
			User: "postgres", Lease: Duration(2 * time.Second),
			Replication: &Replication{Mode: "strict", SyncStandbys: 1, User: "replicator", PasswordFile: filepath.Join("testdata", "pg-replication.password")},
			Tags:        map[string]*DBTag{"db1": {Priority: new(100)}, "db2": {NoFailover: true, Priority: new(100)}},
		}},
		{"async with an explicit lag", "database: {nodes: [db1, db2], replication: {max_lag_on_failover: 16MiB, password_file: pg-replication.password}}", &Database{
			Engine: "postgres", Nodes: []string{"db1", "db2"}, Port: 5432, DataDir: "/var/lib/haven/pg",
			User: "postgres", Lease: Duration(2 * time.Second),
			Replication: &Replication{Mode: "async", MaxLagOnFailover: 16 << 20, User: "replicator", PasswordFile: filepath.Join("testdata", "pg-replication.password")},
			Tags:        map[string]*DBTag{"db1": {Priority: new(100)}, "db2": {Priority: new(100)}},
		}},
		{"a router", "database: {nodes: [db1], listen: {primary: \":6432\"}}", &Database{
			Engine: "postgres", Nodes: []string{"db1"}, Port: 5432, DataDir: "/var/lib/haven/pg",
			User: "postgres", Lease: Duration(2 * time.Second),
			Replication: &Replication{Mode: "async", MaxLagOnFailover: 1 << 20, User: "replicator"},
			Listen:      &DBListen{Primary: ":6432"}, Routers: []string{"db1"}, ReplicaMaxLag: 1 << 20, RouterHold: Duration(5 * time.Second),
			Tags: map[string]*DBTag{"db1": {Priority: new(100)}},
		}},
		{"a router that holds no connection", "database: {nodes: [db1], listen: {primary: \":6432\"}, router_hold: 0s}", &Database{
			Engine: "postgres", Nodes: []string{"db1"}, Port: 5432, DataDir: "/var/lib/haven/pg",
			User: "postgres", Lease: Duration(2 * time.Second),
			Replication: &Replication{Mode: "async", MaxLagOnFailover: 1 << 20, User: "replicator"},
			Listen:      &DBListen{Primary: ":6432"}, Routers: []string{"db1"}, ReplicaMaxLag: 1 << 20,
			Tags: map[string]*DBTag{"db1": {Priority: new(100)}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// As if the file were in testdata, beside the password file.
			cfg, err := Parse(filepath.Join("testdata", "haven.yaml"), []byte(nodes+tt.database+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Database; !reflect.DeepEqual(got, tt.want) {
				t.Errorf("database =\n%s\nwant\n%s", dumpDatabase(got), dumpDatabase(tt.want))
			}
		})
	}
}

func dumpDatabase(db *Database) string {
	tags := map[string]string{}
	for n, t := range db.Tags {
		p := "nil"
		if t.Priority != nil {
			p = strconv.Itoa(*t.Priority)
		}
		tags[n] = fmt.Sprintf("{nofailover: %v, priority: %s}", t.NoFailover, p)
	}
	return fmt.Sprintf("%+v\nreplication %+v\ntags %v", *db, *db.Replication, tags)
}

func TestDatabaseFile(t *testing.T) {
	cfg := mustLoad(t, "testdata/database.good.yaml")
	db := cfg.Database
	// Names lowercased; numbers, bools and empty strings as written.
	wantSettings := map[string]string{
		"shared_buffers": "256MB", "max_connections": "200", "work_mem": "4MB",
		"pg_stat_statements.track": "all", "fsync": "true", "random_page_cost": "1.1",
		"shared_preload_libraries": "",
	}
	if !reflect.DeepEqual(db.Settings, wantSettings) {
		t.Errorf("settings = %q, want %q", db.Settings, wantSettings)
	}
	if db.Port != 6432 || db.Bindir != "/usr/lib/postgresql/15/bin" || db.User != "pgsql" || db.Lease.D() != 1500*time.Millisecond {
		t.Errorf("port, bindir, user, lease = %d %q %q %v", db.Port, db.Bindir, db.User, db.Lease)
	}
	r := db.Replication
	if r.Mode != "strict" || r.SyncStandbys != 2 || r.MaxLagOnFailover != 0 || r.User != "repl_2" ||
		r.PasswordFile != filepath.Join("testdata", "pg-replication.password") {
		t.Errorf("replication = %+v", r)
	}
	for node, want := range map[string]DBTag{"db1": {Priority: new(100)}, "db2": {Priority: new(0)}, "db3": {NoFailover: true, Priority: new(50)}} {
		if got := db.Tags[node]; got == nil || got.NoFailover != want.NoFailover || *got.Priority != *want.Priority {
			t.Errorf("tags.%s = %+v, want nofailover %v priority %d", node, got, want.NoFailover, *want.Priority)
		}
	}
	if got, want := db.NodeDataDir("db2"), filepath.Join("testdata", "data", "db2", "pg"); got != want {
		t.Errorf("NodeDataDir(db2) = %q, want %q", got, want)
	}
	if !db.FenceWrites() {
		t.Error("write_fence: true, FenceWrites false")
	}
	if db.Listen.Primary != ":5432" || db.Listen.Replicas != ":5433" || !slices.Equal(db.Routers, []string{"lb1"}) || db.ReplicaMaxLag != 16<<20 || db.RouterHold.D() != 3*time.Second {
		t.Errorf("listen %+v, routers %v, replica_max_lag %d, router_hold %s", *db.Listen, db.Routers, db.ReplicaMaxLag, db.RouterHold)
	}
	if !cfg.RoutesOn("lb1") || cfg.RoutesOn("db1") {
		t.Errorf("RoutesOn(lb1), RoutesOn(db1) = %v, %v; want true, false", cfg.RoutesOn("lb1"), cfg.RoutesOn("db1"))
	}
	primary, replicas := db.RouterBalancer("primary"), db.RouterBalancer("replicas")
	if primary.Listen != ":5432" || primary.Mode != "tcp" || !primary.ShutdownSessions || *primary.Passive.ConsecutiveFailures != 0 ||
		primary.Timeouts.Connect.D() != defaultConnectTimeout || len(primary.Backends) != 0 || primary.Hold.D() != 3*time.Second {
		t.Errorf("the primary's balancer: %+v", primary)
	}
	if replicas.Listen != ":5433" || replicas.Algorithm != "leastconn" || !replicas.ShutdownSessions || replicas.Hold.D() != 3*time.Second {
		t.Errorf("the replicas' balancer: %+v", replicas)
	}
	if line, col, ok := cfg.Position(db.SettingPath("work_mem")); !ok || line != 25 || col != 15 {
		t.Errorf("Position of a setting as written = %d:%d %v, want 25:15", line, col, ok)
	}
}

func TestNodePath(t *testing.T) {
	tests := []struct{ path, node, want string }{
		{"/var/lib/haven/{node}/pg", "db1", "/var/lib/haven/db1/pg"},
		{"/var/lib/haven/pg", "db1", "/var/lib/haven/pg"},
		{"/srv/{node}/{node}.d", "db-2", "/srv/db-2/db-2.d"},
		{"", "db1", ""},
		{"/srv/{Node}/pg", "db1", "/srv/{Node}/pg"},
	}
	for _, tt := range tests {
		if got := NodePath(tt.path, tt.node); got != tt.want {
			t.Errorf("NodePath(%q, %q) = %q, want %q", tt.path, tt.node, got, tt.want)
		}
	}
	c := mustLoad(t, "testdata/vip.good.yaml").Coordination
	if got, want := NodePath(c.DataDir, "lb2"), filepath.Join("testdata", "data", "lb2", "etcd"); got != want {
		t.Errorf("NodePath(coordination.data_dir, lb2) = %q, want %q", got, want)
	}
}

// A traffic target without a weight weighs 1; a written 0 stays 0.
func TestTrafficWeightDefault(t *testing.T) {
	cfg, err := Parse("haven.yaml", []byte(`cluster: t
regions: {r: {nodes: {lb1: {address: 127.0.0.1}}}}
traffic:
  zone: gslb.t.
  nameservers: [lb1]
  records:
    www:
      policy: weighted
      targets: [{name: a, address: 127.0.0.2}, {name: b, address: 127.0.0.3, weight: 0}, {name: c, address: 127.0.0.4, weight: 5}]
`))
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, tg := range cfg.Traffic.Records["www"].Targets {
		got = append(got, tg.Weight)
	}
	if !slices.Equal(got, []int{1, 0, 5}) {
		t.Errorf("weights %v, want [1 0 5]", got)
	}
}

// TestCoordinationScopes checks the inheritance of a region's scope, the
// global scope's own defaults and the accessors that pick a node's scope.
func TestCoordinationScopes(t *testing.T) {
	cfg := mustLoad(t, "testdata/regions.good.yaml")
	top, west, global := cfg.Coordination, cfg.Coordination.Regions["west"], cfg.Coordination.Global
	dataDir := filepath.Join("testdata", "data", "{node}", "etcd")
	if top.ClientPort != 12379 || top.PeerPort != 2380 || top.DataDir != dataDir || top.TLS.Cert != filepath.Join("testdata", "certs", "{node}.pem") {
		t.Errorf("top-level scope: %+v, tls %+v", top, top.TLS)
	}
	// A region's scope: its own heartbeat, the rest from the top level,
	// paths resolved once.
	if west.ClientPort != 12379 || west.PeerPort != 2380 || west.Heartbeat.D() != 60*time.Millisecond ||
		west.ElectionTimeout.D() != time.Second || west.JoinTimeout.D() != 2*time.Minute || west.RTOMin.D() != 20*time.Millisecond ||
		west.DataDir != dataDir {
		t.Errorf("west's scope = %+v, want the top level's but for heartbeat 60ms", west)
	}
	if west.TLS == nil || *west.TLS != *top.TLS || west.TLS == top.TLS {
		t.Errorf("west's tls = %+v, want a copy of the top level's %+v", west.TLS, top.TLS)
	}
	// The global scope: its own WAN defaults, the top level's tls and
	// join_timeout.
	if global.ClientPort != 2381 || global.PeerPort != 2382 || global.DataDir != "/var/lib/haven/{node}/etcd-global" ||
		global.Heartbeat.D() != 100*time.Millisecond || global.ElectionTimeout.D() != time.Second ||
		global.JoinTimeout.D() != 2*time.Minute || global.RTOMin.D() != KernelRTOMin {
		t.Errorf("global scope = %+v", global)
	}
	if global.TLS == nil || *global.TLS != *top.TLS {
		t.Errorf("global tls = %+v, want the top level's %+v", global.TLS, top.TLS)
	}
	for _, tt := range []struct {
		node string
		want *Coordination
	}{{"db1", top}, {"wdb2", west}, {"w1", top}, {"nope", top}} {
		if got := cfg.CoordinationOf(tt.node); got != tt.want {
			t.Errorf("CoordinationOf(%s) = %p, want %p", tt.node, got, tt.want)
		}
	}
	for _, tt := range []struct {
		region string
		want   *Coordination
	}{{"east", top}, {"west", west}, {"witness", top}, {"nope", top}} {
		if got := cfg.RegionCoordination(tt.region); got != tt.want {
			t.Errorf("RegionCoordination(%s) = %p, want %p", tt.region, got, tt.want)
		}
	}
	if cfg.GlobalCoordination() != global {
		t.Error("GlobalCoordination() is not coordination.global")
	}
	for _, c := range []*Config{{}, mustLoad(t, "testdata/vip.good.yaml")} {
		if c.GlobalCoordination() != nil {
			t.Errorf("GlobalCoordination() of a file without it = %+v, want nil", c.GlobalCoordination())
		}
	}
	if c := (&Config{}); c.CoordinationOf("db1") != nil || c.RegionCoordination("east") != nil {
		t.Error("a Config without coordination has a scope")
	}
}

// TestDRDefaults checks database.dr's defaults, and that its nodes get tags
// and serve as routers by default.
func TestDRDefaults(t *testing.T) {
	cfg := mustLoad(t, "testdata/regions.good.yaml")
	db := cfg.Database
	want := DR{Nodes: []string{"wdb1", "wdb2", "wdb3"}, Mode: "async", Failover: "manual",
		MaxLag: Duration(3 * time.Second), Lease: Duration(10 * time.Second), ReadOnlyPool: true}
	if !reflect.DeepEqual(*db.DR, want) {
		t.Errorf("dr = %+v, want %+v (max_lag from objectives.rpo)", *db.DR, want)
	}
	if got, want := db.Routers, []string{"db1", "db2", "db3", "wdb1", "wdb2", "wdb3"}; !slices.Equal(got, want) {
		t.Errorf("routers = %v, want %v", got, want)
	}
	for _, n := range []string{"db1", "wdb1", "wdb3"} {
		if tag := db.Tags[n]; tag == nil || *tag.Priority != 100 || tag.NoFailover != (n == "wdb3") {
			t.Errorf("tags.%s = %+v", n, tag)
		}
	}
	// Without objectives.rpo, max_lag is 5s.
	doc := strings.Replace(mustRead(t, "testdata/regions.good.yaml"), "objectives: {rto: 30s, rpo: 3s}", "", 1)
	cfg, err := Parse(filepath.Join("testdata", "haven.yaml"), []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Database.DR.MaxLag.D(); got != 5*time.Second {
		t.Errorf("max_lag without objectives = %v, want 5s", got)
	}
}

func mustRead(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestDrillsDefaults checks the drills section's defaults, and that its
// workload's file is found beside haven.yaml wherever the agent runs.
func TestDrillsDefaults(t *testing.T) {
	d := mustLoad(t, "testdata/drills.good.yaml").Drills
	if want := filepath.Join("testdata", "drill.dsn"); d.DSNFile != want {
		t.Errorf("dsn_file = %q, want %q (relative to the file)", d.DSNFile, want)
	}
	if d.MaxDuration.D() != 10*time.Minute {
		t.Errorf("max_duration = %s, want the default 10m", d.MaxDuration)
	}
	if got := []time.Duration{d.Schedule[0].For.D(), d.Schedule[1].For.D()}; !slices.Equal(got, []time.Duration{10 * time.Second, time.Minute}) {
		t.Errorf("schedule fors = %v, want [10s (the default) 1m]", got)
	}
}
