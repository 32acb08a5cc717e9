package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// summary aggregates the runs of one target in one scenario.
type summary struct {
	Runs, Errors int
	// Median and Worst are over the runs' write gaps; a gap that never
	// ended is never, longer than any other.
	Median, Worst time.Duration
	Unrecovered   int
	Lost          int // acknowledged rows missing, over the runs
	RunsLost      int // runs that lost at least one
	Indeterminate int
	IndetFound    int
	Failed        int
	Acked         int
	PrimaryMoved  int // runs after which another node was the primary
	EtcdOnPrimary int // runs in which the primary's etcd member led etcd
	Recovered     time.Duration
	Command       time.Duration // median switchover command
}

func summarize(runs []runResult) summary {
	var s summary
	var gaps, recovered, cmds []time.Duration
	for _, r := range runs {
		if r.Err != "" {
			s.Errors++
		}
		if r.Acked == 0 {
			continue // it never got to write
		}
		s.Runs++
		gaps = append(gaps, r.Gap)
		if r.Gap == never {
			s.Unrecovered++
		}
		s.Lost += len(r.Lost)
		if len(r.Lost) > 0 {
			s.RunsLost++
		}
		s.Indeterminate += r.Indeterminate
		s.IndetFound += r.IndeterminateFound
		s.Failed += r.Failed
		s.Acked += r.Acked
		if r.After != "" && r.After != r.Primary {
			s.PrimaryMoved++
		}
		if r.EtcdLeader != "" && r.EtcdLeader == r.Primary {
			s.EtcdOnPrimary++
		}
		if r.Recovered > 0 {
			recovered = append(recovered, r.Recovered)
		}
		if r.Command > 0 {
			cmds = append(cmds, r.Command)
		}
	}
	s.Median = medianDur(gaps)
	if len(gaps) > 0 {
		s.Worst = slices.Max(gaps)
	}
	s.Recovered = harness.Median(recovered)
	s.Command = harness.Median(cmds)
	return s
}

// report renders the whole run as markdown.
func (b *bench) report(cells []cell) string {
	var sb strings.Builder
	sb.WriteString(harness.Header("haven database failover benchmark (bench/pg)",
		fmt.Sprintf("%d %s of each fault per target", b.opt.runs, plural(b.opt.runs, "run", "runs")), b.opt.quick, b.machine, b.versions))
	sb.WriteString(b.method())
	sb.WriteString(faultTable(cells))
	sb.WriteString(ratioTable(cells, b.opt.targets))
	sb.WriteString(perRun(cells))
	sb.WriteString("Load average at the end: " + harness.LoadAverage() + ".\n")
	return sb.String()
}

// method describes the set-up and the measurement.
func (b *bench) method() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Set-up: database nodes db1, db2, db3 (198.18.1.11-13) and a client (198.18.1.14) on one Linux bridge "+
		"(network namespaces, `internal/netlab`); PostgreSQL 15 on every node, as the postgres user; the writer goes through a router on the client: "+
		"haven's own (`haven`, `haven-fast`: a router-only agent on the client, port %d), or HAProxy (the others: `listen` on port %d, `option httpchk GET /primary` against the target's REST port, `default-server inter 250ms fall 2 rise 1 "+
		"on-marked-down shutdown-sessions`, `timeout connect 1s`, `timeout check 1s`). Targets:\n\n", havenRouter, routerPort)
	for _, n := range b.opt.targets {
		t, _ := findTarget(n)
		fmt.Fprintf(&sb, "- **%s**: %s.\n", t.name, t.desc)
	}
	fmt.Fprintf(&sb, "\nMeasurement: a writer on the client inserts a row (run, seq) every %s through the router, one at a time, "+
		"with a timeout of %s for each connect and %s for each INSERT (autocommit), and reconnects after any error. "+
		"A write is **acknowledged** when its COMMIT returned OK, **failed** when it certainly did not happen (no connection, "+
		"nothing sent, or refused as read-only), **indeterminate** otherwise (sent, no answer). "+
		"Each run waits until the cluster is healthy (one node answers /primary, both others stream from it, one of them synchronous) "+
		"and the router reaches the primary, writes for %s plus a uniformly random part of the target's period "+
		"(Patroni's loop_wait, haven's lease), so that the fault falls at a random moment of the target's cycle, injects the fault, "+
		"waits until %d writes started after the fault were acknowledged (at most %s), writes %s more, stops, heals (a lost node is started again), "+
		"waits until the cluster is healthy again and reads the run's rows on the primary. "+
		"**Write gap**: the longest time between two consecutive acknowledged COMMITs from the last one before the fault to the end. "+
		"**Lost**: acknowledged rows that are not on the primary afterwards.\n\n",
		b.opt.every, b.opt.connTimeout, b.opt.opTimeout, b.opt.pre, backAfter, b.opt.maxOutage, b.opt.post)
	sb.WriteString("Faults (each on the primary):\n\n")
	for _, n := range b.opt.scenarios {
		sc, _ := findScenario(n)
		fmt.Fprintf(&sb, "- **%s**: %s.\n", sc.title, sc.desc)
	}
	sb.WriteString("\n")
	return sb.String()
}

