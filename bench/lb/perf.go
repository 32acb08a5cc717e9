package main

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// scenario is one row group of the report.
type scenario struct {
	name  string // keepalive, close, tcp; with -2c on two cores
	title string
	mode  string // proxy mode: http or tcp
	close bool   // clients send Connection: close
	cores int    // the placement (bench.cores)
}

var scenarios = []scenario{
	{name: "keepalive", title: "HTTP keep-alive", mode: "http", cores: 1},
	{name: "close", title: "HTTP connection-close", mode: "http", close: true, cores: 1},
	{name: "tcp", title: "TCP mode (wrk keep-alive through a layer-4 proxy)", mode: "tcp", cores: 1},
	{name: "keepalive-2c", title: "HTTP keep-alive, two cores", mode: "http", cores: 2},
	{name: "close-2c", title: "HTTP connection-close, two cores", mode: "http", close: true, cores: 2},
	{name: "tcp-2c", title: "TCP mode, two cores", mode: "tcp", cores: 2},
}

// runRec is one wrk run.
type runRec struct {
	round int
	wrk   wrkResult
	cpu   time.Duration
	// others is the share of the run's wall time during which CPU 0 (the
	// proxy's) was busy with something else than the proxy, and steal the
	// share the hypervisor took: the noise of the run (proxies only).
	others, steal float64
	// quiet is false when the run started on a busy machine even after
	// waiting -quiet-wait.
	quiet bool
	// tcp is how host-wide TCP trouble counters moved during the run.
	tcp map[string]int64
	err string
}

// latRec is one vegeta run.
type latRec struct {
	v   vegetaResult
	err string
}

// scenarioResult holds every run of one scenario.
type scenarioResult struct {
	scenario
	repeated int    // noisy runs done again
	rate     int    // vegeta's fixed rate
	rateNote string // how the rate was chosen
	status   map[string]string
	runs     map[string][]runRec
	lat      map[string][]latRec
}

// perfResult is the whole perf scenario.
type perfResult struct {
	scenarios []*scenarioResult
	idle      map[string]idleResult
	idleNote  map[string]string
	idleWant  int
}

// liveTarget is a target that is running in the current mode.
type liveTarget struct {
	name string
	addr string
	svc  *service // whose CPU is measured (the backend, for direct)
}

