package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
)

// startBackend runs `haven backend`, the demo web application, on a fresh
// loopback port and waits until it listens.
func startBackend(t *testing.T, name string) string {
	t.Helper()
	addr := freeAddr(t)
	p := start(t, "backend", "--listen", addr, "--name", name)
	testenv.Poll(t, 10*time.Second, "backend "+name+" listening on "+addr, func() (bool, string) {
		select {
		case <-p.done:
			return false, "exited: " + p.stderr.String()
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, ""
	})
	return addr
}

type e2eBackend struct {
	name, addr string
	weight     int // 0: not written
}

func e2eConfig(admin, listen string, backends []e2eBackend, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `cluster: e2e
regions:
  local:
    nodes:
      lb1: {address: 127.0.0.1, zone: a, admin: %q}
checks:
  web:
    http: {path: /healthz, expect_status: [200], expect_body: "ok"}
    interval: 200ms
    timeout: 200ms
    rise: 1
    fall: 2
balancers:
  web:
    nodes: [lb1]
    listen: %q
    check: web
    lameduck: 1s
%s    backends:
`, admin, listen, extra)
	for _, be := range backends {
		if be.weight > 0 {
			fmt.Fprintf(&b, "      - {name: %s, address: %q, weight: %d}\n", be.name, be.addr, be.weight)
		} else {
			fmt.Fprintf(&b, "      - {name: %s, address: %q}\n", be.name, be.addr)
		}
	}
	return b.String()
}

// statusRow is one line of `haven lb status`.
type statusRow struct {
	node, backend, address, health, admin, weight, inflight, requests, last string
}

func parseLBStatus(t *testing.T, out string) map[string]statusRow {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "NODE") || !strings.Contains(lines[0], "LAST CHECK") {
		t.Fatalf("haven lb status: no header line:\n%s", out)
	}
	rows := map[string]statusRow{}
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) < 9 {
			t.Fatalf("haven lb status: short line %q", l)
		}
		rows[f[1]] = statusRow{f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], strings.Join(f[8:], " ")}
	}
	return rows
}

func get(url string) (int, string, error) {
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Backend") + string(b), err
}

