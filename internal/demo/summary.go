package demo

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill"
)

// The demo ends as a drill does: each act's fault, what the clients saw,
// judged against the objectives of the guide's warm standby as
// examples/warm-standby.yaml declares them.

// demoObjectives are examples/warm-standby.yaml's: a machine's loss inside
// the active region within 30s and nothing lost, the region's loss within
// 2m and at most 5s of data.
func demoObjectives() *config.Config {
	d := func(v time.Duration) *config.Duration { c := config.Duration(v); return &c }
	return &config.Config{Objectives: &config.Objectives{RTO: d(30 * time.Second), RPO: d(0),
		Region: &config.Objective{RTO: d(2 * time.Minute), RPO: d(5 * time.Second)}}}
}

// ActVerdict is one act judged as a drill.
type ActVerdict struct {
	Act   string
	Fault string
	drill.PartResult
}

// verdicts judges the acts that ran.
func (r *Result) verdicts() []ActVerdict {
	cfg := demoObjectives()
	var out []ActVerdict
	add := func(act, fault, part, workload string, rto time.Duration, lost int, rpo time.Duration) {
		p := drill.PartResult{Part: part, Workload: workload, RTO: rto, RPO: rpo}
		for i := range lost {
			p.Lost = append(p.Lost, i)
		}
		p.JudgeMeasured(cfg)
		out = append(out, ActVerdict{Act: act, Fault: fault, PartResult: p})
	}
	add("1", "a backend killed (kill -9)", config.PartWeb, "HTTP requests", r.outage, 0, 0)
	if f := r.Floating; f != nil {
		add("2", "the balancer node holding the address killed", config.PartWeb, "HTTP requests", f.Outage, 0, 0)
	}
	if d := r.Database; d != nil {
		add("3", "the primary's node killed", config.PartDatabase, "orders through the router", d.Gap, d.Lost, 0)
	}
	if g := r.Galera; g != nil {
		add("3", "the Galera writer's node killed", config.PartDatabase, "orders through the router", g.Gap, g.Lost, 0)
	}
	if t := r.Traffic; t != nil {
		add("4", "region east's balancer down", config.PartWeb, "DNS answers", t.Moved, 0, 0)
	}
	if g := r.Region; g != nil {
		add("5", "region east lost", config.PartRegion, "writes through the routers", g.RTO, g.Lost, g.OldestLost)
	}
	if v := r.Volume; v != nil {
		lost := 0
		if !v.Identical {
			lost = 1
		}
		add("6", "the application node that stored a file killed", config.PartWeb, "an uploaded file", v.Served, lost, 0)
	}
	return out
}

// printVerdicts prints the drill summary of the acts.
func printVerdicts(w io.Writer, vs []ActVerdict) {
	fmt.Fprintln(w, "\ndrill summary: each act against the warm standby's objectives (examples/warm-standby.yaml)")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "act\tfault\tpart\toutage\tobjective\tlost\tobjective\tverdict")
	for _, v := range vs {
		rpo, rpoObjective := "-", "-"
		if v.Part != config.PartWeb {
			rpoObjective = objective(v.ObjectiveRPO)
			rpo = fmt.Sprintf("%d writes", len(v.Lost))
			if len(v.Lost) > 0 {
				rpo += fmt.Sprintf(" (%s)", config.Duration(v.RPO.Round(time.Millisecond)))
			}
		}
		verdict := "met"
		if !v.Met {
			verdict = "NOT MET"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Act, v.Fault, v.Part, config.Duration(v.RTO.Round(time.Millisecond)),
			objective(v.ObjectiveRTO), rpo, rpoObjective, verdict)
	}
	tw.Flush()
	for _, v := range vs {
		for _, why := range v.Reasons {
			fmt.Fprintf(w, "act %s not met: %s\n", v.Act, why)
		}
	}
}

func objective(d *time.Duration) string {
	if d == nil {
		return "none"
	}
	return config.Duration(*d).String()
}
