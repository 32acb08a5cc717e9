package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/gtm"
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

// parseInterleaved parses flags that may come after positional arguments.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

type adminClient struct {
	cfg    *config.Config
	token  string
	client *http.Client
}

func newAdminClient(cfgPath string) (*adminClient, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	ac := &adminClient{cfg: cfg, client: &http.Client{Timeout: 10 * time.Second}}
	if cfg.Admin.TokenFile != "" {
		b, err := os.ReadFile(cfg.Admin.TokenFile)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("read admin token: %w", err)
		}
		ac.token = strings.TrimSpace(string(b))
	}
	return ac, nil
}

// adminURL is the base URL of a node's admin API.
func (ac *adminClient) adminURL(node string) (string, error) {
	n, ok := ac.cfg.Node(node)
	if !ok {
		return "", fmt.Errorf("node %q is not in the configuration (nodes: %v)", node, ac.cfg.NodeNames())
	}
	host, port, err := net.SplitHostPort(n.Admin)
	if err != nil {
		return "", fmt.Errorf("node %s: admin address %q: %w", node, n.Admin, err)
	}
	if ip, err := netip.ParseAddr(host); host == "" || (err == nil && ip.IsUnspecified()) {
		host = n.Address
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// errUnreachable is wrapped by do's error when the request never reached
// the node's agent (it could not connect): only then may a caller ask
// another node to do what it asked, without risking doing it twice.
var errUnreachable = errors.New("unreachable")

func (ac *adminClient) do(method, node, path string, out any) error {
	base, err := ac.adminURL(node)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(method, base+path, nil)
	if err != nil {
		return err
	}
	if ac.token != "" {
		req.Header.Set("Authorization", "Bearer "+ac.token)
	}
	resp, err := ac.client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			// Nothing reached the agent: another node may be asked.
			return fmt.Errorf("node %s: %w (is its agent running?): %w", node, err, errUnreachable)
		}
		return fmt.Errorf("node %s: %w", node, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("node %s: %s", node, e.Error)
		}
		return fmt.Errorf("node %s: %s: %s", node, resp.Status, strings.TrimSpace(string(body)))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// pickBalancer returns the balancer named by -b, or the only one.
func (ac *adminClient) pickBalancer(name string) (*config.Balancer, error) {
	if name != "" {
		b, ok := ac.cfg.Balancers[name]
		if !ok {
			return nil, fmt.Errorf("no balancer %q in the configuration", name)
		}
		return b, nil
	}
	if len(ac.cfg.Balancers) == 1 {
		for _, b := range ac.cfg.Balancers {
			return b, nil
		}
	}
	var names []string
	for n := range ac.cfg.Balancers {
		names = append(names, n)
	}
	slices.Sort(names)
	return nil, fmt.Errorf("say which balancer with -b (balancers: %v)", names)
}

func runLB(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lb", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, lbUsage); fs.PrintDefaults() }
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	node := fs.String("n", "", "only this node (default: every node of the balancer)")
	balName := fs.String("b", "", "the balancer (default: the only one)")
	wait := fs.Bool("wait", false, "drain/maint: wait until no request is left in flight")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long --wait waits")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return errUsage
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
		return lbStatus(ac, bal.Name, nodes, stdout)
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

func lbStatus(ac *adminClient, bal string, nodes []string, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tBACKEND\tADDRESS\tHEALTH\tADMIN\tWEIGHT\tINFLIGHT\tREQUESTS\tLAST CHECK")
	var errs []error
	for _, n := range nodes {
		var sts []lb.Status
		if err := ac.do("GET", n, "/api/v1/balancers", &sts); err != nil {
			errs = append(errs, err)
			continue
		}
		for _, st := range sts {
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
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", n, b.Name, b.Address, b.Health.State, b.Admin, b.EffectiveWeight, b.Inflight, b.Requests, last)
			}
		}
	}
	tw.Flush()
	return errors.Join(errs...)
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
	node := fs.String("n", "", "only this node (default: every node)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	ac, err := newAdminClient(*cfgPath)
	if err != nil {
		return err
	}
	nodes := ac.cfg.NodeNames()
	if *node != "" {
		nodes = []string{*node}
	}
	var errs []error
	for _, n := range nodes {
		var st map[string]any
		if err := ac.do("GET", n, "/api/v1/status", &st); err != nil {
			fmt.Fprintf(stdout, "%s: unreachable: %v\n", n, err)
			errs = append(errs, err)
			continue
		}
		ready := "ready"
		if st["ready"] != true {
			ready = fmt.Sprintf("NOT READY %v", st["not_ready"])
		}
		fmt.Fprintf(stdout, "%s: %s (version %v)\n", n, ready, st["version"])
	}
	if ac.cfg.Coordination != nil {
		coordStatus(ac, nodes, stdout)
	}
	if t := ac.cfg.Traffic; t != nil {
		trafficStatus(ac, t.Nameservers, *node, stdout)
	}
	names := make([]string, 0, len(ac.cfg.Balancers))
	for name := range ac.cfg.Balancers {
		names = append(names, name)
	}
	slices.Sort(names) // the same order on every run
	for _, name := range names {
		b := ac.cfg.Balancers[name]
		fmt.Fprintf(stdout, "\nbalancer %s (%s, %s):\n", b.Name, b.Mode, b.Listen)
		var reachable []string
		for _, n := range b.Nodes {
			if *node == "" || *node == n {
				reachable = append(reachable, n)
			}
		}
		lbStatus(ac, b.Name, reachable, stdout)
	}
	return errors.Join(errs...)
}

// trafficStatus prints what each managed name answers now, as every name
// server (or only node) says.
func trafficStatus(ac *adminClient, nameservers []string, node string, stdout io.Writer) {
	for _, n := range nameservers {
		if node != "" && node != n {
			continue
		}
		var st struct {
			Traffic *gtm.Status `json:"traffic"`
		}
		if err := ac.do("GET", n, "/api/v1/status", &st); err != nil || st.Traffic == nil {
			fmt.Fprintf(stdout, "\ntraffic (%s): no answer from its traffic manager\n", n)
			continue
		}
		fmt.Fprintf(stdout, "\ntraffic %s (as %s answers; views: %s, %d other instances):\n", st.Traffic.Zone, n, st.Traffic.Views, st.Traffic.Peers)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPOLICY\tANSWERS NOW\tTARGETS")
		for _, ns := range st.Traffic.Names {
			var targets []string
			for _, tg := range ns.Targets {
				state := "up"
				switch {
				case !tg.DrainedUntil.IsZero():
					state = "drained until " + tg.DrainedUntil.Local().Format("15:04:05")
				case !tg.Up:
					state = "DOWN"
				}
				targets = append(targets, fmt.Sprintf("%s %s %s", tg.Name, tg.Address, state))
			}
			answers := strings.Join(ns.Answers, " ")
			if ns.Servfail {
				answers = "SERVFAIL (all down, closed)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", ns.Name, ns.Policy, answers, strings.Join(targets, ", "))
		}
		tw.Flush()
	}
}

type coordNodeStatus struct {
	Coordination *struct {
		Connected bool `json:"connected"`
		Etcd      []struct {
			Endpoint string `json:"endpoint"`
			Healthy  bool   `json:"healthy"`
			Leader   bool   `json:"leader"`
			RaftTerm uint64 `json:"raft_term"`
			Error    string `json:"error"`
		} `json:"etcd"`
		Members map[string]struct {
			Region  string            `json:"region"`
			Zone    string            `json:"zone"`
			Roles   []string          `json:"roles"`
			Version string            `json:"version"`
			Checks  map[string]string `json:"checks"`
		} `json:"members"`
	} `json:"coordination"`
}

// coordStatus prints etcd's health and the cluster's members as the first
// reachable node sees them, then every floating address.
func coordStatus(ac *adminClient, nodes []string, stdout io.Writer) {
	for _, n := range nodes {
		var st coordNodeStatus
		if ac.do("GET", n, "/api/v1/status", &st) != nil || st.Coordination == nil || !st.Coordination.Connected {
			continue
		}
		c := st.Coordination
		fmt.Fprintf(stdout, "\netcd (as %s sees it):\n", n)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ENDPOINT\tHEALTHY\tLEADER\tTERM\tERROR")
		for _, e := range c.Etcd {
			fmt.Fprintf(tw, "%s\t%v\t%v\t%d\t%s\n", e.Endpoint, e.Healthy, e.Leader, e.RaftTerm, e.Error)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "\nmembers:\n")
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tREGION/ZONE\tROLES\tVERSION\tCHECKS")
		for _, name := range sortedKeys((c.Members)) {
			m := c.Members[name]
			var checks []string
			for _, k := range sortedKeys((m.Checks)) {
				checks = append(checks, k+"="+m.Checks[k])
			}
			fmt.Fprintf(tw, "%s\t%s/%s\t%s\t%s\t%s\n", name, m.Region, m.Zone, strings.Join(m.Roles, ","), m.Version, strings.Join(checks, " "))
		}
		tw.Flush()
		break
	}
	var withVIP []*config.Balancer
	for _, name := range sortedKeys((ac.cfg.Balancers)) {
		if b := ac.cfg.Balancers[name]; b.VIP != nil {
			withVIP = append(withVIP, b)
		}
	}
	if len(withVIP) > 0 {
		fmt.Fprintf(stdout, "\nfloating addresses:\n")
		_ = vipStatus(ac, withVIP, stdout)
	}
	if db := ac.cfg.Database; db != nil {
		fmt.Fprintf(stdout, "\ndatabase:\n")
		if err := pgStatus(ac, db.Nodes, stdout); err != nil {
			fmt.Fprintf(stdout, "no database node answered: %v\n", err)
		}
	}
}
