package drill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
)

// Agents is how a drill reaches the deployment's agents (their admin API).
type Agents interface {
	// State returns the deployment's state now.
	State(ctx context.Context) (State, error)
	// Inject asks node's agent for a fault.
	Inject(ctx context.Context, node string, spec fault.Spec) (fault.Fault, error)
}

// Options tune a run.
type Options struct {
	// DSN reaches the database the way the application does: through a
	// router's primary port. Its user writes into Table, which the drill
	// makes if it may. URL is what the HTTP workload asks for: the
	// service's public name or address. A drill runs the workloads it is
	// given, at least one.
	DSN, URL string
	// FaultFor is the faults' duration (default 10s).
	FaultFor time.Duration
	// Warmup is how long the workloads run before the faults (default
	// 3s); Settle how long they go on once every one succeeded again and
	// the faults ended (default 3s); MaxOutage how long the drill waits
	// for them to succeed again before it calls the outage unbounded
	// (default 2m).
	Warmup, Settle, MaxOutage time.Duration
	// Every is the workloads' interval (default 20ms).
	Every time.Duration
}

// Table is the drill's table in the application's database: (run int,
// seq int, PRIMARY KEY (run, seq)); each run's rows are its own.
const Table = "haven_drill_writes"

func (o *Options) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&o.FaultFor, 10*time.Second)
	set(&o.Warmup, 3*time.Second)
	set(&o.Settle, 3*time.Second)
	set(&o.MaxOutage, 2*time.Minute)
	set(&o.Every, 20*time.Millisecond)
}

// Run plays scenario s against the deployment: the workloads (database
// writes through opt.DSN, HTTP requests for opt.URL) run, the scenario's
// faults are injected, the workloads go on until each succeeded again
// and the faults ended, and each workload's outcomes are judged against
// its part's objectives. log, when set, is told each step.
func Run(ctx context.Context, cfg *config.Config, agents Agents, s Scenario, opt Options, log func(string)) (Result, error) {
	opt.defaults()
	if log == nil {
		log = func(string) {}
	}
	r := Result{Scenario: s.Name, About: s.About, Started: time.Now()}
	if s.Faults == nil {
		return r, fmt.Errorf("drill %s: it injects no fault (the restore drill is RunRestore's)", s.Name)
	}
	if opt.DSN == "" && opt.URL == "" {
		return r, errNoWorkload
	}
	st, err := agents.State(ctx)
	if err != nil {
		return r, fmt.Errorf("drill: the deployment's state: %w", err)
	}
	targets, err := s.Faults(cfg, st, opt.FaultFor)
	if err != nil {
		return r, fmt.Errorf("drill %s: %w", s.Name, err)
	}
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	loads, done, err := startWorkloads(wctx, opt)
	if err != nil {
		return r, err
	}
	for _, w := range loads {
		log("workload: " + w.describe())
	}
	if err := Sleep(ctx, opt.Warmup); err != nil {
		return r, err
	}
	for _, w := range loads {
		if ok, _, _ := pgwrite.Tally(w.ops(r.Started)); ok == 0 {
			return r, fmt.Errorf("drill: %s: nothing succeeded before the faults: check the workload's address and rights", w.describe())
		}
	}
	faultAt := time.Since(r.Started)
	var until time.Time
	var begun time.Duration // when the last fault began
	for _, t := range targets {
		f, err := agents.Inject(ctx, t.Node, t.Spec)
		if err != nil {
			return r, fmt.Errorf("drill: inject %s on %s: %w", t.Spec.Kind, t.Node, err)
		}
		at := time.Since(r.Started)
		r.Faults = append(r.Faults, Injected{Node: t.Node, At: at, Fault: f})
		r.Events = append(r.Events, Event{At: at, What: fmt.Sprintf("fault %s on %s: %s", f.ID, t.Node, f.Detail)})
		log(fmt.Sprintf("fault %s on %s: %s, until %s", f.ID, t.Node, f.Detail, f.Until.Format(time.TimeOnly)))
		until = later(until, f.Until)
		begun = max(begun, began(at, f))
	}
	r.Events = append(r.Events, Event{At: until.Sub(r.Started), What: "the faults end"})
	watch := newWatcher(agents, st, r.Started)
	deadline := until.Add(opt.MaxOutage)
	if err := watch.until(ctx, log, deadline, func() bool { return recovered(loads, r.Started, begun, until) }); err != nil {
		return r, err
	}
	if err := watch.until(ctx, log, time.Now().Add(opt.Settle), func() bool { return false }); err != nil {
		return r, err
	}
	stop()
	waitAll(done)
	r.Length = time.Since(r.Started)
	r.Events = mergeEvents(r.Events, watch.events)
	for _, w := range loads {
		p, err := judgeLoad(ctx, cfg, s, w, r.Started, faultAt, begun)
		if err != nil {
			return r, err
		}
		r.Parts = append(r.Parts, p)
	}
	r.Met = true
	for _, p := range r.Parts {
		r.Met = r.Met && p.Met
		for _, why := range p.Reasons {
			r.Reasons = append(r.Reasons, p.Part+": "+why)
		}
	}
	return r, nil
}

