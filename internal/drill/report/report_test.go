package report

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/drill/fault"
)

var update = flag.Bool("update", false, "rewrite testdata/*.html from the current template")

// render writes r as HTML and parses it back, as a browser would.
func render(t *testing.T, r drill.Result) (string, *html.Node) {
	t.Helper()
	var b bytes.Buffer
	if err := HTML(&b, r); err != nil {
		t.Fatalf("HTML: %v", err)
	}
	doc, err := html.Parse(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatalf("the page does not parse: %v", err)
	}
	return b.String(), doc
}

// TestHTMLStructure checks the hooks a reader and the browser test rely
// on, in the page of the sample node-loss drill.
func TestHTMLStructure(t *testing.T) {
	_, doc := render(t, sample())

	v := byID(doc, "verdict")
	if v == nil || text(v) != "NOT MET" || attr(v, "data-met") != "false" {
		t.Fatalf("verdict: got %q data-met=%q, want NOT MET, false", text(v), attr(v, "data-met"))
	}
	if got := text(byTag(doc, "title")[0]); got != "haven drill node-loss: NOT MET" {
		t.Errorf("title: %q", got)
	}
	if got := text(byID(doc, "about")); !strings.HasPrefix(got, "the primary's node lost") {
		t.Errorf("about: %q", got)
	}
	if got := text(byID(doc, "reasons")); !strings.Contains(got, "web: "+sampleWebReason) {
		t.Errorf("reasons: %q, want the web part's", got)
	}

	faults := byClass(doc, "fault")
	if len(faults) != 2 || attr(faults[0], "data-kind") != "drop" || attr(faults[1], "data-kind") != "pause" {
		t.Errorf("fault bars: %d, want drop and pause", len(faults))
	}
	// The drop lasts 10s of the axis's 20s: half the plot.
	if w, _ := strconv.ParseFloat(attr(faults[0], "width"), 64); w < (plotRight-plotLeft)/2-1 || w > (plotRight-plotLeft)/2+1 {
		t.Errorf("the 10s fault's bar is %v wide, want half of %d", w, plotRight-plotLeft)
	}

	lanes := byClass(doc, "lane")
	if got := partsOf(lanes); got != "database:true web:false" {
		t.Errorf("lanes: %s", got)
	}
	if got := partsOf(byClass(doc, "part")); got != "database:true web:false" {
		t.Errorf("part tables: %s", got)
	}
	web := lanes[1]
	checkOutage(t, "web", web, sampleFault, sampleWebBack)
	checkOutage(t, "database", lanes[0], sampleFault, sampleDBBack)

	tables := byClass(doc, "part")
	if got := text(tables[1]); !strings.Contains(got, sampleWebReason) || !strings.Contains(got, "not observed") {
		t.Errorf("the web part's table: %q, want its reason and no RPO", got)
	}
	if got := text(tables[0]); !strings.Contains(got, "0 of 640 acknowledged") || !strings.Contains(got, "6.8s") {
		t.Errorf("the database part's table: %q, want 0 of 640 writes lost and the RTO 6.8s", got)
	}
	if got := byClass(doc, "broken"); len(got) != 1 || text(got[0]) != "11.2s" {
		t.Errorf("cells marked broken: %d, want the web RTO only", len(got))
	}

	if got := len(byClass(doc, "event")); got != 4 {
		t.Errorf("event markers: %d, want 4", got)
	}
	if got := len(byClass(doc, "event-item")); got != 4 {
		t.Errorf("events listed: %d, want 4", got)
	}
	var ticks []string
	for _, n := range byClass(doc, "tick-label") {
		ticks = append(ticks, text(n))
	}
	if got := strings.Join(ticks, " "); got != "0s 2s 4s 6s 8s 10s 12s 14s 16s 18s 20s" {
		t.Errorf("ticks: %s", got)
	}
}

