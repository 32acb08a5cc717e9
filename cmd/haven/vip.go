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
	"github.com/haven-ha/haven/internal/config"
)

const vipUsage = `usage: haven vip ACTION [flags]

actions:
  move --to NODE    hand the floating address to NODE (planned: no wait for a lease)
  status            show each node's state of each floating address, and who holds it under
                    which epoch as the node reads etcd; every node is asked at once, and one
                    silent for --node-timeout is shown as such

flags:
`

// runVIP is `haven vip`: move and status of the floating addresses.
func runVIP(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("vip", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, vipUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	balancer := fs.String("b", "", "the balancer whose address to act on (default: the only one with a vip)")
	to := fs.String("to", "", "move: the node to hand the address to")
	within := nodeTimeoutFlag(fs)
	output := outputFlag(fs)
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
	var withVIP []*config.Balancer
	for _, name := range sortedKeys((ac.cfg.Balancers)) {
		if b := ac.cfg.Balancers[name]; b.VIP != nil && (*balancer == "" || *balancer == name) {
			withVIP = append(withVIP, b)
		}
	}
	if len(withVIP) == 0 {
		return fmt.Errorf("no balancer with a vip%s in %s", forName(*balancer), *cfgPath)
	}
	switch pos[0] {
	case "move":
		if *to == "" {
			return errors.New("say where to: haven vip move --to NODE")
		}
		if len(withVIP) > 1 {
			return fmt.Errorf("several balancers have a vip; pick one with -b (%s)", strings.Join(balancerNames(withVIP), ", "))
		}
		return vipMove(ac, withVIP[0], *to, stdout)
	case "status":
		if err := checkOutput(*output); err != nil {
			return err
		}
		if *output == "json" {
			var nodes []string
			for _, b := range withVIP {
				for _, n := range b.Nodes {
					if !slices.Contains(nodes, n) {
						nodes = append(nodes, n)
					}
				}
			}
			return printJSONAnswers(stdout, ac, nodes, "/api/v1/vips", *within, nil, false)
		}
		return vipStatus(ac, withVIP, *within, stdout)
	}
	fs.Usage()
	return errUsage
}

func forName(name string) string {
	if name == "" {
		return ""
	}
	return " named " + name
}

func balancerNames(bs []*config.Balancer) []string {
	var names []string
	for _, b := range bs {
		names = append(names, b.Name)
	}
	return names
}

// vipMove asks the first reachable node of the balancer to move the address.
func vipMove(ac *adminClient, b *config.Balancer, to string, stdout io.Writer) error {
	var errs []error
	for _, n := range b.Nodes {
		var out struct {
			Holder string `json:"holder"`
			Epoch  int64  `json:"epoch"`
			TookMS int64  `json:"took_ms"`
			Result string `json:"result"`
		}
		err := ac.do("POST", n, "/api/v1/vips/"+url.PathEscape(b.Name)+"/move?to="+url.QueryEscape(to), &out)
		if err != nil {
			errs = append(errs, err)
			if !errors.Is(err, errUnreachable) {
				break // the node took the request: asking another could move it twice
			}
			continue
		}
		if out.Result != "" {
			fmt.Fprintf(stdout, "%s: %s already holds %s (epoch %d)\n", b.Name, out.Holder, b.VIP.Address, out.Epoch)
			return nil
		}
		fmt.Fprintf(stdout, "%s: %s now holds %s (epoch %d), after %dms\n", b.Name, out.Holder, b.VIP.Address, out.Epoch, out.TookMS)
		return nil
	}
	return errors.Join(errs...)
}

// vipStatus asks every node of the balancers for its floating addresses
// at once and prints the table.
func vipStatus(ac *adminClient, bs []*config.Balancer, within time.Duration, stdout io.Writer) error {
	var nodes []string
	for _, b := range bs {
		for _, n := range b.Nodes {
			if !slices.Contains(nodes, n) {
				nodes = append(nodes, n)
			}
		}
	}
	as := askEach[[]agent.VIPStatus](ac, nodes, "/api/v1/vips", within)
	printVIPs(stdout, bs, as)
	return answerErrors(as)
}

// printVIPs prints a row per balancer and node: the node's own state, and
// the record's holder and epoch as the node last read them from etcd. A
// node that did not answer gets a row that says so.
func printVIPs(w io.Writer, bs []*config.Balancer, as []answer[[]agent.VIPStatus]) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BALANCER\tADDRESS\tNODE\tSTATE\tHOLDER (EPOCH)\tERROR")
	for _, b := range bs {
		for _, a := range as {
			if !slices.Contains(b.Nodes, a.node) {
				continue
			}
			if a.err != nil {
				state := "unreachable"
				if _, silent := errors.AsType[*silentError](a.err); silent {
					state = "silent"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t-\t%s\n", b.Name, b.VIP.Address, a.node, state, noAnswer(a.err))
				continue
			}
			for _, v := range a.val {
				if v.Name == b.Name {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s (%d)\t%s\n", b.Name, b.VIP.Address, a.node, v.State, orDash(v.Holder), v.HeldEpoch, v.Error)
				}
			}
		}
	}
	tw.Flush()
}
