package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/testenv"
)

const every = 5 * time.Millisecond

// table builds a probe run from a string per probe: the nodes that
// answered it, joined by "+", "" for none.
func table(cells ...string) probeRun {
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	var sent []time.Time
	var answers []drill.Answer
	for i, c := range cells {
		sent = append(sent, t0.Add(time.Duration(i)*every))
		if c == "" {
			continue
		}
		for _, n := range strings.Split(c, "+") {
			answers = append(answers, drill.Answer{Seq: i, Node: n, Received: sent[i].Add(time.Millisecond)})
		}
	}
	// A duplicate answer and one to a probe never sent are ignored.
	if len(answers) > 0 {
		answers = append(answers, answers[0])
	}
	answers = append(answers, drill.Answer{Seq: len(cells), Node: "n9"}, drill.Answer{Seq: -1, Node: "n9"})
	return newProbeRun(every, sent, answers)
}

func TestProbeRunCells(t *testing.T) {
	p := table("n1", "n2+n1", "", "n3")
	if got, want := p.cells(), []string{"n1", "n1+n2", "", "n3"}; !slices.Equal(got, want) {
		t.Errorf("cells = %q, want %q", got, want)
	}
}

func TestTwoHolders(t *testing.T) {
	for _, tc := range []struct {
		name   string
		probes []string
		n      int
		d      time.Duration
		who    string
	}{
		{"none", []string{"n1", "n1", "", "n2"}, 0, 0, ""},
		{"one probe is one interval", []string{"n1", "n1+n2", "n2"}, 1, every, "n1+n2"},
		{"a run is first to last plus one interval", []string{"n1", "n1+n2", "n1+n2", "n1+n2", "n2"}, 3, 3 * every, "n1+n2"},
		{"runs add up", []string{"n1+n2", "n1", "n2+n3", "n2+n3", "n3"}, 3, 3 * every, "n1+n2"},
		{"a run at the end", []string{"n1", "n1+n2", "n1+n2"}, 2, 2 * every, "n1+n2"},
		{"three holders count once", []string{"n1+n2+n3"}, 1, every, "n1+n2+n3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := table(tc.probes...)
			n, d := p.twoHolders()
			if n != tc.n || d != tc.d || p.firstDouble() != tc.who {
				t.Errorf("twoHolders = %d, %v; firstDouble %q; want %d, %v, %q", n, d, p.firstDouble(), tc.n, tc.d, tc.who)
			}
		})
	}
}

func TestHolderChanges(t *testing.T) {
	for _, tc := range []struct {
		probes []string
		want   int
	}{
		{[]string{"n1", "n1", "", "n1"}, 0},
		{[]string{"n1", "n1+n2", "n2"}, 1},
		{[]string{"n1", "", "n2", "", "n1"}, 2},
		{[]string{"", "n2"}, 0},
	} {
		if got := table(tc.probes...).holderChanges(); got != tc.want {
			t.Errorf("holderChanges(%q) = %d, want %d", tc.probes, got, tc.want)
		}
	}
	// n1 loses it twice; n2's loss to n3 is not n1's.
	if got := table("n1", "", "n2", "n1", "n1+n2", "n2", "n3", "n1").failovers("n1"); got != 2 {
		t.Errorf("failovers = %d, want 2", got)
	}
}

