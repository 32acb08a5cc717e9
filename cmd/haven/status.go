package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/gtm"
	"github.com/haven-ha/haven/internal/lb"
)

// nodeStatus is the part of a node's /api/v1/status the commands print.
type nodeStatus struct {
	Ready        bool                      `json:"ready"`
	NotReady     []string                  `json:"not_ready"`
	Version      string                    `json:"version"`
	Started      time.Time                 `json:"started"`
	Balancers    []lb.Status               `json:"balancers"`
	Coordination *agent.CoordinationStatus `json:"coordination"`
	Traffic      *gtm.Status               `json:"traffic"`
	Objectives   *drill.Compliance         `json:"objectives"`
	Drills       *agent.DrillsStatus       `json:"drills"`
}

// runStatus is `haven status`: what each node's agent reports. Every node
// is asked once, all at once; each section is printed from those answers.
func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	cfgPath := configFlag(fs)
	node := fs.String("n", "", "only this node (default: every node)")
	within := nodeTimeoutFlag(fs)
	output := outputFlag(fs)
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	nodes := ac.cfg.NodeNames()
	if *node != "" {
		if _, ok := ac.cfg.Node(*node); !ok {
			return fmt.Errorf("node %q is not in %s (nodes: %v)", *node, *cfgPath, nodes)
		}
		nodes = []string{*node}
	}
	if *output == "json" {
		return printJSONAnswers(stdout, ac, nodes, "/api/v1/status", *within, nil, false)
	}
	as := askEach[nodeStatus](ac, nodes, "/api/v1/status", *within)
	for _, a := range as {
		if a.err != nil {
			fmt.Fprintf(stdout, "%s: %s\n", a.node, noAnswer(a.err))
			continue
		}
		ready := "ready"
		if !a.val.Ready {
			ready = fmt.Sprintf("NOT READY %v", a.val.NotReady)
		}
		fmt.Fprintf(stdout, "%s: %s (version %s)\n", a.node, ready, a.val.Version)
	}
	if ac.cfg.Coordination != nil {
		coordStatus(ac.cfg, as, stdout)
	}
	if t := ac.cfg.Traffic; t != nil {
		printTraffic(stdout, only(as, t.Nameservers))
	}
	for _, name := range sortedKeys(ac.cfg.Balancers) {
		b := ac.cfg.Balancers[name]
		fmt.Fprintf(stdout, "\nbalancer %s (%s, %s):\n", b.Name, b.Mode, b.Listen)
		printBalancer(stdout, b.Name, balancersOf(only(as, b.Nodes)))
	}
	if d := ac.cfg.Drills; d != nil && len(d.Schedule) > 0 {
		printDrills(stdout, as)
	}
	if ac.cfg.Objectives != nil {
		printObjectives(stdout, as)
	}
	return answerErrors(as)
}

// printObjectives prints whether the deployment meets its objectives now,
// as judged by the node that sees the most parts (a database node sees
// them all; a balancer node the web alone).
func printObjectives(stdout io.Writer, as []answer[nodeStatus]) {
	var best *drill.Compliance
	from := ""
	for _, a := range as {
		if o := a.val.Objectives; a.err == nil && o != nil && (best == nil || len(o.Checked) > len(best.Checked)) {
			best, from = o, a.node
		}
	}
	fmt.Fprintln(stdout)
	switch {
	case best == nil:
		fmt.Fprintln(stdout, "objectives: no node answered with them")
		return
	case best.Met:
		fmt.Fprintf(stdout, "objectives: met now (%s, as %s judges them)\n", strings.Join(best.Checked, ", "), from)
	default:
		fmt.Fprintf(stdout, "objectives: NOT MET now (%s, as %s judges them):\n", strings.Join(best.Checked, ", "), from)
		for _, f := range best.Failing {
			fmt.Fprintf(stdout, "  %s\n", f)
		}
	}
	if len(best.Unseen) > 0 {
		fmt.Fprintf(stdout, "  not judged from there: %s (ask a database node)\n", strings.Join(best.Unseen, ", "))
	}
}

