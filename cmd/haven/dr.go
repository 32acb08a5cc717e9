package main

import (
	"fmt"
	"io"
	"net/url"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/pg/keeper"
)

const drUsage = `usage: haven dr ACTION [flags]

A database across two regions (database.dr): which region is active, and
moving it (docs/dr.md is the runbook).

actions:
  status                 the regions, the active one and its epoch, each region's leader, the
                         standby's lag in bytes and seconds (the live RPO across regions)
  switchover --to REGION move the active region to REGION with no acknowledged write lost: the
                         active primary stops, REGION's standby leader receives its last WAL and
                         promotes; waits until REGION is active
  promote REGION         let REGION take the active region once the active one stops renewing it,
                         whatever its lag and dr.failover say; prints what the promotion may lose
  promote --force REGION when the active region and the witness are lost for good (the global
                         scope has no quorum): REGION's member of the global scope becomes the
                         scope alone, the others removed, and REGION promotes at once. Refused
                         while the global scope has a quorum. Read docs/dr.md first: a region or
                         witness that was only cut off must not come back on its old data

flags:
`

func runDR(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dr", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, drUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	to := fs.String("to", "", "switchover: the region to make active")
	force := fs.Bool("force", false, "promote: without the global scope's quorum (docs/dr.md)")
	within := nodeTimeoutFlag(fs)
	output := outputFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	db := ac.cfg.Database
	if db == nil || db.DR == nil {
		return fmt.Errorf("%s has no database.dr: the database has one region", *cfgPath)
	}
	nodes := slices.Concat(db.Nodes, db.DR.Nodes)
	regions := ac.cfg.DatabaseRegions()
	switch {
	case pos[0] == "status" && len(pos) == 1:
		if err := checkOutput(*output); err != nil {
			return err
		}
		if *output == "json" {
			return printJSONAnswers(stdout, ac, nodes, "/api/v1/dr", *within, nil, true)
		}
		return drStatus(ac, nodes, *within, stdout)
	case pos[0] == "switchover" && len(pos) == 1:
		if !slices.Contains(regions, *to) {
			return fmt.Errorf("give --to one of the database's regions %v", regions)
		}
		ac.client.Timeout = 2*db.DR.Lease.D() + 40*time.Second
		var out struct {
			Active string `json:"active"`
			Took   string `json:"took"`
		}
		if err := askFirst(ac, nodes, "/api/v1/dr/switchover?to="+url.QueryEscape(*to), &out); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "region %s is active (the switchover took %s)\n", out.Active, out.Took)
		return nil
	case pos[0] == "promote" && len(pos) == 2:
		if !slices.Contains(regions, pos[1]) {
			return fmt.Errorf("%q is not one of the database's regions %v", pos[1], regions)
		}
		return drPromote(ac, pos[1], *force, stdout)
	}
	fs.Usage()
	return errUsage
}

