package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/doctor"
)

const doctorUsage = `usage: haven doctor -n NODE [-c haven.yaml] [-o text|json]

Checks this machine for what haven.yaml asks of NODE, before its agent starts
or when it will not: the file itself, the capabilities and nftables features
its roles use, PostgreSQL's binaries on a database node, the ports it listens
on, the clock, every peer it must reach (admin APIs, etcd) and the room on its
disks. Each problem says how to fix it (docs/install.md). Exit 1 when a check
fails; warnings (a peer not up yet, a clock not synchronised) exit 0.

flags:
`

func runDoctor(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("doctor", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, doctorUsage); fs.PrintDefaults() }
	cfgPath := configFlag(fs)
	node := fs.String("n", "", "the node this machine is, by its name in the file (required)")
	output := fs.String("o", "text", "text or json")
	timeout := fs.Duration("timeout", 2*time.Second, "how long a peer has to answer")
	if err := fs.Parse(args); err != nil {
		return parseError(err)
	}
	if *node == "" || fs.NArg() > 0 || (*output != "text" && *output != "json") {
		fs.Usage()
		return errUsage
	}
	findings := doctorFindings(*cfgPath, *node, *timeout)
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(findings); err != nil {
			return err
		}
	} else {
		fmt.Fprint(stdout, doctor.Format(findings))
	}
	if doctor.Failed(findings) {
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
