package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/agent"
)

const pgUsage = `usage: haven pg ACTION [flags]

actions:
  switchover [--to NODE]   hand the primary to NODE (or the best replica): no acknowledged write is lost
  failover --to NODE [--yes]
                           force the primary onto the replica NODE when no node leads and none
                           qualifies under the failover rules (strict mode with the primary and its
                           synchronous standby lost; async with every replica past
                           max_lag_on_failover): without --yes, says how much WAL NODE lacks behind
                           the last primary position (what may be lost) and which replica has most;
                           with --yes, NODE promotes, losing that
  pause [--for D] [--reason R]
                           maintenance mode: no replica takes the lead, whatever happens to the primary,
                           until haven pg resume (or for D); cluster-wide, kept in etcd
  resume                   end the pause: automatic failover again
  restart [NODE...] [--pending]
                           restart PostgreSQL (not the agents) on NODE... (default: every database
                           node), one at a time, replicas first, the primary last after a switchover:
                           to apply settings that need a restart (--pending: only the nodes whose
                           haven pg status lists some); each node streams again before the next
  reinit NODE [--from-backup]
                           rebuild NODE's replica from nothing: its postgres is stopped, its data
                           directory removed, and the node cloned from the primary, or restored from
                           the newest base backup and the WAL archive (--from-backup), so that the
                           primary sends only the WAL the archive lacks; waits until it streams
  status                   show each database node: role, timeline, WAL position, lag, sync state
                           (docs/database.md explains the columns); every node is asked at once,
                           and one silent for --node-timeout is shown as such

flags:
`