// drPromote asks for the promotion of region, forced or not, and prints
// what it may lose.
func drPromote(ac *adminClient, region string, force bool, stdout io.Writer) error {
	db := ac.cfg.Database
	nodes := slices.Concat(db.Nodes, db.DR.Nodes)
	path := "/api/v1/dr/promote?region=" + url.QueryEscape(region)
	if force {
		// Only a member of the global scope in region can make the
		// scope itself again.
		if nodes = ac.cfg.GlobalMembersIn(region); len(nodes) == 0 {
			return fmt.Errorf("region %s has no member of coordination.global: a forced promotion needs one", region)
		}
		path += "&force=true"
		ac.client.Timeout = 90 * time.Second
	}
	var out struct {
		Region        string   `json:"region"`
		Active        string   `json:"active"`
		StandbyLeader string   `json:"standby_leader"`
		LagBytes      uint64   `json:"lag_bytes"`
		LagSeconds    float64  `json:"lag_seconds"`
		Forced        bool     `json:"forced"`
		Removed       []string `json:"removed"`
	}
	if err := askFirst(ac, nodes, path, &out); err != nil {
		return err
	}
	switch {
	case out.Forced:
		fmt.Fprintf(stdout, "forced: the global scope is now region %s's member alone; removed: %s\n", out.Region, strings.Join(out.Removed, ", "))
		if out.Active == out.Region {
			fmt.Fprintf(stdout, "region %s took the active region as soon as the global scope served again\n", out.Region)
		} else {
			fmt.Fprintf(stdout, "region %s takes the active region at once (%s held it)\n", out.Region, orNobody(out.Active))
		}
	case out.Active == out.Region:
		fmt.Fprintf(stdout, "region %s is active already\n", out.Region)
		return nil
	default:
		fmt.Fprintf(stdout, "region %s takes the active region once %s stops renewing it (its lease, dr.lease %s, runs out)\n",
			out.Region, orNobody(out.Active), db.DR.Lease.D())
	}
	fmt.Fprintf(stdout, "when its standby leader %s last heard from the active primary it lacked %d bytes of WAL, written over %.1fs: what the promotion may lose\n",
		orNobody(out.StandbyLeader), out.LagBytes, out.LagSeconds)
	if out.Forced {
		fmt.Fprintf(stdout, "%s stay out of the global scope: when they come back on their data they stop as removed members and their nodes run as its clients; "+
			"never wipe their data while the old configuration lists them (docs/dr.md)\n", strings.Join(out.Removed, ", "))
	}
	return nil
}

func orNobody(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}

// askFirst posts path to the first node that answers; one that took the
// request and failed is not asked again elsewhere.

// drStatus asks every database node of both regions at once and prints the
// view of the one that has seen the newest epoch.
func drStatus(ac *adminClient, nodes []string, within time.Duration, stdout io.Writer) error {
	as := askEach[keeper.RegionStatus](ac, nodes, "/api/v1/dr", within)
	var best *keeper.RegionStatus
	from := ""
	for i := range as {
		if a := &as[i]; a.err == nil && (best == nil || a.val.Record.Epoch > best.Record.Epoch) {
			best, from = &a.val, a.node
		}
	}
	if best == nil {
		return fmt.Errorf("no database node answered: %w", answerErrors(as))
	}
	active := best.Record.Holder
	if active == "" {
		active = "none"
	}
	fmt.Fprintf(stdout, "active region: %s (epoch %d), as %s sees it\n", active, best.Record.Epoch, from)
	if i := best.Intent; i != nil {
		what := "switchover"
		if i.Promote {
			what = "promotion"
		}
		fmt.Fprintf(stdout, "requested: %s of region %s\n", what, i.To)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tNODE\tLEADER\tROLE\tTIMELINE\tLSN\tLAG\tLAG(S)\tSTREAMING")
	var states []keeper.RegionState
	for _, s := range best.States {
		states = append(states, s)
	}
	sort.Slice(states, func(i, j int) bool {
		if states[i].Region != states[j].Region {
			return states[i].Region < states[j].Region
		}
		return states[i].Node < states[j].Node
	})
	for _, s := range states {
		leader := ""
		if s.Leader {
			leader = "*"
		}
		lag, lagS := "", ""
		if s.Member.Role == keeper.RoleStandbyLeader {
			lag, lagS = fmt.Sprint(s.LagBytes), fmt.Sprintf("%.1f", s.LagSeconds)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%v\n", s.Region, s.Node, leader, s.Member.Role, s.Member.Timeline, s.Member.LSN, lag, lagS, s.Member.Streaming)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var silent []string
	for _, a := range as {
		if a.err != nil {
			silent = append(silent, a.node+": "+noAnswer(a.err))
		}
	}
	if len(silent) > 0 {
		fmt.Fprintf(stdout, "not answering: %s\n", strings.Join(silent, "; "))
	}
	return nil
}
