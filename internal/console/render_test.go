package console

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/internal/events"
)

// TestRenderShowsWhatAnOperatorLooksFor renders a view of a deployment in
// trouble and checks that the page says it: an unreachable node and why,
// an unheld address, no primary, a backend down with its reason, a name in
// its all-down answer, failing objectives; that the actions are buttons
// that ask first (never links); and that a name or message with markup is
// escaped.
func TestRenderShowsWhatAnOperatorLooksFor(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	v := View{
		Cluster: "shop", Node: "lb1", At: now,
		Blind:      []string{"lb2 does not answer (connection refused): what only it knows is missing"},
		Objectives: &Objectives{Met: false, Failing: []string{"database: no replica can take over"}},
		Regions: []Region{{Name: "east", Active: true, Nodes: []Node{
			{Name: "lb1", Self: true, Reachable: true, Ready: true, Roles: []string{"balancer"}},
			{Name: "lb2", Error: "connection refused"},
		}}},
		VIPs: []VIP{{Name: "web", Address: "198.18.1.100/24", Nodes: []VIPNode{{Node: "lb1", State: "backup"}, {Node: "lb2", State: "no answer"}}}},
		Balancers: []Balancer{{Name: "web", Mode: "http", Listen: ":80", Nodes: []BalancerNode{{Node: "lb1", Reachable: true, Ready: true, Backends: []Backend{
			{Name: "app1", Health: "down", Since: now.Add(-90 * time.Second), Reason: "connect: connection refused", Admin: "ready", Rate: -1},
			{Name: "<app2>", Health: "up", Admin: "drain", Rate: 12.5},
		}}}}},
		Database: &Database{Seen: true, Sync: "async", Members: []DBMember{{Node: "db2", Role: "replica", LagBytes: 3 << 20, LagSeconds: 2.5}}},
		DNS:      []DNSName{{Name: "www.shop.example.", Record: "www", Server: "lb1", AllDown: true, Answers: []string{"198.18.1.100"}, Targets: []DNSTarget{{Name: "east", Address: "198.18.1.100"}}}},
	}
	var b bytes.Buffer
	evs := []events.Event{{ID: "1", At: now, Node: "db1", Kind: events.KindPromotion, Level: "WARN", Message: "promoted <to> primary", Attrs: map[string]string{"epoch": "4"}}}
	if err := Page(&b, v, evs, "note"); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	for _, want := range []string{
		`class="badge bad">NOT MET`, "database: no replica can take over",
		"lb2 does not answer (connection refused)", `class="node unreachable" data-node="lb2"`, "no answer: connection refused",
		`east <span class="badge ok">active</span>`,
		`class="holder bad">UNHELD`,
		`id="primary" class="bad">NONE`,
		`<td class="health down" title="connect: connection refused">down <small>1m ago</small>`,
		`&lt;app2&gt;`, "12.5",
		"3.0 MiB / 2.5 s",
		`<span class="badge bad">ALL DOWN</span>`,
		`data-path="/api/v1/traffic/www/east/drain"`,
		`data-path="/api/v1/balancers/web/backends/app1/drain" data-confirm="Drain app1 of web? No new requests go to it."`,
		`promoted &lt;to&gt; primary`, `data-kind="promotion"`, `epoch=4`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %s", want)
		}
	}
	if strings.Contains(page, "<app2>") || strings.Contains(page, "<to>") {
		t.Error("markup from a name or a message reached the page unescaped")
	}
	if strings.Contains(page, "<a href") {
		t.Error("the page has a link: an action must be a button that asks first")
	}
	if got := strings.Count(page, "<button"); got != strings.Count(page, "data-confirm=") {
		t.Errorf("%d buttons, %d with a confirmation", got, strings.Count(page, "data-confirm="))
	}
}

// TestRenderEmptyView: a node alone, with nothing configured yet to show,
// still renders.
func TestRenderEmptyView(t *testing.T) {
	var b bytes.Buffer
	if err := Page(&b, View{Cluster: "c", Node: "n1"}, nil, ""); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `<ol id="timeline"></ol>`) {
		t.Errorf("an empty view's page:\n%s", b.String())
	}
}
