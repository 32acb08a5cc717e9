package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/demoapp"
	"github.com/haven-ha/haven/internal/events"
	"github.com/haven-ha/haven/internal/health"
	"github.com/haven-ha/haven/internal/testenv"
)

// TestTimeline: with coordination, what happens to a node is in the
// cluster's timeline in etcd, in order, saying who and why: the agent's
// start, a backend going down and up, an operator's drain (the call and
// the record, with the operator's name) and a reload; the stream hands a
// reader each new event as it happens, and one that reconnects with its
// last ID gets what it missed.
func TestTimeline(t *testing.T) {
	e, web2, url := startWithEtcd(t)
	waitOverridesSeen(t, e)

	stream := openEventStream(t, e.adminURL("/api/v1/events/stream"), "")
	web2.SetMode(demoapp.Fail)
	testenv.Poll(t, 20*time.Second, "web2 down", func() (bool, string) {
		b := e.backend("web2")
		return b.Health.State == health.Down, b.Health.State.String()
	})
	got := stream.next(t, 10*time.Second)
	for got.Kind != events.KindHealth {
		got = stream.next(t, 10*time.Second)
	}
	if got.Kind != events.KindHealth || got.Attrs["backend"] != "web2" || got.Attrs["to"] != "down" || got.Level != "WARN" || got.Node != "lb1" {
		t.Errorf("the stream's first event: %+v, want web2 going down, a warning from lb1", got)
	}
	r, err := tryHeader("POST", e.adminURL("/api/v1/balancers/web/backends/web1/drain?reason=patching"), "X-Haven-Operator", "ops@laptop")
	if err != nil || r.status != 200 {
		t.Fatalf("drain: %+v, %v", r, err)
	}
	web2.SetMode(demoapp.OK)
	e.waitUp("web2")
	if err := e.agent.Reload(); err != nil {
		t.Fatal(err)
	}

	// Everything is in etcd, in the order it happened.
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	want := []string{"agent: agent started", "health: target is down", "admin: admin call", "drain: operator record written", "health: target is up", "reload: configuration reloaded"}
	var stored []events.Event
	testenv.Poll(t, 20*time.Second, "the events in etcd", func() (bool, string) {
		stored, err = events.Read(context.Background(), cli, "test", "", 0)
		if err != nil {
			return false, err.Error()
		}
		return inOrder(stored, want), summarize(stored)
	})
	for _, e := range stored {
		if e.Kind == events.KindAdmin && (e.Attrs["operator"] != "ops@laptop" || e.Attrs["query"] != "reason=patching") {
			t.Errorf("the admin call's event %+v does not say who and why", e)
		}
	}
	// The API answers the same, from etcd.
	var ans EventsAnswer
	if err := json.Unmarshal([]byte(do(t, "GET", e.adminURL("/api/v1/events?limit=100")).body), &ans); err != nil {
		t.Fatal(err)
	}
	if ans.Source != "etcd" || !inOrder(ans.Events, want) {
		t.Errorf("GET /api/v1/events: source %q, %s; want etcd and %v", ans.Source, summarize(ans.Events), want)
	}
	if r := do(t, "GET", e.adminURL("/api/v1/events?limit=0")); r.status != http.StatusBadRequest {
		t.Errorf("limit=0: %d %s, want 400", r.status, r.body)
	}

	// A reader that reconnects gets what it missed since its last ID.
	resumed := openEventStream(t, e.adminURL("/api/v1/events/stream"), got.ID)
	var missed []events.Event
	for !inOrder(missed, want[2:]) {
		missed = append(missed, resumed.next(t, 10*time.Second))
		if missed[0].ID <= got.ID {
			t.Fatalf("the resumed stream repeats %+v, which the reader had", missed[0])
		}
	}
}

// startWithEtcd runs an agent in front of web1 and web2 with an external
// etcd (lb2, in the file, runs no agent) and returns it, web2 and etcd's
// URL once both backends are up.
func startWithEtcd(t *testing.T) (*env, *app, string) {
	t.Helper()
	url, _ := startExternalEtcd(t)
	web2 := startApp(t, "web2")
	c := &cluster{admin: freeAddr(t), listen: freeAddr(t), backends: []*app{startApp(t, "web1"), web2},
		coordination: fmt.Sprintf("{endpoints: [%q]}", url)}
	e := newEnv(t, c)
	e.run()
	e.waitUp("web1", "web2")
	return e, web2, url
}

func inOrder(es []events.Event, want []string) bool {
	i := 0
	for _, e := range es {
		if i < len(want) && strings.HasPrefix(e.Kind+": "+e.Message, want[i]) {
			i++
		}
	}
	return i == len(want)
}

func summarize(es []events.Event) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Kind+": "+e.Message)
	}
	return strings.Join(s, "; ")
}

// eventStream reads an admin event stream.
type eventStream struct {
	c chan events.Event
}

func openEventStream(t *testing.T, url, lastID string) *eventStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("stream: %s, %s", resp.Status, ct)
	}
	s := &eventStream{c: make(chan events.Event, 100)}
	go func() {
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var e events.Event
				if json.Unmarshal([]byte(d), &e) == nil {
					s.c <- e
				}
			}
		}
	}()
	return s
}

func (s *eventStream) next(t *testing.T, within time.Duration) events.Event {
	t.Helper()
	select {
	case e := <-s.c:
		return e
	case <-time.After(within):
		t.Fatalf("no event on the stream within %s", within)
		return events.Event{}
	}
}
