package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/haven-ha/haven/internal/config"
)

// runCheck is `haven check`: it validates the file and lists every problem.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", stderr)
	cfgPath := fs.String("c", "haven.yaml", "configuration file")
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
	fmt.Fprintf(stdout, "%s: ok (%s, %s, %s)\n", *cfgPath, count(len(cfg.NodeNames()), "node"), count(len(cfg.Balancers), "balancer"), count(len(cfg.Checks), "check"))
	return 0
}

// count says "1 node", "2 nodes".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