// startWorkloads starts the workloads opt gives.
func startWorkloads(ctx context.Context, opt Options) ([]workload, []<-chan struct{}, error) {
	var loads []workload
	var done []<-chan struct{}
	if opt.DSN != "" {
		w, d, err := startDB(ctx, opt.DSN, opt.Every)
		if err != nil {
			return nil, nil, err
		}
		loads, done = append(loads, w), append(done, d)
	}
	if opt.URL != "" {
		w, d, err := startHTTP(ctx, opt.URL, opt.Every)
		if err != nil {
			return nil, nil, err
		}
		loads, done = append(loads, w), append(done, d)
	}
	return loads, done, nil
}

var errNoWorkload = errors.New("drill: no workload: give the database as the application reaches it (--dsn, drills.dsn_file), the service's URL (--url, drills.url), or both")

// began is when fault f, answered at offset at, began: some begin a
// moment after the agent's answer (a cut, a pause of the agent), and a
// success in that moment is no recovery. It reads the delay from the
// fault's own times, on the agent's clock, not across two clocks.
func began(at time.Duration, f fault.Fault) time.Duration {
	return at + max(0, f.Until.Sub(f.Started)-f.Spec.Duration)
}

// recovered says whether every workload succeeded since the faults began
// and the faults have ended.
func recovered(loads []workload, t0 time.Time, faultAt time.Duration, until time.Time) bool {
	if time.Now().Before(until) {
		return false
	}
	for _, w := range loads {
		if !slices.ContainsFunc(w.ops(t0), func(o pgwrite.Write) bool { return o.Outcome == pgwrite.Acked && o.End > faultAt }) {
			return false
		}
	}
	return true
}

// judgeLoad measures one workload's outage and loss and judges them
// against its part's objectives.
func judgeLoad(ctx context.Context, cfg *config.Config, s Scenario, w workload, t0 time.Time, faultAt, begun time.Duration) (PartResult, error) {
	ops := w.ops(t0)
	p := PartResult{Part: w.part(), Workload: w.describe(), Outcomes: buckets(ops)}
	if s.Part == config.PartRegion {
		p.Part = config.PartRegion
	}
	p.OK, p.Failed, p.Indeterminate = pgwrite.Tally(ops)
	p.RTO = pgwrite.GapAround(ops, faultAt)
	if p.RTO == pgwrite.Never {
		p.Unbounded, p.RTO = true, ops[len(ops)-1].End-faultAt
	} else {
		lost, err := w.lost(ctx)
		if err != nil {
			return p, err
		}
		p.Lost = lost
		p.RPO = dataLost(ops, lost, begun)
	}
	p.judge(cfg)
	return p, nil
}

// buckets counts the operations by BucketWidth of their end.
func buckets(ops []pgwrite.Write) []Bucket {
	var out []Bucket
	for _, o := range ops {
		at := o.End.Truncate(BucketWidth)
		if n := len(out); n == 0 || out[n-1].At != at {
			out = append(out, Bucket{At: at})
		}
		if o.Outcome == pgwrite.Acked {
			out[len(out)-1].OK++
		} else {
			out[len(out)-1].Failed++
		}
	}
	return out
}

