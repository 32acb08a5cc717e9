package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// report renders the whole run as markdown.
func (b *bench) report(cells []cell) string {
	var sb strings.Builder
	sb.WriteString(harness.Header("haven floating-address benchmark (bench/vip)",
		fmt.Sprintf("%d %s of each fault per target", b.opt.runs, harness.Plural(b.opt.runs, "run", "runs")), b.opt.quick, b.machine, b.versions))
	sb.WriteString(b.method())
	sb.WriteString(faultTable(cells))
	sb.WriteString(lossTable(cells, b.opt))
	sb.WriteString(steadyTable(cells, b.opt.targets))
	return sb.String()
}

// method describes the set-up and the measurement.
func (b *bench) method() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "Set-up: nodes n1, n2, n3 and a client on one Linux bridge (network namespaces, `internal/netlab`); "+
		"the floating address %s on the nodes' eth0; priorities n1 %d, n2 %d, n3 %d. Targets:\n\n",
		vipPrefix, priority["n1"], priority["n2"], priority["n3"])
	for _, n := range b.opt.targets {
		t, _ := findTarget(n)
		fmt.Fprintf(&sb, "- **%s**: %s.\n", t.name, t.desc)
	}
	fmt.Fprintf(&sb, "\nMeasurement: the client sends a UDP probe to the address every %s in an Ethernet broadcast frame, so every node "+
		"hears it, and every node whose kernel accepts the address answers with its name (`internal/drill`). "+
		"Each run waits until n1 holds the address by its own account (keepalived's log, haven's status API), the others are backups, and 40 probes in a row were answered by n1 alone; "+
		"then it probes from 1 s plus a random part of one heartbeat period (keepalived's advert_int, haven's renewal period lease/4) before the fault, "+
		"holds the fault (for as long as each fault says below), heals it, and probes for %s more. "+
		"**Outage** is drill's `Report.OutageAfter(fault)`: the first run of unanswered probes after the fault, from the last answered probe before it to the first answered after; "+
		"**unanswered during the fault** counts the probes sent from the fault to its heal that no node answered, times the probe interval: it includes every gap, also those after a first takeover; "+
		"**longest gap** is the longest run of unanswered probes anywhere in the run, measured like the outage (it includes a gap when the address moves back after the heal). "+
		"**Two holders**: probes answered by two nodes; their time is, for each run of consecutive such probes, the first to the last probe's send time plus one probe interval, summed over the runs.\n\n",
		b.opt.probeEvery, b.opt.post)
	sb.WriteString("Faults (each on the node that holds the address):\n\n")
	for _, n := range b.opt.scenarios {
		sc, _ := findScenario(n)
		desc := strings.NewReplacer("HOLD", b.opt.hold.String(), "DOWN", b.opt.down.String(),
			"PCT", fmt.Sprintf("%d%%", b.opt.lossPct), "LOSSD", b.opt.lossDur.String()).Replace(sc.desc)
		fmt.Fprintf(&sb, "- **%s**: %s.\n", sc.title, desc)
	}
	sb.WriteString("\n")
	return sb.String()
}

func faultTable(cells []cell) string {
	var rows []cell
	for _, c := range cells {
		if c.sc.name != "loss" {
			rows = append(rows, c)
		}
	}
	if len(rows) == 0 {
		return ""
	}
	var sb strings.Builder
	sb.WriteString("## Faults\n\n")
	tab := harness.NewTable(&sb, harness.Left("fault"), harness.Left("target"), harness.Right("runs"), harness.Right("median outage"), harness.Right("worst outage"),
		harness.Right("unanswered during the fault, median / worst"), harness.Right("longest gap"), harness.Right("runs with two holders"),
		harness.Right("two-holder time, total"), harness.Left("notes"))
	for _, c := range rows {
		if c.setup != "" {
			tab.Partial([]string{c.sc.title, c.t.name, "0"}, harness.Truncate(c.setup, 300))
			continue
		}
		s := summarize(c.runs)
		tab.Row(c.sc.title, c.t.name, strconv.Itoa(s.Runs), harness.Gap(s.Median), harness.Gap(s.Worst),
			harness.Dur(s.MedianUnanswered)+" / "+harness.Dur(s.WorstUnanswered), harness.Dur(s.WorstGap),
			fmt.Sprintf("%d of %d", s.RunsTwo, s.Runs), harness.Dur(s.TwoHolder), cellNotes(c))
	}
	sb.WriteString("\nPer run (outage / unanswered during the fault / two-holder time, ms):\n\n")
	for _, c := range rows {
		if len(c.runs) == 0 {
			continue
		}
		var parts []string
		for _, r := range c.runs {
			if r.Err != "" {
				parts = append(parts, "error")
				continue
			}
			parts = append(parts, fmt.Sprintf("%s/%s/%s", harness.Ms(r.Outage), harness.Ms(r.Unanswered), harness.Ms(r.TwoHolder)))
		}
		fmt.Fprintf(&sb, "- %s · %s: %s\n", c.sc.name, c.t.name, strings.Join(parts, ", "))
	}
	sb.WriteString("\n")
	return sb.String()
}

