package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// consolePages is how many open dashboards the console scenario holds.
const consolePages = 10

// idleWindow is how long the agent's CPU is measured without load.
const idleWindow = 30 * time.Second

// consoleResult is the console scenario: haven's balancer under wrk's
// load, with no dashboard open and with consolePages open, alternating.
type consoleResult struct {
	without, with []runRec
	// idleWithout and idleWith are the agent's CPU over idleWindow
	// without load, with no page and with consolePages open: what the
	// pages cost by themselves, away from the noise of the load.
	idleWithout, idleWith []time.Duration
	// streamed counts the messages the pages received (views and events),
	// so that the report shows the pages were live.
	streamed int64
	status   string
}

// runConsole measures what the dashboard costs the agent under load. A
// page is what the agent serves to a browser: the page once, then its
// stream (the browser itself runs elsewhere and costs the agent nothing
// more). The agent builds one view a second for all pages; this says what
// that and the sending cost beside the balancer's work.
func (b *bench) runConsole(ctx context.Context, proxies []*proxy) (*consoleResult, error) {
	res := &consoleResult{}
	t, stop, status, err := b.startHavenAlone(ctx, proxies)
	defer stop()
	if status != "" || err != nil {
		res.status = status
		return res, err
	}
	svc := t.svc
	for round := 1; round <= b.opt.rounds; round++ {
		for _, pages := range []int{0, consolePages} {
			open := openPages(ctx, "http://"+havenAdmin, pages)
			if err := open.wait(ctx, pages); err != nil {
				open.close()
				return nil, err
			}
			cpu0 := treeCPU(svc.pid())
			harness.Sleep(ctx, idleWindow)
			cpu := treeCPU(svc.pid()) - cpu0
			open.close()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			harness.Logf("console idle round %d, %2d pages: agent CPU %s in %s", round, pages, cpu, idleWindow)
			if pages == 0 {
				res.idleWithout = append(res.idleWithout, cpu)
			} else {
				res.idleWith = append(res.idleWith, cpu)
			}
		}
	}
	runs, err := b.abRounds(ctx, t, [2]string{"console-0", fmt.Sprintf("console-%d", consolePages)}, func(i int) (func(), error) {
		pages := []int{0, consolePages}[i]
		open := openPages(ctx, "http://"+havenAdmin, pages)
		if err := open.wait(ctx, pages); err != nil {
			open.close()
			return nil, err
		}
		return func() { res.streamed += open.close() }, nil
	})
	res.without, res.with = runs[0], runs[1]
	return res, err
}

// startHavenAlone starts the backends and haven's balancer in http mode,
// for a scenario of haven's own; status says why haven could not run (the
// scenario reports it), stop stops them.
func (b *bench) startHavenAlone(ctx context.Context, proxies []*proxy) (t liveTarget, stop func(), status string, err error) {
	var started []*service
	stop = func() {
		for i := len(started) - 1; i >= 0; i-- {
			b.sv.stop(started[i], syscall.SIGTERM, 5*time.Second)
		}
	}
	p := findProxy(proxies, "haven")
	if p == nil {
		return t, stop, "haven is not among -targets", nil
	}
	backends, err := b.startBackends(ctx)
	started = append(started, backends...)
	if err != nil {
		return t, stop, "", fmt.Errorf("backends: %w", err)
	}
	svc, err := p.start(ctx, b, "http", false)
	if svc != nil {
		started = append(started, svc)
	}
	if err != nil {
		return t, stop, "failed to start: " + err.Error(), nil
	}
	return liveTarget{name: "haven", addr: p.addr, svc: svc}, stop, "", nil
}

// abRounds measures haven under wrk in two states, alternating, rounds
// times: set puts it in state i and returns how to leave that state.
func (b *bench) abRounds(ctx context.Context, t liveTarget, names [2]string, set func(i int) (func(), error)) ([2][]runRec, error) {
	var runs [2][]runRec
	sc := &scenarioResult{scenario: scenario{mode: "http", cores: 1}}
	for round := 1; round <= b.opt.rounds; round++ {
		for i, name := range names {
			if ctx.Err() != nil {
				return runs, ctx.Err()
			}
			leave, err := set(i)
			if err != nil {
				return runs, err
			}
			sc.name = name
			rec, err := b.measureWrk(ctx, sc, t, round)
			leave()
			if err != nil {
				return runs, err
			}
			harness.Logf("%s round %d: %8.0f req/s  %s CPU-s/10k %s", name, round, rec.wrk.RPS, fmtCPU(cpuPer10k(rec)), rec.err)
			runs[i] = append(runs[i], rec)
			harness.Sleep(ctx, time.Second)
		}
	}
	return runs, nil
}