func TestGapsAndUnanswered(t *testing.T) {
	p := table("n1", "", "", "n1", "n1", "", "n2", "", "")
	all := [2]time.Time{p.sent[0], p.sent[len(p.sent)-1].Add(every)}
	if got := p.unanswered(all[0], all[1]); got != 5*every {
		t.Errorf("unanswered = %v, want %v", got, 5*every)
	}
	if got := p.unanswered(p.sent[2], p.sent[6]); got != 2*every {
		t.Errorf("unanswered from probe 2 to 6 = %v, want %v", got, 2*every)
	}
	// Gaps: probes 1-2 (0 to 3: 3 intervals), 5 (4 to 6: 2), 7-8 (6 to
	// the last probe, 8: 2).
	if n, longest := p.gaps(all[0], all[1]); n != 3 || longest != 3*every {
		t.Errorf("gaps = %d, %v; want 3, %v", n, longest, 3*every)
	}
	if n, longest := p.gaps(p.sent[4], all[1]); n != 2 || longest != 2*every {
		t.Errorf("gaps from probe 4 = %d, %v; want 2, %v", n, longest, 2*every)
	}
	// A gap still going at the end of the window counts up to it.
	if n, longest := p.gaps(all[0], p.sent[2]); n != 1 || longest != 2*every {
		t.Errorf("gaps to probe 2 = %d, %v; want 1, %v", n, longest, 2*every)
	}
	// A run of unanswered probes before any answer is no gap.
	if n, _ := table("", "", "n1").gaps(all[0], all[1]); n != 0 {
		t.Errorf("leading unanswered probes: %d gaps, want 0", n)
	}
}

func TestAnsweredAndSteady(t *testing.T) {
	p := table("n1", "n1", "n1+n2", "n2", "n2", "n2")
	if !p.answered("n1", p.sent[2], p.sent[3]) || p.answered("n1", p.sent[3], p.sent[5].Add(every)) {
		t.Error("answered: n1 answered probe 2 and nothing after it")
	}
	if got := p.lastAlone(p.sent[3]); got != "n1" {
		t.Errorf("lastAlone before probe 3 = %q, want n1 (probe 2 had two answers)", got)
	}
	if !p.steady("n2", 3) || p.steady("n2", 4) || p.steady("n1", 1) || p.steady("n2", 0) || p.steady("n2", 7) {
		t.Error("steady: the last 3 probes, and only they, were n2's alone")
	}
}

func TestMedianDur(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{ms(3), 3 * time.Millisecond},
		{ms(500, 100, 300), 300 * time.Millisecond},
		{ms(400, 100, 300, 200), 250 * time.Millisecond},
		{append(ms(100), never), 0}, // set below: never decides it
		{append(ms(100, 200), never), 200 * time.Millisecond},
	} {
		want := tc.want
		if len(tc.in) == 2 {
			want = never
		}
		if got := medianDur(tc.in); got != want {
			t.Errorf("medianDur(%v) = %v, want %v", tc.in, got, want)
		}
	}
}

func TestSummarize(t *testing.T) {
	ms := func(x int) time.Duration { return time.Duration(x) * time.Millisecond }
	runs := []runResult{
		{Outage: ms(550), Unanswered: ms(600), MaxGap: ms(560), TwoHolderProbes: 0},
		{Outage: ms(300), Unanswered: ms(300), MaxGap: ms(900), TwoHolderProbes: 4, TwoHolder: ms(20), Changes: 2},
		{Outage: ms(700), Unanswered: ms(700), MaxGap: ms(700), TwoHolderProbes: 10, TwoHolder: ms(50), Changes: 1, Failovers: 1},
		{Err: "not settled"},
	}
	s := summarize(runs)
	want := summary{Runs: 3, Failed: 1, Median: ms(550), Worst: ms(700), MedianUnanswered: ms(600), WorstUnanswered: ms(700),
		WorstGap: ms(900), RunsTwo: 2, TwoHolder: ms(70), Changes: 3, Failovers: 1}
	if s != want {
		t.Errorf("summarize =\n%+v, want\n%+v", s, want)
	}
	runs = append(runs, runResult{Outage: -1})
	if s := summarize(runs); s.Worst != never || s.Unrecovered != 1 || s.Median != ms(625) {
		t.Errorf("with an outage not over: worst %v, unrecovered %d, median %v; want never, 1, 625ms", s.Worst, s.Unrecovered, s.Median)
	}
	if got := harness.Gap(never); got != "not over" {
		t.Errorf("harness.Gap(never) = %q", got)
	}
}