// checkOutage checks a lane's buckets: successes only outside
// [down, back), failures inside it, and one gap that is the outage.
func checkOutage(t *testing.T, part string, lane *html.Node, down, back time.Duration) {
	t.Helper()
	var failed int
	for _, b := range byClass(lane, "bucket") {
		at := atOf(t, b)
		inside := at >= down && at < back
		switch cls := attr(b, "class"); {
		case cls == "bucket ok" && inside:
			t.Errorf("%s: a success at %v, inside the outage", part, at)
		case cls == "bucket failed" && !inside:
			t.Errorf("%s: a failure at %v, outside the outage", part, at)
		case cls == "bucket failed":
			failed++
		}
	}
	if failed == 0 {
		t.Errorf("%s: no failed bucket in the outage", part)
	}
	gaps := byClass(lane, "gap")
	if len(gaps) != 1 || atOf(t, gaps[0]) != down {
		t.Fatalf("%s: %d gaps, want one from %v", part, len(gaps), down)
	}
	// The first success is in the first bucket from back on.
	end := (back + drill.BucketWidth - 1).Truncate(drill.BucketWidth)
	if got, want := text(gaps[0]), "to "+seconds(end); !strings.Contains(got, want) {
		t.Errorf("%s: the gap says %q, want %q", part, got, want)
	}
}

// TestHTMLGolden keeps the sample's page in testdata, for a person to
// open and for review to see what a change of the template does
// (go test -run TestHTMLGolden -update).
func TestHTMLGolden(t *testing.T) {
	got, _ := render(t, sample())
	golden := filepath.Join("testdata", "node-loss.html")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (make it with -update)", err)
	}
	if got != string(want) {
		t.Errorf("the page differs from %s; look at the difference with -update and git diff", golden)
	}
}

// TestHTMLEscapes puts markup, quotes and ampersands in everything the
// result carries from outside and checks that the page shows them as
// text: no element or attribute they could make exists, and the browser's
// parse gives back the very strings.
func TestHTMLEscapes(t *testing.T) {
	const evil = `<script>alert(1)</script><img src=x onerror="alert(2)"> & 'q' "dq" </title></svg>`
	r := sample()
	r.Scenario, r.About = "s"+evil, "a"+evil
	r.Reasons = []string{"r" + evil}
	r.Faults[0].Node = "n" + evil
	r.Faults[0].Fault.Detail = "d" + evil
	r.Faults[0].Fault.ID = "i" + evil
	r.Events[0].What = "e" + evil
	r.Parts[1].Part, r.Parts[1].Workload = "p"+evil, "w"+evil
	r.Parts[1].Reasons = []string{"x" + evil}
	out, doc := render(t, r)

	for _, raw := range []string{"<script", "<img", "onerror=\"", "</svg></"} {
		if strings.Contains(out, raw) {
			t.Errorf("the page holds %q unescaped", raw)
		}
	}
	walk(doc, func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "script" || n.Data == "img") {
			t.Errorf("the page has a <%s> element", n.Data)
		}
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") || a.Key == "src" {
				t.Errorf("<%s> has an attribute %s", n.Data, a.Key)
			}
		}
	})
	texts := text(doc)
	for _, want := range []string{"s" + evil, "a" + evil, "r" + evil, "d" + evil, "e" + evil, "w" + evil, "x" + evil} {
		if !strings.Contains(texts, want) {
			t.Errorf("the page does not show %q as text", want)
		}
	}
	lanes := byClass(doc, "lane")
	if got := attr(lanes[1], "data-part"); got != "p"+evil {
		t.Errorf("data-part: %q", got)
	}
	if got := attr(byClass(doc, "fault")[0], "data-node"); got != "n"+evil {
		t.Errorf("data-node: %q", got)
	}
}

