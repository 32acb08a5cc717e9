package drill

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"
)

// watcher records the deployment's changes during a drill: the primary,
// the active region and the floating addresses' holders, as the agents
// tell them. A state it cannot read is no change: the agents it asks may
// be the ones the drill froze.
type watcher struct {
	agents Agents
	last   State
	t0     time.Time
	events []Event
}

func newWatcher(agents Agents, st State, t0 time.Time) *watcher {
	return &watcher{agents: agents, last: st, t0: t0}
}

// look reads the state once and records what changed.
func (w *watcher) look(ctx context.Context, log func(string)) {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	st, err := w.agents.State(cctx)
	cancel()
	if err != nil {
		return
	}
	at := time.Since(w.t0)
	note := func(what string) {
		w.events = append(w.events, Event{At: at, What: what})
		log(fmt.Sprintf("at %s: %s", seconds(at), what))
	}
	if st.Primary != "" && st.Primary != w.last.Primary {
		note(fmt.Sprintf("the primary is %s (was %s)", st.Primary, orDash(w.last.Primary)))
		w.last.Primary = st.Primary
	}
	if st.Region != "" && st.Region != w.last.Region {
		note(fmt.Sprintf("the active region is %s (was %s)", st.Region, orDash(w.last.Region)))
		w.last.Region = st.Region
	}
	for _, b := range slices.Sorted(maps.Keys(st.Holders)) {
		if n := st.Holders[b]; n != "" && n != w.last.Holders[b] {
			note(fmt.Sprintf("balancer %s's address is on %s (was %s)", b, n, orDash(w.last.Holders[b])))
			if w.last.Holders == nil {
				w.last.Holders = map[string]string{}
			}
			w.last.Holders[b] = n
		}
	}
}

// until looks at the deployment every 250ms until done says so or the
// deadline passes.
func (w *watcher) until(ctx context.Context, log func(string), deadline time.Time, done func() bool) error {
	for !done() && time.Now().Before(deadline) {
		w.look(ctx, log)
		if err := Sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

// waitAll waits for every workload to have stopped.
func waitAll(done []<-chan struct{}) {
	for _, d := range done {
		<-d
	}
}

// mergeEvents returns a and b in time order.
func mergeEvents(a, b []Event) []Event {
	out := append(slices.Clone(a), b...)
	slices.SortStableFunc(out, func(x, y Event) int { return int(x.At - y.At) })
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
