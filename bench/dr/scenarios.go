package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
	"github.com/haven-ha/haven/internal/drill/pgwrite"
	"github.com/haven-ha/haven/internal/netlab"
)

// scenario is one measurement.
type scenario struct {
	name  string // as in -scenarios
	title string // as in the report
	desc  string
}

var allScenarios = []scenario{
	{name: "lag", title: "lag under a steady writer",
		desc: "a writer in east commits a row every interval through east's write endpoint; every sample interval the bench asks east's primary for pg_current_wal_lsn() and then west's standby leader for pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn() and the age of its last replayed commit (clock_timestamp() − pg_last_xact_replay_timestamp()); the writer's commit latency is the time from sending each acknowledged INSERT to its OK, the connects left out (the round trip through the write endpoint to the primary plus the primary's wait for its synchronous standbys: with dr.mode sync, west's standby leader across the WAN); all runs of a target on one pair of clusters"},
	{name: "loss", title: "loss of region east",
		desc: "writers in both regions, each through its own region's write endpoint; at a random moment every link of east is cut at once (netlab CutSegment: the switch ports of its three nodes, its client and the router; their processes keep running and reach nothing, not even each other). A target that does not promote by itself is watched for -observe, then the bench acts as the operator and runs the target's promotion; the time to a writable west runs from that command (or from the cut, for a target that acts alone) to the first write acknowledged in west. Lost: writes acknowledged in east that are not on west's primary afterwards. A fresh pair of clusters for every run"},
	{name: "switchover", title: "planned region switchover",
		desc: "the target's documented procedure moves the writes from the active region to the other, both regions up; a writer on the active region's client follows the active region (it tries its own region's write endpoint, then the other's, and keeps the first connection that is not in recovery); runs alternate east → west and west → east on one pair of clusters. Pause: the longest time between two acknowledged writes from the procedure's start; lost: acknowledged writes not on the new primary"},
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
	target string
	desc   string
	auto   bool
	sc     scenario
	runs   []runResult
	setup  string // why it could not run at all
}

// runResult is one run of a scenario.
type runResult struct {
	Run  int    `json:"run"`
	From string `json:"from,omitempty"` // the active region before
	To   string `json:"to,omitempty"`   // after
	// Samples are the lag samples (lag; loss: before the cut).
	Samples   []lagSample `json:"samples,omitempty"`
	SampleErr int         `json:"sample_errors"`
	// Commits are the commit latencies of the measured writer's
	// acknowledged writes (lag): the INSERT's round trip through the
	// region's write endpoint, without connects.
	Commits []time.Duration `json:"commit_latencies_ns,omitempty"`
	// LagAtLoss is the last sample before the cut.
	LagAtLoss *lagSample `json:"lag_at_loss,omitempty"`
	// CutStart and CutEnd are the offsets (on east's writer's clock) of
	// the call that cut east and of its return: netlab sets the ports
	// down one at a time, the router's last. LostDuringCut counts the
	// lost writes acknowledged between the two.
	CutStart      time.Duration `json:"cut_start_ns,omitempty"`
	CutEnd        time.Duration `json:"cut_end_ns,omitempty"`
	LostDuringCut int           `json:"lost_during_cut"`
	// SelfPromoted says that west took a write within -observe of the
	// cut without any command (loss), after SelfAfter.
	SelfPromoted bool          `json:"self_promoted"`
	SelfAfter    time.Duration `json:"self_after_ns,omitempty"`
	// Writable is from the promotion command (or the cut) to the first
	// write acknowledged in the new region; never when none came.
	Writable time.Duration `json:"writable_ns"`
	// Gap is the switchover's write pause.
	Gap time.Duration `json:"gap_ns"`
	// Command is how long the promotion command or the switchover
	// procedure took to return.
	Command    time.Duration `json:"command_ns,omitempty"`
	CommandOut string        `json:"command_output,omitempty"`
	// Acked counts the acknowledged writes of the measured writer (east's
	// for loss); AckedAfterCut those acknowledged in east that started
	// after the cut was complete.
	Acked         int `json:"acked"`
	AckedAfterCut int `json:"acked_after_cut"`
	Failed        int `json:"failed"`
	Indeterminate int `json:"indeterminate"`
	pgwrite.LossReport
	// NewLost counts the new region's own writer's acknowledged writes
	// missing there (loss).
	NewLost int      `json:"new_region_lost"`
	Errors  []string `json:"errors,omitempty"`
	Notes   []string `json:"notes,omitempty"`
	Err     string   `json:"error,omitempty"`
}