// TestHTMLSelfContained checks that the page asks for nothing: no
// script, style sheet, image, frame or font to load, no link, no url()
// in its CSS.
func TestHTMLSelfContained(t *testing.T) {
	_, doc := render(t, sample())
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		switch n.Data {
		case "script", "link", "img", "iframe", "object", "embed", "image", "use", "audio", "video", "source", "base":
			t.Errorf("the page has a <%s> element", n.Data)
		case "style":
			css := text(n)
			if strings.Contains(css, "url(") || strings.Contains(css, "@import") || strings.Contains(css, "@font-face") {
				t.Errorf("the style sheet loads something: %q", css)
			}
		}
		for _, a := range n.Attr {
			switch {
			case a.Key == "src" || a.Key == "href" || a.Key == "xlink:href" || a.Key == "srcset" || a.Key == "action":
				t.Errorf("<%s %s=%q> refers to something", n.Data, a.Key, a.Val)
			case a.Key == "style" && strings.Contains(a.Val, "url("):
				t.Errorf("<%s style=%q> loads something", n.Data, a.Val)
			}
		}
	})
}

// TestHTMLEmpty renders results a drill can leave: nothing at all (it
// failed before its first fault), no faults, no parts.
func TestHTMLEmpty(t *testing.T) {
	noFaults := sample()
	noFaults.Faults = nil
	noParts := sample()
	noParts.Parts = nil
	for name, tc := range map[string]struct {
		r             drill.Result
		faults, lanes int
	}{
		"zero":      {drill.Result{}, 0, 0},
		"no faults": {noFaults, 0, 2},
		"no parts":  {noParts, 2, 0},
	} {
		_, doc := render(t, tc.r)
		if v := byID(doc, "verdict"); v == nil || attr(v, "data-met") != strconv.FormatBool(tc.r.Met) {
			t.Errorf("%s: no verdict", name)
		}
		if byID(doc, "timeline") == nil || len(byClass(doc, "tick-label")) == 0 {
			t.Errorf("%s: no timeline with an axis", name)
		}
		if got := len(byClass(doc, "fault")); got != tc.faults {
			t.Errorf("%s: %d fault bars, want %d", name, got, tc.faults)
		}
		if got := len(byClass(doc, "lane")); got != tc.lanes {
			t.Errorf("%s: %d lanes, want %d", name, got, tc.lanes)
		}
		if (tc.lanes == 0) != (byID(doc, "no-parts") != nil) {
			t.Errorf("%s: the page should say there is no part exactly when there is none", name)
		}
	}
}

// TestHTMLUnbounded: a part that never succeeded again says so, and has
// no RPO (the drill did not look for lost writes).
func TestHTMLUnbounded(t *testing.T) {
	r := sample()
	p := &r.Parts[0]
	p.Unbounded, p.Met, p.RTO = true, false, 2*time.Minute
	p.Outcomes = outcomes(sampleLength, 12, time.Second)
	_, doc := render(t, r)
	table := byClass(doc, "part")[0]
	got := text(table)
	for _, want := range []string{"more than 2m (never succeeded again)", "not measured"} {
		if !strings.Contains(got, want) {
			t.Errorf("the table says %q, want %q", got, want)
		}
	}
	// The RTO broke its objective; the RPO, not measured, neither kept
	// nor broke its own.
	if b, k := byClass(table, "broken"), byClass(table, "kept"); len(b) != 1 || len(k) != 0 {
		t.Errorf("%d cells marked broken and %d kept, want the RTO's only", len(b), len(k))
	}
}

// TestFaultEnd: a fault ends at its Until; a result without one (JSON of
// a fault made by hand) at its start plus its duration.
func TestFaultEnd(t *testing.T) {
	r := sample()
	if got := faultEnd(r, r.Faults[0]); got != sampleFaultEnd {
		t.Errorf("with Until: %v, want %v", got, sampleFaultEnd)
	}
	f := drill.Injected{At: time.Second, Fault: fault.Fault{Spec: fault.Spec{Duration: 5 * time.Second}}}
	if got := faultEnd(r, f); got != 6*time.Second {
		t.Errorf("without Until: %v, want 6s", got)
	}
}

