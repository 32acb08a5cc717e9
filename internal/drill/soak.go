package drill

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill/fault"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
)

// SoakOptions tune a soak: many short faults of every class at random
// moments under one long workload.
type SoakOptions struct {
	DSN, URL string
	// For is how long the soak injects faults (default 1h); Faults, when
	// set, stops it after that many.
	For    time.Duration
	Faults int
	// Kinds are the classes of fault to draw from (default: kill, pause,
	// drop and loss of postgres and the nodes, and the pause of an agent).
	Kinds []fault.Kind
	// FaultMin and FaultMax bound a fault's duration (1s, 5s); GapMin and
	// GapMax the quiet time between recovery and the next fault (1s, 5s).
	FaultMin, FaultMax, GapMin, GapMax time.Duration
	// Heal bounds the wait for the database to be whole again (a primary
	// and every replica streaming) after a fault (default 2m): a soak
	// that does not heal stops and says so.
	Heal time.Duration
	// Seed makes the draw repeatable (0: from the clock).
	Seed uint64
	// Every is the workloads' interval (default 20ms).
	Every time.Duration
}

func (o *SoakOptions) defaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&o.For, time.Hour)
	set(&o.FaultMin, time.Second)
	set(&o.FaultMax, 5*time.Second)
	set(&o.GapMin, time.Second)
	set(&o.GapMax, 5*time.Second)
	set(&o.Heal, 2*time.Minute)
	set(&o.Every, 20*time.Millisecond)
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano())
	}
	if len(o.Kinds) == 0 {
		o.Kinds = []fault.Kind{fault.Kill, fault.Pause, fault.Drop, fault.Loss, agentPause}
	}
}

// soakKinds are the classes a soak can draw.
var soakKinds = []fault.Kind{fault.Kill, fault.Pause, fault.Drop, fault.Loss, agentPause, fault.Fill}

func joinKinds(ks []fault.Kind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ", ")
}

// maxRefusedFills is how many fills in a row the agents may refuse (the
// disk already fuller than drawn) and the soak draw again; the next one
// refused stops it: no disk has room for a fill.
const maxRefusedFills = 5

// agentPause is the soak's name for a pause of a node's agent and every
// process under it (the node frozen), told apart from a pause of postgres.
const agentPause fault.Kind = "pause-agent"

// SoakFault is one fault of a soak and the outage each workload saw
// around it.
type SoakFault struct {
	Injected
	// Class is the fault's class: its kind, and for a kill or pause its
	// target ("pause agent").
	Class string `json:"class"`
	// Outages are each workload's longest time without success from the
	// fault to the next, by part; Unbounded lists the parts that did not
	// succeed again before the soak gave up.
	Outages   map[string]time.Duration `json:"outages_ns"`
	Unbounded []string                 `json:"unbounded,omitempty"`
}

// SoakResult is what a soak observed.
type SoakResult struct {
	Started time.Time     `json:"started"`
	Length  time.Duration `json:"length_ns"`
	Seed    uint64        `json:"seed"`
	Faults  []SoakFault   `json:"faults"`
	// ByKind counts the faults by class.
	ByKind map[string]int `json:"by_kind"`
	// Parts are the workloads' totals, judged: RTO is the longest outage
	// of any fault, Lost every acknowledged write missing at the end.
	Parts   []PartResult `json:"parts"`
	Events  []Event      `json:"events"`
	Met     bool         `json:"met"`
	Reasons []string     `json:"reasons,omitempty"`
	// Skipped counts the fills an agent refused (its disk was already
	// fuller than the level drawn); Stopped says why the soak ended
	// before its time, if it did.
	Skipped int    `json:"skipped,omitempty"`
	Stopped string `json:"stopped,omitempty"`
}

