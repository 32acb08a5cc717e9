package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/lb"
	"github.com/haven-ha/haven/internal/opstate"
)

const lbUsage = `usage: haven lb ACTION [BACKEND] [flags]

actions:
  drain BACKEND     stop sending new requests to BACKEND; in-flight ones finish (--wait: until none is left)
  maint BACKEND     like drain, and close its idle connections (before stopping the server)
  enable BACKEND    take traffic again
  weight BACKEND N  set BACKEND's weight (0-256); N "default" goes back to the file's
  status            show every backend: health, admin state, in-flight requests,
                    and the operator's drains and weights in force

BACKEND is a backend's name or address. With coordination, drain, maint,
enable and weight are records in etcd that every node of the balancer applies
at once, keeps across restarts and reloads, and shows with who set them and
why (--reason) until they are removed or end (--for). Without coordination
the action is sent to the admin API of every node that runs the balancer, or
only to -n NODE, and lasts until that agent restarts (a weight, until the
next reload).

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
	output := outputFlag(fs)
	dur := fs.Duration("for", 0, "with coordination: the drain, maint or weight ends by itself after this long")
	reason := fs.String("reason", "", "with coordination: why, shown beside the record")
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
		if err := checkOutput(*output); err != nil {
			return err
		}
		if *output == "json" {
			extra := map[string]any{"balancer": bal.Name}
			if ac.cfg.Coordination != nil {
				extra["operator"], _ = overridesFor(bal.Name, askEach[overridesAnswer](ac, nodes, "/api/v1/operator", *within))
			}
			return printJSONAnswers(stdout, ac, nodes, "/api/v1/balancers", *within, extra, false)
		}
		return lbStatus(ac, bal.Name, nodes, *within, stdout)
	case "drain", "maint", "enable", "ready", "weight":
		want := 2
		if action == "weight" {
			want = 3
		}
		if len(pos) != want {
			if action == "weight" {
				return errors.New("lb weight: give a backend and a weight 0-256, or default")
			}
			return fmt.Errorf("lb %s: name one backend", action)
		}
		path := "/api/v1/balancers/" + bal.Name + "/backends/" + pos[1] + "/" + action
		if action == "weight" {
			path += "/" + pos[2]
		}
		coordinated := ac.cfg.Coordination != nil
		switch {
		case coordinated && *node != "":
			return fmt.Errorf("lb %s: with coordination an operator's %s is one record for every node of balancer %s; -n NODE cannot limit it (leave -n out)", action, action, bal.Name)
		case !coordinated && (*dur > 0 || *reason != ""):
			return fmt.Errorf("lb %s: --for and --reason need coordination (the record in etcd keeps them); without it the change lasts until the agent restarts", action)
		}
		if coordinated {
			q := url.Values{}
			if *dur > 0 {
				q.Set("for", dur.String())
			}
			if *reason != "" {
				q.Set("reason", *reason)
			}
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			if err := lbRecord(ac, bal.Name, pos[1], nodes, path, action, *within, stdout); err != nil {
				return err
			}
		} else {
			for _, n := range nodes {
				var bs lb.BackendStatus
				if err := ac.do("POST", n, path, &bs); err != nil {
					return err
				}
				printBackendChange(stdout, n, bal.Name, action, bs)
			}
		}
		if *wait && (action == "drain" || action == "maint") {
			return waitDrained(ac, bal.Name, pos[1], nodes, *timeout, stdout)
		}
		return nil
	}
	return fmt.Errorf("lb: unknown action %q (drain, maint, enable, weight, status)", action)
}

func printBackendChange(w io.Writer, node, bal, action string, bs lb.BackendStatus) {
	if action == "weight" {
		fmt.Fprintf(w, "%s: %s/%s weight %d\n", node, bal, bs.Name, bs.Weight)
		return
	}
	fmt.Fprintf(w, "%s: %s/%s is %s (health %s, %d in flight)\n", node, bal, bs.Name, bs.Admin, bs.Health.State, bs.Inflight)
}

// lbRecord sends the action to the first node of the balancer that
// answers, which writes the record in etcd, and then shows what every node
// applied: a node that does not answer now applies it when it is back.
func lbRecord(ac *adminClient, bal, backend string, nodes []string, path, action string, within time.Duration, stdout io.Writer) error {
	var bs lb.BackendStatus
	// A record written twice is the same record: a node that cannot
	// reach etcd (503) is passed over.
	via, err := askAny(ac, nodes, "POST", path, &bs)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "recorded in etcd through %s, for every node of balancer %s\n", via, bal)
	if bs.Name == "" {
		// 202: written, not applied on that node yet; look for it by
		// what the operator named.
		bs.Name = backend
		for _, a := range askEach[[]lb.Status](ac, []string{via}, "/api/v1/balancers", within) {
			if got, ok := findBackend(a.val, bal, backend); ok {
				bs = got
			}
		}
	}
	// The others apply it from their watch within milliseconds: look for
	// it for a moment.
	deadline := time.Now().Add(5 * time.Second)
	for {
		as := askEach[[]lb.Status](ac, nodes, "/api/v1/balancers", within)
		pending := false
		for _, a := range as {
			if a.err != nil {
				continue
			}
			if got, ok := findBackend(a.val, bal, bs.Name); !ok || !sameChange(action, got, bs) {
				pending = true
			}
		}
		if !pending || time.Now().After(deadline) {
			for _, a := range as {
				if a.err != nil {
					fmt.Fprintf(stdout, "%s: %s; it applies the record when it is back\n", a.node, noAnswer(a.err))
					continue
				}
				got, _ := findBackend(a.val, bal, bs.Name)
				printBackendChange(stdout, a.node, bal, action, got)
			}
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func findBackend(sts []lb.Status, bal, name string) (lb.BackendStatus, bool) {
	for _, st := range sts {
		if st.Name != bal {
			continue
		}
		for _, b := range st.Backends {
			if b.Name == name || b.Address == name {
				return b, true
			}
		}
	}
	return lb.BackendStatus{}, false
}

// sameChange says whether got shows the change want (the node that wrote
// the record) shows.
func sameChange(action string, got, want lb.BackendStatus) bool {
	if action == "weight" {
		return got.Weight == want.Weight
	}
	return got.Admin == want.Admin
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
	if ac.cfg.Coordination != nil {
		printOverrides(stdout, bal, askEach[overridesAnswer](ac, nodes, "/api/v1/operator", within))
	}
	return answerErrors(as)
}

type overridesAnswer struct {
	Records []opstate.Record `json:"records"`
	Seen    bool             `json:"seen"`
}

// overridesFor is balancer bal's records as the first node that has read
// them saw them, and that node; "" when none has.
func overridesFor(bal string, as []answer[overridesAnswer]) ([]opstate.Record, string) {
	for _, a := range as {
		if a.err != nil || !a.val.Seen {
			continue
		}
		rs := []opstate.Record{}
		for _, r := range a.val.Records {
			if r.Kind == "" && r.Balancer == bal {
				rs = append(rs, r)
			}
		}
		return rs, a.node
	}
	return nil, ""
}

// printOverrides lists the operator's records in force for balancer bal,
// as the first node that has read them saw them.
func printOverrides(w io.Writer, bal string, as []answer[overridesAnswer]) {
	rs, node := overridesFor(bal, as)
	switch {
	case node == "":
		fmt.Fprintln(w, "\noperator's changes: no node has read them from etcd")
		return
	case len(rs) == 0:
		fmt.Fprintf(w, "\nno operator's drain, maintenance or weight in force (as %s read them from etcd)\n", node)
		return
	}
	fmt.Fprintf(w, "\noperator's changes in force, on every node (as %s read them from etcd):\n", node)
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKEND\tSET\tBY\tSINCE\tUNTIL\tREASON")
	for _, r := range rs {
		set := r.Value
		if r.What == opstate.Weight {
			set = "weight " + r.Value
		}
		until := "-"
		if !r.Until.IsZero() {
			until = r.Until.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Backend, set, r.Owner, r.Set.Local().Format(time.DateTime), until, orDash(r.Reason))
	}
	tw.Flush()
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