// TestAgentEndToEnd runs haven as an operator does: check the file, start
// the agent, watch it with `haven lb status`, change the file and SIGHUP,
// break the file and SIGHUP, drain a backend with --wait, stop with SIGTERM.
func TestAgentEndToEnd(t *testing.T) {
	backends := []e2eBackend{
		{name: "web1", addr: startBackend(t, "web1")},
		{name: "web2", addr: startBackend(t, "web2")},
	}
	web3 := e2eBackend{name: "web3", addr: startBackend(t, "web3")}
	admin, listen := freeAddr(t), freeAddr(t)
	path := filepath.Join(t.TempDir(), "haven.yaml")
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A traffic manager on lb1 too, in every version of the file.
	dnsAddr := freeAddr(t)
	traffic := fmt.Sprintf(`traffic:
  zone: e2e.test.
  nameservers: [lb1]
  listen: %q
  records:
    www: {policy: all, targets: [{name: a, address: 127.0.0.9}, {name: b, address: 127.0.0.10}]}
`, dnsAddr)
	write(traffic + e2eConfig(admin, listen, backends, ""))
	if r := haven(t, 10*time.Second, "check", "-c", path); r.code != 0 {
		t.Fatalf("haven check:\n%s", r)
	}

	agent := start(t, "agent", "-c", path, "-n", "lb1")
	lbStatus := func() (map[string]statusRow, result) {
		t.Helper()
		r := haven(t, 20*time.Second, "lb", "status", "-c", path)
		if r.code != 0 {
			return nil, r
		}
		return parseLBStatus(t, r.stdout), r
	}
	waitStatus := func(what string, cond func(map[string]statusRow) bool) map[string]statusRow {
		t.Helper()
		var rows map[string]statusRow
		testenv.Poll(t, 20*time.Second, what, func() (bool, string) {
			var r result
			rows, r = lbStatus()
			return rows != nil && cond(rows), r.String()
		})
		return rows
	}
	rows := waitStatus("web1 and web2 up in haven lb status", func(rows map[string]statusRow) bool {
		return rows["web1"].health == "up" && rows["web2"].health == "up"
	})
	for _, be := range backends {
		r := rows[be.name]
		if r.node != "lb1" || r.address != be.addr || r.admin != "ready" || r.weight != "1" || r.last != "ok" {
			t.Errorf("haven lb status row for %s = %+v, want lb1 %s up ready 1 ... ok", be.name, r, be.addr)
		}
	}
	if code, body, err := get("http://" + admin + "/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz = %d %q %v", code, body, err)
	}
	for i := range 4 {
		if code, body, err := get("http://" + listen + "/counter"); err != nil || code != 200 {
			t.Fatalf("request %d through the balancer: %d %q %v", i, code, body, err)
		}
	}

	// SIGHUP after adding web3 and weighting web1: both visible.
	write(traffic + e2eConfig(admin, listen, []e2eBackend{{name: "web1", addr: backends[0].addr, weight: 3}, backends[1], web3}, ""))
	agent.cmd.Process.Signal(syscall.SIGHUP)
	waitStatus("web3 up and web1 at weight 3 after SIGHUP", func(rows map[string]statusRow) bool {
		return rows["web3"].health == "up" && rows["web1"].weight == "3"
	})
	served := map[string]int{}
	for range 10 {
		code, body, err := get("http://" + listen + "/counter")
		if err != nil || code != 200 {
			t.Fatalf("after SIGHUP: %d %q %v", code, body, err)
		}
		served[strings.SplitN(body, "{", 2)[0]]++
	}
	if served["web3"] == 0 {
		t.Errorf("after adding web3, 10 requests went to %v", served)
	}
	good := traffic + e2eConfig(admin, listen, []e2eBackend{{name: "web1", addr: backends[0].addr, weight: 3}, backends[1], web3}, "")

	// SIGHUP with a broken file: rejected, logged, and nothing changes.
	write(traffic + e2eConfig(admin, listen, backends[:1], "    algorithm: fastest\n"))
	agent.cmd.Process.Signal(syscall.SIGHUP)
	testenv.Poll(t, 10*time.Second, `"reload rejected" in the agent's log`, func() (bool, string) {
		return strings.Contains(agent.stderr.String(), "reload rejected"), agent.stderr.String()
	})
	if log := agent.stderr.String(); !strings.Contains(log, "balancers.web.algorithm") {
		t.Errorf("the rejected reload's log does not say what is wrong:\n%s", log)
	}
	for i := range 4 {
		if code, body, err := get("http://" + listen + "/counter"); err != nil || code != 200 {
			t.Fatalf("request %d after a rejected reload: %d %q %v", i, code, body, err)
		}
	}
	// The CLI reads the same file to find the agents, so it refuses it too,
	// saying why.
	if _, r := lbStatus(); r.code != 1 || !strings.Contains(r.stderr, "balancers.web.algorithm") {
		t.Errorf("haven lb status with a broken file:\n%s\nwant exit 1 naming the problem", r)
	}
	write(good)
	if rows, r := lbStatus(); rows == nil || len(rows) != 3 || rows["web1"].weight != "3" {
		t.Errorf("after a rejected reload, haven lb status shows:\n%s\nwant web1 (weight 3), web2 and web3 unchanged", r)
	}

	// haven lb weight.
	if r := haven(t, 20*time.Second, "lb", "weight", "web2", "2", "-c", path); r.code != 0 || !strings.Contains(r.stdout, "lb1: web/web2 weight 2") {
		t.Errorf("haven lb weight web2 2:\n%s", r)
	}

	// haven lb drain --wait returns once the backend's in-flight request
	// has finished, and that request succeeds.
	slow := make(chan string, 1)
	go func() {
		code, body, err := get("http://" + listen + "/slow?ms=3000")
		slow <- fmt.Sprintf("%d %q %v", code, body, err)
	}()
	var busy string
	testenv.Poll(t, 10*time.Second, "the slow request in flight", func() (bool, string) {
		code, body, err := get("http://" + admin + "/api/v1/balancers")
		if err != nil || code != 200 {
			return false, fmt.Sprintf("%d %s %v", code, body, err)
		}
		var sts []struct {
			Backends []struct {
				Name     string
				Inflight int
			}
		}
		if err := json.Unmarshal([]byte(body), &sts); err != nil {
			return false, err.Error()
		}
		for _, st := range sts {
			for _, b := range st.Backends {
				if b.Inflight > 0 {
					busy = b.Name
					return true, ""
				}
			}
		}
		return false, body
	})
	r := haven(t, 30*time.Second, "lb", "drain", busy, "-c", path, "--wait")
	// The request ends when the balancer has relayed the response; the
	// client may take a moment more to report it, never the seconds the
	// backend still had to sleep had --wait returned early.
	var slowResult string
	select {
	case slowResult = <-slow:
	case <-time.After(time.Second):
		t.Errorf("haven lb drain %s --wait returned while its request was still in flight:\n%s", busy, r)
		slowResult = <-slow
	}
	if r.code != 0 || !strings.Contains(r.stdout, "lb1: web/"+busy+" is drain") || !strings.Contains(r.stdout, "lb1: "+busy+" drained") {
		t.Errorf("haven lb drain %s --wait:\n%s", busy, r)
	}
	if !strings.HasPrefix(slowResult, "200 ") {
		t.Errorf("the request in flight during the drain: %s, want 200", slowResult)
	}
	if rows, r := lbStatus(); rows == nil || rows[busy].admin != "drain" {
		t.Errorf("after drain, haven lb status:\n%s", r)
	}
	if r := haven(t, 20*time.Second, "lb", "enable", busy, "-c", path); r.code != 0 || !strings.Contains(r.stdout, "is ready") {
		t.Errorf("haven lb enable %s:\n%s", busy, r)
	}
	if r := haven(t, 20*time.Second, "lb", "drain", "web9", "-c", path); r.code != 1 || !strings.Contains(r.stderr, `no backend "web9"`) || !strings.Contains(r.stderr, "web1, web2, web3") {
		t.Errorf("haven lb drain web9:\n%s\nwant exit 1 listing the backends", r)
	}

	// haven status: every node, and the balancer's table.
	r = haven(t, 20*time.Second, "status", "-c", path)
	if r.code != 0 || !strings.Contains(r.stdout, "lb1: ready (version "+testenv.Version+")") || !strings.Contains(r.stdout, "balancer web (http, "+listen+")") {
		t.Errorf("haven status:\n%s", r)
	}
	if !strings.Contains(r.stdout, "traffic e2e.test. (as lb1 answers; views: standalone, 0 other instances):") || !regexp.MustCompile(`www\.e2e\.test\.\s+all\s+127\.0\.0\.9 127\.0\.0\.10\s+a 127\.0\.0\.9 up, b 127\.0\.0\.10 up`).MatchString(r.stdout) {
		t.Errorf("haven status does not show what www answers:\n%s", r)
	}
	// haven dns drain takes a target out of the answers on every name server.
	if r := haven(t, 20*time.Second, "dns", "drain", "www", "a", "--for", "10m", "-c", path); r.code != 0 || !strings.Contains(r.stdout, "lb1: www/a drained for 10m0s") {
		t.Errorf("haven dns drain www a:\n%s", r)
	}
	if r := haven(t, 20*time.Second, "dns", "status", "-c", path); r.code != 0 || !regexp.MustCompile(`www\.e2e\.test\.\s+all\s+127\.0\.0\.10\s+a 127\.0\.0\.9 drained until \d\d:\d\d:\d\d`).MatchString(r.stdout) {
		t.Errorf("haven dns status after the drain:\n%s", r)
	}
	if r := haven(t, 20*time.Second, "dns", "drain", "www", "zz", "-c", path); r.code != 1 || !strings.Contains(r.stderr, `has no target "zz" (its targets: a, b)`) {
		t.Errorf("haven dns drain of an unknown target:\n%s\nwant exit 1 naming it", r)
	}
	if r := haven(t, 20*time.Second, "dns", "enable", "www", "a", "-c", path); r.code != 0 {
		t.Errorf("haven dns enable www a:\n%s", r)
	}

	// What Prometheus scrapes passes promlint: the families of every role
	// the agent runs, the traffic manager's included.
	if r := askA(t, dnsAddr, "www.e2e.test."); len(r.Answer) == 0 {
		t.Errorf("www.e2e.test. A: no answer:\n%s", r)
	}
	lintMetrics(t, admin, "haven_build_info", "haven_lb_backend_requests_total", "haven_lb_request_duration_seconds",
		"haven_health_probes_total", "haven_health_target_state", "haven_dns_queries_total", "haven_dns_responses_total",
		"haven_dns_target_up", "haven_dns_views")

	// SIGTERM: lameduck (not ready, still serving), then exit 0.
	agent.cmd.Process.Signal(syscall.SIGTERM)
	testenv.Poll(t, 10*time.Second, "/readyz reporting the shutdown", func() (bool, string) {
		code, body, err := get("http://" + admin + "/readyz")
		return err == nil && code == 503 && strings.Contains(body, "shutting down"), fmt.Sprintf("%d %q %v", code, body, err)
	})
	if code, body, err := get("http://" + listen + "/counter"); err != nil || code != 200 {
		t.Errorf("during lameduck the balancer must still serve: %d %q %v", code, body, err)
	}
	if code := agent.wait(t, 60*time.Second); code != 0 {
		t.Errorf("haven agent after SIGTERM: exit %d, want 0\n%s", code, agent.stderr.String())
	}
	if log := agent.stderr.String(); !strings.Contains(log, "agent stopped") {
		t.Errorf("the agent's log does not end with \"agent stopped\":\n%s", log)
	}

	// With the agent gone, the CLI says so.
	r = haven(t, 20*time.Second, "lb", "status", "-c", path)
	if r.code != 1 || !strings.Contains(r.stderr, "is its agent running?") {
		t.Errorf("haven lb status with no agent:\n%s\nwant exit 1 asking whether the agent runs", r)
	}
}

func TestAgentUnknownNode(t *testing.T) {
	r := haven(t, 10*time.Second, "agent", "-c", "testdata/good.yaml", "-n", "lb9")
	if r.code != 1 || !strings.Contains(r.stderr, `node "lb9" is not in testdata/good.yaml (nodes: [lb1])`) {
		t.Errorf("haven agent -n lb9:\n%s\nwant exit 1 listing the nodes", r)
	}
}

func TestAgentBadFile(t *testing.T) {
	r := haven(t, 10*time.Second, "agent", "-c", "testdata/two-problems.bad.yaml", "-n", "lb1")
	if r.code != 1 || !strings.Contains(r.stderr, "testdata/two-problems.bad.yaml:11:16: balancers.web.algorithm") || !strings.Contains(r.stderr, "13:35") {
		t.Errorf("haven agent on a bad file:\n%s\nwant exit 1 with every problem", r)
	}
}
