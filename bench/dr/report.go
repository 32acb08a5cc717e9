package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
)

const never = pgwrite.Never

// lagSummary is the percentiles (p50, p99, max) of a set of lag samples.
type lagSummary struct {
	n        int
	bytes    [3]int64 // replayed
	received [3]int64
	delay    [3]time.Duration
}

// commitStats is the p50, p99 and max of a set of commit latencies.
func commitStats(v []time.Duration) [3]time.Duration {
	if len(v) == 0 {
		return [3]time.Duration{}
	}
	return [3]time.Duration{harness.Percentile(v, 50), harness.Percentile(v, 99), slices.Max(v)}
}

func lagStats(samples []lagSample) lagSummary {
	s := lagSummary{n: len(samples)}
	if len(samples) == 0 {
		return s
	}
	var by, rc []int64
	var de []time.Duration
	for _, x := range samples {
		by = append(by, x.ReplayedBytes)
		rc = append(rc, x.ReceivedBytes)
		de = append(de, x.ReplayDelay)
	}
	s.bytes = [3]int64{harness.Percentile(by, 50), harness.Percentile(by, 99), slices.Max(by)}
	s.received = [3]int64{harness.Percentile(rc, 50), harness.Percentile(rc, 99), slices.Max(rc)}
	s.delay = [3]time.Duration{harness.Percentile(de, 50), harness.Percentile(de, 99), slices.Max(de)}
	return s
}

// summary aggregates the runs of one cell.
type summary struct {
	Runs, Errors   int
	Lag            lagSummary
	Commit         [3]time.Duration // p50, p99, max of every acknowledged write's commit latency
	SelfPromoted   int
	Writable       [2]time.Duration // median, worst
	WritableP90    time.Duration
	Gap            [2]time.Duration // median, worst
	Command        time.Duration    // median
	Lost, RunsLost int
	NewLost        int
	AckedAfterCut  int
	LostDuringCut  int
	Acked          int
	Indeterminate  int
	IndetFound     int
	LagAtLoss      []int64
}

func summarize(c cell) summary {
	var s summary
	var samples []lagSample
	var writable, gaps, cmds, commits []time.Duration
	for _, r := range c.runs {
		if r.Err != "" {
			s.Errors++
		}
		if r.Acked == 0 {
			continue
		}
		s.Runs++
		s.Acked += r.Acked
		s.Lost += len(r.Lost)
		if len(r.Lost) > 0 {
			s.RunsLost++
		}
		s.NewLost += r.NewLost
		s.AckedAfterCut += r.AckedAfterCut
		s.LostDuringCut += r.LostDuringCut
		s.Indeterminate += r.Indeterminate
		s.IndetFound += r.IndeterminateFound
		switch c.sc.name {
		case "lag":
			samples = append(samples, r.Samples...)
			commits = append(commits, r.Commits...)
		case "loss":
			writable = append(writable, r.Writable)
			if r.SelfPromoted {
				s.SelfPromoted++
			}
			if r.LagAtLoss != nil {
				s.LagAtLoss = append(s.LagAtLoss, r.LagAtLoss.ReplayedBytes)
			}
		case "switchover":
			gaps = append(gaps, r.Gap)
		}
		if r.Command > 0 {
			cmds = append(cmds, r.Command)
		}
	}
	s.Lag = lagStats(samples)
	s.Commit = commitStats(commits)
	s.Writable = medianWorst(writable)
	s.WritableP90 = harness.Percentile(writable, 90)
	s.Gap = medianWorst(gaps)
	s.Command = harness.Median(cmds)
	return s
}

// medianWorst is the median and the largest of v (never counts as the
// longest).
func medianWorst(v []time.Duration) [2]time.Duration {
	if len(v) == 0 {
		return [2]time.Duration{}
	}
	m := harness.Median(v)
	if harness.Percentile(v, 50) == never {
		m = never
	}
	return [2]time.Duration{m, slices.Max(v)}
}

