package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/haven-ha/haven/deploy"
	"github.com/haven-ha/haven/internal/events"
	"github.com/haven-ha/haven/internal/pg"
	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const consoleToken = "console-e2e-token"

// TestDashboardInABrowser opens the dashboard of a three-node deployment
// in namespaces (each node an etcd member, a database node in sync mode, a
// balancer node with a floating address and a name server) in headless
// Chromium, as an operator would:
//   - the page shows the topology: three ready nodes, the primary, the
//     address's holder, what the DNS name answers;
//   - an operator drains a backend from the page: a confirmation, then
//     the write token (the admin is off loopback), and the page shows it;
//   - the primary's agent is killed (with its PostgreSQL): without a
//     reload, the page shows the new primary and the promotion in its
//     timeline within two seconds of the promotion;
//   - at a phone's width the page fits the screen;
//   - haven events prints the promotion.
//
// Screenshots go to $HAVEN_ARTIFACTS (the test's directory without it).
func TestDashboardInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster and a browser")
	}
	chromium := testenv.NeedCommand(t, "chromium", "chromium")
	testenv.NeedRoot(t)
	testnet.Require(t)
	_, err := user.Lookup("postgres")
	testenv.Need(t, err == nil, "needs the postgres user (apt-get install postgresql)")
	bins, err := pg.FindBinaries(context.Background(), "")
	testenv.Need(t, err == nil, "no PostgreSQL binaries: %v", err)

	l := startLab(t, bins.Dir)
	primary := l.primary()
	// The page is served by a node that stays: the first that is not the
	// primary.
	served := "db1"
	if primary == served {
		served = "db2"
	}
	url := l.proxy(served)
	t.Logf("primary %s; the page is %s's, at %s", primary, served, url)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	actx, stopAlloc := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1280, 1000), chromedp.UserDataDir(filepath.Join(dir, "profile")),
		// Chromium's singleton socket goes in TMPDIR and stays there
		// when it is killed: in the test's directory, it goes with it.
		chromedp.Env("TMPDIR="+dir))...)
	t.Cleanup(stopAlloc)
	bctx, stopBrowser := chromedp.NewContext(actx)
	t.Cleanup(stopBrowser)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}
	// The page's confirmation and the token's prompt are answered as an
	// operator would: yes, and the token.
	var dialogs dialogLog
	go func() {
		for ev, err := range chromedp.Events(bctx, page.JavascriptDialogOpening) {
			if err != nil {
				return
			}
			dialogs.add(string(ev.Type) + ": " + ev.Message)
			chromedp.Call(bctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true, PromptText: consoleToken})
		}
	}()
	if err := chromedp.Do(bctx, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.ID("view"))); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
	eval := func(what, js string, v any) error {
		raw, err := chromedp.Run(bctx, chromedp.Evaluate[[]byte](js))
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return json.Unmarshal(raw, v)
	}
	type topology struct {
		Ready    []string
		Primary  string
		Holder   string
		Answers  string
		Live     string
		Backends []string
	}
	const readTopology = `(() => ({
		ready: [...document.querySelectorAll(".node.ready")].map(n => n.dataset.node),
		primary: (document.getElementById("primary") || {}).textContent,
		holder: (document.querySelector("#vips .holder") || {}).textContent,
		answers: (document.querySelector("#dns") || {outerHTML: "no DNS section"}).outerHTML,
		live: document.getElementById("live").dataset.state,
		backends: [...document.querySelectorAll('[data-balancer="web"] tr[data-backend]')].map(r => r.dataset.backend + "=" + r.children[1].textContent.split(" ")[0] + "/" + r.children[2].textContent),
	}))()`
	var top topology
	testenv.Poll(t, 30*time.Second, "the page shows the topology", func() (bool, string) {
		if err := eval("the topology", readTopology, &top); err != nil {
			return false, err.Error()
		}
		return len(top.Ready) == 3 && top.Primary == primary && top.Holder != "" && top.Holder != "UNHELD" &&
				strings.Contains(top.Answers, labVIP) && top.Live == "live" && len(top.Backends) == 6 && !strings.Contains(strings.Join(top.Backends, ","), "down"),
			fmt.Sprintf("%+v", top)
	})
	shot(t, bctx, dir, "dashboard.png")

	// An operator drains app1 on the served node's balancer from the page.
	if err := chromedp.Do(bctx, chromedp.Click(chromedp.CSS(`[data-balancer="web"] tr[data-backend="app1"] button`))); err != nil {
		t.Fatalf("click drain: %v", err)
	}
	testenv.Poll(t, 20*time.Second, "the page shows app1 drained on every node, app2 not", func() (bool, string) {
		if err := eval("the topology", readTopology, &top); err != nil {
			return false, err.Error()
		}
		drained := 0
		for _, b := range top.Backends {
			if strings.HasSuffix(b, "/drain") {
				drained++
				if !strings.HasPrefix(b, "app1=") {
					t.Fatalf("%s drained: only app1 was", b)
				}
			}
		}
		return drained == 3, fmt.Sprintf("%v; dialogs %v", top.Backends, dialogs.all())
	})
	if got := dialogs.all(); len(got) != 2 || !strings.HasPrefix(got[0], "confirm: Drain app1 of web?") || !strings.HasPrefix(got[1], "prompt: The admin token") {
		t.Errorf("dialogs %q, want the confirmation, then the token's prompt", got)
	}

	// Watch the page as the primary goes: when the new primary shows, and
	// when the promotion's line arrives.
	var armed bool
	if err := eval("the watch", `(() => {
		window.seen = {};
		const check = () => {
			const p = document.getElementById("primary");
			if (p && p.textContent !== `+"`"+primary+"`"+` && p.textContent !== "NONE" && !window.seen.primary) window.seen.primary = {node: p.textContent, at: Date.now()};
			const ev = document.querySelector('#timeline li[data-kind="promotion"]');
			if (ev && !window.seen.promotion && ev.dataset.id > window.seenAfter) window.seen.promotion = {node: ev.querySelector(".node").textContent, at: Date.now(), id: ev.dataset.id};
		};
		window.seenAfter = (document.querySelector("#timeline li") || {dataset: {id: ""}}).dataset.id;
		new MutationObserver(check).observe(document.body, {subtree: true, childList: true, characterData: true});
		return true;
	})()`, &armed); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	l.kill(primary)
	type sighting struct {
		Node string
		At   int64
		ID   string
	}
	var seen struct{ Primary, Promotion *sighting }
	testenv.Poll(t, 90*time.Second, "the page shows a new primary and the promotion", func() (bool, string) {
		if err := eval("what the page saw", `window.seen`, &seen); err != nil {
			return false, err.Error()
		}
		return seen.Primary != nil && seen.Promotion != nil, fmt.Sprintf("%+v", seen)
	})
	promoted := l.promotion(seen.Promotion.ID)
	if seen.Primary.Node != seen.Promotion.Node || promoted.Node != seen.Primary.Node {
		t.Errorf("the page shows primary %s and a promotion on %s; the timeline's promotion is %s's", seen.Primary.Node, seen.Promotion.Node, promoted.Node)
	}
	showed := time.UnixMilli(max(seen.Primary.At, seen.Promotion.At))
	t.Logf("killed %s's agent at %s; %s promoted %s later; the page showed both %s after the promotion",
		primary, killed.Format("15:04:05.000"), promoted.Node, promoted.At.Sub(killed).Round(time.Millisecond), showed.Sub(promoted.At).Round(time.Millisecond))
	if d := showed.Sub(promoted.At); d > 2*time.Second {
		t.Errorf("the page showed the new primary and the promotion %s after it happened, want within 2s", d)
	}
	testenv.Poll(t, 30*time.Second, "the page shows the address held and two ready nodes", func() (bool, string) {
		if err := eval("the topology", readTopology, &top); err != nil {
			return false, err.Error()
		}
		return len(top.Ready) == 2 && top.Holder != "" && top.Holder != "UNHELD" && top.Holder != primary, fmt.Sprintf("%+v", top)
	})
	shot(t, bctx, dir, "dashboard-after-failover.png")

	// A phone: the page fits its width (tables scroll inside themselves).
	var fits struct{ Scroll, Inner int }
	if err := chromedp.Do(bctx, chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2))); err != nil {
		t.Fatal(err)
	}
	if err := eval("the width", `(() => ({scroll: document.documentElement.scrollWidth, inner: window.innerWidth}))()`, &fits); err != nil {
		t.Fatal(err)
	}
	if fits.Scroll > fits.Inner {
		t.Errorf("at a phone's width the page is %dpx wide in a %dpx window", fits.Scroll, fits.Inner)
	}
	shot(t, bctx, dir, "dashboard-phone.png")

	out, err := l.cli("events", "-o", "json", "--limit", "200")
	var evs []events.Event
	if err != nil || json.Unmarshal([]byte(out), &evs) != nil {
		t.Fatalf("haven events -o json: %v\n%s", err, out)
	}
	found := false
	for _, e := range evs {
		found = found || e.ID == promoted.ID
	}
	if !found {
		t.Errorf("haven events lacks the promotion %s:\n%s", promoted.ID, out)
	}

	// Every metric the alert rules and the Grafana dashboard name is one
	// the running nodes export.
	l.dig("www.shop.test.")
	exported := map[string]bool{}
	for _, n := range labNodes {
		if _, ok := l.agents[n]; ok {
			for name := range l.metricFamilies(n) {
				exported[name] = true
			}
		}
	}
	used, err := deploy.MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range deploy.SortedNames(used) {
		if !exported[name] {
			t.Errorf("%s, named by %s, is not exported by any node", name, strings.Join(used[name], ", "))
		}
	}
}

