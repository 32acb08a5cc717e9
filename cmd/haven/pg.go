package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/agent"
)

const pgUsage = `usage: haven pg ACTION [flags]

actions:
  switchover [--to NODE]   hand the primary to NODE (or the best replica): no acknowledged write is lost
  status                   show each database node: role, timeline, WAL position, lag, sync state

flags:
`

func runPG(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pg", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, pgUsage); fs.PrintDefaults() }
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	to := fs.String("to", "", "switchover: the node to hand the primary to (default: the best replica)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	db := ac.cfg.Database
	if db == nil {
		return fmt.Errorf("%s has no database section", *cfgPath)
	}
	if *to != "" && !slices.Contains(db.Nodes, *to) {
		return fmt.Errorf("%q is not a database node (database.nodes: %v)", *to, db.Nodes)
	}
	switch pos[0] {
	case "switchover":
		// The agent waits for the new primary, up to two leases and 5s.
		ac.client.Timeout = 2*db.Lease.D() + 10*time.Second
		return pgSwitchover(ac, db.Nodes, *to, stdout)
	case "status":
		return pgStatus(ac, db.Nodes, stdout)
	}
	fs.Usage()
	return errUsage
}

// pgSwitchover asks the first database node that answers to run the
// switchover; it waits until another node is the primary. Only a node that
// could not be reached is passed over: one that took the request and failed
// is not asked again elsewhere, which would switch over twice.
func pgSwitchover(ac *adminClient, nodes []string, to string, stdout io.Writer) error {
	var errs []error
	for _, n := range nodes {
		var out struct {
			Primary string `json:"primary"`
		}
		if err := ac.do("POST", n, "/api/v1/database/switchover?to="+url.QueryEscape(to), &out); err != nil {
			errs = append(errs, err)
			if !errors.Is(err, errUnreachable) {
				break
			}
			continue
		}
		fmt.Fprintf(stdout, "%s is the primary\n", out.Primary)
		return nil
	}
	return errors.Join(errs...)
}

// pgStatus prints the database members as the first database node that
// answers sees them.
func pgStatus(ac *adminClient, nodes []string, stdout io.Writer) error {
	var errs []error
	for _, n := range nodes {
		var st struct {
			Coordination *agent.CoordinationStatus `json:"coordination"`
		}
		if err := ac.do("GET", n, "/api/v1/status", &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Coordination == nil || st.Coordination.Database == nil {
			errs = append(errs, fmt.Errorf("%s: no database status", n))
			continue
		}
		printDatabase(stdout, st.Coordination.Database)
		return nil
	}
	return errors.Join(errs...)
}

func printDatabase(w io.Writer, d *agent.DatabaseStatus) {
	fmt.Fprintf(w, "primary: %s (epoch %d); sync: k=%d of %v\n", orDash(d.Primary), d.Epoch, d.Sync.K, d.Sync.Standbys)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tSYNC\tTIMELINE\tLSN\tLAG (BYTES)\tLAG (S)\tUPSTREAM\tNOT PROMOTABLE")
	for _, name := range sortedKeys(d.Members) {
		m := d.Members[name]
		sync := "-"
		if slices.Contains(d.Sync.Standbys, name) {
			sync = "sync"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%d\t%.1f\t%s\t%s\n", name, m.Role, sync, m.Timeline, m.LSN, m.Lag, m.LagSeconds, orDash(m.Upstream), orDash(m.NotPromotable))
	}
	tw.Flush()
}
