package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/drill/fault"
)

// drillRun is haven drill run: it plays scenario and prints the verdict;
// an objective not kept is an error (exit 1).
func drillRun(ac *adminClient, scenario string, opt drill.Options, output string, stdout, stderr io.Writer) error {
	s, err := drill.ScenarioNamed(scenario)
	switch {
	case err != nil:
		return err
	case opt.DSN == "":
		return errors.New("give the database as the application reaches it: --dsn postgres://USER:PASSWORD@ROUTER:PORT/DB")
	case ac.cfg.Database == nil:
		return errors.New("haven.yaml has no database: the scenarios drill the database")
	case output != "text" && output != "json":
		return fmt.Errorf("-o %q: give text or json", output)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	r, err := drill.Run(ctx, ac.cfg, drillAgents{ac}, s, opt, func(msg string) { fmt.Fprintln(stderr, msg) })
	if err != nil {
		return err
	}
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(r); err != nil {
			return err
		}
	} else {
		fmt.Fprint(stdout, r.Summary())
	}
	if !r.Met {
		return fmt.Errorf("drill %s: objectives not kept", s.Name)
	}
	return nil
}

// drillAgents reaches the agents for drill.Run through their admin API.
type drillAgents struct{ ac *adminClient }

func (d drillAgents) Primary(ctx context.Context) (string, error) {
	nodes := d.ac.cfg.Database.Nodes
	db, _, _, err := newestDatabase(nodes, askEach[*agent.DatabaseStatus](d.ac, nodes, "/api/v1/database", 2*time.Second))
	switch {
	case err != nil:
		return "", err
	case db.Primary == "":
		return "", errors.New("the database has no primary now (haven pg status says why)")
	}
	return db.Primary, nil
}

func (d drillAgents) Inject(ctx context.Context, node string, spec fault.Spec) (fault.Fault, error) {
	body, _ := json.Marshal(spec)
	var f fault.Fault
	err := d.ac.send(ctx, "POST", node, "/api/v1/drill/faults", body, &f)
	return f, err
}

const drillUsage = `usage: haven drill ACTION [flags]

Faults each agent injects on its own node for drills, when haven.yaml sets
drills.enabled (docs/drills.md). Every fault ends by itself after --for.

actions:
  fault -n NODE --kind KIND --for DURATION [--target TARGET] [--peers P1,P2] [--level PERCENT]
         kill     SIGKILL to the target's process: --target postgres (the default), agent
                  (the agent itself, which its supervisor must start again) or process:NAME
                  (a process of drills.processes, by its pid file or systemd unit)
         pause    SIGSTOP to the target's process and every process under it, SIGCONT at
                  the end (the agent's own pause is held by a helper process)
         stop     systemctl stop the unit of --target process:NAME, start at the end
         drop     drop every packet between NODE and the --peers: nodes, or backends by
                  their address (HOST:PORT or HOST)
         loss     drop --level percent of the packets between NODE and the --peers
         fill     fill the file system of the role's data directory to --level percent
  faults [-n NODE]   the active faults of every node (or one)
  stop -n NODE ID    end a fault now
  run SCENARIO --dsn DSN [--for D] [-o json]
         play a drill against the deployment: a writer commits through --dsn (a router's
         primary port, as the application does), the scenario's fault is injected, and
         the observed RTO and RPO are judged against haven.yaml's objectives; exit 1 when
         one is not kept. Scenarios: primary-pause, primary-kill, primary-partition

flags:
`

func runDrill(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "hold" {
		// Hidden: the helper an agent starts to hold its own pause.
		return fault.HoldMain(args[1:])
	}
	fs := newFlagSet("drill", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, drillUsage); fs.PrintDefaults() }
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	node := fs.String("n", "", "the node (fault, stop: required)")
	kind := fs.String("kind", "", "fault: kill, pause, stop, drop, loss or fill")
	target := fs.String("target", "postgres", "fault: what it hits: postgres, agent or process:NAME")
	peers := fs.String("peers", "", "fault: drop, loss: the nodes or backends' addresses to cut NODE off from, comma-separated")
	level := fs.Int("level", 0, "fault: fill: how full to leave the file system; loss: how many packets to drop (percent)")
	dur := fs.Duration("for", 0, "fault, run: how long the fault lasts (run: default 10s)")
	dsn := fs.String("dsn", "", "run: the application's way to the database, such as postgres://app:PASSWORD@ROUTER:6432/app")
	output := fs.String("o", "text", "run: text or json")
	within := nodeTimeoutFlag(fs)
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
	switch {
	case pos[0] == "fault" && len(pos) == 1:
		if *node == "" {
			return fmt.Errorf("give the node to inject the fault on: -n NODE")
		}
		spec := fault.Spec{Kind: fault.Kind(*kind), Level: *level, Duration: *dur}
		if spec.Kind == fault.Drop || spec.Kind == fault.Loss {
			spec.Peers = strings.Split(*peers, ",")
		} else {
			spec.Target = *target
		}
		body, _ := json.Marshal(spec)
		var f fault.Fault
		if err := ac.send(context.Background(), "POST", *node, "/api/v1/drill/faults", body, &f); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "fault %s on %s until %s: %s\n", f.ID, *node, f.Until.Format(time.TimeOnly), f.Detail)
		return nil
	case pos[0] == "faults" && len(pos) == 1:
		nodes := ac.cfg.NodeNames()
		if *node != "" {
			nodes = []string{*node}
		}
		as := askEach[[]fault.Fault](ac, nodes, "/api/v1/drill/faults", *within)
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tID\tKIND\tUNTIL\tWHAT")
		for _, a := range as {
			for _, f := range a.val {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.node, f.ID, f.Spec.Kind, f.Until.Format(time.TimeOnly), f.Detail)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, a := range as {
			if a.err != nil {
				fmt.Fprintf(stdout, "%s: %s\n", a.node, noAnswer(a.err))
			}
		}
		return nil
	case pos[0] == "run" && len(pos) == 2:
		return drillRun(ac, pos[1], drill.Options{DSN: *dsn, FaultFor: *dur}, *output, stdout, stderr)
	case pos[0] == "stop" && len(pos) == 2:
		if *node == "" {
			return fmt.Errorf("give the node the fault runs on: -n NODE")
		}
		if err := ac.do("POST", *node, "/api/v1/drill/faults/"+pos[1]+"/stop", nil); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "fault %s on %s undone\n", pos[1], *node)
		return nil
	}
	fs.Usage()
	return errUsage
}