func TestGaps(t *testing.T) {
	const w = drill.BucketWidth
	b := func(i, ok, failed int) drill.Bucket {
		return drill.Bucket{At: time.Duration(i) * w, OK: ok, Failed: failed}
	}
	for _, tc := range []struct {
		name string
		in   []drill.Bucket
		want [][2]int // in buckets
	}{
		{"none", nil, nil},
		{"no gap", []drill.Bucket{b(0, 1, 0), b(1, 1, 0)}, nil},
		{"missing buckets", []drill.Bucket{b(0, 1, 0), b(4, 1, 0)}, [][2]int{{1, 4}}},
		{"failures only", []drill.Bucket{b(0, 1, 0), b(1, 0, 2), b(2, 0, 1), b(3, 3, 0)}, [][2]int{{1, 3}}},
		{"to the end", []drill.Bucket{b(0, 1, 0), b(2, 0, 1)}, [][2]int{{1, 3}}},
		{"two", []drill.Bucket{b(0, 1, 0), b(2, 1, 0), b(3, 0, 1), b(5, 1, 0)}, [][2]int{{1, 2}, {3, 5}}},
	} {
		var got [][2]int
		for _, g := range gaps(tc.in) {
			got = append(got, [2]int{int(g[0] / w), int(g[1] / w)})
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTicks(t *testing.T) {
	for _, tc := range []struct {
		extent time.Duration
		want   string
	}{
		{time.Second, "0s 1s"},
		{20 * time.Second, "0s 2s 4s 6s 8s 10s 12s 14s 16s 18s 20s"},
		{130 * time.Second, "0s 15s 30s 45s 60s 75s 90s 105s 120s"},
	} {
		var got []string
		for _, tk := range ticks(timeScale{extent: tc.extent}) {
			got = append(got, tk.Label)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%v: %v, want %s", tc.extent, got, tc.want)
		}
	}
}

// The DOM helpers below read what the tests look for in a parsed page.

func walk(n *html.Node, f func(*html.Node)) {
	f(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func find(root *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	walk(root, func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
	})
	return out
}

func byID(root *html.Node, id string) *html.Node {
	if ns := find(root, func(n *html.Node) bool { return attr(n, "id") == id }); len(ns) > 0 {
		return ns[0]
	}
	return nil
}

func byClass(root *html.Node, class string) []*html.Node {
	return find(root, func(n *html.Node) bool { return slices.Contains(strings.Fields(attr(n, "class")), class) })
}

func byTag(root *html.Node, tag string) []*html.Node {
	return find(root, func(n *html.Node) bool { return n.Data == tag })
}

func attr(n *html.Node, key string) string {
	if n == nil {
		return ""
	}
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func text(n *html.Node) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	walk(n, func(c *html.Node) {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	})
	return b.String()
}

func partsOf(ns []*html.Node) string {
	var out []string
	for _, n := range ns {
		out = append(out, attr(n, "data-part")+":"+attr(n, "data-met"))
	}
	return strings.Join(out, " ")
}

func atOf(t *testing.T, n *html.Node) time.Duration {
	t.Helper()
	s, err := strconv.ParseFloat(attr(n, "data-at"), 64)
	if err != nil {
		t.Fatalf("data-at of %v: %v", n.Attr, err)
	}
	return time.Duration(s * float64(time.Second)).Round(time.Millisecond)
}

// TestHTMLOfASoak: a soak's report is a drill's page of its faults, its
// workloads' totals and its events, and says how many faults in how long.
func TestHTMLOfASoak(t *testing.T) {
	s := sample()
	soak := drill.SoakResult{Started: s.Started, Length: time.Hour, Seed: 7, Parts: s.Parts, Events: s.Events, Met: s.Met, Reasons: s.Reasons}
	for _, f := range s.Faults {
		soak.Faults = append(soak.Faults, drill.SoakFault{Injected: f, Class: string(f.Fault.Spec.Kind)})
	}
	page, _ := render(t, soak.Result())
	for _, want := range []string{"soak", "2 random faults in 1h (seed 7)", sampleWebReason, "fault 2 on db1"} {
		if !strings.Contains(page, want) {
			t.Errorf("the soak's page has no %q", want)
		}
	}
}