func lossTable(cells []cell, opt options) string {
	var rows []cell
	for _, c := range cells {
		if c.sc.name == "loss" {
			rows = append(rows, c)
		}
	}
	if len(rows) == 0 {
		return ""
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "## %d%% packet loss between the nodes for %s\n\n", opt.lossPct, opt.lossDur)
	tab := harness.NewTable(&sb, harness.Left("target"), harness.Right("runs"), harness.Right("false failovers"), harness.Right("holder changes"),
		harness.Right("unanswered, total"), harness.Right("gaps"), harness.Right("longest gap"), harness.Right("runs with two holders"),
		harness.Right("two-holder time, total"), harness.Left("notes"))
	for _, c := range rows {
		if c.setup != "" {
			tab.Partial([]string{c.t.name, "0"}, harness.Truncate(c.setup, 300))
			continue
		}
		s := summarize(c.runs)
		var unanswered time.Duration
		var gaps int
		for _, r := range c.runs {
			unanswered += r.Unanswered
			gaps += r.FaultGaps
		}
		tab.Row(c.t.name, strconv.Itoa(s.Runs), strconv.Itoa(s.Failovers), strconv.Itoa(s.Changes), harness.Dur(unanswered), strconv.Itoa(gaps), harness.Dur(s.WorstGap),
			fmt.Sprintf("%d of %d", s.RunsTwo, s.Runs), harness.Dur(s.TwoHolder), cellNotes(c))
	}
	sb.WriteString("\n")
	return sb.String()
}

// steadyTable describes the steady state each target kept before its
// faults: the probes from the start of each run to its fault, when one
// node held the address and nothing was broken.
func steadyTable(cells []cell, targets []string) string {
	var sb strings.Builder
	sb.WriteString("## Steady state (before each fault)\n\n")
	sb.WriteString("The probes of every run from its start to its fault (at least 1 s each), when the cluster had settled and nothing was broken. A gap here is an outage nothing caused.\n\n")
	tab := harness.NewTable(&sb, harness.Left("target"), harness.Right("probed"), harness.Right("unanswered"), harness.Right("gaps"),
		harness.Right("longest gap"), harness.Right("gaps per minute"))
	rows := 0
	for _, name := range targets {
		var probed, unanswered, longest time.Duration
		var gaps int
		for _, c := range cells {
			if c.t.name != name {
				continue
			}
			for _, r := range c.runs {
				if r.Err != "" {
					continue
				}
				probed += r.FaultAt
				unanswered += r.PreUnanswered
				gaps += r.PreGaps
				longest = max(longest, r.PreLongest)
			}
		}
		if probed == 0 {
			continue
		}
		rows++
		tab.Row(name, fmt.Sprintf("%.1f s", probed.Seconds()), harness.Dur(unanswered), strconv.Itoa(gaps), harness.Dur(longest),
			fmt.Sprintf("%.1f", float64(gaps)/probed.Minutes()))
	}
	if rows == 0 {
		return ""
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
	var cmds []time.Duration
	var ok, several int
	var gaps []int
	for _, r := range c.runs {
		if r.Err != "" {
			add("error: " + harness.Truncate(r.Err, 200))
			continue
		}
		ok++
		for _, n := range r.Notes {
			add(n)
		}
		if r.TwoHolderWho != "" {
			add("two holders: " + r.TwoHolderWho)
		}
		if r.Outage < 0 {
			add("the address was not answered again before the probes stopped")
		}
		if r.Command > 0 {
			cmds = append(cmds, r.Command)
		}
		if c.sc.name != "loss" {
			gaps = append(gaps, r.FaultGaps)
			if r.FaultGaps > 1 {
				several++
			}
		}
	}
	var parts []string
	for _, n := range order {
		parts = append(parts, fmt.Sprintf("%s (%d of %d)", n, count[n], len(c.runs)))
	}
	if several > 0 {
		slices.Sort(gaps)
		parts = append(parts, fmt.Sprintf("the address went unanswered more than once during the fault in %d of %d runs (up to %d times)", several, len(c.runs), gaps[len(gaps)-1]))
	}
	if len(cmds) > 0 {
		parts = append(parts, fmt.Sprintf("`haven vip move` returned after %s (median)", harness.Dur(medianDur(cmds))))
	}
	if c.sc.name == "kill" && c.t.kind == "keepalived" && ok > 0 {
		parts = append(parts, "the killed node keeps the address on its interface (and answers) until keepalived starts again on it and removes its VIPs")
	}
	return strings.Join(parts, "; ")
}