// printDrills prints the scheduled drills and each one's last result, from
// the first node that schedules them (they share the results in etcd).
func printDrills(stdout io.Writer, as []answer[nodeStatus]) {
	fmt.Fprintln(stdout)
	for _, a := range as {
		d := a.val.Drills
		if a.err != nil || d == nil {
			continue
		}
		fmt.Fprintf(stdout, "scheduled drills (as %s sees them):\n", a.node)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SCENARIO\tEVERY\tLAST\tRESULT\tNEXT")
		for _, e := range d.Schedule {
			last, result, next := "never", "-", "due now"
			if l := e.Last; l != nil {
				last, next = l.Ended.Local().Format(time.DateTime)+" on "+l.Node, e.Next.Local().Format(time.DateTime)
				switch {
				case l.Error != "":
					result = "COULD NOT RUN: " + l.Error
				case l.Met:
					result = "met"
				default:
					result = "NOT MET: " + strings.Join(l.Reasons, "; ")
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Scenario, e.Every, last, result, next)
		}
		tw.Flush()
		return
	}
	fmt.Fprintln(stdout, "scheduled drills: no node that schedules them answered")
}

// only keeps the answers of nodes.
func only[T any](as []answer[T], nodes []string) []answer[T] {
	var out []answer[T]
	for _, a := range as {
		if slices.Contains(nodes, a.node) {
			out = append(out, a)
		}
	}
	return out
}

// section maps every answer to one section of it.
func section[T, S any](as []answer[T], f func(T) S) []answer[S] {
	out := make([]answer[S], len(as))
	for i, a := range as {
		out[i] = answer[S]{node: a.node, err: a.err}
		if a.err == nil {
			out[i].val = f(a.val)
		}
	}
	return out
}

func balancersOf(as []answer[nodeStatus]) []answer[[]lb.Status] {
	return section(as, func(s nodeStatus) []lb.Status { return s.Balancers })
}

// printTraffic prints what each managed name answers now, as every name
// server that answered says.
func printTraffic(stdout io.Writer, as []answer[nodeStatus]) {
	for _, a := range as {
		if a.err != nil {
			fmt.Fprintf(stdout, "\ntraffic (%s): %s\n", a.node, noAnswer(a.err))
			continue
		}
		t := a.val.Traffic
		if t == nil {
			fmt.Fprintf(stdout, "\ntraffic (%s): its traffic manager is not running\n", a.node)
			continue
		}
		fmt.Fprintf(stdout, "\ntraffic %s (as %s answers; views: %s, %d other instances):\n", t.Zone, a.node, t.Views, t.Peers)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPOLICY\tANSWERS NOW\tTARGETS")
		for _, ns := range t.Names {
			var targets []string
			for _, tg := range ns.Targets {
				state := "up"
				switch {
				case !tg.DrainedUntil.IsZero():
					state = "drained until " + tg.DrainedUntil.Local().Format("15:04:05")
				case !tg.Up:
					state = "DOWN"
				}
				targets = append(targets, fmt.Sprintf("%s %s %s", tg.Name, tg.Address, state))
			}
			answers := strings.Join(ns.Answers, " ")
			if ns.Servfail {
				answers = "SERVFAIL (all down, closed)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ns.Name, ns.Policy, answers, strings.Join(targets, ", "))
		}
		tw.Flush()
	}
}

// coordStatus prints etcd's health and the cluster's members as the first
// node that answered and reaches etcd sees them, then every floating
// address and the database.
func coordStatus(cfg *config.Config, as []answer[nodeStatus], stdout io.Writer) {
	for _, a := range as {
		c := a.val.Coordination
		if a.err != nil || c == nil || !c.Connected {
			continue
		}
		fmt.Fprintf(stdout, "\netcd (as %s sees it):\n", a.node)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENDPOINT\tHEALTHY\tLEADER\tTERM\tERROR")
		for _, e := range c.Etcd {
			fmt.Fprintf(tw, "%s\t%v\t%v\t%d\t%s\n", e.Endpoint, e.Healthy, e.Leader, e.RaftTerm, e.Error)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "\nmembers:\n")
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tREGION/ZONE\tROLES\tVERSION\tCHECKS")
		for _, name := range sortedKeys(c.Members) {
			m := c.Members[name]
			var checks []string
			for _, k := range sortedKeys(m.Checks) {
				checks = append(checks, k+"="+m.Checks[k])
			}
			fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\n", name, m.Region, m.Zone, strings.Join(m.Roles, ","), m.Version, strings.Join(checks, " "))
		}
		tw.Flush()
		break
	}
	coordinated := section(as, func(s nodeStatus) agent.CoordinationStatus {
		if s.Coordination == nil {
			return agent.CoordinationStatus{}
		}
		return *s.Coordination
	})
	var withVIP []*config.Balancer
	for _, name := range sortedKeys(cfg.Balancers) {
		if b := cfg.Balancers[name]; b.VIP != nil {
			withVIP = append(withVIP, b)
		}
	}
	if len(withVIP) > 0 {
		fmt.Fprintf(stdout, "\nfloating addresses:\n")
		printVIPs(stdout, withVIP, section(coordinated, func(c agent.CoordinationStatus) []agent.VIPStatus { return c.VIPs }))
	}
	if db := cfg.Database; db != nil {
		fmt.Fprintf(stdout, "\ndatabase:\n")
		dbs := section(coordinated, func(c agent.CoordinationStatus) *agent.DatabaseStatus { return c.Database })
		print := printDatabase
		if db.Engine == "galera" {
			print = printGalera
		}
		if err := print(stdout, db.Nodes, dbs); err != nil {
			fmt.Fprintln(stdout, err)
		}
		if db.Backup != nil {
			printBackup(stdout, only(dbs, db.Nodes), time.Now())
		}
	}
}