// pages are open dashboards: each loaded the page once and reads its
// stream until closed.
type pages struct {
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	mu       sync.Mutex
	messages int64
	ready    int
	err      error
}

func openPages(ctx context.Context, base string, n int) *pages {
	pctx, cancel := context.WithCancel(ctx)
	p := &pages{cancel: cancel}
	client := &http.Client{}
	for range n {
		p.wg.Go(func() {
			if err := p.open(pctx, client, base); err != nil && pctx.Err() == nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
			}
		})
	}
	return p
}

func (p *pages) open(ctx context.Context, client *http.Client, base string) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/", nil)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /: %s", resp.Status)
	}
	req, _ = http.NewRequestWithContext(ctx, "GET", base+"/api/v1/console/stream", nil)
	resp, err = client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 4<<20)
	first := true
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "event: ") {
			continue
		}
		p.mu.Lock()
		p.messages++
		if first {
			p.ready++
			first = false
		}
		p.mu.Unlock()
	}
	return nil
}

// wait returns once every page has its first view.
func (p *pages) wait(ctx context.Context, n int) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.mu.Lock()
		ready, err := p.ready, p.err
		p.mu.Unlock()
		switch {
		case err != nil:
			return fmt.Errorf("open a dashboard: %w", err)
		case ready >= n:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("%d of %d dashboards had a view within 20s", ready, n)
		}
		if !harness.Sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

// close ends the pages and returns how many messages they received.
func (p *pages) close() int64 {
	p.cancel()
	p.wg.Wait()
	return p.messages
}

// consoleReport is the scenario's section of the report.
func (b *bench) consoleReport(r *consoleResult) string {
	var s strings.Builder
	s.WriteString("## The dashboard's cost under load\n\n")
	if r.status != "" {
		s.WriteString("Not measured: " + r.status + "\n")
		return s.String()
	}
	fmt.Fprintf(&s, "haven's balancer (one core, GOMAXPROCS=1) under wrk (%d connections, keep-alive), with no dashboard open and with %d open "+
		"(each loaded the page, then read its stream: %d messages in all), alternating, %d rounds of %s. "+
		"CPU is the agent's, per 10,000 requests; the ratio is per round (with / without), median over rounds.\n\n",
		b.opt.conns, consolePages, r.streamed, b.opt.rounds, b.opt.duration)
	s.WriteString("| pages open | req/s (median) | agent CPU-s per 10k req (median) |\n|---|---|---|\n")
	fmt.Fprintf(&s, "| 0 | %.0f | %s |\n", medianRPS(r.without), fmtCPU(medianCPU(r.without)))
	fmt.Fprintf(&s, "| %d | %.0f | %s |\n", consolePages, medianRPS(r.with), fmtCPU(medianCPU(r.with)))
	var idle []float64
	for i := range min(len(r.idleWith), len(r.idleWithout)) {
		idle = append(idle, (r.idleWith[i]-r.idleWithout[i]).Seconds()/idleWindow.Seconds())
	}
	pagesCPU := harness.Median(idle)
	var loadCPU []float64
	for _, x := range okRuns(r.without) {
		loadCPU = append(loadCPU, x.cpu.Seconds()/b.opt.duration.Seconds())
	}
	underLoad := harness.Median(loadCPU)
	fmt.Fprintf(&s, "\nWithout load, the %d pages cost the agent **%.2f ms of CPU per second** (median over %d rounds of %s, with minus without; "+
		"the agent alone: %.2f ms/s). Under the load the agent uses %.0f ms/s, so the pages add **%.2f %%** to its CPU.\n",
		consolePages, 1000*pagesCPU, len(idle), idleWindow, 1000*harness.Median(durations(r.idleWithout))/idleWindow.Seconds(), 1000*underLoad, 100*pagesCPU/underLoad)
	ratio := roundRatio(r.with, r.without, cpuPer10k, false)
	fmt.Fprintf(&s, "\nMeasured directly under the load, CPU per request with %d dashboards open is %.3f× without (%+.1f %%), throughput %.3f×: "+
		"the rounds' own spread is larger than the pages' cost (goal: under +2 %% CPU).\n",
		consolePages, ratio, 100*(ratio-1), roundRatio(r.with, r.without, func(x runRec) float64 { return x.wrk.RPS }, false))
	return s.String()
}

func durations(d []time.Duration) []float64 {
	out := make([]float64, len(d))
	for i, x := range d {
		out[i] = x.Seconds()
	}
	return out
}
