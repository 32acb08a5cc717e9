package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/pg/keeper"
)

const restartUsage = `usage: haven restart [NODE...] [flags]

Restart the agents of NODE... (default: every node of haven.yaml) one at a time, so
that the cluster serves throughout: to upgrade haven node by node (install the new
package first: it does not restart the agent), or to apply what a reload cannot.

Each agent first checks that the binary now at its path accepts haven.yaml for its
node (haven check -n, as the unit's ExecStartPre does) and refuses otherwise; then it
stops its roles as on SIGTERM and executes that binary again in the same process, so
that systemd sees a reload of the same service. The next node is restarted only once
this one is back: its agent answers with a later start, it is ready, every etcd member
is healthy, and on a database node its PostgreSQL streams from the primary again.
The database's primary goes last, after a switchover to the best replica: no node
fails over, and no acknowledged write is lost.

flags:
`

func runRestart(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("restart", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, restartUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for each restarted node to be back")
	nodes, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		nodes = ac.cfg.NodeNames()
	}
	for _, n := range nodes {
		if _, ok := ac.cfg.Node(n); !ok {
			return fmt.Errorf("%q is not a node of %s (nodes: %v)", n, *cfgPath, ac.cfg.NodeNames())
		}
	}
	// Nothing restarts unless every node to restart answers: a rolling
	// restart that finds a node down half way leaves a cluster with two.
	views := askEach[*nodeStatus](ac, nodes, "/api/v1/status", 5*time.Second)
	if err := answerErrors(views); err != nil {
		return fmt.Errorf("restart: every node to restart must answer first; nothing was restarted: %w", err)
	}
	var primary string
	if d, err := currentDatabase(ac); err == nil {
		primary = d.Primary
		if d.Paused != nil && slices.Contains(nodes, d.Primary) && len(ac.cfg.Database.Nodes) > 1 {
			return fmt.Errorf("restart: the database is %s: its primary %s cannot be switched over before its agent restarts, and nobody would take over; haven pg resume first, or restart the other nodes only; nothing was restarted", d.Paused, d.Primary)
		}
		if lowered := loweredSettings(d); len(lowered) > 0 {
			return fmt.Errorf("restart: %s lowered and pending a restart: a replica restarted first could not start (a standby needs at least its primary's value); run haven pg restart --pending first, which restarts the primary first; nothing was restarted", strings.Join(lowered, ", "))
		}
	}
	for _, n := range restartOrder(nodes, primary) {
		if err := restartNode(ac, n, *wait, stdout); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "restarted %s\n", count(len(nodes), "agent"))
	return nil
}

// restartOrder is nodes with the database's primary last.
func restartOrder(nodes []string, primary string) []string {
	out := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == primary })
	if len(out) < len(nodes) {
		out = append(out, primary)
	}
	return out
}

// currentDatabase is the database as the database nodes that answer see
// it (newestDatabase); an error without a database section, or when none
// answers.
func currentDatabase(ac *adminClient) (*agent.DatabaseStatus, error) {
	db := ac.cfg.Database
	if db == nil {
		return nil, errors.New("haven.yaml has no database section")
	}
	d, _, _, err := newestDatabase(db.Nodes, askEach[*agent.DatabaseStatus](ac, db.Nodes, "/api/v1/database", 5*time.Second))
	return d, err
}

// databasePrimary is the node that holds the database's primary record
// ("" without a database, or when no database node answers).
func databasePrimary(ac *adminClient) string {
	d, err := currentDatabase(ac)
	if err != nil {
		return ""
	}
	return d.Primary
}

// switchoverFirst hands the database's primary over before node, its
// primary, restarts (its agent or its postgres).
func switchoverFirst(ac *adminClient, node string, stdout io.Writer) error {
	db := ac.cfg.Database
	fmt.Fprintf(stdout, "%s: the database's primary: switching over first\n", node)
	ac.client.Timeout = 2*db.Lease.D() + 10*time.Second
	if err := pgSwitchover(ac, db.Nodes, "", stdout); err != nil {
		return fmt.Errorf("restart %s: the switchover before it failed, nothing restarted there: %w", node, err)
	}
	return nil
}

