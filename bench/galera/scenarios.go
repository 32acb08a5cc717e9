package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// scenario is one kind of fault.
type scenario struct {
	name  string // as in -scenarios
	title string // as in the report
	desc  string
}

var allScenarios = []scenario{
	{name: "writer", title: "kill -9 of the writer's node",
		desc: "SIGKILL to every process in the namespace of the node the writes reach (mariadbd and its helpers, keepalived and the clustercheck service; or haven's agent with its etcd member and mariadbd), the server first; the machine stays up, so connections to it are refused. Once the writes are back, its daemons start again (the database address it held removed, as by a reboot) and it rejoins"},
	{name: "stop", title: "every node stopped, then started",
		desc: "a planned power-down: each node's services stopped cleanly (SIGTERM to mariadbd and keepalived, or to haven's agent, which stops its server and etcd member), one after another 1 s apart in a random order, then each node's daemons started again at once, in a random order, 0-1 s apart; -person-after later the bench recovers the peer by hand as for a crash"},
	{name: "crash", title: "every node crashed (kill -9 of all three)",
		desc: "SIGKILL to every process on all three nodes at once, then each node's daemons started again at once, in a random order, 0-1 s apart: mariadbd as its unit would start it (no bootstrap flag), or haven's agent. When the peer is not writable -person-after later, the bench does what Galera's documentation asks of a person: stop the servers, `mariadbd --wsrep-recover` on each, safe_to_bootstrap on the most advanced, `--wsrep-new-cluster` there, then the others"},
}

func findScenario(name string) (scenario, bool) {
	for _, s := range allScenarios {
		if s.name == name {
			return s, true
		}
	}
	return scenario{}, false
}

// cell is one target in one scenario.
type cell struct {
	t     target
	sc    scenario
	runs  []runResult
	setup string // why it could not run at all
}

// runResult is one fault, as the writer saw it.
type runResult struct {
	Run    int    `json:"run"`
	Writer string `json:"writer"` // the node the writes reached before the fault
	After  string `json:"after"`  // ... and once healthy again
	// Delay is the random part of the wait before the fault.
	Delay   time.Duration `json:"delay_ns"`
	FaultAt time.Duration `json:"fault_at_ns"` // from the writer's start
	// Gap is the write gap around the fault; never when the writes did
	// not come back within -max-outage.
	Gap    time.Duration `json:"gap_ns"`
	PreGap time.Duration `json:"pre_gap_ns"`
	// Writable is, for a crash, from the first restart to the first
	// acknowledged write after it.
	Writable time.Duration `json:"writable_ns,omitempty"`
	// ByHand says the cluster came back only by the bench's recovery by
	// hand; Person is how long after the restarts it began.
	ByHand bool          `json:"by_hand,omitempty"`
	Person time.Duration `json:"person_ns,omitempty"`
	Acked  int           `json:"acked"`
	Failed int           `json:"failed"`
	Indet  int           `json:"indeterminate"`
	lossReport
	// Differ are the nodes whose rows of the run are not every node's.
	Differ []string `json:"differ,omitempty"`
	// Recovered is from the end of the writes (and the restarts) until the
	// cluster is healthy again.
	Recovered time.Duration `json:"recovered_ns"`
	Errors    []string      `json:"errors,omitempty"`
	Notes     []string      `json:"notes,omitempty"`
	Err       string        `json:"error,omitempty"`
}