// metricFamilies returns the families node's /metrics serves.
func (l *lab) metricFamilies(node string) map[string]bool {
	l.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: l.net.Host("client").DialContext}}
	resp, err := client.Get("http://" + l.net.Host(node).Addr.String() + ":9900/metrics")
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			out[f[2]] = true
		}
	}
	return out
}

// dig asks every live name server for name from the client, so that
// their query counters exist.
func (l *lab) dig(name string) {
	l.t.Helper()
	for _, n := range labNodes {
		if _, ok := l.agents[n]; !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := l.net.Host("client").Command(ctx, "dig", "+short", "+time=2", "+tries=1", "@"+l.net.Host(n).Addr.String(), name, "A").CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), labVIP) {
			l.t.Errorf("dig @%s %s: %v: %s, want %s", n, name, err, out, labVIP)
		}
	}
}

const labVIP = "198.18.1.100"

// lab is three haven nodes and a backend in namespaces.
type lab struct {
	t      *testing.T
	net    *testnet.Net
	bin    string
	dir    string
	agents map[string]*testnet.Proc
}

var labNodes = []string{"db1", "db2", "db3"}

func startLab(t *testing.T, bindir string) *lab {
	l := &lab{t: t, bin: testenv.Haven(t), dir: testenv.SearchableDir(t), agents: map[string]*testnet.Proc{}}
	root := filepath.Join(testenv.MemoryDir(t), "lib")
	if err := os.Chmod(filepath.Dir(root), 0o711); err != nil { // the postgres user passes through
		t.Fatal(err)
	}
	l.net = testnet.Start(t, testnet.Options{Hosts: []string{"db1", "db2", "db3", "app1", "app2", "client"}})
	addr := func(h string) string { return l.net.Host(h).Addr.String() }
	cfg := fmt.Sprintf(`cluster: console
admin: {token_file: %[1]s/token}
regions:
  lab:
    nodes:
      db1: {address: %[4]s, zone: a}
      db2: {address: %[5]s, zone: b}
      db3: {address: %[6]s, zone: c}
coordination:
  members: [db1, db2, db3]
  data_dir: %[2]s/{node}/etcd
  tls: {ca: "%[1]s/certs/ca.pem", cert: "%[1]s/certs/{node}.pem", key: "%[1]s/certs/{node}-key.pem"}
database:
  nodes: [db1, db2, db3]
  data_dir: %[2]s/{node}/pg
  bindir: %[3]s
  replication: {mode: sync, password_file: %[1]s/replication.password}
  settings: {dynamic_shared_memory_type: mmap}
  backup: {target: "file://%[1]s/backups"}
objectives: {rto: 30s, rpo: 0s}
checks:
  app:
    http: {port: 8080, path: /healthz, expect_status: [200]}
    interval: 1s
    timeout: 500ms
balancers:
  web:
    nodes: [db1, db2, db3]
    listen: ":80"
    check: app
    vip: %[8]s/24
    backends:
      - {name: app1, address: "%[7]s:8080"}
      - {name: app2, address: "%[9]s:8080"}
traffic:
  zone: shop.test.
  nameservers: [db1, db2, db3]
  records:
    www:
      policy: failover
      targets:
        - {name: lab, address: %[8]s, follows: {vip: web}}
`, l.dir, root, bindir, addr("db1"), addr("db2"), addr("db3"), addr("app1"), labVIP, addr("app2"))
	for name, content := range map[string]string{"haven.yaml": cfg, "token": consoleToken + "\n", "replication.password": "console-secret\n"} {
		if err := os.WriteFile(filepath.Join(l.dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(l.bin, "certs", "-c", l.config(), "-o", filepath.Join(l.dir, "certs")).CombinedOutput(); err != nil {
		t.Fatalf("haven certs: %v\n%s", err, out)
	}
	for _, app := range []string{"app1", "app2"} {
		if _, err := l.net.Host(app).Start(context.Background(), l.bin, "backend", "--listen", addr(app)+":8080", "--name", app); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range labNodes {
		p, err := l.net.Host(n).Start(context.Background(), l.bin, "agent", "-c", l.config(), "-n", n)
		if err != nil {
			t.Fatal(err)
		}
		l.agents[n] = p
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("HAVEN_E2E_DEBUG") != "" {
			var procs []*testnet.Proc
			for _, n := range labNodes {
				procs = append(procs, l.agents[n])
			}
			t.Logf("agents' logs:\n%s", testnet.Outputs(200000, procs...))
		}
	})
	return l
}

func (l *lab) config() string { return filepath.Join(l.dir, "haven.yaml") }

// cli runs haven with args in the client's namespace.
func (l *lab) cli(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := l.net.Host("client").Command(ctx, l.bin, append(args, "-c", l.config())...)
	var stderr testenv.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out) + stderr.String(), err
	}
	return string(out), nil
}

// primary waits until the database has a primary and two streaming
// replicas, and returns the primary.
func (l *lab) primary() string {
	l.t.Helper()
	var primary string
	testenv.Poll(l.t, 150*time.Second, "a primary and two streaming replicas", func() (bool, string) {
		for n, p := range l.agents {
			select {
			case <-p.Done():
				l.t.Fatalf("%s's agent exited:\n%s", n, p.Output())
			default:
			}
		}
		out, err := l.cli("pg", "status", "-o", "json")
		if err != nil {
			return false, out
		}
		var st struct {
			Nodes map[string]struct {
				Primary string
				Members map[string]struct {
					Role      string
					Streaming bool
				}
			}
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return false, out
		}
		d := st.Nodes["db1"]
		streaming := 0
		for _, m := range d.Members {
			if m.Role == "replica" && m.Streaming {
				streaming++
			}
		}
		primary = d.Primary
		return primary != "" && streaming == 2, out
	})
	return primary
}

// kill kills node's agent and what it started (its PostgreSQL).
func (l *lab) kill(node string) {
	l.t.Helper()
	if err := l.agents[node].Kill(); err != nil {
		l.t.Fatal(err)
	}
	delete(l.agents, node)
}

// promotion returns the timeline's event with the ID.
func (l *lab) promotion(id string) events.Event {
	l.t.Helper()
	out, err := l.cli("events", "-o", "json", "--limit", "500")
	if err != nil {
		l.t.Fatalf("haven events: %v\n%s", err, out)
	}
	var evs []events.Event
	if err := json.Unmarshal([]byte(out), &evs); err != nil {
		l.t.Fatal(err)
	}
	for _, e := range evs {
		if e.ID == id {
			return e
		}
	}
	l.t.Fatalf("no event %s in haven events:\n%s", id, out)
	return events.Event{}
}

// proxy forwards a loopback port of this namespace to node's admin port
// through the client host: the browser runs here, the agents in their
// namespaces. It returns the page's URL.
func (l *lab) proxy(node string) string {
	l.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		l.t.Fatal(err)
	}
	target := l.net.Host(node).Addr.String() + ":9900"
	var wg sync.WaitGroup
	l.t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				up, err := l.net.Host("client").DialContext(ctx, "tcp", target)
				cancel()
				if err != nil {
					return
				}
				defer up.Close()
				go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, up)
			})
		}
	})
	return "http://" + ln.Addr().String() + "/"
}

func shot(t *testing.T, bctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(dir, name)
	if a := os.Getenv("HAVEN_ARTIFACTS"); a != "" {
		if err := os.MkdirAll(a, 0o755); err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(a, name)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// dialogLog keeps the page's dialogs in order.
type dialogLog struct {
	mu   sync.Mutex
	msgs []string
}

func (d *dialogLog) add(m string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.msgs = append(d.msgs, m)
}

func (d *dialogLog) all() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.msgs...)
}
