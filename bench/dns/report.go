package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// summary is a cell's runs reduced to the table's columns.
type summary struct {
	Runs             int // runs without an error
	Median, Min, Max float64
	Latency          time.Duration // median of the runs' average latency
	MaxLostPct       float64
	Errs             []string
}

func summarize(rs []perfResult) summary {
	var s summary
	var qps []float64
	var lat []time.Duration
	for _, r := range rs {
		if r.Err != "" {
			s.Errs = append(s.Errs, r.Err)
			continue
		}
		qps = append(qps, r.QPS)
		lat = append(lat, r.AvgLatency)
		s.MaxLostPct = max(s.MaxLostPct, r.lostPct())
	}
	s.Runs = len(qps)
	if s.Runs > 0 {
		s.Median, s.Min, s.Max = harness.Median(qps), slices.Min(qps), slices.Max(qps)
		s.Latency = harness.Median(lat)
	}
	return s
}

// goal is one of the goals: num's median QPS over den's must be at
// least min.
type goal struct {
	what     string
	num, den string // cells
	min      float64
	info     bool // a comparison for context, not a goal
}

var goals = []goal{
	{what: "health-checked answer ≥ 20× PowerDNS's default-mode Lua record", num: "haven-failover", den: "pdns-lua", min: 20},
	{what: "health-checked answer ≥ 1.0× PowerDNS's shared-mode Lua record", num: "haven-failover", den: "pdns-lua-shared", min: 1},
	{what: "≥ 1.0× PowerDNS's static-record QPS (haven's static name)", num: "haven-static", den: "pdns-static", min: 1},
	{what: "the same with haven's health-checked answer", num: "haven-failover", den: "pdns-static", min: 1, info: true},
	{what: "≤ 10% lower with ECS on every query (failover name)", num: "haven-failover-ecs", den: "haven-failover", min: 0.9},
	{what: "≤ 10% lower with ECS on every query (hashed name, scope /24)", num: "haven-hashed-ecs", den: "haven-hashed", min: 0.9},
	{what: "the same against EDNS without ECS (failover name)", num: "haven-failover-ecs", den: "haven-failover-edns", min: 0.9},
	{what: "the same against EDNS without ECS (hashed name)", num: "haven-hashed-ecs", den: "haven-hashed-edns", min: 0.9},
	{what: "EDNS without ECS against no EDNS (failover name)", num: "haven-failover-edns", den: "haven-failover", min: 0.9, info: true},
}

// ratio is num ÷ den, or false when either is missing.
func ratio(num, den float64) (float64, bool) {
	if num <= 0 || den <= 0 {
		return 0, false
	}
	return num / den, true
}

// report renders the whole run as markdown.
func (b *bench) report(results map[string][]perfResult, cs []string, changes []map[string]time.Duration, changeErrs []string) string {
	var sb strings.Builder
	run := fmt.Sprintf("%d %s of %s per cell (dnsperf), %d answer-change %s", b.opt.runs, plural(b.opt.runs, "run", "runs"), b.opt.duration,
		len(changes), plural(len(changes), "run", "runs"))
	sb.WriteString(harness.Header("haven DNS traffic manager benchmark (bench/dns)", run, b.opt.quick, b.machine, b.versions))
	sb.WriteString(b.method())
	sb.WriteString(b.qpsTable(results))
	sb.WriteString(goalTable(results))
	sb.WriteString(changeTable(cs, changes, changeErrs))
	sb.WriteString("Load average at the end: " + harness.LoadAverage() + ".\n")
	return sb.String()
}

func (b *bench) method() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Set-up: every server answers for `%s` on its own port of 127.0.0.1, pinned to CPU 0 (`taskset -c 0`); "+
		"dnsperf runs on CPU 1 (`taskset -c 1 dnsperf -c 1 -T 1 -q 100 -t 1 -l %s`, ECS cells add `-E %s`: ECS 10.0.0.0/24, EDNS cells `-e`: an OPT record without options; the other cells send no OPT record). "+
		"The targets 127.0.0.21 and 127.0.0.22 are HTTP listeners in the harness on one port (200 `ok` on /healthz), both up during the QPS runs. "+
		"Every round runs each cell once, in the order below, so that a drift of the machine spreads over all of them; before each run one query checks the answer (NOERROR, aa, an A record; the ECS option echoed, or an OPT record for EDNS). Servers:\n\n",
		zone, b.opt.duration, ecsOption)
	for _, name := range b.neededServers() {
		s, _ := findServer(name)
		fmt.Fprintf(&sb, "- **%s**: %s.\n", s.name, s.desc)
	}
	sb.WriteString("\nCells:\n\n")
	for _, name := range b.opt.cells {
		c, _ := findCell(name)
		fmt.Fprintf(&sb, "- **%s**: %s.\n", c.name, strings.ReplaceAll(c.desc, "PORT", strconv.Itoa(b.ports.backend)))
	}
	sb.WriteString("\n")
	return sb.String()
}