// Soak injects random faults into the deployment for opt.For under the
// workloads, waiting after each until the database is whole again, and
// judges every outage against the objectives and the whole history for
// lost writes.
func Soak(ctx context.Context, cfg *config.Config, agents Agents, opt SoakOptions, log func(string)) (SoakResult, error) {
	opt.defaults()
	if log == nil {
		log = func(string) {}
	}
	r := SoakResult{Started: time.Now(), Seed: opt.Seed, ByKind: map[string]int{}}
	for _, k := range opt.Kinds {
		if !slices.Contains(soakKinds, k) {
			return r, fmt.Errorf("drill soak: no class of fault %q; the soak draws from %s", k, joinKinds(soakKinds))
		}
	}
	if cfg.Database == nil {
		return r, errors.New("drill soak: haven.yaml has no database: the soak's faults aim at it")
	}
	if opt.DSN == "" && opt.URL == "" {
		return r, errNoWorkload
	}
	rng := rand.New(rand.NewPCG(opt.Seed, opt.Seed^0x9e3779b97f4a7c15))
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	loads, done, err := startWorkloads(wctx, Options{DSN: opt.DSN, URL: opt.URL, Every: opt.Every})
	if err != nil {
		return r, err
	}
	st, err := heal(ctx, agents, cfg, opt.Heal)
	if err != nil {
		return r, err
	}
	watch := newWatcher(agents, st, r.Started)
	end := r.Started.Add(opt.For)
	refusedFills := 0
	for time.Now().Before(end) && (opt.Faults == 0 || len(r.Faults) < opt.Faults) {
		t := drawFault(rng, cfg, st, opt)
		f, err := agents.Inject(ctx, t.Node, t.Spec)
		if errors.Is(err, fault.ErrAlreadyFull) && refusedFills < maxRefusedFills {
			// The soak cannot see how full a node's disk is (WAL grows
			// with every timeline switch): a fill the agent refuses is
			// drawn again as another fault, not the soak's end.
			refusedFills++
			r.Skipped++
			r.Events = append(r.Events, Event{At: time.Since(r.Started), What: fmt.Sprintf("fill on %s refused, drawn again: %v", t.Node, err)})
			log(fmt.Sprintf("%s fill on %s refused, drawn again: %v", seconds(time.Since(r.Started)), t.Node, err))
			continue
		}
		if err != nil {
			r.Stopped = fmt.Sprintf("inject %s on %s: %v", t.Spec.Kind, t.Node, err)
			break
		}
		at := time.Since(r.Started)
		kind := string(t.Spec.Kind)
		if t.Spec.Kind == fault.Pause || t.Spec.Kind == fault.Kill {
			kind += " " + t.Spec.Target
		}
		refusedFills = 0
		r.ByKind[kind]++
		r.Faults = append(r.Faults, SoakFault{Injected: Injected{Node: t.Node, At: at, Fault: f}, Class: kind})
		r.Events = append(r.Events, Event{At: at, What: fmt.Sprintf("fault %d: %s on %s", len(r.Faults), f.Detail, t.Node)})
		log(fmt.Sprintf("%s fault %d: %s on %s for %s", seconds(at), len(r.Faults), kind, t.Node, t.Spec.Duration))
		if err := Sleep(ctx, time.Until(f.Until)); err != nil {
			return r, err
		}
		if st, err = heal(ctx, agents, cfg, opt.Heal); err != nil {
			r.Stopped = err.Error()
			break
		}
		if err := watch.until(ctx, log, time.Now().Add(opt.Heal), func() bool { return recovered(loads, r.Started, began(at, f), f.Until) }); err != nil {
			return r, err
		}
		watch.look(ctx, log)
		if err := Sleep(ctx, between(rng, opt.GapMin, opt.GapMax)); err != nil {
			return r, err
		}
	}
	stop()
	waitAll(done)
	r.Length = time.Since(r.Started)
	r.Events = mergeEvents(r.Events, watch.events)
	return r, r.judge(ctx, cfg, loads)
}

// heal waits until the database has a primary and every other node of
// its region streams from it.
func heal(ctx context.Context, agents Agents, cfg *config.Config, limit time.Duration) (State, error) {
	deadline := time.Now().Add(limit)
	want := len(cfg.Database.Nodes) - 1
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := agents.State(cctx)
		cancel()
		if err == nil && st.Primary != "" && len(st.Replicas) >= want {
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("the database was not whole again within %s (primary %q, replicas streaming %v; last error %v)", limit, st.Primary, st.Replicas, err)
		}
		if err := Sleep(ctx, 250*time.Millisecond); err != nil {
			return st, err
		}
	}
}

// drawFault draws a fault: its class, its node (the primary's more often
// than not: that is where a fault hurts) and its duration.
func drawFault(rng *rand.Rand, cfg *config.Config, st State, opt SoakOptions) Target {
	d := between(rng, opt.FaultMin, opt.FaultMax).Round(100 * time.Millisecond)
	nodes := cfg.Database.Nodes
	node := st.Primary
	if rng.IntN(3) == 0 {
		node = nodes[rng.IntN(len(nodes))]
	}
	switch kind := opt.Kinds[rng.IntN(len(opt.Kinds))]; kind {
	case fault.Drop:
		return Target{Node: node, Spec: fault.Spec{Kind: fault.Drop, Peers: othersThan(cfg.NodeNames(), node), Duration: d}}
	case fault.Loss:
		return Target{Node: node, Spec: fault.Spec{Kind: fault.Loss, Level: 20 + rng.IntN(61), Peers: othersThan(cfg.NodeNames(), node), Duration: d}}
	case agentPause:
		return Target{Node: node, Spec: fault.Spec{Kind: fault.Pause, Target: "agent", Duration: d}}
	case fault.Fill:
		// A disk nearly full, not full: a full disk stops postgres, and
		// the keeper waits 30 s before it gives up the lead of a postgres
		// that does not come back (docs/database.md), past any soak's RTO.
		return Target{Node: node, Spec: fault.Spec{Kind: fault.Fill, Target: "postgres", Level: 80 + rng.IntN(16), Duration: d}}
	default:
		return Target{Node: node, Spec: fault.Spec{Kind: kind, Target: "postgres", Duration: d}}
	}
}

