package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/haven-ha/haven/internal/config"
	"github.com/haven-ha/haven/internal/drill"
)

// Scheduled drills (drills.schedule): the agents of the coordination's
// top-level scope take turns through a lock in etcd, so that one drill
// runs at a time; the one that takes the lock when a scenario is due runs
// `haven drill run` as a process of its own, out of the agent's process
// tree (a drill that freezes this node's agent must not freeze its own
// client), and records the result in etcd, where every agent reads the
// last one for its status and metrics.

// drillsPrefix holds the lock and each scenario's last result.
func drillsPrefix(cluster string) string { return "/haven/" + cluster + "/drills/" }

const (
	drillLockKey = "lock"
	drillLastKey = "last/"
	// drillCheck is how often the scheduler looks for a due drill.
	drillCheck = 30 * time.Second
	// drillSlack is a drill's time beyond its faults: the warm-up, the
	// wait for recovery (drill.Options.MaxOutage) and the settling.
	drillSlack = 3 * time.Minute
	// drillRetry is when a drill that could not run is tried again.
	drillRetry = 2 * time.Minute
)

// DrillRecord is a scheduled drill's outcome, kept in etcd.
type DrillRecord struct {
	Scenario string    `json:"scenario"`
	Node     string    `json:"node"` // where it ran
	Started  time.Time `json:"started"`
	Ended    time.Time `json:"ended"`
	Met      bool      `json:"met"`
	// Reasons say why an objective was not kept; Error why the drill
	// could not run at all (then Met is false).
	Reasons []string `json:"reasons,omitempty"`
	Error   string   `json:"error,omitempty"`
	// RTO is the observed outage per part, in seconds; LostWrites the
	// acknowledged writes lost.
	RTO        map[string]float64 `json:"rto_seconds,omitempty"`
	LostWrites int                `json:"lost_writes"`
}

// drillScheduler runs drills.schedule on this node when its turn comes.
type drillScheduler struct {
	a     *Agent
	log   *slog.Logger
	sched []*config.DrillSchedule
	// defer is how long this node lets a due drill wait for another to
	// take it: a node the drills aim at (a database or balancer node)
	// lets the others go first.
	deferBy time.Duration
	m       *drillSchedMetrics

	mu   sync.Mutex
	last map[string]*DrillRecord // as etcd had them at the last check
}

// newDrillScheduler returns the scheduler when this node takes part: the
// drills have a schedule and the node coordinates through the top-level
// scope (one lock for the whole cluster).
func newDrillScheduler(a *Agent, cfg *config.Config) *drillScheduler {
	d := cfg.Drills
	if d == nil || !d.Enabled || len(d.Schedule) == 0 || cfg.CoordinationOf(a.opt.Node) != cfg.Coordination {
		return nil
	}
	s := &drillScheduler{a: a, log: a.log.With("component", "drill-schedule"), sched: d.Schedule, m: a.drillSchedm}
	if cfg.IsDatabaseNode(a.opt.Node) || len(cfg.BalancersOn(a.opt.Node)) > 0 {
		s.deferBy = 2 * drillCheck
	}
	return s
}

// run checks the schedule until ctx ends, reading the last results first
// so that status and metrics have them on every node.
func (s *drillScheduler) run(ctx context.Context, cl *etcdClients) {
	cli := cl.all
	for {
		// Jitter keeps the agents from asking for the lock together; the
		// first check waits too, for the deployment to settle after a
		// start.
		if err := drill.Sleep(ctx, drillCheck+rand.N(drillCheck/3)); err != nil {
			return
		}
		s.step(ctx, cli)
	}
}

// step publishes the last results and runs the first due drill, if this
// node takes the lock for it.
func (s *drillScheduler) step(ctx context.Context, cli *clientv3.Client) {
	last, err := s.lastRecords(ctx, cli)
	if err != nil {
		return // etcd is away: the next check
	}
	s.m.publish(last)
	s.mu.Lock()
	s.last = last
	s.mu.Unlock()
	for _, e := range s.sched {
		if due(e, last[e.Scenario], time.Now().Add(-s.deferBy)) {
			s.runLocked(ctx, cli, e)
			return
		}
	}
}

