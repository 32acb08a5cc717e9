package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/drill/fault"
)

const drillUsage = `usage: haven drill ACTION [flags]

Faults each agent injects on its own node for drills, when haven.yaml sets
drills.enabled (docs/drills.md). Every fault ends by itself after --for.

actions:
  fault -n NODE --kind KIND --for DURATION [--target ROLE] [--peers N1,N2] [--level PERCENT]
         kill     SIGKILL to the role's process (--target postgres)
         pause    SIGSTOP to the role's process group, SIGCONT when the fault ends
         drop     drop every packet between NODE and the --peers
         fill     fill the file system of the role's data directory to --level percent
  faults [-n NODE]   the active faults of every node (or one)
  stop -n NODE ID    end a fault now

flags:
`

func runDrill(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("drill", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, drillUsage); fs.PrintDefaults() }
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	node := fs.String("n", "", "the node (fault, stop: required)")
	kind := fs.String("kind", "", "fault: kill, pause, drop or fill")
	target := fs.String("target", "postgres", "fault: the role whose process or data directory it hits")
	peers := fs.String("peers", "", "fault: drop: the nodes to cut NODE off from, comma-separated")
	level := fs.Int("level", 0, "fault: fill: how full to leave the file system, in percent")
	dur := fs.Duration("for", 0, "fault: how long it lasts")
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
		if spec.Kind == fault.Drop {
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
