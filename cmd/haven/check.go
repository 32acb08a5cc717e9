package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/haven-ha/haven/internal/agent"
	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill"
)

// runCheck is `haven check`: it validates the file and lists every problem;
// with -n NODE, it also checks this machine for NODE's roles.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	cfgPath := configFlag(fs)
	node := fs.String("n", "", "also check this machine for NODE's roles (run it where NODE's agent runs, as its user)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(parseError(err), errHelp) {
			return 0
		}
		return 2
	}
	cfg, err := config.Load(*cfgPath)
	if cfg != nil {
		for _, w := range cfg.Warnings {
			fmt.Fprintln(stderr, "warning:", w)
		}
	}
	if err != nil {
		var probs config.Problems
		if errors.As(err, &probs) {
			for _, p := range probs {
				fmt.Fprintln(stderr, p.Error())
			}
			fmt.Fprintf(stderr, "%s: %d problem(s)\n", *cfgPath, len(probs))
		} else {
			fmt.Fprintln(stderr, "haven:", err)
		}
		return 1
	}
	if *node != "" {
		if err := agent.Preflight(cfg, *node); err != nil {
			for _, e := range unjoin(err) {
				fmt.Fprintf(stderr, "%s: node %s: %v\n", *cfgPath, *node, e)
			}
			return 1
		}
	}
	fmt.Fprintf(stdout, "%s: ok (%s, %s, %s)\n", *cfgPath, count(len(cfg.NodeNames()), "node"), count(len(cfg.Balancers), "balancer"), count(len(cfg.Checks), "check"))
	if cfg.Database != nil || cfg.Objectives != nil {
		// Which of the guide's tiers the design reaches, and which
		// objectives it cannot promise: advice, not an error.
		fmt.Fprint(stdout, drill.Assess(cfg).Format())
	}
	return 0
}

// count says "1 node", "2 nodes".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// unjoin lists the errors errors.Join joined, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
