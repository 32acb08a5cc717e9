package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/doctor"
)

const doctorUsage = `usage: haven doctor [-n NODE] [-c haven.yaml] [-o text|json]

With -n NODE: checks this machine for what haven.yaml asks of NODE, before its
agent starts or when it will not: the file itself, the capabilities and
nftables features its roles use, PostgreSQL's binaries on a database node, the
ports it listens on, the clock, every peer it must reach (admin APIs, etcd) and
the room on its disks. Without -n: checks the running cluster's coordination
group through the first agent that answers: a leader, every member answering
and joined, each member's database size against etcd's quota, raised alarms.
Each problem says how to fix it (docs/install.md). Exit 1 when a check fails;
warnings (a peer not up yet, a clock not synchronised) exit 0.

flags:
`

func runDoctor(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("doctor", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, doctorUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	node := fs.String("n", "", "the node this machine is, by its name in the file (omit to check the running cluster)")
	output := fs.String("o", "text", "text or json")
	timeout := fs.Duration("timeout", 2*time.Second, "how long a peer has to answer")
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return errUsage
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	var findings []doctor.Finding
	if *node == "" {
		findings = clusterFindings(*cfgPath)
	} else {
		findings = doctorFindings(*cfgPath, *node, *timeout)
	}
	if *output == "json" {
		if err := printJSON(stdout, findings); err != nil {
			return err
		}
	} else {
		fmt.Fprint(stdout, doctor.Format(findings))
	}
	if doctor.Failed(findings) {
		if *node == "" {
			return codedError{1, errors.New("doctor: the cluster: a check failed (FAIL above)")}
		}
		return codedError{1, fmt.Errorf("doctor: node %s: a check failed (FAIL above)", *node)}
	}
	return nil
}

// doctorFindings loads the file (its problems are findings too) and runs
// the preflight the agent runs at start and doctor's checks.
func doctorFindings(path, node string, timeout time.Duration) []doctor.Finding {
	cfg, err := config.Load(path)
	if err != nil {
		var out []doctor.Finding
		for _, e := range unjoinProblems(err) {
			out = append(out, doctor.Finding{Check: "config", Severity: doctor.Fail, What: e, Fix: "haven check -c " + path + " lists every problem with its line"})
		}
		return out
	}
	out := []doctor.Finding{{Check: "config", Severity: doctor.OK, What: path + " loads"}}
	for _, w := range cfg.Warnings {
		out = append(out, doctor.Finding{Check: "config", Severity: doctor.Warn, What: w})
	}
	if _, ok := cfg.Node(node); ok {
		if err := agent.Preflight(cfg, node); err != nil {
			for _, e := range unjoin(err) {
				out = append(out, doctor.Finding{Check: "preflight", Severity: doctor.Fail, What: e.Error()})
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*timeout+30*time.Second)
	defer cancel()
	return append(out, doctor.Node(ctx, cfg, node, doctor.Options{Timeout: timeout})...)
}

// unjoinProblems lists a load error's problems, each as haven check
// prints it.
func unjoinProblems(err error) []string {
	var probs config.Problems
	if !errors.As(err, &probs) {
		return []string{err.Error()}
	}
	out := make([]string, len(probs))
	for i, p := range probs {
		out[i] = p.Error()
	}
	return out
}

// etcdQuota is the embedded members' database quota (etcd's default, which
// haven keeps): past it etcd raises NOSPACE and refuses every write.
const etcdQuota = 2 << 30

// clusterFindings checks the running coordination group, as `haven coord
// members` shows it.
func clusterFindings(path string) []doctor.Finding {
	ac, err := newAdminClient(path)
	if err != nil {
		return []doctor.Finding{{Check: "config", Severity: doctor.Fail, What: err.Error(), Fix: "haven check -c " + path}}
	}
	if ac.cfg.Coordination == nil {
		return []doctor.Finding{{Check: "config", Severity: doctor.OK, What: path + " has no coordination section: nothing runs cluster-wide to check"}}
	}
	var g agent.EtcdGroup
	via, err := askAny(ac, ac.cfg.NodeNames(), "GET", "/api/v1/coordination/members", &g)
	if err != nil {
		return []doctor.Finding{{Check: "etcd", Severity: doctor.Fail, What: "no agent answered with the coordination group: " + err.Error(),
			Fix: "start the agents (systemctl start haven@NODE), or run haven doctor -n NODE on a node to see why it does not"}}
	}
	out := []doctor.Finding{{Check: "etcd", Severity: doctor.OK, What: fmt.Sprintf("%d members, as %s's agent sees them", len(g.Members), via)}}
	if g.Leader == "" {
		out = append(out, doctor.Finding{Check: "etcd", Severity: doctor.Fail, What: "no member reports a leader: the group has lost its quorum; no failover can happen",
			Fix: "bring back a majority of the coordination members (haven coord members shows which answer)"})
	} else {
		out = append(out, doctor.Finding{Check: "etcd", Severity: doctor.OK, What: g.Leader + " leads"})
	}
	for _, m := range g.Members {
		switch {
		case !m.Started:
			out = append(out, doctor.Finding{Check: "etcd", Severity: doctor.Warn, What: m.Name + ": added, not joined", Fix: "start " + m.Name + "'s agent"})
		case m.Error != "":
			out = append(out, doctor.Finding{Check: "etcd", Severity: doctor.Fail, What: m.Name + ": " + m.Error, Fix: "haven doctor -n " + m.Name + " on its machine"})
		case m.DBSize > etcdQuota*8/10:
			out = append(out, doctor.Finding{Check: "etcd", Severity: doctor.Fail, What: fmt.Sprintf("%s: its database is %s of the %s quota", m.Name, size(m.DBSize), size(etcdQuota)),
				Fix: "haven coord defrag (it would leave " + size(m.DBInUse) + ")"})
		default:
			out = append(out, doctor.Finding{Check: "etcd", Severity: doctor.OK, What: fmt.Sprintf("%s: answers, database %s (%s in use)", m.Name, size(m.DBSize), size(m.DBInUse))})
		}
	}
	for _, a := range g.Alarms {
		out = append(out, doctor.Finding{Check: "etcd", Severity: doctor.Fail, What: "alarm raised: " + a, Fix: "free the space (haven coord defrag), then haven coord alarms disarm"})
	}
	return out
}