// backAfter is how many writes started after the event must be
// acknowledged before the writes count as back.
const backAfter = 5

// runCell runs one target through one scenario: lag and switchover on one
// pair of clusters, loss on a fresh pair for every run.
func (b *bench) runCell(ctx context.Context, name string, sc scenario) cell {
	mk, _ := findTarget(name)
	t0 := mk()
	out := cell{target: name, desc: t0.Describe(), auto: t0.Automatic(), sc: sc}
	if sc.name == "loss" {
		for i := 1; i <= b.opt.runs && ctx.Err() == nil; i++ {
			label := fmt.Sprintf("%s-%s-r%d", sc.name, name, i)
			t, stop, err := b.startTarget(ctx, mk, label)
			if err != nil {
				if ctx.Err() == nil {
					out.runs = append(out.runs, runResult{Run: i, Err: "failed to start: " + err.Error()})
					harness.Logf("%s · %s · run %d/%d: failed to start: %v", sc.name, name, i, b.opt.runs, err)
				}
				continue
			}
			r := b.lossRun(ctx, t, i)
			stop()
			if ctx.Err() != nil {
				break
			}
			out.runs = append(out.runs, r)
			b.saveRaw(label, r)
			harness.Logf("%s · %s · run %d/%d: %s", sc.name, name, i, b.opt.runs, r.line(sc.name))
		}
		return out
	}
	label := sc.name + "-" + name
	t, stop, err := b.startTarget(ctx, mk, label)
	if err != nil {
		if ctx.Err() == nil {
			out.setup = "failed to start: " + err.Error()
			harness.Logf("%s · %s: %s", sc.name, name, out.setup)
		}
		return out
	}
	defer stop()
	active := east
	for i := 1; i <= b.opt.runs && ctx.Err() == nil; i++ {
		var r runResult
		if sc.name == "lag" {
			r = b.lagRun(ctx, t, i)
		} else {
			r = b.switchoverRun(ctx, t, i, active)
		}
		if ctx.Err() != nil {
			break
		}
		if nt, ok := t.(noter); ok {
			r.Notes = append(r.Notes, nt.Notes()...)
		}
		out.runs = append(out.runs, r)
		b.saveRaw(label+fmt.Sprintf("-r%d", i), r)
		harness.Logf("%s · %s · run %d/%d: %s", sc.name, name, i, b.opt.runs, r.line(sc.name))
		if r.Err != "" {
			break // the clusters' state is unknown: the next run would measure that
		}
		if r.To != "" {
			active = r.To
		}
	}
	return out
}

// startTarget makes a fresh network and starts a target on it. stop closes
// the target and the network.
func (b *bench) startTarget(ctx context.Context, mk func() target, label string) (target, func(), error) {
	dir := filepath.Join(b.dir, label)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, nil, err
	}
	t := mk()
	wt, ok := t.(witnessed)
	n, err := netlab.New(ctx, netOptions(b.opt.wanDelay, ok && wt.Witness()))
	if err != nil {
		return nil, nil, err
	}
	b.setNet(n)
	stop := func() {
		t.Close()
		b.closeNet()
	}
	start := time.Now()
	e := &env{Net: n, Dir: dir, RawDir: b.rawDir, Label: label, Root: b.root, HavenBin: b.havenBin, HavenErr: b.havenErr, Bindir: b.opt.postgresBin, Settle: b.opt.settle, WANDelay: b.opt.wanDelay}
	if err := t.Start(ctx, e); err != nil {
		stop()
		return nil, nil, err
	}
	harness.Logf("%s: both regions ready after %s", label, time.Since(start).Round(100*time.Millisecond))
	return t, stop, nil
}