// report renders the whole run as markdown.
func (b *bench) report(cells []cell) string {
	var sb strings.Builder
	sb.WriteString(harness.Header("haven second-region benchmark (bench/dr)",
		fmt.Sprintf("%d %s of each scenario per target", b.opt.runs, plural(b.opt.runs, "run", "runs")), b.opt.quick, b.machine, b.versions))
	sb.WriteString(b.method(cells))
	for _, sn := range b.opt.scenarios {
		sc, _ := findScenario(sn)
		var these []cell
		for _, c := range cells {
			if c.sc.name == sn {
				these = append(these, c)
			}
		}
		switch sn {
		case "lag":
			sb.WriteString(lagTable(sc, these))
		case "loss":
			sb.WriteString(lossTable(sc, these))
		case "switchover":
			sb.WriteString(switchoverTable(sc, these))
		}
	}
	sb.WriteString(ratioTable(cells, b.opt.targets))
	sb.WriteString(perRun(cells))
	sb.WriteString("Load average at the end: " + harness.LoadAverage() + ".\n")
	return sb.String()
}

func (b *bench) method(cells []cell) string {
	var sb strings.Builder
	wan := "no added delay between the regions (-wan-delay 0)"
	if b.opt.wanDelay > 0 {
		wan = fmt.Sprintf("the router holds every packet from one region to the other for %s (netlab's WAN relay: a round trip between the regions takes %s more than inside one)", b.opt.wanDelay, 2*b.opt.wanDelay)
	}
	fmt.Fprintf(&sb, "Set-up: region east (198.18.1.11-13: east1, east2, east3; client east-client 198.18.1.14) and region west "+
		"(198.18.2.11-13: west1, west2, west3; client west-client 198.18.2.14), each on its own Linux bridge, joined by netlab's router "+
		"(network namespaces, `internal/netlab`); %s. PostgreSQL 15 on every database node. Targets:\n\n", wan)
	seen := map[string]bool{}
	for _, c := range cells {
		if !seen[c.target] {
			seen[c.target] = true
			fmt.Fprintf(&sb, "- **%s**: %s.\n", c.target, c.desc)
		}
	}
	fmt.Fprintf(&sb, "\nWriters: each inserts a row (run, seq) every %s, one at a time (autocommit), with a timeout of %s for each connect and %s for each INSERT, "+
		"and reconnects after any error; a write is **acknowledged** when its COMMIT returned OK. "+
		"A commit that takes longer than the interval delays the next write: a writer whose commits are slower writes less often. Lag is sampled every %s. Scenarios:\n\n",
		b.opt.every, b.opt.connTimeout, b.opt.opTimeout, b.opt.sampleEvery)
	for _, n := range b.opt.scenarios {
		sc, _ := findScenario(n)
		fmt.Fprintf(&sb, "- **%s**: %s.\n", sc.title, sc.desc)
	}
	fmt.Fprintf(&sb, "\nLag windows of %s; before a cut or a switchover %s of writes plus up to 1 s at random; writes are back after %d acknowledged writes that started after the event (at most %s), then %s more; "+
		"a target that does not promote by itself is watched for %s after the cut.\n\n",
		b.opt.lagFor, b.opt.pre, backAfter, b.opt.maxOutage, b.opt.post, b.opt.observe)
	return sb.String()
}

func lagTable(sc scenario, cells []cell) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "## %s\n\n", capitalize(sc.title))
	tab := harness.NewTable(&sb, harness.Left("target"), harness.Right("runs"), harness.Right("samples"),
		harness.Right("replayed bytes behind p50 / p99 / max"), harness.Right("received bytes behind p50 / p99 / max"),
		harness.Right("replay delay p50 / p99 / max"), harness.Right("acknowledged"), harness.Right("commit latency p50 / p99 / max"), harness.Left("notes"))
	for _, c := range cells {
		if c.setup != "" {
			tab.Partial([]string{c.target, "0"}, harness.Truncate(c.setup, 300))
			continue
		}
		s := summarize(c)
		l := s.Lag
		tab.Row(c.target, strconv.Itoa(s.Runs), strconv.Itoa(l.n),
			fmt.Sprintf("%s / %s / %s", fmtBytes(l.bytes[0]), fmtBytes(l.bytes[1]), fmtBytes(l.bytes[2])),
			fmt.Sprintf("%s / %s / %s", fmtBytes(l.received[0]), fmtBytes(l.received[1]), fmtBytes(l.received[2])),
			fmt.Sprintf("%s / %s / %s", harness.Dur(l.delay[0]), harness.Dur(l.delay[1]), harness.Dur(l.delay[2])),
			strconv.Itoa(s.Acked), fmt.Sprintf("%s / %s / %s", fmtLatency(s.Commit[0]), fmtLatency(s.Commit[1]), fmtLatency(s.Commit[2])), cellNotes(c))
	}
	sb.WriteString("\n")
	return sb.String()
}