// due says whether e's scenario is due at now: never run, last run more
// than every ago, or it could not run (no primary, a workload that did
// not answer) more than drillRetry ago.
func due(e *config.DrillSchedule, last *DrillRecord, now time.Time) bool {
	switch {
	case last == nil:
		return true
	case last.Error != "":
		return now.Sub(last.Ended) >= min(drillRetry, e.Every.D())
	}
	return now.Sub(last.Ended) >= e.Every.D()
}

// lastRecords reads every scenario's last result.
func (s *drillScheduler) lastRecords(ctx context.Context, cli *clientv3.Client) (map[string]*DrillRecord, error) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(gctx, drillsPrefix(s.a.config().Cluster)+drillLastKey, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := map[string]*DrillRecord{}
	for _, kv := range resp.Kvs {
		var r DrillRecord
		if json.Unmarshal(kv.Value, &r) == nil {
			out[r.Scenario] = &r
		}
	}
	return out, nil
}

// runLocked takes the cluster's drill lock for the drill's whole bound
// (a lease that needs no renewal: the drill may freeze this agent), checks
// that the drill is still due, runs it and records the result.
func (s *drillScheduler) runLocked(ctx context.Context, cli *clientv3.Client, e *config.DrillSchedule) {
	bound := e.For.D() + drillSlack
	lock, err := takeDrillLock(ctx, cli, s.a.config().Cluster, s.a.opt.Node, e.Scenario, bound)
	if err != nil {
		return // another drill runs, or etcd is away: the next check
	}
	defer func() { _ = releaseDrillLock(context.WithoutCancel(ctx), cli, s.a.config().Cluster, lock.Token) }()
	prefix := drillsPrefix(s.a.config().Cluster)
	if last, err := s.lastRecords(ctx, cli); err != nil || !due(e, last[e.Scenario], time.Now()) {
		return // another node ran it meanwhile
	}
	s.log.Warn("scheduled drill starting: its faults are outages on purpose", "scenario", e.Scenario, "for", e.For)
	rec := s.play(ctx, e, bound)
	if ctx.Err() != nil {
		return // the agent stops: the drill is due again at the next start
	}
	s.m.runs.WithLabelValues(e.Scenario, strconv.FormatBool(rec.Met)).Inc()
	if rec.Met {
		s.log.Info("scheduled drill kept the objectives", "scenario", e.Scenario, "rto_seconds", rec.RTO)
	} else {
		s.log.Error("scheduled drill: objectives NOT kept", "scenario", e.Scenario, "reasons", rec.Reasons, "err", rec.Error)
	}
	b, _ := json.Marshal(rec)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Put(pctx, prefix+drillLastKey+e.Scenario, string(b)); err != nil {
		s.log.Warn("could not record the drill's result in etcd: it runs again", "scenario", e.Scenario, "err", err)
	}
}

// play runs `haven drill run` for e in a process of its own and reads
// its result.
func (s *drillScheduler) play(ctx context.Context, e *config.DrillSchedule, bound time.Duration) DrillRecord {
	rec := DrillRecord{Scenario: e.Scenario, Node: s.a.opt.Node, Started: time.Now().UTC()}
	self, err := os.Executable()
	if err != nil {
		rec.Error = err.Error()
		return rec
	}
	// --no-lock: the lock is this agent's, for the drill's whole bound.
	res, err := runDetached(ctx, bound, self, "drill", "run", e.Scenario, "-c", s.a.opt.ConfigPath, "--for", e.For.String(), "--no-lock", "-o", "json")
	rec.Ended = time.Now().UTC()
	if err != nil {
		rec.Error = err.Error()
		return rec
	}
	rec.Met, rec.Reasons, rec.RTO = res.Met, res.Reasons, map[string]float64{}
	for _, p := range res.Parts {
		rec.RTO[p.Part] = max(rec.RTO[p.Part], p.RTO.Seconds())
		rec.LostWrites += len(p.Lost)
	}
	return rec
}