// sampler samples t's lag every interval until stopped.
type sampler struct {
	mu      sync.Mutex
	samples []lagSample
	errs    int
	lastErr string
	done    chan struct{}
}

func startSampler(ctx context.Context, t target, active string, every time.Duration) (*sampler, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ls, err := t.Lag(ctx, active)
			s.mu.Lock()
			if err != nil {
				if ctx.Err() == nil {
					s.errs++
					s.lastErr = err.Error()
				}
			} else {
				s.samples = append(s.samples, ls)
			}
			s.mu.Unlock()
		}
	}()
	return s, func() { cancel(); <-s.done }
}

func (s *sampler) result() ([]lagSample, int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]lagSample(nil), s.samples...), s.errs, s.lastErr
}

// lagRun samples the lag for -lag-for under a writer in east.
func (b *bench) lagRun(ctx context.Context, t target, run int) runResult {
	opt := b.opt
	r := runResult{Run: run, From: east}
	if err := t.Ready(ctx, east); err != nil {
		r.Err = "before: " + err.Error()
		return r
	}
	wctx, stopW := context.WithTimeout(ctx, opt.lagFor+time.Minute)
	defer stopW()
	n := b.currentNet()
	w, done := pgwrite.Run(wctx, run, opt.every, opt.connTimeout, opt.opTimeout, regionConnector(n, t, east, east))
	s, stopS := startSampler(ctx, t, east, opt.sampleEvery)
	harness.Sleep(ctx, opt.lagFor)
	stopS()
	stopW()
	<-done
	writes := w.Snapshot()
	r.Acked, r.Failed, r.Indeterminate = pgwrite.Tally(writes)
	r.Commits = pgwrite.CommitLatencies(writes)
	r.Errors = pgwrite.ErrorKinds(writes, 3)
	var last string
	r.Samples, r.SampleErr, last = s.result()
	if r.SampleErr > 0 {
		r.Notes = append(r.Notes, fmt.Sprintf("%d samples failed, the last: %s", r.SampleErr, harness.Truncate(last, 150)))
	}
	if r.Acked == 0 {
		r.Err = "no write acknowledged"
	}
	return r
}

func (b *bench) currentNet() *netlab.Net {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.net
}

