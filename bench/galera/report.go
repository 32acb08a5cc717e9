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
	Runs, Errors  int
	Median, Worst time.Duration // write gaps; never when one did not end
	Writable      time.Duration // crash: median time to writable after the restarts
	WritableWorst time.Duration
	ByHand        int
	Lost          int
	RunsLost      int
	Indet, Found  int
	Failed        int
	Acked         int
	Differ        int // runs after which the nodes' rows differed
	Recovered     time.Duration
}

func summarize(runs []runResult) summary {
	var s summary
	var gaps, writable, recovered []time.Duration
	for _, r := range runs {
		if r.Err != "" {
			s.Errors++
		}
		if r.Acked == 0 {
			continue // it never got to write
		}
		s.Runs++
		gaps = append(gaps, r.Gap)
		if r.Writable > 0 {
			writable = append(writable, r.Writable)
		}
		if r.ByHand {
			s.ByHand++
		}
		s.Lost += len(r.Lost)
		if len(r.Lost) > 0 {
			s.RunsLost++
		}
		if len(r.Differ) > 0 {
			s.Differ++
		}
		s.Indet += r.Indet
		s.Found += r.IndeterminateFound
		s.Failed += r.Failed
		s.Acked += r.Acked
		if r.Recovered > 0 {
			recovered = append(recovered, r.Recovered)
		}
	}
	s.Median = medianDur(gaps)
	if len(gaps) > 0 {
		s.Worst = slices.Max(gaps)
	}
	s.Writable = harness.Median(writable)
	if len(writable) > 0 {
		s.WritableWorst = slices.Max(writable)
	}
	s.Recovered = harness.Median(recovered)
	return s
}

// report renders the whole run as markdown.
func (b *bench) report(cells []cell) string {
	var sb strings.Builder
	sb.WriteString(harness.Header("haven Galera failover benchmark (bench/galera)",
		fmt.Sprintf("%d %s of each fault per target", b.opt.runs, plural(b.opt.runs, "run", "runs")), b.opt.quick, b.machine, b.versions))
	sb.WriteString(b.method())
	sb.WriteString(resultTable(cells))
	sb.WriteString(ratioTable(cells, b.opt.targets))
	sb.WriteString(perRun(cells))
	sb.WriteString("Load average at the end: " + harness.LoadAverage() + ".\n")
	return sb.String()
}

// method describes the set-up and the measurement.
func (b *bench) method() string {
	var sb strings.Builder
	sb.WriteString("Set-up: database nodes db1, db2, db3 (198.18.1.11-13) and a client (198.18.1.14) on one Linux bridge " +
		"(network namespaces, `internal/netlab`); MariaDB with the galera-4 provider on every node, as the mysql user, " +
		"the same server settings everywhere (`innodb_buffer_pool_size` " + bufferPool + ", no performance schema: three servers share a small machine), " +
		"state transfers by mariabackup. Targets:\n\n")
	for _, n := range b.opt.targets {
		t, _ := findTarget(n)
		fmt.Fprintf(&sb, "- **%s**: %s.\n", t.name, t.desc)
	}
	fmt.Fprintf(&sb, "\nMeasurement: a writer on the client inserts a row (run, seq) every %s through the target's way to the writer, one at a time "+
		"on one connection (go-sql-driver/mysql), with a timeout of %s for each connect and %s for each INSERT (autocommit), and reconnects after any error. "+
		"A write is **acknowledged** when the server answered OK, **failed** when it certainly did not happen (no connection, "+
		"or the server's own error: not ready, a certification conflict), **indeterminate** otherwise (sent, no answer). "+
		"Each run waits until all three nodes are synced in one primary component and a connection through the router can write, "+
		"writes for %s plus a uniformly random part of the target's period (keepalived's advert_int, HAProxy's check interval, haven's writer lease), "+
		"injects the fault, waits until %d writes started after it (after the restarts, for a stop or a crash) were acknowledged (at most %s), writes %s more, stops, "+
		"starts a killed writer's node again, waits until the cluster is healthy and reads the run's rows on every node (`wsrep_sync_wait = 1`). "+
		"**Write gap**: the longest time between two consecutive acknowledgements from the last one before the fault to the end. "+
		"**Writable after**: for a stop or a crash of every node, from the first node's restart to the first acknowledged write. "+
		"**Lost**: acknowledged rows missing on any node afterwards. "+
		"A peer not writable %s after the restarts is recovered by hand (-person-after).\n\n",
		b.opt.every, b.opt.connTimeout, b.opt.opTimeout, b.opt.pre, backAfter, b.opt.maxOutage, b.opt.post, b.opt.personAfter)
	sb.WriteString("Faults:\n\n")
	for _, n := range b.opt.scenarios {
		sc, _ := findScenario(n)
		fmt.Fprintf(&sb, "- **%s**: %s.\n", sc.title, sc.desc)
	}
	sb.WriteString("\n")
	return sb.String()
}