// TestHavenConf renders haven.yaml and loads it with haven's own config
// package, so that the benchmark follows the contract.
func TestHavenConf(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "haven.yaml")
	if err := writeHavenConf(path, dir, havenLease); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("haven.yaml does not load: %v", err)
	}
	b := cfg.Balancers["web"]
	if b == nil || b.VIP == nil {
		t.Fatalf("balancer web = %+v, want one with a vip", b)
	}
	if got := b.VIP.Address; got != vipPrefix.String() {
		t.Errorf("vip address = %s, want %s", got, vipPrefix)
	}
	for n, p := range priority {
		if b.VIP.Priority[n] != p {
			t.Errorf("vip priority of %s = %d, want %d", n, b.VIP.Priority[n], p)
		}
	}
	if b.VIP.Lease.D() != havenLease {
		t.Errorf("vip lease = %v, want %v", b.VIP.Lease, havenLease)
	}
	if !slices.Equal(b.Nodes, nodes) || !slices.Equal(cfg.Coordination.Members, nodes) {
		t.Errorf("balancer nodes %v, members %v; want %v", b.Nodes, cfg.Coordination.Members, nodes)
	}
	for i, n := range nodes {
		if node, ok := cfg.Node(n); !ok || node.Address != nodeAddr(i).String() {
			t.Errorf("node %s = %+v, want address %s", n, node, nodeAddr(i))
		}
	}
}

// TestKeepalivedConf renders every node's keepalived.conf for both
// keepalived targets and has keepalived check it, which needs keepalived
// and root.
func TestKeepalivedConf(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"keepalived", "keepalived-fast"} {
		tg, ok := findTarget(name)
		if !ok {
			t.Fatalf("no target %s", name)
		}
		for _, n := range nodes {
			path := filepath.Join(dir, name+"-"+n+".conf")
			if err := writeKeepalivedConf(path, tg, n); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			conf := string(data)
			for _, want := range []string{
				"priority " + map[string]string{"n1": "150", "n2": "100", "n3": "50"}[n],
				"advert_int " + tg.advert,
				"198.18.1.100/24 dev eth0",
				"virtual_router_id 51",
				"interface eth0",
			} {
				if !strings.Contains(conf, want) {
					t.Errorf("%s: no %q in\n%s", path, want, conf)
				}
			}
			if strings.Contains(conf, "vrrp_version 3") != tg.vrrp3 {
				t.Errorf("%s: vrrp_version 3 present = %v, want %v", path, !tg.vrrp3, tg.vrrp3)
			}
			t.Run(name+"-"+n+"/keepalived-t", func(t *testing.T) {
				testenv.NeedCommand(t, "keepalived", "keepalived")
				testenv.NeedRoot(t)
				if out, err := exec.Command("keepalived", "-t", "-l", "-f", path).CombinedOutput(); err != nil {
					t.Errorf("keepalived -t -f %s: %v\n%s", path, err, out)
				}
			})
		}
	}
}

func TestFlags(t *testing.T) {
	ok := options{runs: 10, lossRuns: 1, targets: []string{"haven", "keepalived-fast"}, scenarios: []string{"kill", "loss"},
		hold: 3 * time.Second, down: 6 * time.Second, post: 5 * time.Second, lossDur: time.Minute, lossPct: 5,
		probeEvery: 5 * time.Millisecond, install: "auto"}
	if err := validate(ok); err != nil {
		t.Fatalf("validate(%+v) = %v", ok, err)
	}
	for _, bad := range []func(*options){
		func(o *options) { o.targets = []string{"vrrpd"} },
		func(o *options) { o.scenarios = []string{"reboot"} },
		func(o *options) { o.runs = 0 },
		func(o *options) { o.install = "maybe" },
		func(o *options) { o.probeEvery = 0 },
	} {
		o := ok
		bad(&o)
		if err := validate(o); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", o)
		}
	}
	o := ok
	o.targets = []string{"vrrpd"}
	if err := validate(o); err == nil || !strings.Contains(err.Error(), "haven-fast") {
		t.Errorf("validate of an unknown target = %v, want every known target listed", err)
	}
}
