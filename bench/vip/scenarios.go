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
	"github.com/haven-ha/haven/internal/drill"
	"github.com/haven-ha/haven/internal/netlab"
)

// scenario is one kind of fault.
type scenario struct {
	name  string // as in -scenarios
	title string // as in the report
	desc  string
	// failover says whether the fault should move the address (so that a
	// holder keeping it is worth a note).
	failover bool
	// down says that the fault stops a daemon, which is started again
	// after -down rather than -hold.
	down bool
}

// hold is how long the fault lasts.
func (sc scenario) hold(opt options) time.Duration {
	if sc.down {
		return opt.down
	}
	return opt.hold
}

var allScenarios = []scenario{
	{name: "kill", title: "kill -9 of the holder's daemon", failover: true, down: true,
		desc: "SIGKILL to the holder's daemon and its whole process group (keepalived's parent and VRRP child; haven's agent, with its embedded etcd member); it is started again after DOWN"},
	{name: "stop", title: "SIGSTOP of the holder's daemon", failover: true,
		desc: "SIGSTOP to the holder daemon's process group, SIGCONT after HOLD"},
	{name: "linkcut", title: "link loss of the holder", failover: true,
		desc: "the holder's switch port set down (netlab CutLink) for HOLD, then up"},
	{name: "partition", title: "holder cut off from the other nodes (VRRP / etcd traffic blocked)", failover: true,
		desc: "every frame between the holder and each other node dropped in the switch (netlab Partition) for HOLD; the client still reaches every node"},
	{name: "handover", title: "planned handover", failover: true, down: true,
		desc: "haven: `haven vip move --to n2` run in the client's namespace, and `haven vip move --to n1` after DOWN (a moved address stays where it was moved); keepalived has no such command: SIGTERM to the holder's keepalived (it sends a priority 0 advert and removes the address), started again after DOWN (it takes the address back: preempt)"},
	{name: "loss", title: "packet loss between the nodes, no fault",
		desc: "PCT random loss (netlab Loss) on every path between two nodes, both ways, for LOSSD; the client's paths are clean. Any holder change is a false failover"},
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

// runCell runs one target through one scenario on a fresh network.
func (b *bench) runCell(ctx context.Context, t target, sc scenario) cell {
	out := cell{t: t, sc: sc}
	label := sc.name + "-" + t.name
	c, err := b.startCluster(ctx, t, label)
	if err != nil {
		out.setup = "failed to start: " + err.Error()
		harness.Logf("%s · %s: %s", sc.name, t.name, out.setup)
		return out
	}
	defer c.close()
	runs := b.opt.runs
	if sc.name == "loss" {
		runs = b.opt.lossRuns
	}
	for i := 1; i <= runs && ctx.Err() == nil; i++ {
		timeout := time.Minute
		if i == 1 {
			timeout = 2 * time.Minute // etcd's first election, keepalived's first master
		}
		holder, err := c.settle(ctx, timeout)
		if err != nil {
			if ctx.Err() == nil {
				out.runs = append(out.runs, runResult{Run: i, Err: err.Error()})
				harness.Logf("%s · %s · run %d/%d: %v", sc.name, t.name, i, runs, err)
			}
			break
		}
		var r runResult
		var pr probeRun
		if sc.name == "loss" {
			r, pr = c.lossRun(ctx, holder)
		} else {
			r, pr = c.faultRun(ctx, sc, holder)
		}
		if ctx.Err() != nil {
			break
		}
		r.Run = i
		out.runs = append(out.runs, r)
		b.saveRaw(label, r, pr)
		harness.Logf("%s · %s · run %d/%d: %s", sc.name, t.name, i, runs, r.line())
		if r.Err != "" {
			// Whatever the fault left behind must not leak into the next
			// run.
			if err := c.net.HealAll(); err != nil {
				harness.Logf("warning: %v", err)
			}
		}
	}
	return out
}

func (r runResult) line() string {
	if r.Err != "" {
		return "error: " + r.Err
	}
	s := fmt.Sprintf("holder %s, outage %s, unanswered during the fault %s in %d gaps, longest gap %s, two holders %s (%d probes), holder changes %d; before the fault %d gaps",
		r.Holder, harness.Gap(r.Outage), harness.Dur(r.Unanswered), r.FaultGaps, harness.Dur(r.MaxGap), harness.Dur(r.TwoHolder), r.TwoHolderProbes, r.Changes, r.PreGaps)
	for _, n := range r.Notes {
		s += "; " + n
	}
	return s
}

// faultRun probes from a second (plus a random part of one heartbeat
// period) before the fault until -post after its heal, and measures what
// the client saw.
func (c *cluster) faultRun(ctx context.Context, sc scenario, holder string) (runResult, probeRun) {
	r := runResult{Holder: holder}
	opt := c.b.opt
	next := best(holder)
	jitter := time.Duration(rand.Int64N(int64(c.t.period)))
	pre := time.Second + jitter
	hold := sc.hold(opt)
	total := pre + hold + opt.post
	// A planned handover with haven blocks until the move is done (at most
	// 10s): leave room after it.
	if sc.name == "handover" && c.t.kind == "haven" {
		total += time.Second
	}
	probes, done := c.probeAsync(ctx, total)
	if !harness.Sleep(ctx, pre) {
		<-done
		return r, probeRun{}
	}
	faultAt := time.Now()
	heal, err := c.apply(ctx, sc, holder, next, &r)
	if err != nil {
		r.Err = err.Error()
	}
	harness.Sleep(ctx, time.Until(faultAt.Add(hold)))
	healAt := time.Now()
	if heal != nil {
		if err := heal(); err != nil && r.Err == "" {
			r.Err = "heal: " + err.Error()
		}
	}
	<-done
	o := *probes
	if o.err != nil {
		return runResult{Holder: holder, Err: "probe: " + o.err.Error()}, probeRun{}
	}
	pr, rep := measureRun(&r, opt.probeEvery, o, holder, faultAt, healAt)
	r.Outage = rep.OutageAfter(faultAt)
	// What the nodes did at the end of the fault, as the client saw it.
	late := healAt.Add(-200 * time.Millisecond)
	var others []string
	for _, n := range pr.answeredBy(late, healAt) {
		if n != holder {
			others = append(others, n)
		}
	}
	r.After = pr.lastAlone(healAt)
	if len(others) > 0 {
		r.After = strings.Join(others, "+")
	}
	switch {
	case sc.name != "linkcut" && pr.answered(holder, late, healAt) && len(others) > 0:
		r.Notes = append(r.Notes, "the faulted node still answered at the end of the fault, beside the new holder")
	case sc.failover && sc.name != "handover" && len(others) == 0:
		r.Notes = append(r.Notes, "no failover before the heal")
	}
	if sc.name == "handover" && r.After != "" && r.After != next {
		r.Notes = append(r.Notes, fmt.Sprintf("asked to move to %s, but %s held it at the end of the hold", next, r.After))
	}
	return r, pr
}

// apply injects the fault of sc into holder and returns what heals it.
func (c *cluster) apply(ctx context.Context, sc scenario, holder, next string, r *runResult) (heal func() error, err error) {
	h := c.net.Host(holder)
	var others []*netlab.Host
	for _, n := range nodes {
		if n != holder {
			others = append(others, c.net.Host(n))
		}
	}
	switch sc.name {
	case "kill":
		return func() error { return c.restart(holder) }, c.kill(holder)
	case "stop":
		return func() error { return c.thaw(holder) }, c.freeze(holder)
	case "linkcut":
		return func() error { return c.net.RestoreLink(h) }, c.net.CutLink(h)
	case "partition":
		heal = func() error {
			var errs []error
			for _, o := range others {
				errs = append(errs, c.net.Heal(h, o))
			}
			return errors.Join(errs...)
		}
		for _, o := range others {
			if err := c.net.Partition(h, o); err != nil {
				return heal, err
			}
		}
		return heal, nil
	case "handover":
		r.Command, r.CommandOut, err = c.planned(ctx, holder, next)
		return func() error { return c.afterPlanned(ctx, holder) }, err
	}
	return nil, fmt.Errorf("unknown scenario %q", sc.name)
}

// lossRun probes for -loss-d with -loss-pct loss between every two nodes.
func (c *cluster) lossRun(ctx context.Context, holder string) (runResult, probeRun) {
	r := runResult{Holder: holder}
	opt := c.b.opt
	probes, done := c.probeAsync(ctx, time.Second+opt.lossDur+2*time.Second)
	if !harness.Sleep(ctx, time.Second) {
		<-done
		return r, probeRun{}
	}
	faultAt := time.Now()
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			if err := c.net.Loss(c.net.Host(a), c.net.Host(b), opt.lossPct); err != nil && r.Err == "" {
				r.Err = err.Error()
			}
		}
	}
	harness.Sleep(ctx, opt.lossDur)
	healAt := time.Now()
	if err := c.net.HealAll(); err != nil && r.Err == "" {
		r.Err = err.Error()
	}
	<-done
	o := *probes
	if o.err != nil {
		return runResult{Holder: holder, Err: "probe: " + o.err.Error()}, probeRun{}
	}
	pr, _ := measureRun(&r, opt.probeEvery, o, holder, faultAt, healAt)
	r.Outage = r.MaxGap // no fault: the longest gap is the outage
	r.After = pr.lastAlone(healAt)
	return r, pr
}

