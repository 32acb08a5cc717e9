package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/agent"
)

// lockDrill takes the cluster's drill lock (one drill at a time, the
// scheduled ones included) for scenario, whose faults last faults, through
// the first agent of the top-level coordination scope that answers; the
// returned function gives it back. Without coordination, or with drills
// off, there is no lock to take. Another drill's lock is an error that
// says whose.
func lockDrill(ac *adminClient, scenario string, faults time.Duration, stderr io.Writer) (func(), error) {
	cfg := ac.cfg
	if cfg.Coordination == nil {
		return func() {}, nil
	}
	var nodes []string
	for _, n := range cfg.NodeNames() {
		if cfg.CoordinationOf(n) == cfg.Coordination {
			nodes = append(nodes, n)
		}
	}
	body, _ := json.Marshal(map[string]string{"scenario": scenario, "for": faults.String()})
	var errs []error
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var l agent.DrillLock
		err := ac.send(ctx, "POST", n, "/api/v1/drill/lock", body, &l)
		cancel()
		var refused *refusedError
		if errors.As(err, &refused) && refused.status == http.StatusConflict {
			return nil, fmt.Errorf("drill %s: %w", scenario, err)
		}
		if errors.As(err, &refused) && refused.status == http.StatusNotFound {
			// drills.enabled is off: no fault can be injected and no drill
			// is scheduled, so there is nothing to take turns with (a
			// restore drill injects nothing).
			return func() {}, nil
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(stderr, "drill lock taken through %s until %s at the latest\n", n, l.Until.Local().Format(time.TimeOnly))
		return func() { unlockDrill(ac, nodes, n, l.Token, stderr) }, nil
	}
	return nil, fmt.Errorf("drill %s: cannot take the cluster's drill lock through any of %s (--no-lock runs the drill without it): %w",
		scenario, strings.Join(nodes, ", "), errors.Join(errs...))
}

// unlockDrill gives the lock back, through the agent that took it first,
// then through the others (the drill may have left that one down); a lock
// nobody can give back lapses by itself.
func unlockDrill(ac *adminClient, nodes []string, first, token string, stderr io.Writer) {
	order := append([]string{first}, nodes...)
	for _, n := range order {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := ac.send(ctx, "DELETE", n, "/api/v1/drill/lock/"+token, nil, nil)
		cancel()
		var refused *refusedError
		if err == nil || errors.As(err, &refused) && refused.status == http.StatusNotFound {
			return
		}
	}
	fmt.Fprintln(stderr, "could not give the drill lock back: it lapses by itself")
}