func runPG(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("pg", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, pgUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	to := fs.String("to", "", "switchover: the node to hand the primary to (default: the best replica)")
	within := nodeTimeoutFlag(fs)
	output := outputFlag(fs)
	fromBackup := fs.Bool("from-backup", false, "reinit: restore the newest base backup instead of copying the primary")
	wait := fs.Duration("wait", time.Hour, "reinit, restart: how long to wait for the rebuilt or restarted replica to stream")
	pauseFor := fs.Duration("for", 0, "pause: end the pause by itself after this long (default: until haven pg resume)")
	reason := fs.String("reason", "", "pause: why, shown in haven pg status and the agents' logs")
	pending := fs.Bool("pending", false, "restart: only the nodes with settings pending a restart")
	yes := fs.Bool("yes", false, "failover: do it, accepting the loss it states")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	if len(pos) == 2 && pos[0] == "reinit" {
		return pgReinit(*cfgPath, pos[1], *fromBackup, *wait, stdout)
	}
	if len(pos) < 1 || len(pos) > 1 && pos[0] != "restart" {
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
	case "restart":
		return pgRestart(ac, pos[1:], *pending, *wait, stdout)
	case "failover":
		if *to == "" {
			return errors.New("pg failover: --to NODE is required: the replica to promote")
		}
		ac.client.Timeout = 2*db.Lease.D() + 20*time.Second
		return pgFailover(ac, db.Nodes, *to, *yes, stdout)
	case "pause", "resume":
		return pgPause(ac, db.Nodes, pos[0] == "pause", *pauseFor, *reason, stdout)
	case "status":
		if err := checkOutput(*output); err != nil {
			return err
		}
		if *output == "json" {
			return printJSONAnswers(stdout, ac, db.Nodes, "/api/v1/database", *within, nil, false)
		}
		return pgStatus(ac, db.Nodes, *within, stdout)
	}
	fs.Usage()
	return errUsage
}

// pgSwitchover asks the first database node that answers to run the
// switchover; it waits until another node is the primary. Only a node that
// could not be reached is passed over: one that took the request and failed
// is not asked again elsewhere, which would switch over twice.
func pgSwitchover(ac *adminClient, nodes []string, to string, stdout io.Writer) error {
	var out struct {
		Primary string `json:"primary"`
	}
	if err := askFirst(ac, nodes, "/api/v1/database/switchover?to="+url.QueryEscape(to), &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s is the primary\n", out.Primary)
	return nil
}

// pgFailover shows what forcing the primary onto to would lose and, with
// yes, forces it.
func pgFailover(ac *adminClient, nodes []string, to string, yes bool, stdout io.Writer) error {
	q := url.Values{"to": {to}}
	if yes {
		q.Set("confirm", "yes")
	}
	var plan agent.FailoverPlan
	if err := askFirst(ac, nodes, "/api/v1/database/failover?"+q.Encode(), &plan); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s has received WAL up to %s; the last position a primary published is %s: %s lacks %s of it, and what was committed after that publication\n",
		to, plan.ToLSN, plan.LastPrimaryLSN, to, size(int64(plan.LoseUpTo)))
	if plan.MostAdvanced != "" {
		fmt.Fprintf(stdout, "%s has received more (up to %s): forcing onto it would lose less\n", plan.MostAdvanced, plan.MostAdvancedLSN)
	}
	if !yes {
		return fmt.Errorf("pg failover: nothing done; run it again with --yes to promote %s and lose what it lacks", to)
	}
	fmt.Fprintf(stdout, "%s is the primary (forced)\n", to)
	return nil
}

// pgPause writes or removes the database's pause record through the first
// database node that is connected to etcd.
func pgPause(ac *adminClient, nodes []string, pause bool, d time.Duration, reason string, stdout io.Writer) error {
	method, q := "DELETE", url.Values{}
	if pause {
		method = "POST"
		if d > 0 {
			q.Set("for", d.String())
		}
		if reason != "" {
			q.Set("reason", reason)
		}
	}
	var out struct {
		Result string `json:"result"`
	}
	node, err := askAny(ac, nodes, method, "/api/v1/database/pause?"+q.Encode(), &out)
	if err != nil {
		return err
	}
	what := "resumed: a replica takes the lead again when the primary is lost"
	if pause {
		what = "paused: no replica takes the lead until haven pg resume"
		if d > 0 {
			what = fmt.Sprintf("paused for %s: no replica takes the lead until then, or haven pg resume", d)
		}
	}
	if out.Result != "" {
		what += " (" + node + ": " + out.Result + ")"
	}
	fmt.Fprintln(stdout, "the database is", what)
	return nil
}

// pgReinit asks node's agent to rebuild its replica and waits for it.
func pgReinit(cfgPath, node string, fromBackup bool, wait time.Duration, stdout io.Writer) error {
	ac, err := newAdminClient(cfgPath)
	if err != nil {
		return err
	}
	if db := ac.cfg.Database; db == nil || !slices.Contains(db.Nodes, node) {
		return fmt.Errorf("%q is not a database node of %s", node, cfgPath)
	}
	ac.client.Timeout = wait + 5*time.Second
	q := url.Values{"wait": {wait.String()}}
	if fromBackup {
		q.Set("from", "backup")
	}
	var out struct {
		From string `json:"from"`
	}
	if err := ac.do("POST", node, "/api/v1/database/reinit?"+q.Encode(), &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s is a replica again, rebuilt from %s, and streams from the primary\n", node, out.From)
	return nil
}

// pgStatus asks every database node at once for the database's state and
// prints it.
func pgStatus(ac *adminClient, nodes []string, within time.Duration, stdout io.Writer) error {
	as := askEach[*agent.DatabaseStatus](ac, nodes, "/api/v1/database", within)
	if err := printDatabase(stdout, nodes, as); err != nil {
		return err
	}
	return answerErrors(as)
}

// newestDatabase is the view of the database, among the answers of
// nodes (database nodes; a router's are left out), of the node that has
// seen the latest primary's epoch, that node, and the nodes whose keeper
// answered; it fails when none did.
func newestDatabase(nodes []string, as []answer[*agent.DatabaseStatus]) (d *agent.DatabaseStatus, from string, answered []string, err error) {
	var errs []error
	for _, a := range as {
		switch {
		case !slices.Contains(nodes, a.node):
			continue // a router: it does not watch the members
		case a.err != nil:
			errs = append(errs, a.err)
			continue
		case a.val == nil || len(a.val.Members) == 0:
			errs = append(errs, fmt.Errorf("node %s: its keeper is not running yet (waiting for etcd?)", a.node))
		}
		answered = append(answered, a.node)
		if a.val != nil && len(a.val.Members) > 0 && (d == nil || a.val.Epoch > d.Epoch) {
			d, from = a.val, a.node
		}
	}
	if d == nil {
		if len(errs) == 0 {
			errs = append(errs, errors.New("no database node was asked"))
		}
		return nil, "", nil, fmt.Errorf("no database node's keeper answered: %w", errors.Join(errs...))
	}
	return d, from, answered, nil
}

// printDatabase prints the database as etcd records it (the primary's
// record, the sync record, the state each keeper published), in the view
// of the answering node that has seen the latest primary's epoch, then a
// line for each database node that did not answer or has published no
// state. It fails when no node's keeper answered.
func printDatabase(w io.Writer, nodes []string, as []answer[*agent.DatabaseStatus]) error {
	d, from, answered, err := newestDatabase(nodes, as)
	if err != nil {
		return err
	}
	archive := ""
	if d.Sync.Archive != "" {
		archive = " and the WAL archive (" + d.Sync.Archive + ")"
	}
	fmt.Fprintf(w, "primary: %s (epoch %d); sync: k=%d of %v%s\n", orDash(d.Primary), d.Epoch, d.Sync.K, d.Sync.Standbys, archive)
	fmt.Fprintf(w, "etcd's records as %s read them; answered: %s\n", from, strings.Join(answered, ", "))
	if d.Paused != nil {
		fmt.Fprintf(w, "PAUSED: no automatic failover; %s\n", d.Paused)
	}
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
	for _, name := range sortedKeys(d.Members) {
		if p := d.Members[name].PendingRestart; len(p) > 0 {
			fmt.Fprintf(w, "%s: pending restart: %s (haven pg restart --pending applies them)\n", name, strings.Join(p, ", "))
		}
	}
	for _, a := range as {
		if !slices.Contains(nodes, a.node) {
			continue
		}
		_, published := d.Members[a.node]
		switch {
		case a.err != nil && published:
			fmt.Fprintf(w, "%s: %s; its row is what it last published (etcd drops it when its lease expires)\n", a.node, noAnswer(a.err))
		case a.err != nil:
			fmt.Fprintf(w, "%s: %s; no state of it in etcd\n", a.node, noAnswer(a.err))
		case !published:
			fmt.Fprintf(w, "%s: answers, but no state of it in etcd (its keeper is starting, or cannot reach etcd)\n", a.node)
		}
	}
	return nil
}