// restartNode restarts node's agent, switching the database over first
// when the node is its primary and has a replica, and waits until it is
// back.
func restartNode(ac *adminClient, node string, wait time.Duration, stdout io.Writer) error {
	db := ac.cfg.Database
	if db != nil && slices.Contains(db.Nodes, node) && databasePrimary(ac) == node {
		if len(db.Nodes) > 1 {
			if err := switchoverFirst(ac, node, stdout); err != nil {
				return err
			}
		} else {
			fmt.Fprintf(stdout, "%s: the database's only node: it stops while its agent restarts\n", node)
		}
	}
	ac.client.Timeout = 60 * time.Second // the agent checks the binary first
	var plan agent.RestartPlan
	if err := ac.do("POST", node, "/api/v1/agent/restart", &plan); err != nil {
		return fmt.Errorf("restart %s: %w", node, err)
	}
	fmt.Fprintf(stdout, "%s: restarting (pid %d, %s, next %s)\n", node, plan.PID, plan.Version, plan.Next)
	began := time.Now()
	var why string
	ac.client.Timeout = 5 * time.Second
	for time.Since(began) < wait {
		time.Sleep(250 * time.Millisecond)
		var st nodeStatus
		if err := ac.do("GET", node, "/api/v1/status", &st); err != nil {
			why = err.Error()
			continue
		}
		if why = restartPending(ac, node, plan, st); why == "" {
			fmt.Fprintf(stdout, "%s: back after %s (%s)\n", node, time.Since(began).Round(100*time.Millisecond), st.Version)
			return nil
		}
	}
	return fmt.Errorf("restart %s: not back within %s: %s; the nodes after it were not restarted", node, wait, why)
}

// restartPending says what node, restarted with plan and now answering
// st, still lacks to be back ("" when it is back).
func restartPending(ac *adminClient, node string, plan agent.RestartPlan, st nodeStatus) string {
	switch {
	case !st.Started.After(plan.Started):
		return "the old agent still answers"
	case !st.Ready:
		return "not ready: " + strings.Join(st.NotReady, "; ")
	}
	c := st.Coordination
	if c == nil {
		return ""
	}
	for _, e := range c.Etcd {
		if !e.Healthy {
			return fmt.Sprintf("etcd member %s is not healthy: %s", e.Endpoint, e.Error)
		}
	}
	if db := ac.cfg.Database; db == nil || !slices.Contains(db.Nodes, node) {
		return ""
	}
	return databaseBack(c.Database, node)
}

// databaseBack says what database node node still lacks, in d (its own
// view), to be back in the cluster after a restart: its postgres the
// primary, or a replica streaming from the primary and, where the sync
// record lists every healthy standby, one of them ("" when it is back).
func databaseBack(d *agent.DatabaseStatus, node string) string {
	if d == nil {
		return "its keeper has not started"
	}
	m, ok := d.Members[node]
	switch {
	case !ok:
		return "its keeper has published no state yet"
	case m.Role == keeper.RolePrimary && d.Primary == node:
		return ""
	case m.Role != keeper.RoleReplica || !m.Streaming || m.Upstream != d.Primary:
		return fmt.Sprintf("its postgres is %s, streaming %v from %q; the primary is %q", m.Role, m.Streaming, m.Upstream, d.Primary)
	case d.Sync.K > 0 && d.Sync.Archive == "" && !slices.Contains(d.Sync.Standbys, node):
		// Without a synchronous archive the record lists every healthy
		// standby: wait until commits may wait for it again, so that
		// the next restart leaves k of them.
		return "not in the primary's synchronous standbys yet"
	}
	return ""
}