func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// judge measures each fault's outages and the workloads' losses and
// judges them against the objectives.
func (r *SoakResult) judge(ctx context.Context, cfg *config.Config, loads []workload) error {
	r.Met = true
	for _, w := range loads {
		ops := w.ops(r.Started)
		p := PartResult{Part: w.part(), Workload: w.describe(), Outcomes: buckets(ops)}
		p.OK, p.Failed, p.Indeterminate = pgwrite.Tally(ops)
		for i := range r.Faults {
			f := &r.Faults[i]
			next := r.Length
			if i+1 < len(r.Faults) {
				next = r.Faults[i+1].At
			}
			window := slices.DeleteFunc(slices.Clone(ops), func(o pgwrite.Write) bool { return o.End > next })
			gap := pgwrite.GapAround(window, f.At)
			if f.Outages == nil {
				f.Outages = map[string]time.Duration{}
			}
			if gap == pgwrite.Never {
				f.Unbounded = append(f.Unbounded, p.Part)
				p.Unbounded = true
				gap = next - f.At
			}
			f.Outages[p.Part] = gap
			p.RTO = max(p.RTO, gap)
		}
		lost, err := w.lost(ctx)
		if err != nil {
			return err
		}
		p.Lost = lost
		if len(lost) > 0 {
			p.RPO = maxDataLost(ops, lost, r.Faults)
		}
		p.judge(cfg)
		r.Met = r.Met && p.Met
		for _, why := range p.Reasons {
			r.Reasons = append(r.Reasons, p.Part+": "+why)
		}
		r.Parts = append(r.Parts, p)
	}
	if r.Stopped != "" {
		r.Met = false
		r.Reasons = append(r.Reasons, "the soak stopped early: "+r.Stopped)
	}
	return nil
}

// maxDataLost is the data the lost writes span, as time, before the
// fault that followed each.
func maxDataLost(ops []pgwrite.Write, lost []int, faults []SoakFault) time.Duration {
	var worst time.Duration
	for _, o := range ops {
		if !slices.Contains(lost, o.Seq) {
			continue
		}
		for _, f := range faults {
			if f.At >= o.End {
				worst = max(worst, f.At-o.End)
				break
			}
		}
	}
	return worst
}

// Summary is the soak as haven drill soak prints it.
func (r SoakResult) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak of %s: %s, %d faults (seed %d)\n", config.Duration(r.Length.Round(time.Second)), verdict(r.Met), len(r.Faults), r.Seed)
	if r.Skipped > 0 {
		fmt.Fprintf(&b, "  %d fills refused (the disk already fuller) and drawn again\n", r.Skipped)
	}
	for _, k := range slices.Sorted(maps.Keys(r.ByKind)) {
		fmt.Fprintf(&b, "  %-14s %d\n", k, r.ByKind[k])
	}
	for _, p := range r.Parts {
		var outages []time.Duration
		for _, f := range r.Faults {
			outages = append(outages, f.Outages[p.Part])
		}
		slices.Sort(outages)
		fmt.Fprintf(&b, "  %s (%s): %s\n", p.Part, p.Workload, verdict(p.Met))
		if n := len(outages); n > 0 {
			fmt.Fprintf(&b, "    outage per fault: median %s, p99 %s, worst %s (objective %s)\n",
				config.Duration(outages[n/2].Round(time.Millisecond)), config.Duration(outages[min(n-1, n*99/100)].Round(time.Millisecond)),
				config.Duration(outages[n-1].Round(time.Millisecond)), orNone(p.ObjectiveRTO))
		}
		if p.LosesWrites() {
			fmt.Fprintf(&b, "    acknowledged writes lost: %d of %d (objective RPO %s)\n", len(p.Lost), p.OK, orNone(p.ObjectiveRPO))
		}
		fmt.Fprintf(&b, "    operations: %d succeeded, %d failed, %d unknown\n", p.OK, p.Failed, p.Indeterminate)
	}
	for _, why := range r.Reasons {
		fmt.Fprintf(&b, "  not met: %s\n", why)
	}
	return b.String()
}

// Result is the soak as a drill's result, for the HTML report: its
// faults, the workloads' totals and what happened, in order.
func (r SoakResult) Result() Result {
	res := Result{Scenario: "soak", Started: r.Started, Length: r.Length, Parts: r.Parts, Events: r.Events, Met: r.Met, Reasons: r.Reasons,
		About: fmt.Sprintf("%d random faults in %s (seed %d), each after the database was whole again", len(r.Faults), config.Duration(r.Length.Round(time.Second)), r.Seed)}
	if r.Stopped != "" {
		res.About += "; stopped early: " + r.Stopped
	}
	for _, f := range r.Faults {
		res.Faults = append(res.Faults, f.Injected)
	}
	return res
}