func (b *bench) qpsTable(results map[string][]perfResult) string {
	var sb strings.Builder
	sb.WriteString("## Answers per second\n\n")
	tab := harness.NewTable(&sb, harness.Left("cell"), harness.Left("name"), harness.Right("runs"), harness.Right("median QPS"),
		harness.Right("min"), harness.Right("max"), harness.Right("avg latency (median)"), harness.Right("lost, worst run"), harness.Left("notes"))
	for _, name := range b.opt.cells {
		c, _ := findCell(name)
		qname := c.qname
		if c.ecs {
			qname += " + ECS"
		} else if c.edns {
			qname += " + EDNS"
		}
		if e := b.serverErr[c.server]; e != "" {
			tab.Partial([]string{c.name, qname, "0"}, harness.Truncate(c.server+" did not start: "+e, 300))
			continue
		}
		s := summarize(results[c.name])
		var notes []string
		for _, e := range s.Errs {
			notes = append(notes, "error: "+harness.Truncate(e, 200))
		}
		tab.Row(c.name, qname, strconv.Itoa(s.Runs), fmtQPS(s.Median), fmtQPS(s.Min), fmtQPS(s.Max),
			fmtLatency(s.Latency), fmt.Sprintf("%.2f%%", s.MaxLostPct), strings.Join(notes, "; "))
	}
	sb.WriteString("\nPer run (QPS): ")
	var parts []string
	for _, name := range b.opt.cells {
		var v []string
		for _, r := range results[name] {
			if r.Err != "" {
				v = append(v, "error")
				continue
			}
			v = append(v, fmt.Sprintf("%.0f", r.QPS))
		}
		if len(v) > 0 {
			parts = append(parts, name+" "+strings.Join(v, ", "))
		}
	}
	sb.WriteString(strings.Join(parts, "; ") + ".\n\n")
	return sb.String()
}

func goalTable(results map[string][]perfResult) string {
	var sb strings.Builder
	sb.WriteString("## Against the goals\n\n")
	tab := harness.NewTable(&sb, harness.Left("goal"), harness.Left("ratio of medians"), harness.Right("measured"), harness.Right("wanted"), harness.Left("met"))
	for _, g := range goals {
		r, ok := ratio(summarize(results[g.num]).Median, summarize(results[g.den]).Median)
		if !ok {
			continue
		}
		met := "yes"
		switch {
		case g.info:
			met = "(for context)"
		case r < g.min:
			met = "**no**"
		}
		tab.Row(g.what, g.num+" ÷ "+g.den, fmt.Sprintf("%.2f×", r), fmt.Sprintf("≥ %.1f×", g.min), met)
	}
	sb.WriteString("\n")
	return sb.String()
}

func changeTable(cs []string, changes []map[string]time.Duration, errs []string) string {
	if len(changes) == 0 && len(errs) == 0 {
		return ""
	}
	var sb strings.Builder
	sb.WriteString("## Answer change after the target dies\n\n")
	fmt.Fprintf(&sb, "Each run waits until every server answers `www` with 127.0.0.21, then 6-7 s more, then closes 127.0.0.21's listener and every connection to it (its port refuses), "+
		"and asks each server for `www` every %s: the change time is the send time of the first query of the last run of answers without 127.0.0.21, "+
		"which must last %s (watched for at most %s; \"not within\" otherwise). PowerDNS's `ifportup` picks at random among the addresses it thinks are up, so before the change about half its answers hold 127.0.0.21; haven's failover answers 127.0.0.21 alone.\n\n",
		pollEvery, stableFor, changeWindow)
	tab := harness.NewTable(&sb, harness.Left("server"), harness.Right("runs"), harness.Right("median"), harness.Right("min"), harness.Right("max"), harness.Left("per run"))
	for _, s := range cs {
		var ok []time.Duration
		var per []string
		for _, c := range changes {
			per = append(per, fmtChange(c[s]))
			if c[s] >= 0 {
				ok = append(ok, c[s])
			}
		}
		if len(ok) == 0 {
			tab.Row(s, "0", "", "", "", strings.Join(per, ", "))
			continue
		}
		tab.Row(s, strconv.Itoa(len(ok)), fmtChange(harness.Median(ok)), fmtChange(slices.Min(ok)), fmtChange(slices.Max(ok)), strings.Join(per, ", "))
	}
	for _, e := range errs {
		fmt.Fprintf(&sb, "\nA run failed: %s\n", harness.Truncate(e, 300))
	}
	sb.WriteString("\n")
	return sb.String()
}

// fmtResult is one run on one line, for the progress log.
func fmtResult(r perfResult) string {
	if r.Err != "" {
		return "error: " + harness.Truncate(r.Err, 200)
	}
	return fmt.Sprintf("%.0f QPS, lost %d of %d, avg latency %s, %s", r.QPS, r.Lost, r.Sent, fmtLatency(r.AvgLatency), r.Rcodes)
}

// fmtQPS is "136.6k"; "" for none.
func fmtQPS(q float64) string {
	switch {
	case q <= 0:
		return ""
	case q >= 10000:
		return fmt.Sprintf("%.1fk", q/1000)
	}
	return fmt.Sprintf("%.0f", q)
}

// fmtLatency is "0.62 ms".
func fmtLatency(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// fmtChange is "1.73 s", or "not within" for a change that was not seen.
func fmtChange(d time.Duration) string {
	if d < 0 {
		return "not within " + changeWindow.String()
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
