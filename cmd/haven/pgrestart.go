package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/pg"
)

// pgRestart restarts PostgreSQL on nodes (every database node when none
// is named; with pending, only those whose settings wait for a restart),
// one at a time, the primary last after a switchover, each back in the
// cluster before the next.
func pgRestart(ac *adminClient, nodes []string, pending bool, wait time.Duration, stdout io.Writer) error {
	db := ac.cfg.Database
	for _, n := range nodes {
		if !slices.Contains(db.Nodes, n) {
			return fmt.Errorf("%q is not a database node (database.nodes: %v)", n, db.Nodes)
		}
	}
	if len(nodes) == 0 {
		nodes = db.Nodes
	}
	d, err := currentDatabase(ac)
	if err != nil {
		return err
	}
	if pending {
		nodes = slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return len(d.Members[n].PendingRestart) == 0 })
		if len(nodes) == 0 {
			fmt.Fprintln(stdout, "no node has settings pending a restart")
			return nil
		}
	}
	order := restartOrder(nodes, d.Primary)
	lowered := loweredSettings(d)
	if len(lowered) > 0 && !slices.Contains(nodes, d.Primary) {
		return fmt.Errorf("pg restart: %s lowered and pending a restart: a replica restarted before the primary %s could not start (a standby needs at least its primary's value); restart the primary too (haven pg restart --pending); nothing was restarted", strings.Join(lowered, ", "), d.Primary)
	}
	if len(lowered) > 0 {
		// A standby cannot start with less than its primary's value of
		// these: the primary goes first, in place, writes waiting the
		// second it takes; then the standbys.
		fmt.Fprintf(stdout, "%s lowered: the primary %s restarts first, in place\n", strings.Join(lowered, ", "), d.Primary)
		order = append([]string{d.Primary}, order[:len(order)-1]...)
		if err := pgRestartNode(ac, d.Primary, true, wait, stdout); err != nil {
			return err
		}
		order = order[1:]
		if err := waitReplayed(ac, d.Primary, order, wait); err != nil {
			return err
		}
	}
	for _, n := range order {
		if err := pgRestartNode(ac, n, false, wait, stdout); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "restarted PostgreSQL on %s\n", count(len(nodes), "node"))
	return nil
}

// loweredSettings are the settings some member of d has pending a restart
// that a standby needs at least its primary's value of, lowered.
func loweredSettings(d *agent.DatabaseStatus) []string {
	var out []string
	for _, m := range d.Members {
		for _, n := range m.PendingLowered {
			if !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// pgRestartNode restarts node's postgres, after a switchover when it is
// the primary of a database with other nodes (in place when it is the
// only one, or when inPlace), and waits until it is back.
func pgRestartNode(ac *adminClient, node string, inPlace bool, wait time.Duration, stdout io.Writer) error {
	db := ac.cfg.Database
	path := "/api/v1/database/restart"
	if databasePrimary(ac) == node {
		if inPlace {
			path += "?primary=in-place"
		} else if len(db.Nodes) == 1 {
			fmt.Fprintf(stdout, "%s: the database's only node: writes wait while its postgres restarts\n", node)
			path += "?primary=in-place"
		} else {
			if err := switchoverFirst(ac, node, stdout); err != nil {
				return err
			}
			// A primary that hands over stops its postgres and starts
			// it again as a replica: that was the restart.
			if err := waitDatabaseBack(ac, node, wait); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: postgres restarted as a replica of the new primary\n", node)
			return nil
		}
	}
	ac.client.Timeout = 2*time.Minute + 5*time.Second
	var out struct {
		TookMS int64 `json:"took_ms"`
	}
	if err := ac.do("POST", node, path, &out); err != nil {
		return fmt.Errorf("restart %s: %w", node, err)
	}
	fmt.Fprintf(stdout, "%s: postgres restarted in %s\n", node, (time.Duration(out.TookMS) * time.Millisecond).Round(10*time.Millisecond))
	return waitDatabaseBack(ac, node, wait)
}

// waitReplayed waits, up to wait, until each of replicas has replayed
// the WAL primary had written once it was back from its restart. That WAL
// holds the record of the lowered values, which a standby must replay
// before it restarts with them: its startup checks them against the
// values in its control file, which that record updates, and refuses to
// start below them (it could then never receive the record).
func waitReplayed(ac *adminClient, primary string, replicas []string, wait time.Duration) error {
	ac.client.Timeout = 5 * time.Second
	began := time.Now()
	var d agent.DatabaseStatus
	why := "no answer"
	// The target is a position the primary published once it ran with
	// the new values (nothing pending any more): at or past their record.
	var target pg.LSN
	for target == 0 && time.Since(began) < wait {
		if err := ac.do("GET", primary, "/api/v1/database", &d); err != nil {
			why = err.Error()
		} else if m := d.Members[primary]; len(m.PendingRestart) == 0 && m.LSN != 0 {
			target = m.LSN
			break
		} else {
			why = fmt.Sprintf("the primary still publishes settings pending a restart: %v", m.PendingRestart)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if target == 0 {
		return fmt.Errorf("restart: the primary %s did not publish its position after its restart within %s: %s", primary, wait, why)
	}
	for time.Since(began) < wait {
		if err := ac.do("GET", primary, "/api/v1/database", &d); err != nil {
			why = err.Error()
		} else {
			var behind []string
			for _, n := range replicas {
				if m := d.Members[n]; m.Replayed < target {
					behind = append(behind, fmt.Sprintf("%s replayed %s", n, m.Replayed))
				}
			}
			if len(behind) == 0 {
				return nil
			}
			why = strings.Join(behind, ", ")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("restart: the replicas did not replay the primary %s's WAL up to %s (its lowered settings) within %s: %s; they were not restarted", primary, target, wait, why)
}

// waitDatabaseBack waits, up to wait, until database node node is back in
// the cluster (databaseBack) in its own view.
func waitDatabaseBack(ac *adminClient, node string, wait time.Duration) error {
	ac.client.Timeout = 5 * time.Second
	began := time.Now()
	var why string
	for time.Since(began) < wait {
		var d agent.DatabaseStatus
		err := ac.do("GET", node, "/api/v1/database", &d)
		if err == nil {
			if why = databaseBack(&d, node); why == "" {
				return nil
			}
		} else {
			why = err.Error()
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("restart %s: its postgres runs again but is not back in the cluster within %s: %s; the nodes after it were not restarted", node, wait, why)
}