func lossTable(sc scenario, cells []cell) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "## %s\n\n", capitalize(sc.title))
	tab := harness.NewTable(&sb, harness.Left("target"), harness.Right("runs"), harness.Left("west writable by itself"),
		harness.Right("writable after the command (or the cut), median"), harness.Right("p90"), harness.Right("worst"), harness.Right("promotion command, median"),
		harness.Right("acknowledged in east lost"), harness.Right("lag at the cut (bytes)"), harness.Right("acknowledged in east"), harness.Left("notes"))
	for _, c := range cells {
		if c.setup != "" {
			tab.Partial([]string{c.target, "0"}, harness.Truncate(c.setup, 300))
			continue
		}
		s := summarize(c)
		self := fmt.Sprintf("%d of %d", s.SelfPromoted, s.Runs)
		from := "command"
		if c.auto {
			from = "cut"
		} else if s.SelfPromoted == 0 {
			self = fmt.Sprintf("no: 0 of %d runs (waiting for an operator)", s.Runs)
		}
		lost := strconv.Itoa(s.Lost)
		if s.Lost > 0 {
			lost = fmt.Sprintf("**%d** (in %d of %d runs; %d acknowledged while the cut was being made)", s.Lost, s.RunsLost, s.Runs, s.LostDuringCut)
		}
		var lags []string
		for _, l := range s.LagAtLoss {
			lags = append(lags, fmtBytes(l))
		}
		tab.Row(c.target, strconv.Itoa(s.Runs), self, harness.Gap(s.Writable[0])+" (from the "+from+")", harness.Gap(s.WritableP90), harness.Gap(s.Writable[1]),
			harness.Dur(s.Command), lost, strings.Join(lags, ", "), strconv.Itoa(s.Acked), cellNotes(c))
	}
	sb.WriteString("\n")
	return sb.String()
}

func switchoverTable(sc scenario, cells []cell) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "## %s\n\n", capitalize(sc.title))
	tab := harness.NewTable(&sb, harness.Left("target"), harness.Right("runs"), harness.Right("median write pause"), harness.Right("worst write pause"),
		harness.Right("acknowledged lost"), harness.Right("indeterminate (found)"), harness.Right("procedure, median"), harness.Right("acknowledged"), harness.Left("notes"))
	for _, c := range cells {
		if c.setup != "" {
			tab.Partial([]string{c.target, "0"}, harness.Truncate(c.setup, 300))
			continue
		}
		s := summarize(c)
		lost := strconv.Itoa(s.Lost)
		if s.Lost > 0 {
			lost = fmt.Sprintf("**%d** (in %d of %d runs)", s.Lost, s.RunsLost, s.Runs)
		}
		tab.Row(c.target, strconv.Itoa(s.Runs), harness.Gap(s.Gap[0]), harness.Gap(s.Gap[1]), lost,
			fmt.Sprintf("%d (%d)", s.Indeterminate, s.IndetFound), harness.Dur(s.Command), strconv.Itoa(s.Acked), cellNotes(c))
	}
	sb.WriteString("\n")
	return sb.String()
}