// lossRun cuts east off at a random moment under writers in both regions
// and measures what it takes to write in west.
func (b *bench) lossRun(ctx context.Context, t target, run int) runResult {
	opt := b.opt
	r := runResult{Run: run, From: east, To: west, Writable: pgwrite.Never}
	n := b.currentNet()
	// Bounded in time: the writers stop by themselves at the latest then.
	wctx, stopW := context.WithTimeout(ctx, opt.pre+time.Second+opt.observe+opt.maxOutage+opt.post+2*time.Minute)
	defer stopW()
	ew, edone := pgwrite.Run(wctx, 2*run, opt.every, opt.connTimeout, opt.opTimeout, regionConnector(n, t, east, east))
	ww, wdone := pgwrite.Run(wctx, 2*run+1, opt.every, opt.connTimeout, opt.opTimeout, regionConnector(n, t, west, west))
	stopWriters := func() {
		stopW()
		<-edone
		<-wdone
	}
	s, stopS := startSampler(ctx, t, east, opt.sampleEvery)
	delay := time.Duration(rand.Int64N(int64(time.Second)))
	if !harness.Sleep(ctx, opt.pre+delay) {
		stopS()
		stopWriters()
		return r
	}
	stopS()
	r.Samples, r.SampleErr, _ = s.result()
	if len(r.Samples) > 0 {
		last := r.Samples[len(r.Samples)-1]
		r.LagAtLoss = &last
	}
	if ew.AckedSince(0) == 0 {
		r.Err = "no write acknowledged in east before the cut: " + strings.Join(pgwrite.ErrorKinds(ew.Snapshot(), 2), "; ")
		stopWriters()
		return r
	}
	// The cut counts from when CutSegment returned: every port of east
	// is down by then. Setting them down takes a few milliseconds, in
	// which east's writer may still write.
	r.CutStart = ew.Since(time.Now())
	if err := n.CutSegment(regionHosts[east].seg); err != nil {
		r.Err = "cut: " + err.Error()
		stopWriters()
		return r
	}
	cut := time.Now()
	r.CutEnd = ew.Since(cut)
	from := cut
	if !t.Automatic() {
		// The operator is not there yet: does the target promote by itself?
		harness.Sleep(ctx, opt.observe)
		if first, ok := firstAck(ww.Snapshot(), ww.Since(cut)); ok {
			r.SelfPromoted, r.SelfAfter = true, first-ww.Since(cut)
		}
		if ctx.Err() != nil {
			stopWriters()
			return r
		}
		from = time.Now()
		out, err := t.Promote(ctx, west)
		r.Command, r.CommandOut = time.Since(from), out
		if err != nil {
			r.Err = "promote: " + err.Error()
		}
		if r.SelfPromoted {
			from = cut
		}
	}
	deadline := time.Now().Add(opt.maxOutage)
	back := false
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if ww.AckedSince(ww.Since(from)) >= backAfter {
			back = true
			break
		}
		harness.Sleep(ctx, 20*time.Millisecond)
	}
	if back {
		harness.Sleep(ctx, opt.post)
	}
	stopWriters()
	if ctx.Err() != nil {
		return r
	}
	ewrites, wwrites := ew.Snapshot(), ww.Snapshot()
	if first, ok := firstAck(wwrites, ww.Since(from)); ok {
		r.Writable = first - ww.Since(from)
		if t.Automatic() {
			// Nobody acted: west became writable by itself.
			r.SelfPromoted, r.SelfAfter = true, r.Writable
		}
	} else {
		r.Notes = append(r.Notes, fmt.Sprintf("no write acknowledged in west within %s", opt.maxOutage))
	}
	r.Acked, r.Failed, r.Indeterminate = pgwrite.Tally(ewrites)
	r.AckedAfterCut = pgwrite.CountAcked(ewrites, ew.Since(cut))
	r.Errors = pgwrite.ErrorKinds(wwrites, 3)
	if !back {
		return r
	}
	conn := regionConnector(n, t, west, west)
	rows, err := pgwrite.ReadRows(ctx, conn, 2*run)
	if err != nil {
		r.Err = "read east's rows in west: " + err.Error()
		return r
	}
	r.LossReport = pgwrite.Compare(ewrites, rows)
	for _, w := range ewrites {
		if slices.Contains(r.Lost, w.Seq) {
			if w.End >= r.CutStart {
				r.LostDuringCut++
			}
		}
	}
	wrows, err := pgwrite.ReadRows(ctx, conn, 2*run+1)
	if err != nil {
		r.Err = "read west's rows in west: " + err.Error()
		return r
	}
	r.NewLost = len(pgwrite.Compare(wwrites, wrows).Lost)
	return r
}

// firstAck is the end of the first write acknowledged that started at or
// after t.
func firstAck(writes []pgwrite.Write, t time.Duration) (time.Duration, bool) {
	first, ok := time.Duration(0), false
	for _, w := range writes {
		if w.Outcome == pgwrite.Acked && w.Start >= t && (!ok || w.End < first) {
			first, ok = w.End, true
		}
	}
	return first, ok
}

