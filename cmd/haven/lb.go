package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/lb"
)

const lbUsage = `usage: haven lb ACTION [BACKEND] [flags]

actions:
  drain BACKEND     stop sending new requests to BACKEND; in-flight ones finish (--wait: until none is left)
  maint BACKEND     like drain, and close its idle connections (before stopping the server)
  enable BACKEND    take traffic again
  weight BACKEND N  set BACKEND's weight (0-256) until the next reload
  status            show every backend: health, admin state, in-flight requests

BACKEND is a backend's name or address. The action is sent to the admin API of
every node that runs the balancer, or only to -n NODE.

flags:
`

// runLB is `haven lb`: drain, maint, enable, weight and status of a
// balancer's backends.
func runLB(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lb", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, lbUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	node := fs.String("n", "", "only this node (default: every node of the balancer)")
	balName := fs.String("b", "", "the balancer (default: the only one)")
	wait := fs.Bool("wait", false, "drain/maint: wait until no request is left in flight")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long --wait waits")
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
	bal, err := ac.pickBalancer(*balName)
	if err != nil {
		return err
	}
	nodes := bal.Nodes
	if *node != "" {
		nodes = []string{*node}
	}
	action := pos[0]
	switch action {
	case "status":
		return lbStatus(ac, bal.Name, nodes, *within, stdout)
	case "drain", "maint", "enable", "ready":
		if len(pos) != 2 {
			return fmt.Errorf("lb %s: name one backend", action)
		}
		for _, n := range nodes {
			var bs lb.BackendStatus
			if err := ac.do("POST", n, "/api/v1/balancers/"+bal.Name+"/backends/"+pos[1]+"/"+action, &bs); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: %s/%s is %s (health %s, %d in flight)\n", n, bal.Name, bs.Name, bs.Admin, bs.Health.State, bs.Inflight)
		}
		if *wait && action != "enable" && action != "ready" {
			return waitDrained(ac, bal.Name, pos[1], nodes, *timeout, stdout)
		}
		return nil
	case "weight":
		if len(pos) != 3 {
			return errors.New("lb weight: give a backend and a weight 0-256")
		}
		for _, n := range nodes {
			var bs lb.BackendStatus
			if err := ac.do("POST", n, "/api/v1/balancers/"+bal.Name+"/backends/"+pos[1]+"/weight/"+pos[2], &bs); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "%s: %s/%s weight %d\n", n, bal.Name, bs.Name, bs.Weight)
		}
		return nil
	}
	return fmt.Errorf("lb: unknown action %q (drain, maint, enable, weight, status)", action)
}

func waitDrained(ac *adminClient, bal, backend string, nodes []string, timeout time.Duration, stdout io.Writer) error {
	deadline := time.Now().Add(timeout)
	for _, n := range nodes {
		for {
			var sts []lb.Status
			if err := ac.do("GET", n, "/api/v1/balancers", &sts); err != nil {
				return err
			}
			left := int64(-1)
			for _, st := range sts {
				for _, b := range st.Backends {
					if st.Name == bal && (b.Name == backend || b.Address == backend) {
						left = b.Inflight
					}
				}
			}
			if left == 0 {
				fmt.Fprintf(stdout, "%s: %s drained\n", n, backend)
				break
			}
			if left < 0 {
				return fmt.Errorf("node %s: balancer %s has no backend %q any more (reloaded?)", n, bal, backend)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s: %s still has %d in flight after %s", n, backend, left, timeout)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// lbStatus asks every node of the balancer at once and prints its table.
func lbStatus(ac *adminClient, bal string, nodes []string, within time.Duration, stdout io.Writer) error {
	as := askEach[[]lb.Status](ac, nodes, "/api/v1/balancers", within)
	printBalancer(stdout, bal, as)
	return answerErrors(as)
}

// printBalancer prints a row per backend of balancer bal on every node that
// answered, and a row for each node that did not.
func printBalancer(w io.Writer, bal string, as []answer[[]lb.Status]) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tBACKEND\tADDRESS\tHEALTH\tADMIN\tWEIGHT\tINFLIGHT\tREQUESTS\tLAST CHECK")
	for _, a := range as {
		if a.err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\t-\t%s\n", a.node, noAnswer(a.err))
			continue
		}
		for _, st := range a.val {
			if st.Name != bal {
				continue
			}
			for _, b := range st.Backends {
				last := "-"
				if l := b.Health.Last; l != nil && l.OK {
					last = "ok"
				} else if l != nil {
					last = l.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", a.node, b.Name, b.Address, b.Health.State, b.Admin, b.EffectiveWeight, b.Inflight, b.Requests, last)
			}
		}
	}
	tw.Flush()
}
