package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/console"
	"github.com/haven-ha/haven/internal/demoapp"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestConsole: the page is one request with the view in it; its stream
// sends the view again when something changes and each event as it
// happens; an action the page sends through this agent to a node (here
// itself) is carried out and lands in the timeline; a change from
// another site's page is refused.
func TestConsole(t *testing.T) {
	e, web2, _ := startWithEtcd(t)

	page := do(t, "GET", e.adminURL("/"))
	for _, want := range []string{"<title>haven · test</title>", `data-backend="web1"`, `data-backend="web2"`, `EventSource("api/v1/console/stream"`, `data-node="lb1"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if page.status != 200 {
		t.Fatalf("GET /: %d", page.status)
	}
	var v console.View
	if err := json.Unmarshal([]byte(do(t, "GET", e.adminURL("/api/v1/console")).body), &v); err != nil {
		t.Fatal(err)
	}
	// lb2, in the file, runs no agent: the view says so.
	if len(v.Balancers) != 1 || len(v.Balancers[0].Nodes) != 1 || len(v.Balancers[0].Nodes[0].Backends) != 2 ||
		len(v.Blind) != 1 || !strings.HasPrefix(v.Blind[0], "lb2 does not answer") {
		t.Errorf("view: %+v, want balancer web on lb1 with two backends, and lb2 unseen", v)
	}

	s := openConsoleStream(t, e.adminURL("/api/v1/console/stream"))
	if m := s.next(t, "view"); !strings.Contains(m, `data-backend="web2" class="h-up"`) {
		t.Errorf("the first view does not show web2 up:\n%s", m)
	}
	web2.SetMode(demoapp.Fail)
	testenv.Poll(t, 20*time.Second, "a view with web2 down", func() (bool, string) {
		m := s.next(t, "view")
		return strings.Contains(m, `data-backend="web2" class="h-down"`), m
	})

	// An action through the page: the call goes to /api/v1/nodes/NODE/...
	r, err := tryHeader("POST", e.adminURL("/api/v1/nodes/lb1/api/v1/balancers/web/backends/web1/drain"), "X-Haven-Operator", "dashboard@test")
	if err != nil || r.status != 200 {
		t.Fatalf("the forwarded drain: %+v, %v", r, err)
	}
	if b := e.backend("web1"); b.Admin != "drain" {
		t.Errorf("web1 after the forwarded drain: %s", b.Admin)
	}
	testenv.Poll(t, 10*time.Second, "the drain's event on the stream", func() (bool, string) {
		m := s.next(t, "event")
		return strings.Contains(m, `data-kind="drain"`) && strings.Contains(m, "owner=dashboard@test"), m
	})
	if r := do(t, "POST", e.adminURL("/api/v1/nodes/nowhere/api/v1/reload")); r.status != http.StatusNotFound {
		t.Errorf("an action for an unknown node: %d %s", r.status, r.body)
	}

	req, _ := http.NewRequest("POST", e.adminURL("/api/v1/balancers/web/backends/web1/enable"), nil)
	req.Header.Set("Origin", "http://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || e.backend("web1").Admin != "drain" {
		t.Errorf("a change from another site's page: %s, web1 %s; want 403 and web1 still drained", resp.Status, e.backend("web1").Admin)
	}
}

// consoleStream reads the dashboard's stream: each message's type and
// data.
type consoleStream struct{ c chan [2]string }

func openConsoleStream(t *testing.T, url string) *consoleStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	s := &consoleStream{c: make(chan [2]string, 100)}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 4<<20)
		var typ string
		var data strings.Builder
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				typ = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data.WriteString(strings.TrimPrefix(line, "data: ") + "\n")
			case line == "" && data.Len() > 0:
				s.c <- [2]string{typ, data.String()}
				typ = ""
				data.Reset()
			}
		}
	}()
	return s
}

// next returns the data of the next message of the type.
func (s *consoleStream) next(t *testing.T, typ string) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-s.c:
			if m[0] == typ {
				return m[1]
			}
		case <-timeout:
			t.Fatalf("no %s message on the stream within 10s", typ)
			return ""
		}
	}
}