func faultTable(cells []cell) string {
	var sb strings.Builder
	sb.WriteString("## Results\n\n")
	tab := harness.NewTable(&sb, harness.Left("fault"), harness.Left("target"), harness.Right("runs"),
		harness.Right("median write gap"), harness.Right("worst write gap"), harness.Right("acknowledged lost"),
		harness.Right("indeterminate (found)"), harness.Right("failed writes"), harness.Right("acknowledged"),
		harness.Right("primary moved"), harness.Right("etcd leader on the primary"), harness.Right("healthy again, median"), harness.Left("notes"))
	for _, c := range cells {
		if c.setup != "" {
			tab.Partial([]string{c.sc.title, c.t.name, "0"}, harness.Truncate(c.setup, 300))
			continue
		}
		s := summarize(c.runs)
		lost := strconv.Itoa(s.Lost)
		if s.Lost > 0 {
			lost = fmt.Sprintf("**%d** (in %d of %d runs)", s.Lost, s.RunsLost, s.Runs)
		}
		tab.Row(c.sc.title, c.t.name, strconv.Itoa(s.Runs), fmtGap(s.Median), fmtGap(s.Worst), lost,
			fmt.Sprintf("%d (%d)", s.Indeterminate, s.IndetFound), strconv.Itoa(s.Failed), strconv.Itoa(s.Acked),
			fmt.Sprintf("%d of %d", s.PrimaryMoved, s.Runs), fmt.Sprintf("%d of %d", s.EtcdOnPrimary, s.Runs), fmtDur(s.Recovered), cellNotes(c, s))
	}
	sb.WriteString("\n")
	return sb.String()
}

// ratioTable compares haven's median and worst gaps with each Patroni
// target's, fault by fault: Patroni's gap divided by haven's.
func ratioTable(cells []cell, targets []string) string {
	var havens, patronis []string
	for _, n := range targets {
		t, _ := findTarget(n)
		if t.kind == "haven" {
			havens = append(havens, n)
		} else {
			patronis = append(patronis, n)
		}
	}
	if len(havens) == 0 || len(patronis) == 0 {
		return ""
	}
	find := func(sc, t string) (summary, bool) {
		for _, c := range cells {
			if c.sc.name == sc && c.t.name == t && c.setup == "" {
				s := summarize(c.runs)
				return s, s.Runs > 0
			}
		}
		return summary{}, false
	}
	var sb strings.Builder
	sb.WriteString("## haven against Patroni\n\nHow many times longer Patroni's write gap is than haven's (median / worst); above 1, haven's is shorter.\n\n")
	cols := []harness.Column{harness.Left("fault"), harness.Left("haven target")}
	for _, p := range patronis {
		cols = append(cols, harness.Right(p+" ÷ haven"))
	}
	tab := harness.NewTable(&sb, cols...)
	var scs []string
	for _, c := range cells {
		if !slices.Contains(scs, c.sc.name) {
			scs = append(scs, c.sc.name)
		}
	}
	for _, scn := range scs {
		sc, _ := findScenario(scn)
		for _, h := range havens {
			hs, ok := find(scn, h)
			if !ok {
				continue
			}
			row := []string{sc.title, h}
			for _, p := range patronis {
				ps, ok := find(scn, p)
				if !ok {
					row = append(row, "–")
					continue
				}
				row = append(row, ratio(ps.Median, hs.Median)+" / "+ratio(ps.Worst, hs.Worst))
			}
			tab.Row(row...)
		}
	}
	sb.WriteString("\n")
	return sb.String()
}

// perRun lists every run's gap and outcome.
func perRun(cells []cell) string {
	var sb strings.Builder
	sb.WriteString("## Every run\n\nWrite gap in ms (primary before → after; \"etcd leader\" when the primary's etcd member led etcd at the fault; lost acknowledged writes when any; the switchover command's time):\n\n")
	for _, c := range cells {
		if len(c.runs) == 0 {
			continue
		}
		var parts []string
		for _, r := range c.runs {
			p := fmt.Sprintf("%s (%s→%s", msNumber(r.Gap), r.Primary, r.After)
			if r.EtcdLeader != "" && r.EtcdLeader == r.Primary {
				p += ", etcd leader"
			}
			if len(r.Lost) > 0 {
				p += fmt.Sprintf(", **%d lost**", len(r.Lost))
			}
			if r.Command > 0 {
				p += ", command " + fmtDur(r.Command)
			}
			if r.Err != "" {
				p += ", error"
			}
			parts = append(parts, p+")")
		}
		fmt.Fprintf(&sb, "- %s · %s: %s\n", c.sc.name, c.t.name, strings.Join(parts, ", "))
	}
	sb.WriteString("\n")
	return sb.String()
}

// cellNotes summarises what the runs of a cell noted, with how many runs
// noted each.
func cellNotes(c cell, s summary) string {
	count := map[string]int{}
	var order []string
	add := func(n string) {
		if count[n] == 0 {
			order = append(order, n)
		}
		count[n]++
	}
	for _, r := range c.runs {
		if r.Err != "" {
			add("error: " + harness.Truncate(r.Err, 300))
		}
		for _, n := range r.Notes {
			add(n)
		}
	}
	var parts []string
	for _, n := range order {
		parts = append(parts, fmt.Sprintf("%s (%d of %d)", n, count[n], len(c.runs)))
	}
	if s.Command > 0 {
		parts = append(parts, fmt.Sprintf("the switchover command returned after %s (median)", fmtDur(s.Command)))
	}
	return strings.Join(parts, "; ")
}

// The formatting of gaps and durations is the harness's, shared with the
// other benchmarks.
var (
	medianDur = harness.MedianGap
	ratio     = harness.Ratio
	fmtGap    = harness.Gap
	fmtDur    = harness.Dur
	msNumber  = harness.Ms
	plural    = harness.Plural
)