func resultTable(cells []cell) string {
	var sb strings.Builder
	sb.WriteString("## Results\n\n")
	tab := harness.NewTable(&sb, harness.Left("fault"), harness.Left("target"), harness.Right("runs"),
		harness.Right("median write gap"), harness.Right("worst write gap"), harness.Right("writable after (median / worst)"),
		harness.Right("recovered by hand"), harness.Right("acknowledged lost"), harness.Right("indeterminate (found)"),
		harness.Right("failed writes"), harness.Right("acknowledged"), harness.Right("healthy again, median"), harness.Left("notes"))
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
		writable, byHand := "–", "–"
		if c.sc.name != "writer" && s.WritableWorst > 0 {
			writable = fmtGap(s.Writable) + " / " + fmtGap(s.WritableWorst)
		}
		if c.sc.name != "writer" {
			byHand = fmt.Sprintf("%d of %d", s.ByHand, s.Runs)
		}
		tab.Row(c.sc.title, c.t.name, strconv.Itoa(s.Runs), fmtGap(s.Median), fmtGap(s.Worst), writable, byHand, lost,
			fmt.Sprintf("%d (%d)", s.Indet, s.Found), strconv.Itoa(s.Failed), strconv.Itoa(s.Acked), fmtDur(s.Recovered), cellNotes(c))
	}
	sb.WriteString("\n")
	return sb.String()
}

// ratioTable compares haven with each peer target: the peer's median and
// worst write gap divided by haven's.
func ratioTable(cells []cell, targets []string) string {
	var havens, peers []string
	for _, n := range targets {
		if t, _ := findTarget(n); t.kind == "haven" {
			havens = append(havens, n)
		} else {
			peers = append(peers, n)
		}
	}
	if len(havens) == 0 || len(peers) == 0 {
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
	sb.WriteString("## haven against the guide's stack\n\nHow many times longer the peer's write gap is than haven's (median / worst); above 1, haven's is shorter.\n\n")
	cols := []harness.Column{harness.Left("fault"), harness.Left("haven target")}
	for _, p := range peers {
		cols = append(cols, harness.Right(p+" ÷ haven"))
	}
	tab := harness.NewTable(&sb, cols...)
	for _, scn := range []string{"writer", "stop", "crash"} {
		sc, _ := findScenario(scn)
		for _, h := range havens {
			hs, ok := find(scn, h)
			if !ok {
				continue
			}
			row := []string{sc.title, h}
			for _, p := range peers {
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
	sb.WriteString("## Every run\n\nWrite gap in ms (writer before → after; for a crash, writable after the restarts and whether by hand; lost acknowledged writes when any):\n\n")
	for _, c := range cells {
		if len(c.runs) == 0 {
			continue
		}
		var parts []string
		for _, r := range c.runs {
			p := fmt.Sprintf("%s (%s→%s", msNumber(r.Gap), r.Writer, r.After)
			if r.Writable > 0 {
				p += ", writable " + fmtDur(r.Writable)
				if r.ByHand {
					p += " by hand"
				}
			}
			if len(r.Lost) > 0 {
				p += fmt.Sprintf(", **%d lost**", len(r.Lost))
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
func cellNotes(c cell) string {
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
			if strings.Contains(n, "bootstrapped by hand") {
				n = "bootstrapped by hand"
			}
			add(n)
		}
	}
	var parts []string
	for _, n := range order {
		parts = append(parts, fmt.Sprintf("%s (%d of %d)", n, count[n], len(c.runs)))
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