// switchoverRun moves the writes from active to the other region under a
// writer that follows the active region.
func (b *bench) switchoverRun(ctx context.Context, t target, run int, active string) runResult {
	opt := b.opt
	to := other(active)
	r := runResult{Run: run, From: active, Gap: pgwrite.Never}
	if err := t.Ready(ctx, active); err != nil {
		r.Err = "before: " + err.Error()
		return r
	}
	n := b.currentNet()
	wctx, stopW := context.WithTimeout(ctx, opt.pre+time.Second+opt.maxOutage+opt.post+3*time.Minute)
	defer stopW()
	w, done := pgwrite.Run(wctx, run, opt.every, opt.connTimeout, opt.opTimeout, followConnector(n, t, active))
	stop := func() {
		stopW()
		<-done
	}
	delay := time.Duration(rand.Int64N(int64(time.Second)))
	if !harness.Sleep(ctx, opt.pre+delay) {
		stop()
		return r
	}
	if w.AckedSince(0) == 0 {
		r.Err = "no write acknowledged before the switchover: " + strings.Join(pgwrite.ErrorKinds(w.Snapshot(), 2), "; ")
		stop()
		return r
	}
	start := time.Now()
	at := w.Since(start)
	out, err := t.Switchover(ctx, active)
	r.Command, r.CommandOut = time.Since(start), out
	if err != nil {
		r.Err = "switchover: " + err.Error()
	}
	deadline := time.Now().Add(opt.maxOutage)
	back := false
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if w.AckedSince(w.Since(start.Add(r.Command))) >= backAfter {
			back = true
			break
		}
		harness.Sleep(ctx, 20*time.Millisecond)
	}
	if back {
		harness.Sleep(ctx, opt.post)
	}
	stop()
	if ctx.Err() != nil {
		return r
	}
	writes := w.Snapshot()
	r.Acked, r.Failed, r.Indeterminate = pgwrite.Tally(writes)
	r.Errors = pgwrite.ErrorKinds(writes, 3)
	if !back {
		r.Notes = append(r.Notes, fmt.Sprintf("writes not back within %s", opt.maxOutage))
		return r
	}
	r.Gap = pgwrite.GapAround(writes, at)
	if err := t.Ready(ctx, to); err != nil {
		if r.Err == "" {
			r.Err = "after: " + err.Error()
		}
		return r
	}
	r.To = to
	rows, err := pgwrite.ReadRows(ctx, regionConnector(n, t, to, to), run)
	if err != nil {
		if r.Err == "" {
			r.Err = "read the rows: " + err.Error()
		}
		return r
	}
	r.LossReport = pgwrite.Compare(writes, rows)
	return r
}

func (r runResult) line(sc string) string {
	var s string
	switch sc {
	case "lag":
		st := lagStats(r.Samples)
		c := commitStats(r.Commits)
		s = fmt.Sprintf("%d samples: replayed bytes p50 %d p99 %d max %d; replay delay p50 %s p99 %s max %s; %d acknowledged, commit latency p50 %s p99 %s max %s",
			st.n, st.bytes[0], st.bytes[1], st.bytes[2], harness.Dur(st.delay[0]), harness.Dur(st.delay[1]), harness.Dur(st.delay[2]), r.Acked,
			fmtLatency(c[0]), fmtLatency(c[1]), fmtLatency(c[2]))
	case "loss":
		s = fmt.Sprintf("promoted by itself: %v; writable %s after the %s (the command took %s); %d acknowledged in east, %d lost, %d acknowledged in east after the cut",
			r.SelfPromoted, harness.Gap(r.Writable), fromWhat(r), harness.Dur(r.Command), r.Acked, len(r.Lost), r.AckedAfterCut)
		if r.LostDuringCut > 0 {
			s += fmt.Sprintf(" (%d of them acknowledged while the cut was being made)", r.LostDuringCut)
		}
		s += fmt.Sprintf("; the cut took %s", harness.Dur(r.CutEnd-r.CutStart))
		if r.LagAtLoss != nil {
			s += fmt.Sprintf("; lag at the last sample before the cut %d bytes", r.LagAtLoss.ReplayedBytes)
		}
	case "switchover":
		s = fmt.Sprintf("%s → %s: write pause %s, %d acknowledged, %d lost, %d indeterminate (%d found); the procedure took %s",
			r.From, r.To, harness.Gap(r.Gap), r.Acked, len(r.Lost), r.Indeterminate, r.IndeterminateFound, harness.Dur(r.Command))
	}
	for _, n := range r.Notes {
		s += "; " + n
	}
	if r.Err != "" {
		s += "; error: " + r.Err
	}
	return s
}

// fromWhat names where a loss run's time to writable starts.
func fromWhat(r runResult) string {
	if r.Command > 0 && !r.SelfPromoted {
		return "promotion command"
	}
	return "cut"
}

// saveRaw writes a run's result to the raw directory.
func (b *bench) saveRaw(label string, r runResult) {
	data, err := json.Marshal(r)
	if err != nil {
		return
	}
	_ = os.WriteFile(filepath.Join(b.rawDir, label+".json"), data, 0o644)
}