// dataLost is the data the lost writes span, as time: from the oldest
// lost acknowledgement to when the fault began.
func dataLost(writes []pgwrite.Write, lost []int, faultAt time.Duration) time.Duration {
	var oldest time.Duration = -1
	for _, w := range writes {
		if slices.Contains(lost, w.Seq) && (oldest < 0 || w.End < oldest) {
			oldest = w.End
		}
	}
	if oldest < 0 || oldest > faultAt {
		return 0
	}
	return faultAt - oldest
}

// judge compares what was observed with the part's objectives and with
// what the design can promise: an objective the design cannot promise is
// not kept by a run that happened to keep it, since the next loss may be
// the one it does not bound.
func (p *PartResult) judge(cfg *config.Config) {
	p.JudgeMeasured(cfg)
	for _, f := range Assess(cfg).Missed {
		if f.Part == p.Part {
			p.Met = false
			p.Reasons = append(p.Reasons, "the design cannot promise it: "+f.String())
		}
	}
}

// JudgeMeasured compares what was observed with the part's objectives,
// and only that.
func (p *PartResult) JudgeMeasured(cfg *config.Config) {
	p.ObjectiveRTO, p.ObjectiveRPO = cfg.Objectives.For(p.Part)
	p.Met = true
	rto := config.Duration(p.RTO.Round(time.Millisecond))
	if o := p.ObjectiveRTO; o != nil {
		switch {
		case p.Unbounded:
			p.Met = false
			p.Reasons = append(p.Reasons, fmt.Sprintf("RTO %s: %s never succeeded again within %s of the fault", config.Duration(*o), p.Workload, rto))
		case p.RTO > *o:
			p.Met = false
			p.Reasons = append(p.Reasons, fmt.Sprintf("RTO %s: %s stopped for %s", config.Duration(*o), p.Workload, rto))
		}
	}
	if o := p.ObjectiveRPO; o != nil && len(p.Lost) > 0 && p.RPO >= *o {
		p.Met = false
		p.Reasons = append(p.Reasons, fmt.Sprintf("RPO %s: %d acknowledged writes lost, spanning %s before the fault", config.Duration(*o), len(p.Lost), config.Duration(p.RPO.Round(time.Millisecond))))
	}
}

// Summary is the result as haven drill run prints it.
func (r Result) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "drill %s: %s\n", r.Scenario, verdict(r.Met))
	for _, f := range r.Faults {
		fmt.Fprintf(&b, "  fault at %s: %s on %s\n", seconds(f.At), f.Fault.Detail, f.Node)
	}
	for _, e := range r.Events {
		if !strings.HasPrefix(e.What, "fault ") {
			fmt.Fprintf(&b, "  at %s: %s\n", seconds(e.At), e.What)
		}
	}
	for _, p := range r.Parts {
		fmt.Fprintf(&b, "  %s (%s): %s\n", p.Part, p.Workload, verdict(p.Met))
		rto := config.Duration(p.RTO.Round(time.Millisecond)).String()
		if p.Unbounded {
			rto = "more than " + rto + " (never succeeded again)"
		}
		fmt.Fprintf(&b, "    RTO observed: %s (objective %s)\n", rto, orNone(p.ObjectiveRTO))
		if p.LosesWrites() {
			fmt.Fprintf(&b, "    RPO observed: %d acknowledged writes lost of %d, %s of data (objective %s)\n", len(p.Lost), p.OK, config.Duration(p.RPO.Round(time.Millisecond)), orNone(p.ObjectiveRPO))
		}
		fmt.Fprintf(&b, "    operations: %d succeeded, %d failed, %d unknown\n", p.OK, p.Failed, p.Indeterminate)
		for _, why := range p.Reasons {
			fmt.Fprintf(&b, "    not met: %s\n", why)
		}
	}
	return b.String()
}

func verdict(met bool) string {
	if met {
		return "MET"
	}
	return "NOT MET"
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func orNone(d *time.Duration) string {
	if d == nil {
		return "none"
	}
	return config.Duration(*d).String()
}

// Sleep waits d, or until ctx ends (its error).
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