// runCell runs one target through one scenario on a fresh cluster.
func (b *bench) runCell(ctx context.Context, t target, sc scenario) cell {
	out := cell{t: t, sc: sc}
	label := sc.name + "-" + t.name
	start := time.Now()
	c, err := b.startCluster(ctx, t, label)
	if err != nil {
		if ctx.Err() == nil {
			out.setup = "failed to start: " + err.Error()
			harness.Logf("%s · %s: %s", sc.name, t.name, out.setup)
		}
		return out
	}
	defer c.close()
	harness.Logf("%s · %s: cluster healthy after %s", sc.name, t.name, time.Since(start).Round(100*time.Millisecond))
	for i := 1; i <= b.opt.runs && ctx.Err() == nil; i++ {
		r, writes := c.faultRun(ctx, sc, i)
		if ctx.Err() != nil {
			break
		}
		r.Run = i
		out.runs = append(out.runs, r)
		b.saveRaw(label, r, writes)
		harness.Logf("%s · %s · run %d/%d: %s", sc.name, t.name, i, b.opt.runs, r.line())
		if r.Err != "" {
			break // the cluster's state is unknown: the next run would measure that
		}
	}
	return out
}

func (r runResult) line() string {
	s := fmt.Sprintf("%s → %s, write gap %s, %d acknowledged, %d lost, %d indeterminate (%d found), %d failed; healthy again after %s",
		r.Writer, r.After, fmtGap(r.Gap), r.Acked, len(r.Lost), r.Indet, r.IndeterminateFound, r.Failed, fmtDur(r.Recovered))
	if r.Writable > 0 {
		s += "; writable " + fmtDur(r.Writable) + " after the restarts"
		if r.ByHand {
			s += " (by hand, begun after " + fmtDur(r.Person) + ")"
		}
	}
	for _, n := range r.Notes {
		s += "; " + n
	}
	if r.Err != "" {
		s += "; error: " + r.Err
	}
	return s
}

// backAfter is how many writes started after the fault (after the
// restarts, for a crash) must be acknowledged for the writes to be back.
const backAfter = 5

// faultRun waits until the cluster is healthy, writes from -pre plus a
// random part of the target's period, injects the fault, writes until the
// writes are back and -post more, restarts what was killed, waits until
// the cluster is healthy and compares the rows on every node with the
// writer's record.
func (c *cluster) faultRun(ctx context.Context, sc scenario, run int) (r runResult, writes []write) {
	opt := c.b.opt
	if err := c.waitHealthy(ctx, opt.settle); err != nil {
		r.Err = "before the fault: " + err.Error()
		return r, nil
	}
	writer, err := c.writerNode(ctx)
	if err != nil {
		r.Err = "before the fault: " + err.Error()
		return r, nil
	}
	r.Writer = writer
	r.Delay = time.Duration(rand.Int64N(int64(c.t.period)))
	wctx, stop := context.WithTimeout(ctx, opt.pre+r.Delay+opt.maxOutage+opt.post+time.Minute)
	defer stop()
	w, done, err := runWriter(wctx, run, opt.every, opt.connTimeout, opt.opTimeout, c.dialer, c.t.routerAddr())
	if err != nil {
		r.Err = err.Error()
		return r, nil
	}
	finish := func() []write {
		stop()
		<-done
		return w.snapshot()
	}
	if !harness.Sleep(ctx, opt.pre+r.Delay) {
		return r, finish()
	}
	r.FaultAt = w.since(time.Now())
	if w.ackedSince(0) == 0 {
		writes = finish()
		r.Err = "no write acknowledged before the fault: " + strings.Join(errorKinds(writes, 2), "; ")
		return r, writes
	}
	var killed []string
	switch sc.name {
	case "writer":
		killed = []string{writer}
	case "crash":
		killed = nodes
	}
	var errs []error
	for _, n := range killed {
		errs = append(errs, c.kill(n))
	}
	if sc.name == "stop" {
		for i, n := range shuffled(nodes) {
			if i > 0 {
				harness.Sleep(ctx, time.Second)
			}
			errs = append(errs, c.stop(ctx, n))
		}
	}
	var restarted time.Time
	if sc.name == "crash" || sc.name == "stop" {
		restarted = time.Now()
		errs = append(errs, c.restartAll(ctx))
	}
	if err := errors.Join(errs...); err != nil {
		r.Err = "fault: " + err.Error()
	}
	back := c.waitBack(ctx, w, r.FaultAt, restarted, &r)
	if back {
		harness.Sleep(ctx, opt.post)
	}
	writes = finish()
	if ctx.Err() != nil {
		return r, writes
	}
	r.Gap = gapAround(writes, r.FaultAt)
	r.PreGap = longestGap(writes, 0, r.FaultAt)
	r.Acked, r.Failed, r.Indet = tally(writes)
	r.Errors = errorKinds(writes, 5)
	if !back {
		r.Gap = never
		r.Notes = append(r.Notes, fmt.Sprintf("writes not back within %s of the fault", opt.maxOutage))
	}
	if !restarted.IsZero() {
		if at := firstAckedSince(writes, w.since(restarted)); at >= 0 {
			r.Writable = at - w.since(restarted)
		}
	}

	healStart := time.Now()
	if sc.name == "writer" {
		if err := c.restart(ctx, writer); err != nil && r.Err == "" {
			r.Err = "restart " + writer + ": " + err.Error()
		}
	}
	if err := c.waitHealthy(ctx, opt.settle); err != nil {
		if r.Err == "" {
			r.Err = "after the fault: " + err.Error()
		}
		return r, writes
	}
	r.Recovered = time.Since(healStart)
	r.After, _ = c.writerNode(ctx)
	rows, differ, err := c.rows(ctx, run)
	if err != nil {
		if r.Err == "" {
			r.Err = "read the rows: " + err.Error()
		}
		return r, writes
	}
	r.lossReport = compare(writes, rows)
	r.Differ = differ
	if len(differ) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("the nodes' rows differ (%s)", strings.Join(differ, ", ")))
	}
	if len(r.FailedFound) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d writes taken as failed are there", len(r.FailedFound)))
	}
	return r, writes
}

