package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/testenv"
	"github.com/haven-ha/haven/internal/testnet"
)

// TestDrainOnEveryNodeSurvivesRestart runs three balancer nodes (each its
// own etcd member) in namespaces in front of two backends. A drain set
// with `haven lb drain` is on every node at once and says who set it; an
// agent restarted keeps it; a weight set while a node's agent is down is
// there when it comes back; and no request through the restarted node
// reaches the drained backend.
func TestDrainOnEveryNodeSurvivesRestart(t *testing.T) {
	testnet.Require(t)
	base := testenv.SearchableDir(t)
	path := filepath.Join(base, "haven.yaml")
	cfg := fmt.Sprintf(`cluster: ops
admin: {token_file: %[1]s/admin.token}
regions:
  lab:
    nodes:
      lb1: {address: 198.18.1.11, zone: a}
      lb2: {address: 198.18.1.12, zone: b}
      lb3: {address: 198.18.1.13, zone: c}
coordination:
  members: [lb1, lb2, lb3]
  data_dir: %[1]s/{node}/etcd
checks:
  app:
    http: {path: /healthz, expect_status: [200], expect_body: "ok"}
    interval: 500ms
    timeout: 400ms
    rise: 1
    fall: 2
balancers:
  web:
    nodes: [lb1, lb2, lb3]
    listen: ":8080"
    check: app
    backends:
      - {name: app1, address: "198.18.1.14:8080"}
      - {name: app2, address: "198.18.1.15:8080"}
`, base)
	for name, content := range map[string]string{"haven.yaml": cfg, "admin.token": "ops-token\n"} {
		if err := os.WriteFile(filepath.Join(base, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	lab := newNSLab(t, "lb1", "lb2", "lb3", "app1", "app2")
	for i, app := range []string{"app1", "app2"} {
		if _, err := lab.n.Host(app).Start(context.Background(), lab.bin, "backend", "--listen", fmt.Sprintf("198.18.1.%d:8080", 14+i), "--name", app); err != nil {
			t.Fatal(err)
		}
	}
	for _, node := range []string{"lb1", "lb2", "lb3"} {
		lab.start(node, path)
	}
	lb1 := lab.n.Host("lb1")
	cli := func(args ...string) (string, error) { return lab.cli(path, args...) }
	// row matches a node's line for a backend in haven lb status.
	row := func(node, backend, rest string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^` + node + `\s+` + backend + `\s+\S+\s+` + rest)
	}
	waitStatus := func(what string, want ...*regexp.Regexp) string {
		t.Helper()
		var out string
		testenv.Poll(t, 90*time.Second, what, func() (bool, string) {
			lab.alive()
			out, _ = cli("lb", "status")
			for _, re := range want {
				if !re.MatchString(out) {
					return false, out
				}
			}
			return true, out
		})
		return out
	}
	var up []*regexp.Regexp
	for _, node := range []string{"lb1", "lb2", "lb3"} {
		for _, be := range []string{"app1", "app2"} {
			up = append(up, row(node, be, `up\s+ready`))
		}
	}
	up = append(up, regexp.MustCompile(`as lb1 read them from etcd`))
	waitStatus("every node with both backends up and ready, lb1 connected to etcd", up...)

	out, err := cli("lb", "drain", "app2", "--reason", "kernel upgrade")
	if err != nil || !strings.Contains(out, "recorded in etcd through lb1") {
		t.Fatalf("haven lb drain app2: %v\n%s", err, out)
	}
	if !strings.Contains(out, "lb1: web/app2 is drain") {
		t.Errorf("haven lb drain app2 does not show lb1, the node that wrote it, drained:\n%s", out)
	}
	waitStatus("the drain, with who set it, in haven lb status",
		row("lb1", "app2", `up\s+drain`), row("lb2", "app2", `up\s+drain`), row("lb3", "app2", `up\s+drain`),
		regexp.MustCompile(`(?m)^app2\s+drain\s+\S+@\S+\s+.*kernel upgrade`))
	// And for scripts: the records beside every node's answer.
	if out, err := cli("lb", "status", "-o", "json"); err != nil || !regexp.MustCompile(`"operator": \[\s*\{\s*"balancer": "web",\s*"backend": "app2",\s*"what": "state",\s*"value": "drain"`).MatchString(out) {
		t.Errorf("haven lb status -o json: %v\n%s\nwant the drain's record under \"operator\"", err, out)
	}

	// lb2's agent stops; a weight is set while it is down; it starts again.
	lb2 := lab.agents["lb2"]
	lab.lost("lb2")
	if err := lb2.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := lb2.Wait(); err != nil {
		t.Fatalf("lb2's agent after SIGTERM: %v\n%s", err, lb2.Output())
	}
	out, err = cli("lb", "weight", "app1", "5")
	if err != nil || !strings.Contains(out, "lb2:") || !strings.Contains(out, "applies the record when it is back") {
		t.Fatalf("haven lb weight app1 5 with lb2 down: %v\n%s", err, out)
	}
	lab.start("lb2", path)
	waitStatus("lb2, restarted, with the drain and the weight",
		row("lb2", "app1", `up\s+ready\s+5\s`), row("lb2", "app2", `up\s+drain`))

	// Through the restarted node, nothing reaches the drained backend.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: lb1.DialContext}}
	for i := range 20 {
		resp, err := client.Get("http://198.18.1.12:8080/")
		if err != nil {
			t.Fatalf("request %d through lb2: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if by := resp.Header.Get("X-Backend"); resp.StatusCode != 200 || by != "app1" {
			t.Fatalf("request %d through lb2 after its restart: %d from %q (%s); want app1 only, app2 is drained", i, resp.StatusCode, by, body)
		}
	}

	out, err = cli("lb", "enable", "app2")
	if err != nil {
		t.Fatalf("haven lb enable app2: %v\n%s", err, out)
	}
	waitStatus("app2 ready again everywhere", row("lb1", "app2", `up\s+ready`), row("lb2", "app2", `up\s+ready`), row("lb3", "app2", `up\s+ready`))
}
