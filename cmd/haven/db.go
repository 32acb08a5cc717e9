package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/galera"
)

const dbUsage = `usage: haven db ACTION [flags]

The database, whatever its engine (database.engine):

actions:
  status                   each database node's state: with PostgreSQL as haven pg status; with
                           Galera its server, wsrep state, position, whether it serves and what
                           its agent waits for, and the writer (docs/galera.md)
  bootstrap NODE           Galera: start the cluster from NODE's data now, without waiting for
                           every node's position (a node gone for good, or two histories to choose
                           between); refused while any node is in a primary component
  switchover, failover, pause, resume, restart, reinit
                           PostgreSQL: as haven pg (haven pg -h)

flags:
`

// runDB runs haven db: the engine-neutral name of the database's
// commands. PostgreSQL's are haven pg's; Galera's are here.
func runDB(args []string, stdout, stderr io.Writer) error {
	if slices.ContainsFunc(args, func(a string) bool { return a == "-h" || a == "-help" || a == "--help" }) {
		fmt.Fprint(stderr, dbUsage)
		fs := newFlagSet("db", stderr)
		configFlag(fs)
		nodeTimeoutFlag(fs)
		outputFlag(fs)
		fs.PrintDefaults()
		return errHelp
	}
	cfgPath := peekConfig(args)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if cfg.Database == nil {
		return fmt.Errorf("%s has no database section", cfgPath)
	}
	if cfg.Database.Engine != "galera" {
		return runPG(args, stdout, stderr)
	}
	fs := newFlagSet("db", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, dbUsage); fs.PrintDefaults() }
	configFlag(fs)
	within := nodeTimeoutFlag(fs)
	output := outputFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return parseError(err)
	}
	ac, err := newAdminClient(cfgPath)
	if err != nil {
		return err
	}
	db := ac.cfg.Database
	switch {
	case len(pos) == 1 && pos[0] == "status":
		if err := checkOutput(*output); err != nil {
			return err
		}
		if *output == "json" {
			return printJSONAnswers(stdout, ac, db.Nodes, "/api/v1/database", *within, nil, false)
		}
		as := askEach[*agent.DatabaseStatus](ac, db.Nodes, "/api/v1/database", *within)
		if err := printGalera(stdout, db.Nodes, as); err != nil {
			return err
		}
		return answerErrors(as)
	case len(pos) == 2 && pos[0] == "bootstrap":
		if !slices.Contains(db.Nodes, pos[1]) {
			return fmt.Errorf("%q is not a database node (database.nodes: %v)", pos[1], db.Nodes)
		}
		var out map[string]string
		if err := ac.do("POST", pos[1], "/api/v1/database/bootstrap", &out); err != nil {
			return fmt.Errorf("db bootstrap %s: %w", pos[1], err)
		}
		fmt.Fprintf(stdout, "%s: %s; the other nodes join it (haven db status)\n", pos[1], out["bootstrap"])
		return nil
	case len(pos) >= 1 && slices.Contains([]string{"switchover", "failover", "pause", "resume", "restart", "reinit"}, pos[0]):
		return fmt.Errorf("db %s: PostgreSQL's (database.engine is galera): a Galera cluster has no primary to move; its writer moves by itself", pos[0])
	}
	fs.Usage()
	return errUsage
}

// peekConfig is the -c flag's value in args, before the flags are parsed
// (which ones are valid depends on the engine it names).
func peekConfig(args []string) string {
	for i, a := range args {
		switch {
		case (a == "-c" || a == "--c") && i+1 < len(args):
			return args[i+1]
		case strings.HasPrefix(a, "-c="), strings.HasPrefix(a, "--c="):
			return a[strings.Index(a, "=")+1:]
		}
	}
	if p := os.Getenv("HAVEN_CONFIG"); p != "" {
		return p
	}
	return "haven.yaml"
}

// printGalera prints the Galera cluster as the answering database nodes
// see it: the writer and every member's published state, in the view of
// the node that has seen the latest writer epoch, then each node's own
// plan and the nodes that did not answer.
func printGalera(w io.Writer, nodes []string, as []answer[*agent.DatabaseStatus]) error {
	var view *agent.GaleraStatus
	from := ""
	var errs []error
	for _, a := range as {
		switch {
		case a.err != nil:
			errs = append(errs, a.err)
		case a.val != nil && a.val.Galera != nil && (view == nil || a.val.Galera.Epoch > view.Epoch):
			view, from = a.val.Galera, a.node
		}
	}
	if view == nil {
		if len(errs) == 0 {
			errs = append(errs, errors.New("no node has a galera status yet"))
		}
		return fmt.Errorf("no database node answered: %w", errors.Join(errs...))
	}
	fmt.Fprintf(w, "writer: %s (epoch %d); as %s reads etcd\n", orDash(view.Writer), view.Epoch, from)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSERVER\tSERVING\tCOMPONENT\tSTATE\tSIZE\tPOSITION\tWHY NOT")
	for _, n := range nodes {
		m, ok := view.Members[n]
		if !ok {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\tno state in etcd (its agent does not run, or cannot reach etcd)\n", n)
			continue
		}
		serving, why := "no", orDash(m.Why)
		if m.Serving {
			serving, why = "yes", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n, m.Server, serving, orDash(m.Status.ClusterStatus),
			orDash(m.Status.LocalStateComment), m.Status.ClusterSize, position(m), why)
	}
	tw.Flush()
	for _, a := range as {
		switch {
		case a.err != nil:
			fmt.Fprintf(w, "%s: %s\n", a.node, noAnswer(a.err))
		case a.val != nil && a.val.Galera != nil && a.val.Galera.Plan != "" && !strings.HasPrefix(a.val.Galera.Plan, "wait: in a primary component"):
			fmt.Fprintf(w, "%s: %s\n", a.node, a.val.Galera.Plan)
		}
	}
	return nil
}

func position(m galera.MemberState) string {
	if !m.PositionKnown {
		return "unknown"
	}
	p := m.Position.String()
	if m.Position.SafeToBootstrap {
		p += " (safe to bootstrap)"
	}
	return p
}
