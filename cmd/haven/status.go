package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/gtm"
)

// runStatus is `haven status`: what each node's agent reports.
func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	node := fs.String("n", "", "only this node (default: every node)")
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	nodes := ac.cfg.NodeNames()
	if *node != "" {
		nodes = []string{*node}
	}
	var errs []error
	for _, n := range nodes {
		var st map[string]any
		if err := ac.do("GET", n, "/api/v1/status", &st); err != nil {
			fmt.Fprintf(stdout, "%s: unreachable: %v\n", n, err)
			errs = append(errs, err)
			continue
		}
		ready := "ready"
		if st["ready"] != true {
			ready = fmt.Sprintf("NOT READY %v", st["not_ready"])
		}
		fmt.Fprintf(stdout, "%s: %s (version %v)\n", n, ready, st["version"])
	}
	if ac.cfg.Coordination != nil {
		coordStatus(ac, nodes, stdout)
	}
	if t := ac.cfg.Traffic; t != nil {
		trafficStatus(ac, t.Nameservers, *node, stdout)
	}
	names := make([]string, 0, len(ac.cfg.Balancers))
	for name := range ac.cfg.Balancers {
		names = append(names, name)
	}
	slices.Sort(names) // the same order on every run
	for _, name := range names {
		b := ac.cfg.Balancers[name]
		fmt.Fprintf(stdout, "\nbalancer %s (%s, %s):\n", b.Name, b.Mode, b.Listen)
		var reachable []string
		for _, n := range b.Nodes {
			if *node == "" || *node == n {
				reachable = append(reachable, n)
			}
		}
		lbStatus(ac, b.Name, reachable, stdout)
	}
	return errors.Join(errs...)
}

// trafficStatus prints what each managed name answers now, as every name
// server (or only node) says.
func trafficStatus(ac *adminClient, nameservers []string, node string, stdout io.Writer) {
	for _, n := range nameservers {
		if node != "" && node != n {
			continue
		}
		var st struct {
			Traffic *gtm.Status `json:"traffic"`
		}
		if err := ac.do("GET", n, "/api/v1/status", &st); err != nil || st.Traffic == nil {
			fmt.Fprintf(stdout, "\ntraffic (%s): no answer from its traffic manager\n", n)
			continue
		}
		fmt.Fprintf(stdout, "\ntraffic %s (as %s answers; views: %s, %d other instances):\n", st.Traffic.Zone, n, st.Traffic.Views, st.Traffic.Peers)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPOLICY\tANSWERS NOW\tTARGETS")
		for _, ns := range st.Traffic.Names {
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

type coordNodeStatus struct {
	Coordination *struct {
		Connected bool `json:"connected"`
		Etcd      []struct {
			Endpoint string `json:"endpoint"`
			Healthy  bool   `json:"healthy"`
			Leader   bool   `json:"leader"`
			RaftTerm uint64 `json:"raft_term"`
			Error    string `json:"error"`
		} `json:"etcd"`
		Members map[string]struct {
			Region  string            `json:"region"`
			Zone    string            `json:"zone"`
			Roles   []string          `json:"roles"`
			Version string            `json:"version"`
			Checks  map[string]string `json:"checks"`
		} `json:"members"`
	} `json:"coordination"`
}

// coordStatus prints etcd's health and the cluster's members as the first
// reachable node sees them, then every floating address.
func coordStatus(ac *adminClient, nodes []string, stdout io.Writer) {
	for _, n := range nodes {
		var st coordNodeStatus
		if ac.do("GET", n, "/api/v1/status", &st) != nil || st.Coordination == nil || !st.Coordination.Connected {
			continue
		}
		c := st.Coordination
		fmt.Fprintf(stdout, "\netcd (as %s sees it):\n", n)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENDPOINT\tHEALTHY\tLEADER\tTERM\tERROR")
		for _, e := range c.Etcd {
			fmt.Fprintf(tw, "%s\t%v\t%v\t%d\t%s\n", e.Endpoint, e.Healthy, e.Leader, e.RaftTerm, e.Error)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "\nmembers:\n")
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tREGION/ZONE\tROLES\tVERSION\tCHECKS")
		for _, name := range sortedKeys((c.Members)) {
			m := c.Members[name]
			var checks []string
			for _, k := range sortedKeys((m.Checks)) {
				checks = append(checks, k+"="+m.Checks[k])
			}
			fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\n", name, m.Region, m.Zone, strings.Join(m.Roles, ","), m.Version, strings.Join(checks, " "))
		}
		tw.Flush()
		break
	}
	var withVIP []*config.Balancer
	for _, name := range sortedKeys((ac.cfg.Balancers)) {
		if b := ac.cfg.Balancers[name]; b.VIP != nil {
			withVIP = append(withVIP, b)
		}
	}
	if len(withVIP) > 0 {
		fmt.Fprintf(stdout, "\nfloating addresses:\n")
		_ = vipStatus(ac, withVIP, stdout)
	}
	if db := ac.cfg.Database; db != nil {
		fmt.Fprintf(stdout, "\ndatabase:\n")
		if err := pgStatus(ac, db.Nodes, stdout); err != nil {
			fmt.Fprintf(stdout, "no database node answered: %v\n", err)
		}
	}
}