// runPerf runs the throughput, CPU, latency and idle-connection scenarios.
func (b *bench) runPerf(ctx context.Context, proxies []*proxy) (*perfResult, error) {
	res := &perfResult{idle: map[string]idleResult{}, idleNote: map[string]string{}}
	backends, err := b.startBackends(ctx)
	defer func() {
		for _, s := range backends {
			b.sv.stop(s, syscall.SIGQUIT, 5*time.Second)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("backends: %w", err)
	}
	defer func() { b.cores = 0 }()
	for _, cores := range b.opt.cores {
		b.cores = cores
		if err := b.pinBackends(ctx, backends); err != nil {
			return nil, err
		}
		if err := b.runPlacement(ctx, res, proxies, backends); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// pinBackends moves the backends to the current placement's load CPUs:
// CPU 1 on one core, both CPUs on two.
func (b *bench) pinBackends(ctx context.Context, backends []*service) error {
	cpus := "1"
	if b.threads() == 2 {
		cpus = "0,1"
	}
	for _, s := range backends {
		if _, err := harness.Run(ctx, 10*time.Second, nil, "taskset", "-a", "-p", "-c", cpus, fmt.Sprint(s.pid())); err != nil {
			return fmt.Errorf("pin backend: %w", err)
		}
	}
	return nil
}

// runPlacement runs the scenarios of the current placement, HTTP then TCP.
func (b *bench) runPlacement(ctx context.Context, res *perfResult, proxies []*proxy, backends []*service) error {
	for _, mode := range []string{"http", "tcp"} {
		status := map[string]string{}
		var live []liveTarget
		var started []*service
		for _, t := range b.opt.targets {
			if t == "direct" {
				live = append(live, liveTarget{name: "direct", addr: backendAddrs[0], svc: backends[0]})
				continue
			}
			p := findProxy(proxies, t)
			switch {
			case t == "caddy" && b.caddyNote != "":
				status[t] = "n/a: " + b.caddyNote
				continue
			case p == nil:
				continue
			case mode == "tcp" && !p.tcp:
				status[t] = "n/a: no TCP mode"
				continue
			}
			harness.Logf("%s mode: starting %s", mode, t)
			s, err := p.start(ctx, b, mode, false)
			if s != nil {
				started = append(started, s)
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				status[t] = "failed to start: " + err.Error()
				harness.Logf("%s: %s", t, status[t])
				continue
			}
			live = append(live, liveTarget{name: t, addr: p.addr, svc: s})
		}
		for _, sc := range scenarios {
			if sc.mode != mode || sc.cores != b.threads() {
				continue
			}
			r := &scenarioResult{scenario: sc, status: map[string]string{}, runs: map[string][]runRec{}, lat: map[string][]latRec{}}
			for k, v := range status {
				r.status[k] = v
			}
			if err := b.runScenario(ctx, r, live); err != nil {
				return err
			}
			res.scenarios = append(res.scenarios, r)
		}
		if mode == "http" && b.opt.idle > 0 && b.threads() == 1 {
			want := b.opt.idle
			if lim := noFile(); lim < uint64(want)+500 {
				want = int(lim) - 500
				harness.Logf("open-file limit %d: holding %d idle connections instead of %d", lim, want, b.opt.idle)
			}
			res.idleWant = want
			for _, t := range live {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if t.svc.exited() {
					res.idleNote[t.name] = "exited: " + t.svc.logTail(3)
					continue
				}
				harness.Logf("idle: %d connections to %s", want, t.name)
				ir := idleConns(ctx, t.addr, want, t.svc.pid())
				res.idle[t.name] = ir
				harness.Logf("  open %d, RSS %d → %d KiB", ir.Open, ir.RSSBeforeKiB, ir.RSSAfterKiB)
				harness.Sleep(ctx, 2*time.Second) // let the closes settle before the next target
			}
			for k, v := range status {
				res.idleNote[k] = v
			}
		}
		for _, s := range started {
			b.sv.stop(s, syscall.SIGTERM, 5*time.Second)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

func findProxy(ps []*proxy, name string) *proxy {
	for _, p := range ps {
		if p.name == name {
			return p
		}
	}
	return nil
}

// noisyRun is the share of CPU 0's time going to other work than the proxy
// above which a run is repeated (up to -noisy-repeats times).
const noisyRun = 0.10

// measureWrk runs wrk once against t and measures the proxy's CPU and the
// noise around it. Only the end of ctx is an error; a failed run is recorded.
// On two cores wrk (two threads) shares both CPUs with the proxy and the
// backends, so CPU 0's noise says nothing there and is not measured.
func (b *bench) measureWrk(ctx context.Context, r *scenarioResult, t liveTarget, round int) (runRec, error) {
	idle := b.waitQuiet(ctx)
	cpu0 := treeCPU(t.svc.pid())
	busy0, steal0 := cpuTimes(0)
	tcp0 := tcpCounters()
	start := time.Now()
	w, err := b.runWrk(ctx, "http://"+t.addr+"/", r.close, r.cores, b.rawPath(r.name, t.name, fmt.Sprint("r", round), "wrk.txt"))
	wall := time.Since(start)
	cpu := treeCPU(t.svc.pid()) - cpu0
	busy1, steal1 := cpuTimes(0)
	rec := runRec{round: round, wrk: w, cpu: cpu, quiet: idle < 0.10, tcp: tcpTroubleDelta(tcp0, tcpCounters())}
	if t.name != "direct" && r.cores == 1 {
		rec.others = max(0, (busy1-busy0-cpu).Seconds()/wall.Seconds())
		rec.steal = (steal1 - steal0).Seconds() / wall.Seconds()
	}
	if err != nil {
		if ctx.Err() != nil {
			return rec, ctx.Err()
		}
		rec.err = err.Error()
	}
	return rec, nil
}

// runScenario runs the interleaved wrk rounds, then the fixed-rate latency
// rounds at half of HAProxy's median throughput.
func (b *bench) runScenario(ctx context.Context, r *scenarioResult, live []liveTarget) error {
	cool := time.Second
	if b.opt.quick {
		cool = 300 * time.Millisecond
	}
	for round := 1; round <= b.opt.rounds; round++ {
		for _, t := range live {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if r.status[t.name] != "" {
				continue
			}
			if t.svc.exited() {
				r.status[t.name] = "exited: " + t.svc.logTail(3)
				continue
			}
			var rec runRec
			for attempt := 0; ; attempt++ {
				var err error
				rec, err = b.measureWrk(ctx, r, t, round)
				if err != nil {
					return err
				}
				harness.Logf("%s round %d %-8s %8.0f req/s  cpu %5.2fs  %s CPU-s/10k  non-2xx %d  socket errors %d  CPU 0 others %.0f%% steal %.0f%% %s %s",
					r.name, round, t.name, rec.wrk.RPS, rec.cpu.Seconds(), fmtCPU(cpuPer10k(rec)), rec.wrk.Non2xx, rec.wrk.SockErr, 100*rec.others, 100*rec.steal, describeTrouble(rec.tcp), rec.err)
				if rec.others+rec.steal <= noisyRun || rec.err != "" || attempt >= b.opt.noisyRepeats {
					break
				}
				r.repeated++
				harness.Logf("  noisy: CPU 0 was busy with other work %.0f%% of the run; repeating it", 100*(rec.others+rec.steal))
				harness.Sleep(ctx, cool)
			}
			r.runs[t.name] = append(r.runs[t.name], rec)
			harness.Sleep(ctx, cool)
		}
	}

	// The fixed rate: half of HAProxy's median; without HAProxy, half of
	// the best proxy's.
	r.rate, r.rateNote = 0, ""
	if rps := medianRPS(r.runs["haproxy"]); rps > 0 {
		r.rate, r.rateNote = int(rps/2), "half of HAProxy's median req/s"
	} else {
		for _, t := range live {
			if t.name == "direct" {
				continue
			}
			if rps := medianRPS(r.runs[t.name]); rps/2 > float64(r.rate) {
				r.rate, r.rateNote = int(rps/2), "HAProxy did not run: half of "+t.name+"'s median req/s"
			}
		}
	}
	if r.rate < 1 {
		r.rateNote = "no proxy ran: latency runs skipped"
		return nil
	}
	if r.cores == 2 {
		r.rate, r.rateNote = 0, "not measured on two cores: the load generator shares the proxies' CPUs"
		return nil
	}
	limit, flag := b.opt.maxRate, "-max-rate"
	if r.close {
		limit, flag = b.opt.maxRateClose, "-max-rate-close"
	}
	if limit > 0 && r.rate > limit {
		r.rateNote = fmt.Sprintf("%s would be %d/s, capped by %s: vegeta shares CPU 1 with the backends", r.rateNote, r.rate, flag)
		r.rate = limit
	}
	for round := 1; round <= b.opt.rounds; round++ {
		for _, t := range live {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if r.status[t.name] != "" || t.svc.exited() {
				continue
			}
			b.waitQuiet(ctx)
			v, err := b.runVegeta(ctx, "http://"+t.addr+"/", r.rate, !r.close, b.rawPath(r.name, t.name, fmt.Sprint("r", round), "vegeta"))
			rec := latRec{v: v}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				rec.err = err.Error()
			}
			r.lat[t.name] = append(r.lat[t.name], rec)
			harness.Logf("%s latency round %d %-8s @%d/s: achieved %.0f/s p50 %s p99 %s failed %d %s", r.name, round, t.name, r.rate,
				v.Throughput, fmtDur(v.Latencies.P50), fmtDur(v.Latencies.P99), v.failed(), rec.err)
			harness.Sleep(ctx, cool)
		}
	}
	return nil
}

// cpuPer10k is the proxy's CPU seconds per 10,000 requests of one run.
func cpuPer10k(r runRec) float64 {
	if r.wrk.Requests == 0 {
		return 0
	}
	return r.cpu.Seconds() / float64(r.wrk.Requests) * 10000
}

func okRuns(rs []runRec) []runRec {
	var out []runRec
	for _, r := range rs {
		if r.err == "" && r.wrk.Requests > 0 {
			out = append(out, r)
		}
	}
	return out
}

func medianRPS(rs []runRec) float64 {
	var v []float64
	for _, r := range okRuns(rs) {
		v = append(v, r.wrk.RPS)
	}
	return harness.Median(v)
}

func medianCPU(rs []runRec) float64 {
	var v []float64
	for _, r := range okRuns(rs) {
		v = append(v, cpuPer10k(r))
	}
	return harness.Median(v)
}

// roundRatio is the median over rounds of num(a's run) / num(b's run) of the
// same round. Interleaving puts a target and HAProxy in the same period of
// the machine, so a ratio within a round cancels most of the drift between
// rounds.
func roundRatio(a, b []runRec, num func(runRec) float64, invert bool) float64 {
	byRound := map[int]runRec{}
	for _, r := range okRuns(b) {
		byRound[r.round] = r
	}
	var v []float64
	for _, ra := range okRuns(a) {
		rb, ok := byRound[ra.round]
		if !ok {
			continue
		}
		x, y := num(ra), num(rb)
		if invert {
			x, y = y, x
		}
		if x > 0 && y > 0 {
			v = append(v, x/y)
		}
	}
	return harness.Median(v)
}
