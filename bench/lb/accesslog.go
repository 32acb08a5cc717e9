package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/haven-ha/haven/bench/internal/harness"
)

// accessLogResult is the access log scenario: haven's balancer under
// wrk's load with its access log off and on, alternating.
type accessLogResult struct {
	off, on []runRec
	lines   int64 // lines the on runs wrote
	status  string
}

// runAccessLog measures what the access log costs: one haven, its
// haven.yaml rewritten with and without access_log and reloaded (SIGHUP)
// before each run; the file is emptied after each run.
func (b *bench) runAccessLog(ctx context.Context, proxies []*proxy) (*accessLogResult, error) {
	res := &accessLogResult{}
	t, stop, status, err := b.startHavenAlone(ctx, proxies)
	defer stop()
	if status != "" || err != nil {
		res.status = status
		return res, err
	}
	svc := t.svc
	logFile := filepath.Join(b.dir, "access.log")
	conf := filepath.Join(b.dir, "haven.yaml")
	runs, err := b.abRounds(ctx, t, [2]string{"access-log-off", "access-log-on"}, func(i int) (func(), error) {
		d := b.tmplData("http", false, havenAddr, havenAdmin)
		if i == 1 {
			d.AccessLog = logFile
		}
		if err := harness.WriteTemplate(conf, havenConf, d); err != nil {
			return nil, err
		}
		if err := svc.signal(syscall.SIGHUP); err != nil {
			return nil, err
		}
		harness.Sleep(ctx, time.Second) // the reload applies
		return func() {
			if i == 1 {
				harness.Sleep(ctx, 1500*time.Millisecond) // the last lines flush
				if b, err := os.ReadFile(logFile); err == nil {
					res.lines += int64(strings.Count(string(b), "\n"))
				}
				os.Truncate(logFile, 0)
			}
		}, nil
	})
	res.off, res.on = runs[0], runs[1]
	return res, err
}

// accessLogReport is the scenario's section of the report.
func (b *bench) accessLogReport(r *accessLogResult) string {
	var s strings.Builder
	s.WriteString("## The access log's cost\n\n")
	if r.status != "" {
		s.WriteString("Not measured: " + r.status + "\n")
		return s.String()
	}
	fmt.Fprintf(&s, "haven's balancer (one core, GOMAXPROCS=1) under wrk (%d connections, keep-alive), its access log off and on "+
		"(format haproxy, to a file; %d lines written in all), alternating, %d rounds of %s; the ratios are per round (on / off), median over rounds.\n\n",
		b.opt.conns, r.lines, b.opt.rounds, b.opt.duration)
	s.WriteString("| access log | req/s (median) | CPU-s per 10k req (median) |\n|---|---|---|\n")
	fmt.Fprintf(&s, "| off | %.0f | %s |\n", medianRPS(r.off), fmtCPU(medianCPU(r.off)))
	fmt.Fprintf(&s, "| on | %.0f | %s |\n", medianRPS(r.on), fmtCPU(medianCPU(r.on)))
	rps := roundRatio(r.on, r.off, func(x runRec) float64 { return x.wrk.RPS }, false)
	cpu := roundRatio(r.on, r.off, cpuPer10k, false)
	fmt.Fprintf(&s, "\nWith the access log on: throughput **%.3f×** (%+.1f %%), CPU per request %.3f× (goal: throughput within 5 %%).\n", rps, 100*(rps-1), cpu)
	return s.String()
}