// runDetached runs a drill (argv: haven drill run ... -o json) out of the
// agent's process tree: a shell starts it in the background and leaves,
// so that init adopts it and a fault that stops everything under the
// agent (the node's loss) does not stop the drill. Its output goes to
// files the agent reads when the exit status appears, within bound.
func runDetached(ctx context.Context, bound time.Duration, argv ...string) (drill.Result, error) {
	var r drill.Result
	dir, err := os.MkdirTemp("", "haven-drill-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(dir)
	out, errf, rc := filepath.Join(dir, "result.json"), filepath.Join(dir, "stderr"), filepath.Join(dir, "rc")
	script := `out=$1 err=$2 rc=$3 bound=$4; shift 4
( timeout -s KILL "$bound" "$@" >"$out" 2>"$err"; echo $? >"$rc.tmp"; mv "$rc.tmp" "$rc" ) </dev/null >/dev/null 2>&1 &`
	cmd := exec.Command("/bin/sh", append([]string{"-c", script, "sh", out, errf, rc, strconv.Itoa(max(1, int(bound.Seconds())))}, argv...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("start haven drill run: %w", err)
	}
	deadline := time.Now().Add(bound + 10*time.Second)
	for {
		if b, err := os.ReadFile(rc); err == nil {
			code := strings.TrimSpace(string(b))
			data, _ := os.ReadFile(out)
			if json.Unmarshal(data, &r) == nil && r.Scenario != "" {
				return r, nil // exit 1 is a drill that did not keep its objectives
			}
			stderr, _ := os.ReadFile(errf)
			return r, fmt.Errorf("the drill exited %s: %s", code, lastLine(string(stderr)))
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("the drill did not end within %s", bound)
		}
		if err := drill.Sleep(ctx, time.Second); err != nil {
			return r, err
		}
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// drillSchedMetrics export the last scheduled drills' results.
type drillSchedMetrics struct {
	last, met *prometheus.GaugeVec
	runs      *prometheus.CounterVec
}

func newDrillSchedMetrics(reg prometheus.Registerer) *drillSchedMetrics {
	m := &drillSchedMetrics{
		last: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haven_drill_last_run_timestamp_seconds",
			Help: "When the scenario's last scheduled drill ended (drills.schedule), cluster-wide.",
		}, []string{"scenario"}),
		met: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "haven_drill_last_met",
			Help: "1 when the scenario's last scheduled drill kept the objectives, 0 when it did not or could not run.",
		}, []string{"scenario"}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "haven_drill_runs_total",
			Help: "Scheduled drills this agent ran, by scenario and whether they kept the objectives.",
		}, []string{"scenario", "met"}),
	}
	reg.MustRegister(m.last, m.met, m.runs)
	return m
}

// publish sets the gauges from the last results in etcd.
func (m *drillSchedMetrics) publish(last map[string]*DrillRecord) {
	for name, r := range last {
		m.last.WithLabelValues(name).Set(float64(r.Ended.Unix()))
		v := 0.0
		if r.Met {
			v = 1
		}
		m.met.WithLabelValues(name).Set(v)
	}
}

// DrillsStatus is the drills part of /api/v1/status on a node that
// schedules drills: the schedule, with each scenario's last result and
// when it is due next.
type DrillsStatus struct {
	Schedule []ScheduledDrill `json:"schedule"`
}

// ScheduledDrill is one entry of drills.schedule.
type ScheduledDrill struct {
	Scenario string       `json:"scenario"`
	Every    string       `json:"every"`
	Next     time.Time    `json:"next"`
	Last     *DrillRecord `json:"last,omitempty"`
}

func (s *drillScheduler) status() DrillsStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := DrillsStatus{Schedule: []ScheduledDrill{}}
	for _, e := range s.sched {
		d := ScheduledDrill{Scenario: e.Scenario, Every: e.Every.String(), Last: s.last[e.Scenario]}
		if d.Last != nil {
			d.Next = d.Last.Ended.Add(e.Every.D())
		}
		st.Schedule = append(st.Schedule, d)
	}
	return st
}