// ratioTable compares each haven target with each Patroni target, as
// bench/pg does: Patroni's figure divided by haven's. Without a haven
// target (or without a Patroni one) there is nothing to compare and it is
// left out.
func ratioTable(cells []cell, targets []string) string {
	var havens, others []string
	for _, n := range targets {
		if isHaven(n) {
			havens = append(havens, n)
		} else {
			others = append(others, n)
		}
	}
	if len(havens) == 0 || len(others) == 0 {
		return ""
	}
	find := func(sc, t string) (summary, bool) {
		for _, c := range cells {
			if c.sc.name == sc && c.target == t && c.setup == "" {
				s := summarize(c)
				return s, s.Runs > 0
			}
		}
		return summary{}, false
	}
	var sb strings.Builder
	sb.WriteString("## haven against Patroni\n\nHow many times larger Patroni's figure is than haven's; above 1, haven's is smaller. " +
		"Time to a writable region: Patroni's from the operator's command (it waits for one), haven's from the command or the cut as its column above says.\n\n")
	cols := []harness.Column{harness.Left("measure"), harness.Left("haven target")}
	for _, p := range others {
		cols = append(cols, harness.Right(p+" ÷ haven"))
	}
	tab := harness.NewTable(&sb, cols...)
	type measure struct {
		sc, title string
		get       func(summary) (float64, float64) // median-ish, worst-ish
	}
	measures := []measure{
		{"lag", "lag, replayed bytes (p50 / p99)", func(s summary) (float64, float64) { return float64(s.Lag.bytes[0]), float64(s.Lag.bytes[1]) }},
		{"lag", "lag, replay delay (p50 / p99)", func(s summary) (float64, float64) { return float64(s.Lag.delay[0]), float64(s.Lag.delay[1]) }},
		{"lag", "commit latency under the lag writer (p50 / p99)", func(s summary) (float64, float64) { return float64(s.Commit[0]), float64(s.Commit[1]) }},
		{"loss", "region loss: time to a writable west (median / worst)", func(s summary) (float64, float64) {
			return float64(s.Writable[0]), float64(s.Writable[1])
		}},
		{"switchover", "switchover: write pause (median / worst)", func(s summary) (float64, float64) { return float64(s.Gap[0]), float64(s.Gap[1]) }},
	}
	for _, m := range measures {
		for _, h := range havens {
			hs, ok := find(m.sc, h)
			if !ok {
				continue
			}
			row := []string{m.title, h}
			h1, h2 := m.get(hs)
			for _, p := range others {
				ps, ok := find(m.sc, p)
				if !ok {
					row = append(row, "–")
					continue
				}
				p1, p2 := m.get(ps)
				row = append(row, ratio(p1, h1)+" / "+ratio(p2, h2))
			}
			tab.Row(row...)
		}
	}
	sb.WriteString("\n")
	return sb.String()
}

// ratio is a ÷ b, formatted; "–" when either is unknown or b is 0.
func ratio(a, b float64) string {
	if a >= float64(never) || b >= float64(never) || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f×", a/b)
}

// perRun lists every run's main figure.
func perRun(cells []cell) string {
	var sb strings.Builder
	sb.WriteString("## Every run\n\n")
	for _, c := range cells {
		if len(c.runs) == 0 {
			continue
		}
		var parts []string
		for _, r := range c.runs {
			parts = append(parts, fmt.Sprintf("run %d: %s", r.Run, r.line(c.sc.name)))
		}
		fmt.Fprintf(&sb, "- %s · %s:\n  - %s\n", c.sc.name, c.target, strings.Join(parts, "\n  - "))
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
			add(harness.Truncate(n, 200))
		}
	}
	var parts []string
	for _, n := range order {
		parts = append(parts, fmt.Sprintf("%s (%d of %d)", n, count[n], len(c.runs)))
	}
	return strings.Join(parts, "; ")
}

// fmtLatency formats a commit latency to a tenth of a millisecond below
// 100 ms, where harness.Dur's whole milliseconds would hide the difference
// between two targets; "–" for none.
func fmtLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return harness.Dur(d)
}

// fmtBytes formats a WAL distance: bytes below 10 KiB, then KiB and MiB.
func fmtBytes(n int64) string {
	switch {
	case n < 10<<10:
		return strconv.FormatInt(n, 10) + " B"
	case n < 10<<20:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