// restartAll starts every node's daemons again, in a random order, 0-1 s
// apart.
func (c *cluster) restartAll(ctx context.Context) error {
	for i, n := range shuffled(nodes) {
		if i > 0 && !harness.Sleep(ctx, time.Duration(rand.Int64N(int64(time.Second)))) {
			return ctx.Err()
		}
		if err := c.restart(ctx, n); err != nil {
			return fmt.Errorf("restart %s: %w", n, err)
		}
	}
	return nil
}

func shuffled(list []string) []string {
	out := append([]string{}, list...)
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// waitBack waits until backAfter writes started after the fault (and after
// the restarts) were acknowledged, at most -max-outage. A peer that is
// not writable -person-after the restarts is recovered by hand.
func (c *cluster) waitBack(ctx context.Context, w *writer, fault time.Duration, restarted time.Time, r *runResult) bool {
	opt := c.b.opt
	from := fault
	if !restarted.IsZero() {
		from = w.since(restarted)
	}
	deadline := time.Now().Add(opt.maxOutage)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if w.ackedSince(from) >= backAfter {
			return true
		}
		if !restarted.IsZero() && c.t.kind == "guide" && !r.ByHand && time.Since(restarted) > opt.personAfter {
			r.ByHand, r.Person = true, time.Since(restarted)
			note, err := c.recoverByHand(ctx)
			if err != nil {
				r.Err = "recovery by hand: " + err.Error()
				return false
			}
			r.Notes = append(r.Notes, note)
		}
		harness.Sleep(ctx, 20*time.Millisecond)
	}
	return false
}

// saveRaw writes a run's result and its writes to the raw directory.
func (b *bench) saveRaw(label string, r runResult, writes []write) {
	data, err := json.Marshal(struct {
		runResult
		EveryNS time.Duration `json:"every_ns"`
		Writes  []write       `json:"writes"`
	}{r, b.opt.every, writes})
	if err != nil {
		return
	}
	_ = os.WriteFile(filepath.Join(b.rawDir, fmt.Sprintf("%s-r%d.json", label, r.Run)), data, 0o644)
}
