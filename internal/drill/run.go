package drill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
)

// Agents is how a drill reaches the deployment's agents (their admin API).
type Agents interface {
	// Primary returns the database's primary now.
	Primary(ctx context.Context) (string, error)
	// Inject asks node's agent for a fault.
	Inject(ctx context.Context, node string, spec fault.Spec) (fault.Fault, error)
}

// Scenario is a drill: the fault it injects, on which node, and the part
// whose objectives it judges.
type Scenario struct {
	Name, Part, About string
	// Fault returns the node to fault and the fault, given the primary.
	Fault func(cfg *config.Config, primary string, d time.Duration) (string, fault.Spec)
}

// Scenarios are the built-in drills.
var Scenarios = []Scenario{
	{Name: "primary-pause", Part: config.PartDatabase, About: "the primary's postgres frozen (SIGSTOP) for the fault's duration",
		Fault: func(_ *config.Config, p string, d time.Duration) (string, fault.Spec) {
			return p, fault.Spec{Kind: fault.Pause, Target: "postgres", Duration: d}
		}},
	{Name: "primary-kill", Part: config.PartDatabase, About: "the primary's postgres killed (SIGKILL)",
		Fault: func(_ *config.Config, p string, d time.Duration) (string, fault.Spec) {
			return p, fault.Spec{Kind: fault.Kill, Target: "postgres", Duration: d}
		}},
	{Name: "primary-partition", Part: config.PartDatabase, About: "the primary's node cut off from every other node for the fault's duration",
		Fault: func(cfg *config.Config, p string, d time.Duration) (string, fault.Spec) {
			return p, fault.Spec{Kind: fault.Drop, Peers: slices.DeleteFunc(cfg.NodeNames(), func(n string) bool { return n == p }), Duration: d}
		}},
}

// ScenarioNamed returns the built-in scenario name.
func ScenarioNamed(name string) (Scenario, error) {
	for _, s := range Scenarios {
		if s.Name == name {
			return s, nil
		}
	}
	var names []string
	for _, s := range Scenarios {
		names = append(names, s.Name)
	}
	return Scenario{}, fmt.Errorf("drill: no scenario %q: the built-in ones are %s", name, strings.Join(names, ", "))
}

// Options tune a run.
type Options struct {
	// DSN reaches the database the way the application does: through a
	// router's primary port. Its user writes into Table, which the drill
	// makes if it may.
	DSN string
	// FaultFor is the fault's duration (default 10s).
	FaultFor time.Duration
	// Warmup is how long the writer runs before the fault (default 3s);
	// Settle how long it goes on once writes came back and the fault
	// ended (default 3s); MaxOutage how long the drill waits for writes to
	// come back before it calls the outage unbounded (default 2m).
	Warmup, Settle, MaxOutage time.Duration
	// Every is the writer's interval (default 20ms).
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

// Result is what a drill observed and its verdict.
type Result struct {
	Scenario string      `json:"scenario"`
	Part     string      `json:"part"`
	Node     string      `json:"node"`
	Fault    fault.Fault `json:"fault"`
	// Acked, Failed and Indeterminate count the writer's writes.
	Acked         int `json:"acked"`
	Failed        int `json:"failed"`
	Indeterminate int `json:"indeterminate"`
	// Lost are acknowledged writes missing afterwards.
	Lost []int `json:"lost,omitempty"`
	// RTO is the longest time without an acknowledged write from the
	// fault on (Unbounded: none came back within MaxOutage); RPO the data
	// lost, as time: from the oldest lost acknowledgement to the fault.
	RTO       time.Duration `json:"rto_ns"`
	Unbounded bool          `json:"unbounded,omitempty"`
	RPO       time.Duration `json:"rpo_ns"`
	// ObjectiveRTO and ObjectiveRPO are the part's objectives (nil: none);
	// Met whether the drill kept them, and Reasons why not.
	ObjectiveRTO *time.Duration `json:"objective_rto_ns,omitempty"`
	ObjectiveRPO *time.Duration `json:"objective_rpo_ns,omitempty"`
	Met          bool           `json:"met"`
	Reasons      []string       `json:"reasons,omitempty"`
}

// Run plays scenario s against the deployment: a writer commits through
// opt.DSN, the fault is injected on the node s picks, the writer goes on
// until writes came back and the fault ended, and the history is checked
// against the rows the primary has. log, when set, is told each step.
func Run(ctx context.Context, cfg *config.Config, agents Agents, s Scenario, opt Options, log func(string)) (Result, error) {
	opt.defaults()
	if log == nil {
		log = func(string) {}
	}
	r := Result{Scenario: s.Name, Part: s.Part}
	connect := func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, opt.DSN) }
	if err := makeTable(ctx, connect); err != nil {
		return r, err
	}
	primary, err := agents.Primary(ctx)
	if err != nil {
		return r, fmt.Errorf("drill: find the primary: %w", err)
	}
	run := int(time.Now().Unix() % 1_000_000_000)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	w, done := pgwrite.RunOn(wctx, Table, run, opt.Every, time.Second, 2*time.Second, connect)
	log(fmt.Sprintf("writing through the router (%s every %s); the primary is %s", Table, opt.Every, primary))
	if err := sleep(ctx, opt.Warmup); err != nil {
		return r, err
	}
	if w.AckedSince(0) == 0 {
		return r, errors.New("drill: no write was acknowledged before the fault: check --dsn and the user's rights on " + Table)
	}
	node, spec := s.Fault(cfg, primary, opt.FaultFor)
	faultAt := w.Since(time.Now())
	f, err := agents.Inject(ctx, node, spec)
	if err != nil {
		return r, fmt.Errorf("drill: inject the fault on %s: %w", node, err)
	}
	r.Node, r.Fault = node, f
	log(fmt.Sprintf("fault %s on %s: %s, until %s", f.ID, node, f.Detail, f.Until.Format(time.TimeOnly)))
	deadline := time.Now().Add(opt.FaultFor + opt.MaxOutage)
	for {
		back := w.AckedSince(faultAt) > 0 && time.Now().After(f.Until)
		if back || time.Now().After(deadline) {
			break
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return r, err
		}
	}
	if err := sleep(ctx, opt.Settle); err != nil {
		return r, err
	}
	stop()
	<-done
	writes := w.Snapshot()
	r.Acked, r.Failed, r.Indeterminate = pgwrite.Tally(writes)
	r.RTO = pgwrite.GapAround(writes, faultAt)
	if r.RTO == pgwrite.Never {
		r.Unbounded, r.RTO = true, w.Since(time.Now())-faultAt
	} else {
		rows, err := pgwrite.ReadRowsOf(ctx, connect, Table, run)
		if err != nil {
			return r, fmt.Errorf("drill: read back the writes: %w", err)
		}
		r.Lost = pgwrite.Compare(writes, rows).Lost
		r.RPO = dataLost(writes, r.Lost, faultAt)
	}
	r.judge(cfg)
	return r, nil
}

