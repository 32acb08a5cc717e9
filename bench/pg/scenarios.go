package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// scenario is one kind of fault, always of the primary.
type scenario struct {
	name  string // as in -scenarios
	title string // as in the report
	desc  string
}

var allScenarios = []scenario{
	{name: "postmaster", title: "kill -9 of the primary's postmaster",
		desc: "SIGKILL to the pid in the primary's postmaster.pid; Patroni or haven's agent stays up and does what it does (restart in place or fail over)"},
	{name: "node", title: "loss of the primary node",
		desc: "the primary's switch port set down (netlab CutLink) and, at once, SIGKILL to every process in its namespace (Patroni or haven's agent, postgres and its children, etcd); once the writes are back and the writer has stopped, the link comes back, the node's daemons start again and it must rejoin before the next run"},
	{name: "switchover", title: "planned switchover",
		desc: "`haven pg switchover -c haven.yaml` or `patronictl -c patroni.yml switchover --force` (no candidate: the tool picks one), run on the client"},
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
	Run     int    `json:"run"`
	Primary string `json:"primary"` // before the fault
	// EtcdLeader is the node whose etcd member led just before the fault.
	EtcdLeader string `json:"etcd_leader"`
	After      string `json:"after"` // the primary once healthy again
	// Delay is the random part of the wait before the fault.
	Delay time.Duration `json:"delay_ns"`
	// FaultAt is the fault's offset from the writer's start.
	FaultAt time.Duration `json:"fault_at_ns"`
	// Gap is the write gap: gapAround; never when no write was
	// acknowledged after the fault within -max-outage.
	Gap time.Duration `json:"gap_ns"`
	// PreGap is the longest gap in the steady state before the fault.
	PreGap time.Duration `json:"pre_gap_ns"`
	// Acked, Failed and Indeterminate count the writes by outcome.
	Acked         int `json:"acked"`
	Failed        int `json:"failed"`
	Indeterminate int `json:"indeterminate"`
	lossReport
	// Recovered is how long the cluster took, after the writer stopped
	// (and the lost node was started again), to be healthy.
	Recovered time.Duration `json:"recovered_ns"`
	// Command is how long the switchover command took.
	Command    time.Duration `json:"command_ns,omitempty"`
	CommandOut string        `json:"command_output,omitempty"`
	Errors     []string      `json:"errors,omitempty"` // the writer's, by kind
	Notes      []string      `json:"notes,omitempty"`
	Err        string        `json:"error,omitempty"`
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
		primary, err := c.settle(ctx)
		if err != nil {
			if ctx.Err() == nil {
				out.runs = append(out.runs, runResult{Run: i, Err: "before the fault: " + err.Error()})
				harness.Logf("%s · %s · run %d/%d: %v", sc.name, t.name, i, b.opt.runs, err)
			}
			break
		}
		r, writes := c.faultRun(ctx, sc, primary, i)
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
	s := fmt.Sprintf("%s → %s (etcd leader %s), write gap %s, %d acknowledged, %d lost, %d indeterminate (%d found), %d failed; healthy again after %s",
		r.Primary, r.After, r.EtcdLeader, fmtGap(r.Gap), r.Acked, len(r.Lost), r.Indeterminate, r.IndeterminateFound, r.Failed, fmtDur(r.Recovered))
	if r.Command > 0 {
		s += fmt.Sprintf("; the command took %s", fmtDur(r.Command))
	}
	for _, n := range r.Notes {
		s += "; " + n
	}
	if r.Err != "" {
		s += "; error: " + r.Err
	}
	return s
}

// backAfter is how many writes started after the fault must be
// acknowledged before the writes count as back.
const backAfter = 5

// faultRun writes from -pre plus a random part of the target's period
// before the fault until -post after the writes came back (backAfter
// writes started after the fault were acknowledged), then heals, waits
// until the cluster is healthy and counts the rows.
func (c *cluster) faultRun(ctx context.Context, sc scenario, primary string, run int) (runResult, []write) {
	opt := c.b.opt
	r := runResult{Primary: primary, Delay: time.Duration(rand.Int64N(int64(c.t.period)))}
	// Bounded in time: the writer stops by itself at the latest then.
	wctx, stop := context.WithTimeout(ctx, opt.pre+r.Delay+opt.maxOutage+opt.post+time.Minute)
	defer stop()
	w, done := runWriter(wctx, run, opt.every, opt.connTimeout, opt.opTimeout, c.connect)
	if !harness.Sleep(ctx, opt.pre+r.Delay-100*time.Millisecond) {
		stop()
		<-done
		return r, nil
	}
	r.EtcdLeader = c.etcdLeader()
	if !harness.Sleep(ctx, time.Until(w.Started().Add(opt.pre+r.Delay))) {
		stop()
		<-done
		return r, nil
	}
	r.FaultAt = w.Since(time.Now())
	if w.AckedSince(0) == 0 {
		r.Err = "no write acknowledged before the fault: " + strings.Join(errorKinds(w.Snapshot(), 2), "; ")
		stop()
		<-done
		return r, w.Snapshot()
	}
	var err error
	switch sc.name {
	case "postmaster":
		err = c.killPostmaster(primary)
	case "node":
		err = c.loseNode(primary)
	case "switchover":
		r.Command, r.CommandOut, err = c.switchover(ctx)
	default:
		err = fmt.Errorf("unknown scenario %q", sc.name)
	}
	if err != nil {
		r.Err = "fault: " + err.Error()
	}
	// Wait for the writes to come back, then write -post more. They are
	// back after a few acknowledged writes that started after the fault:
	// the first may be the faulted primary's last (a backend finishes its
	// commit before it notices that its postmaster is gone).
	deadline := time.Now().Add(opt.maxOutage)
	back := false
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if w.AckedSince(r.FaultAt) >= backAfter {
			back = true
			break
		}
		harness.Sleep(ctx, 20*time.Millisecond)
	}
	if back {
		harness.Sleep(ctx, opt.post)
	}
	stop()
	<-done
	writes := w.Snapshot()
	if ctx.Err() != nil {
		return r, writes
	}
	r.Gap = gapAround(writes, r.FaultAt)
	r.PreGap = longestGap(writes, 0, r.FaultAt)
	r.Acked, r.Failed, r.Indeterminate = tally(writes)
	r.Errors = errorKinds(writes, 5)
	if !back {
		r.Gap = never
		r.Notes = append(r.Notes, fmt.Sprintf("writes not back within %s of the fault", opt.maxOutage))
	}

	healStart := time.Now()
	if sc.name == "node" {
		if err := c.restoreNode(ctx, primary); err != nil && r.Err == "" {
			r.Err = "restore " + primary + ": " + err.Error()
		}
	}
	after, err := c.settle(ctx)
	r.Recovered = time.Since(healStart)
	if err != nil {
		if r.Err == "" {
			r.Err = "after the fault: " + err.Error()
		}
		return r, writes
	}
	r.After = after
	rows, err := readRows(ctx, c.connect, run)
	if err != nil {
		if r.Err == "" {
			r.Err = "read the rows: " + err.Error()
		}
		return r, writes
	}
	r.lossReport = compare(writes, rows)
	if len(r.FailedFound) > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d writes taken as failed are on the primary", len(r.FailedFound)))
	}
	return r, writes
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