// measureRun fills r with what the probes o saw around a fault from
// faultAt to healAt, all but r.Outage, which depends on the kind of run.
func measureRun(r *runResult, every time.Duration, o probeOut, holder string, faultAt, healAt time.Time) (probeRun, drill.Report) {
	pr := newProbeRun(every, o.sent, o.answers)
	rep := drill.Analyze(o.sent, o.answers)
	r.FaultAt, r.HealAt = faultAt.Sub(o.sent[0]), healAt.Sub(o.sent[0])
	r.MaxGap = rep.MaxGap()
	r.Unanswered = pr.unanswered(faultAt, healAt)
	r.FaultGaps, _ = pr.gaps(faultAt, healAt)
	r.PreUnanswered = pr.unanswered(o.sent[0], faultAt)
	r.PreGaps, r.PreLongest = pr.gaps(o.sent[0], faultAt)
	r.TwoHolderProbes, r.TwoHolder = pr.twoHolders()
	r.TwoHolderWho = pr.firstDouble()
	r.Changes = pr.holderChanges()
	r.Failovers = pr.failovers(holder)
	return pr, rep
}

type probeOut struct {
	sent    []time.Time
	answers []drill.Answer
	err     error
}

// probeAsync probes for d in the background; the result is in *out once
// done is closed.
func (c *cluster) probeAsync(ctx context.Context, d time.Duration) (*probeOut, <-chan struct{}) {
	out := &probeOut{}
	done := make(chan struct{})
	count := int(d / c.b.opt.probeEvery)
	// Bounded in count, and in time should the ticker fall far behind.
	pctx, cancel := context.WithTimeout(ctx, 2*d+10*time.Second)
	go func() {
		defer close(done)
		defer cancel()
		out.sent, out.answers, out.err = c.probeRaw(pctx, count)
		if out.err == nil && len(out.sent) == 0 {
			out.err = errors.New("no probe sent")
		}
	}()
	return out, done
}

// saveRaw writes a run's result and its probe table to the raw directory.
func (b *bench) saveRaw(label string, r runResult, pr probeRun) {
	data, err := json.Marshal(struct {
		runResult
		ProbeEveryNS time.Duration `json:"probe_every_ns"`
		Probes       []string      `json:"probes"`
	}{r, b.opt.probeEvery, pr.cells()})
	if err != nil {
		return
	}
	_ = os.WriteFile(filepath.Join(b.rawDir, fmt.Sprintf("%s-r%d.json", label, r.Run)), data, 0o644)
}