// makeTable makes the drill's table if it is missing.
func makeTable(ctx context.Context, connect pgwrite.Connector) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := connect(cctx)
	if err != nil {
		return fmt.Errorf("drill: connect to the database through --dsn (check the router's address and port, the user and its password): %w", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(cctx, "CREATE TABLE IF NOT EXISTS "+Table+" (run int, seq int, PRIMARY KEY (run, seq))"); err != nil {
		return fmt.Errorf("drill: make the table %s (or make it yourself, with INSERT and SELECT for the drill's user): %w", Table, err)
	}
	return nil
}

// dataLost is the data the lost writes span, as time: from the oldest
// lost acknowledgement to the fault.
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

// judge compares what was observed with the part's objectives.
func (r *Result) judge(cfg *config.Config) {
	r.ObjectiveRTO, r.ObjectiveRPO = cfg.Objectives.For(r.Part)
	r.Met = true
	if o := r.ObjectiveRTO; o != nil {
		switch {
		case r.Unbounded:
			r.Met = false
			r.Reasons = append(r.Reasons, fmt.Sprintf("RTO %s: no write was acknowledged again within %s of the fault", config.Duration(*o), config.Duration(r.RTO.Round(time.Millisecond))))
		case r.RTO > *o:
			r.Met = false
			r.Reasons = append(r.Reasons, fmt.Sprintf("RTO %s: writes stopped for %s", config.Duration(*o), config.Duration(r.RTO.Round(time.Millisecond))))
		}
	}
	if o := r.ObjectiveRPO; o != nil && len(r.Lost) > 0 && r.RPO >= *o {
		r.Met = false
		r.Reasons = append(r.Reasons, fmt.Sprintf("RPO %s: %d acknowledged writes lost, spanning %s before the fault", config.Duration(*o), len(r.Lost), config.Duration(r.RPO.Round(time.Millisecond))))
	}
}

// Summary is the result as haven drill run prints it.
func (r Result) Summary() string {
	var b strings.Builder
	verdict := "MET"
	if !r.Met {
		verdict = "NOT MET"
	}
	fmt.Fprintf(&b, "drill %s (%s): %s\n", r.Scenario, r.Part, verdict)
	fmt.Fprintf(&b, "  fault: %s on %s\n", r.Fault.Detail, r.Node)
	rto := config.Duration(r.RTO.Round(time.Millisecond)).String()
	if r.Unbounded {
		rto = "more than " + rto + " (writes never came back)"
	}
	fmt.Fprintf(&b, "  RTO observed: %s (objective %s)\n", rto, orNone(r.ObjectiveRTO))
	fmt.Fprintf(&b, "  RPO observed: %d acknowledged writes lost of %d, %s of data (objective %s)\n", len(r.Lost), r.Acked, config.Duration(r.RPO.Round(time.Millisecond)), orNone(r.ObjectiveRPO))
	fmt.Fprintf(&b, "  writes: %d acknowledged, %d failed, %d unknown\n", r.Acked, r.Failed, r.Indeterminate)
	for _, why := range r.Reasons {
		fmt.Fprintf(&b, "  not met: %s\n", why)
	}
	return b.String()
}

func orNone(d *time.Duration) string {
	if d == nil {
		return "none"
	}
	return config.Duration(*d).String()
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
